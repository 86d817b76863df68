//! Two homes, each behind its own NAT router, and three daemons on a
//! "public" segment (203.0.113.0/24), all in network namespaces made by the
//! test. Nobody names a relay: each home daemon knows one public daemon as
//! its bootstrap peer, the public daemons find by AutoNAT that they are
//! reachable and offer relaying, the home daemons find they are not and
//! reserve circuits on them (AutoRelay). A share made in home A is fetched
//! in home B with the link alone.
//!
//! - cone NATs: the connection is hole-punched, and the sharer served every
//!   data stream over a direct connection (read from its log, where each
//!   inbound data stream is recorded with the kind of its connection);
//!
//! Runs as root with iptables (as in CI); reported as skipped otherwise.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::netns::{self, home, Nat, Netns};
use common::*;

/// The tests here run one at a time: each runs five daemons, and two cores
/// shared with the rest of the suite are slow enough already.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn skip() -> bool {
    if !netns::available() || !netns::have_iptables() {
        eprintln!(
            "skipped: needs root, iproute2 and iptables to build NAT routers in network namespaces"
        );
        return true;
    }
    false
}

/// A daemon in namespace `ns` logging to `<dir>.log` (info, and the
/// node's debug lines, which record each inbound data stream).
fn start(dir: &Path, ns: &str, args: &[&str], config: &str) -> Daemon {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("peerdrop.toml"), config).unwrap();
    let log = fs::File::create(dir.with_extension("log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "daemon", "--no-mdns"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("PEERDROP_DATA_DIR")
        .env(
            "RUST_LOG",
            "info,peerdrop::net::node=debug,peerdrop::net::node::event_loop=info",
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon {
        child: Some(child),
        dir: dir.to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli(dir, &["status", "--json"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

/// Waits (up to `secs`) for `cond` on `d`'s status.
fn wait_status(d: &Daemon, secs: u64, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = d.json(&["status"]);
        if cond(&st) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {secs}s; status: {st}\nlog tail:\n{}",
            log_tail(&d.dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log_of(dir: &Path) -> String {
    fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
}

fn log_tail(dir: &Path) -> String {
    let log = log_of(dir);
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Inbound data streams the daemon in `dir` served, (direct, relayed).
fn served_streams(dir: &Path) -> (usize, usize) {
    let log = log_of(dir);
    let streams = log.lines().filter(|l| l.contains("inbound data stream"));
    let (mut direct, mut relayed) = (0, 0);
    for l in streams {
        if l.contains("relayed=true") {
            relayed += 1;
        } else if l.contains("relayed=false") {
            direct += 1;
        }
    }
    (direct, relayed)
}

fn circuits(st: &serde_json::Value) -> usize {
    st["listen"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|a| a.as_str().is_some_and(|a| a.contains("/p2p-circuit")))
                .count()
        })
        .unwrap_or(0)
}

/// The network and its daemons; namespaces and processes go with it.
struct World {
    // Field order is drop order: daemons before their namespaces.
    a: Daemon,
    b: Daemon,
    _public: Vec<Daemon>,
    _net: Netns,
    tmp: tempfile::TempDir,
}

impl World {
    /// Builds the topology (namespace names start with "rp" and `tag`),
    /// starts three public daemons with `relay_config`, and a daemon in
    /// each home, and waits until home A holds two circuit reservations.
    fn build(tag: &str, nat: Nat, relay_config: &str) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let mut net = Netns::with_prefix("rp");
        let public = net.bridge(&format!("{tag}pub"));
        let mut pubs = Vec::new();
        let mut pub_addrs: Vec<String> = Vec::new();
        for i in 1..=3 {
            let ns = net.host_on(
                &public,
                &format!("{tag}p{i}"),
                "eth0",
                &format!("203.0.113.{i}/24"),
            );
            let mut args = vec![
                "--listen".to_owned(),
                "/ip4/0.0.0.0/tcp/4001".to_owned(),
                "--listen".to_owned(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".to_owned(),
            ];
            if let Some(first) = pub_addrs.first() {
                args.push("--bootstrap".into());
                args.push(first.clone());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let d = start(&sub(&tmp, &format!("pub{i}")), &ns, &args, relay_config);
            let id = d.json(&["status"])["peer_id"].as_str().unwrap().to_owned();
            pub_addrs.push(format!("/ip4/203.0.113.{i}/tcp/4001/p2p/{id}"));
            pubs.push(d);
        }
        let mut homes = Vec::new();
        for (i, side) in ["a", "b"].iter().enumerate() {
            let (_router, host) = home(
                &mut net,
                &public,
                &format!("{tag}{side}"),
                &format!("203.0.113.{}/24", 11 + i),
                81 + i as u8,
                nat,
            );
            // Each home knows one public daemon, not the same one.
            let d = start(
                &sub(&tmp, side),
                &host,
                &[
                    "--listen",
                    "/ip4/0.0.0.0/tcp/0",
                    "--listen",
                    "/ip4/0.0.0.0/udp/0/quic-v1",
                    "--bootstrap",
                    &pub_addrs[i],
                ],
                "",
            );
            homes.push(d);
        }
        let b = homes.pop().unwrap();
        let a = homes.pop().unwrap();
        // Links carry the circuit addresses reserved when they are made.
        wait_status(&a, 90, "home A reserved two relay circuits", |st| {
            circuits(st) >= 2
        });
        World {
            a,
            b,
            _public: pubs,
            _net: net,
            tmp,
        }
    }

    /// Shares `len` bytes in home A and fetches them in home B with the
    /// link alone; returns the fetcher's status entry for the sharer.
    fn transfer(&self, len: usize) -> serde_json::Value {
        let f = sub(&self.tmp, "across-nat.bin");
        fs::write(&f, bytes(9, len)).unwrap();
        let link = self.a.share(&f);
        let out: PathBuf = sub(&self.tmp, "out");
        let o = fetch(&self.b.dir, &link, &out, &[]);
        assert!(
            o.status.success(),
            "{}\nsharer log:\n{}\nfetcher log:\n{}",
            err(&o),
            log_tail(&self.a.dir),
            log_tail(&self.b.dir)
        );
        assert!(
            fs::read(out.join("across-nat.bin")).unwrap() == fs::read(&f).unwrap(),
            "the fetched file differs"
        );
        let a_id = self.a.json(&["status"])["peer_id"].clone();
        let st = self.b.json(&["status"]);
        st["connected"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["peer"] == a_id)
            .cloned()
            .unwrap_or_else(|| panic!("the fetcher is not connected to the sharer: {st}"))
    }
}

#[test]
fn cone_nats_are_hole_punched_and_the_transfer_runs_direct() {
    if skip() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::build("c", Nat::Cone, "");
    let conn = w.transfer(4 << 20);
    assert_eq!(
        conn["relayed"],
        false,
        "the connection to the sharer is still relayed: {conn}\nfetcher log:\n{}",
        log_tail(&w.b.dir)
    );
    let (direct, relayed) = served_streams(&w.a.dir);
    assert!(direct > 0, "the sharer served no data stream directly");
    assert_eq!(
        relayed, 0,
        "the sharer served {relayed} data stream(s) through a relay"
    );
}
