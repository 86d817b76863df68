//! Daemons as real processes, each with its own data dir, on loopback only
//! (mDNS is not part of the daemon yet and never runs in the default
//! namespace in tests).

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use serde_json::Value;

fn tree_fixture(root: &Path) -> Tree {
    let mut t = Tree::new();
    t.insert("big.bin".into(), (false, false, bytes(1, 3 << 20)));
    t.insert("docs".into(), (true, false, vec![]));
    t.insert("docs/a.txt".into(), (false, true, b"hello".to_vec()));
    t.insert("docs/empty".into(), (false, false, vec![]));
    write_tree(root, &t);
    t
}

/// Polls `list` until the fetch or pin `kind` reaches `state`.
fn wait_for(d: &Daemon, kind: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = d.json(&["list"]);
        if let Some(j) = l[kind].as_array().and_then(|a| a.first()) {
            if j["status"]["state"] == state {
                return j.clone();
            }
            assert_ne!(j["status"]["state"], "failed", "{j}");
        }
        assert!(
            Instant::now() < deadline,
            "{kind} never reached {state}: {l}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn share_fetch_restart_and_fetch_again_with_the_same_link() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "album");
    tree_fixture(&root);
    let mut a = Daemon::start(&sub(&tmp, "A"));
    let b = Daemon::start(&sub(&tmp, "B"));
    let link = a.share(&root);
    let out1 = sub(&tmp, "out1");
    let o = fetch(&b.dir, &link, &out1, &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(read_tree(&root), read_tree(&out1.join("album")));
    let peer_before = a.json(&["status"])["peer_id"].clone();

    a.stop();
    let a = Daemon::start(&a.dir.clone());
    assert_eq!(
        a.json(&["status"])["peer_id"],
        peer_before,
        "same identity after a restart"
    );
    // B also holds the share now (re-seeding); use a fresh fetcher so the
    // restarted A, reached through the old link's hint, is the only source.
    let c = Daemon::start(&sub(&tmp, "C"));
    let out2 = sub(&tmp, "out2");
    let o = fetch(&c.dir, &link, &out2, &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(read_tree(&root), read_tree(&out2.join("album")));
    drop(b);
}

/// A daemon in `tmp/A` sharing a 24 MiB `tmp/movie.bin` at `rate` bytes per
/// second, so that the middle of a fetch lasts long enough to hit.
fn slow_share(tmp: &tempfile::TempDir, rate: u64, seed: u64) -> (Daemon, PathBuf, String) {
    let adir = sub(tmp, "A");
    fs::create_dir_all(&adir).unwrap();
    fs::write(
        adir.join("peerdrop.toml"),
        format!("max_upload_rate = {rate}\n"),
    )
    .unwrap();
    let a = Daemon::start(&adir);
    let f = sub(tmp, "movie.bin");
    fs::write(&f, bytes(seed, 24 << 20)).unwrap();
    let link = a.share(&f);
    (a, f, link)
}

/// Polls `list` until the first fetch has `min` bytes.
fn wait_for_bytes(d: &Daemon, min: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = d.json(&["list"]);
        if l["fetches"][0]["bytes"].as_u64().unwrap_or(0) >= min {
            return;
        }
        assert!(Instant::now() < deadline, "no progress: {l}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nothing of the interrupted fetch of `f` into `out` is there yet; a daemon
/// started again on `dir` completes it.
fn restarts_and_completes(dir: &Path, out: &Path, f: &Path) {
    assert!(!out.join("movie.bin").exists());
    let b = Daemon::start(dir);
    wait_for(&b, "fetches", "done");
    assert_eq!(
        fs::read(out.join("movie.bin")).unwrap(),
        fs::read(f).unwrap()
    );
}

#[test]
fn a_fetch_killed_with_the_daemon_resumes_when_it_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let (_a, f, link) = slow_share(&tmp, 6 << 20, 2);
    let mut b = Daemon::start(&sub(&tmp, "B"));
    let out = sub(&tmp, "out");
    let o = fetch(&b.dir, &link, &out, &["--detach"]);
    assert!(o.status.success(), "{}", err(&o));
    wait_for_bytes(&b, 4 << 20);
    b.kill();
    restarts_and_completes(&b.dir, &out, &f);
    assert_eq!(names_in(&out), ["movie.bin"]);
}

#[test]
fn a_pinning_node_serves_the_share_without_ever_holding_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "album");
    tree_fixture(&root);
    let mut a = Daemon::start(&sub(&tmp, "A"));
    let link = a.share(&root);
    let id = a.json(&["list"])["shares"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pin_link = a.json(&["link", &id[..12], "--pin"])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!pin_link.contains('#'));
    let c = Daemon::start(&sub(&tmp, "C"));
    // Given the read link, the CLI strips the key before the daemon sees it.
    let o = cli(&c.dir, &["pin", &link]);
    assert!(o.status.success(), "{}", err(&o));
    wait_for(&c, "pins", "done");
    let c_addr = c.addr();
    a.stop();

    let d = Daemon::start(&sub(&tmp, "D"));
    let out = sub(&tmp, "out");
    let o = fetch(&d.dir, &link, &out, &["--peer", &c_addr]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(read_tree(&root), read_tree(&out.join("album")));

    // Canary: the key, in any spelling, is nowhere in C's data dir.
    let key_b32 = link.split_once('#').unwrap().1;
    let key = peerdrop::link::base32::decode(key_b32).unwrap();
    let key_hex = peerdrop::chunk::hex(&key);
    let mut checked = 0;
    for (path, (is_dir, _, data)) in read_tree(&c.dir) {
        if is_dir {
            continue;
        }
        checked += 1;
        for needle in [key.as_slice(), key_b32.as_bytes(), key_hex.as_bytes()] {
            assert!(
                !data.windows(needle.len()).any(|w| w == needle),
                "key found in {path}"
            );
        }
    }
    assert!(checked > 5, "the pin's files were checked");
    // And the pinning node cannot make a read link.
    let o = cli(&c.dir, &["link", &id[..12]]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("only pins"), "{}", err(&o));
}

#[test]
fn a_changed_shared_file_is_never_served_and_the_share_is_listed_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "report.bin");
    fs::write(&f, bytes(3, 2 << 20)).unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    let link = a.share(&f);
    assert_eq!(a.json(&["list"])["shares"][0]["state"], "serving");
    let mut data = fs::read(&f).unwrap();
    data[1 << 20] ^= 1;
    fs::write(&f, &data).unwrap();
    assert_eq!(a.json(&["list"])["shares"][0]["state"], "stale");
    let b = Daemon::start(&sub(&tmp, "B"));
    let out = sub(&tmp, "out");
    let o = fetch(&b.dir, &link, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("files changed since the link was made"),
        "{}",
        err(&o)
    );
    assert!(!out.join("report.bin").exists());
}

#[test]
fn another_local_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    let as_nobody = || {
        let mut c = Command::new(BIN);
        c.args(["status", "--data-dir"])
            .arg(&a.dir)
            .uid(65534)
            .gid(65534);
        bounded(c)
    };
    // tempdir is 0700 too; let nobody reach the data dir's parent.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("permission denied"), "{}", err(&o));
    // Even with the directory and socket opened up, the daemon checks the
    // peer's uid itself.
    fs::set_permissions(&a.dir, fs::Permissions::from_mode(0o711)).unwrap();
    fs::set_permissions(
        a.dir.join("control.sock"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("belongs to another user"), "{}", err(&o));
    // The owner still gets in.
    assert_eq!(a.json(&["status"])["ok"], true);
}

#[test]
fn twenty_fetches_at_once_from_one_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "popular.bin");
    fs::write(&f, bytes(4, 6 << 20)).unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    let link = a.share(&f);
    let children: Vec<(PathBuf, Child)> = (0..20)
        .map(|i| {
            let out = sub(&tmp, &format!("out{i}"));
            let c = Command::new(BIN)
                .args(["receive", "--no-mdns", "-o"])
                .arg(&out)
                .env("PEERDROP_LINK", &link)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (out, c)
        })
        .collect();
    let want = fs::read(&f).unwrap();
    for (out, c) in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", err(&o));
        assert_eq!(fs::read(out.join("popular.bin")).unwrap(), want);
    }
    assert!(a.json(&["status"])["uploaded_bytes"].as_u64().unwrap() >= 20 * (6 << 20));
}

