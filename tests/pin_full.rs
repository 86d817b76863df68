//! Audit F-12, the part the up-front check cannot cover: a pin whose disk
//! fills up while it runs (something else wrote there) fails cleanly. The
//! job is marked failed saying why, the follower exits 1, nothing is left
//! running, and the daemon keeps answering; after a restart with the space
//! back the pin is not left "running" with nothing happening. Needs root (a
//! small tmpfs holds the pinning daemon's data dir); loopback only.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use serde_json::Value;

/// A tmpfs at `at`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn tmpfs(at: &Path, mib: u64) -> Option<Tmpfs> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mib}m,mode=0700"),
            "tmpfs",
        ])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Tmpfs(at.to_owned()))
}

/// Writes into `dir` until its file system is full; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let f = dir.join("filler");
    let mut out = fs::File::create(&f).unwrap();
    let block = vec![0x5au8; 64 << 10];
    while out.write(&block).is_ok_and(|n| n > 0) {}
    while out.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
    f
}

/// The first pin in `d`'s list once `done` says so, within `limit`.
fn wait_pin(d: &Daemon, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let l = d.json(&["list"]);
        if let Some(p) = l["pins"].get(0).filter(|p| done(p)) {
            return p.clone();
        }
        assert!(Instant::now() < deadline, "pin never got there: {l}");
        // A polling interval for the daemon's list, not a stand-in for an
        // event.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_pin_whose_disk_fills_up_midway_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let bdir = sub(&tmp, "B");
    let Some(_mounted) = tmpfs(&bdir, 64) else {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    };
    // A sharer slow enough (4 MiB/s for 24 MiB) to fill the disk midway.
    let adir = sub(&tmp, "A");
    fs::create_dir_all(&adir).unwrap();
    fs::write(adir.join("peerdrop.toml"), "max_upload_rate = 4194304\n").unwrap();
    let mut a = Daemon::start(&adir);
    let f = sub(&tmp, "movie.bin");
    fs::write(&f, bytes(12, 24 << 20)).unwrap();
    let link = a.share(&f);
    let pin_link = link.split('#').next().unwrap().to_owned();

    let mut b = Daemon::start(&bdir);
    // Followed to its end, as a user would run it.
    let follower = Command::new(env!("CARGO_BIN_EXE_peerdrop"))
        .args(["pin", &pin_link, "--data-dir"])
        .arg(&b.dir)
        .env_remove("PEERDROP_LINK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Room was checked up front; now something else takes it.
    wait_pin(&b, Duration::from_secs(60), |p| {
        p["bytes"].as_u64().unwrap_or(0) >= 4 << 20
    });
    let filler = fill(&bdir);
    let o = wait_bounded(follower);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let p = wait_pin(&b, Duration::from_secs(30), |p| {
        p["status"]["state"] != "running"
    });
    assert_eq!(p["status"]["state"], "failed", "{p}");
    let why = p["status"]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        why.contains("space") || why.contains("No space"),
        "the error says why: {why}"
    );
    let s = b.json(&["status"]);
    assert!(s["transfers"].as_array().unwrap().is_empty(), "{s}");

    // The space comes back; a restarted daemon does not keep the pin
    // "running" with nothing happening: it stays failed (the failure was
    // journalled) or, if the full disk kept the journal from saying so,
    // the pin runs again and completes.
    fs::remove_file(filler).unwrap();
    b.stop();
    let mut b = Daemon::start(&bdir);
    let p = wait_pin(&b, Duration::from_secs(60), |p| {
        p["status"]["state"] == "failed" || p["status"]["state"] == "done"
    });
    eprintln!("after a restart with the space back: {}", p["status"]);
    if p["status"]["state"] == "done" {
        assert_eq!(p["bytes"], p["total"], "{p}");
    }
    let s = b.json(&["status"]);
    assert!(s["transfers"].as_array().unwrap().is_empty(), "{s}");
    b.stop();
    a.stop();
}
