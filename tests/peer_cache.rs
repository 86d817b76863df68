//! One contact is enough, forever: daemons on loopback (mDNS off) that were
//! once given a bootstrap peer, or once fetched a link, are restarted with
//! no bootstrap configured and find a share through the DHT from their peer
//! cache alone. A daemon with no cache (and a damaged cache file) cannot,
//! which shows the cache is what made the difference.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;

const LOOPBACK: [&str; 3] = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"];

/// A daemon on loopback with `extra` flags; fetches give up after `wait`
/// seconds (bounded tests).
fn start(dir: &Path, wait: u32, extra: &[&str]) -> Daemon {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(
        dir.join("peerdrop.toml"),
        format!("fetch_wait_secs = {wait}\n"),
    )
    .unwrap();
    let mut args = LOOPBACK.to_vec();
    args.extend_from_slice(extra);
    Daemon::start_with(dir, &args, None)
}

fn peer_id(d: &Daemon) -> String {
    d.json(&["status"])["peer_id"].as_str().unwrap().to_owned()
}

/// Waits (30 s at most) until `d` is connected to `peer`.
fn wait_connected(d: &Daemon, peer: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = d.json(&["status"]);
        let connected = s["connected"].as_array().unwrap();
        if connected.iter().any(|c| c["peer"] == peer) {
            return;
        }
        assert!(Instant::now() < deadline, "never connected to {peer}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The peer cache a stopped daemon left in `dir`: checks its mode and that
/// it names `peer` as a contact.
fn assert_cached(dir: &Path, peer: &str) {
    let path = dir.join("peers.json");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "peers.json is readable by others");
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let entry = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == peer)
        .unwrap_or_else(|| panic!("{peer} not in the peer cache: {v}"));
    assert_eq!(entry["contact"], true, "{entry}");
    assert!(!entry["addrs"].as_array().unwrap().is_empty(), "{entry}");
}

fn hintless_share(d: &Daemon, f: &Path) -> String {
    d.json(&["share", "--no-hints", f.to_str().unwrap()])["link"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_daemon_restarted_without_bootstrap_finds_the_network_from_its_peer_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let boot = Daemon::start(&sub(&tmp, "boot"));
    let boot_addr = boot.addr();
    let boot_id = peer_id(&boot);
    let sharer = start(&sub(&tmp, "sharer"), 30, &["--bootstrap", &boot_addr]);

    // Given one bootstrap peer, once.
    let home = sub(&tmp, "home");
    let mut d = start(&home, 30, &["--bootstrap", &boot_addr]);
    wait_connected(&d, &boot_id);
    d.stop();
    assert_cached(&home, &boot_id);

    // Nothing configured now, and the link names no peer.
    let d = start(&home, 30, &[]);
    let s = d.json(&["status"]);
    assert!(s["cached_peers"].as_u64().unwrap() >= 1, "{s}");
    let f = sub(&tmp, "cached.bin");
    fs::write(&f, bytes(21, 1 << 20)).unwrap();
    let link = hintless_share(&sharer, &f);
    let t = Instant::now();
    let o = fetch(&home, &link, &sub(&tmp, "out"), &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        fs::read(sub(&tmp, "out").join("cached.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
    eprintln!(
        "restarted daemon, no bootstrap configured: found and fetched 1 MiB via its peer cache in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    wait_connected(&d, &boot_id);

    // The control: no cache (a damaged file is ignored, not fatal), no way in.
    let lost = sub(&tmp, "lost");
    fs::create_dir_all(&lost).unwrap();
    fs::write(lost.join("peers.json"), b"\x00{ not a cache").unwrap();
    let c = start(&lost, 3, &[]);
    let o = fetch(&lost, &link, &sub(&tmp, "out2"), &[]);
    assert!(!o.status.success(), "fetched with no contact at all");
    drop((c, d, sharer, boot));
}

#[test]
fn the_sharer_named_in_a_fetched_links_hints_is_a_contact_forever() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Daemon::start(&sub(&tmp, "first"));
    let first_id = peer_id(&first);
    let f1 = sub(&tmp, "one.bin");
    fs::write(&f1, bytes(22, 200_000)).unwrap();
    let link1 = first.share(&f1);

    // No bootstrap ever: only the link's hints.
    let home = sub(&tmp, "home");
    let mut d = start(&home, 30, &[]);
    let o = fetch(&home, &link1, &sub(&tmp, "out1"), &[]);
    assert!(o.status.success(), "{}", err(&o));
    d.stop();
    assert_cached(&home, &first_id);

    // Another daemon joins through the first sharer and shares without hints.
    let second = start(&sub(&tmp, "second"), 30, &["--bootstrap", &first.addr()]);
    let f2 = sub(&tmp, "two.bin");
    fs::write(&f2, bytes(23, 300_000)).unwrap();
    let link2 = hintless_share(&second, &f2);

    let _d = start(&home, 30, &[]);
    let o = fetch(&home, &link2, &sub(&tmp, "out2"), &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        fs::read(sub(&tmp, "out2").join("two.bin")).unwrap(),
        fs::read(&f2).unwrap()
    );
}