#[test]
fn without_a_daemon_the_cli_says_how_to_start_one() {
    let tmp = tempfile::tempdir().unwrap();
    let o = cli(&sub(&tmp, "none"), &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("start one with `peerdrop daemon --data-dir"),
        "{}",
        err(&o)
    );
}

#[test]
fn a_full_disk_fails_that_fetch_only_and_the_daemon_stays_up() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let small = sub(&tmp, "small");
    fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: could not mount a tmpfs");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let f = sub(&tmp, "big.bin");
    fs::write(&f, bytes(9, 8 << 20)).unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    let link = a.share(&f);
    let b = Daemon::start(&sub(&tmp, "B"));
    let o = fetch(&b.dir, &link, &small, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("not enough free space"), "{}", err(&o));
    // The daemon is still up, and another job is unaffected.
    let out = sub(&tmp, "roomy");
    let o = fetch(&b.dir, &link, &out, &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        fs::read(out.join("big.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
    assert_eq!(b.json(&["status"])["ok"], true);
}

/// One raw request line to a daemon's socket; every answer line back.
fn raw_request(dir: &Path, line: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(dir.join("control.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    BufReader::new(s).lines().map(|l| l.unwrap()).collect()
}

#[test]
fn a_request_of_another_protocol_version_is_refused_naming_both() {
    use peerdrop::daemon::control::{ErrorCode, Failure, StatusReply, VERSION};
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    let next = VERSION + 1;
    let lines = raw_request(&a.dir, &format!(r#"{{"version":{next},"cmd":"teleport"}}"#));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let f: Failure = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(f.code, ErrorCode::UnsupportedVersion, "{f:?}");
    assert_eq!(f.version, Some(VERSION));
    assert!(
        f.error.contains(&format!("version {VERSION}"))
            && f.error.contains(&format!("version {next}")),
        "{}",
        f.error
    );
    // A request without a version is version 1 (the protocol before the
    // field existed), and is answered as such.
    let lines = raw_request(&a.dir, r#"{"cmd":"status"}"#);
    let s: StatusReply = serde_json::from_str(&lines[0]).unwrap();
    assert!(!s.peer_id.is_empty());
}

#[test]
fn a_stopped_daemon_tells_its_followers_and_the_job_resumes() {
    use peerdrop::daemon::control::{ErrorCode, Failure};
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let (_a, f, link) = slow_share(&tmp, 4 << 20, 5);
    let mut b = Daemon::start(&sub(&tmp, "B"));
    let out = sub(&tmp, "out");
    // A follower: `peerdrop fetch --json` prints the daemon's lines.
    let follower = Command::new(BIN)
        .args(["fetch", "--json", "-o"])
        .arg(&out)
        .arg("--data-dir")
        .arg(&b.dir)
        .env("PEERDROP_LINK", &link)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_bytes(&b, 2 << 20);
    // A connection that never sends its request does not hold the stop up.
    let mut idle = std::os::unix::net::UnixStream::connect(b.dir.join("control.sock")).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let asked = Instant::now();
    b.stop(); // asserts a clean exit
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the daemon took {took:?} to stop"
    );
    assert_eq!(
        idle.read(&mut [0u8; 64]).unwrap(),
        0,
        "the idle connection was closed"
    );

    let o = wait_bounded(follower);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 2, "{stdout}");
    // The daemon's last line says the job was stopped, not failed; the CLI
    // adds its error line after it.
    let last: Failure = serde_json::from_str(lines[lines.len() - 2]).unwrap();
    assert_eq!(last.code, ErrorCode::JobStopped, "{stdout}");
    assert!(
        err(&o).contains("resumes when the daemon starts again"),
        "{}",
        err(&o)
    );
    restarts_and_completes(&b.dir, &out, &f);
}
