//! The real `peerdrop send` and `peerdrop receive` processes on loopback:
//! round trip, kill -9 in the middle then resume, Ctrl-C, a changed source
//! file, a wrong key, a malformed link, an existing destination file, and an
//! unreachable sender. mDNS is not involved (not implemented in these
//! commands yet, and never on the host's interfaces in tests).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_peerdrop");

/// A child process killed (by its own PID) when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `peerdrop send` on loopback with `extra` flags; returns the process,
/// the link, and its stdout (for JSON events).
fn send(paths: &[&Path], extra: &[&str]) -> (Proc, String, BufReader<ChildStdout>) {
    let mut c = Command::new(BIN);
    c.arg("send")
        .args(paths)
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(extra);
    c.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_remove("PEERDROP_LINK");
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let link = line.trim().to_owned();
    assert!(
        link.starts_with("peerdrop:1/")
            || link.starts_with("peerdrop:p1/")
            || link.starts_with('{'),
        "send printed {line:?}"
    );
    (Proc(child), link, out)
}

fn receive(link: &str, dest: &Path, extra: &[&str]) -> Output {
    receive_with(link, dest, extra, None)
}

/// `receive` with PEERDROP_PASSWORD set to `password` (or unset), run
/// without a controlling terminal (setsid), so nothing can be asked.
fn receive_with(link: &str, dest: &Path, extra: &[&str], password: Option<&str>) -> Output {
    let mut c = Command::new("setsid");
    c.arg(BIN);
    match password {
        Some(pw) => c.env("PEERDROP_PASSWORD", pw),
        None => c.env_remove("PEERDROP_PASSWORD"),
    };
    c.arg("receive")
        .arg("--no-mdns")
        .arg("-o")
        .arg(dest)
        .args(extra)
        .env("PEERDROP_LINK", link);
    run_bounded(c, Duration::from_secs(120))
}

/// Runs a command to completion, killing it if it overruns.
fn run_bounded(mut c: Command, limit: Duration) -> Output {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("command did not finish within {limit:?}");
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn one_file(tmp: &tempfile::TempDir, size: usize) -> std::path::PathBuf {
    let f = sub(tmp, "payload.bin");
    fs::write(&f, bytes(size as u64, size)).unwrap();
    f
}

#[test]
fn send_and_receive_round_trip_and_once_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "album");
    let mut t = Tree::new();
    t.insert("a.bin".into(), (false, false, bytes(1, 3 << 20)));
    t.insert("sub".into(), (true, false, vec![]));
    t.insert("sub/run.sh".into(), (false, true, b"#!/bin/sh\n".to_vec()));
    t.insert("sub/empty".into(), (false, false, vec![]));
    write_tree(&root, &t);
    let (mut sender, link, _) = send(&[&root], &["--once"]);
    let dest = sub(&tmp, "out");
    let out = receive(&link, &dest, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "stdout stays empty without --json");
    assert!(
        stderr(&out).contains("received 3 file(s)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read_tree(&root), read_tree(&dest.join("album")));
    // --once: the sender exits 0 by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = sender.0.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "send --once did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a JSON progress event past `min` bytes on a receive's stdout.
fn wait_for_progress(out: &mut BufReader<ChildStdout>, min: u64) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "receive ended before any progress"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "progress" && v["bytes"].as_u64().unwrap() >= min {
            return;
        }
    }
}

fn spawn_receive(link: &str, dest: &Path) -> (Proc, BufReader<ChildStdout>) {
    let mut c = Command::new(BIN);
    c.arg("receive")
        .arg("--no-mdns")
        .arg("--json")
        .arg("-o")
        .arg(dest)
        .env("PEERDROP_LINK", link);
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (Proc(child), out)
}

#[test]
fn receive_killed_with_sigkill_resumes_where_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let f = one_file(&tmp, 24 << 20);
    // A rate limit makes "the middle" last long enough to hit it.
    let (_sender, link, _) = send(&[&f], &["--max-rate", "8M"]);
    let dest = sub(&tmp, "out");
    let (mut rx, mut out) = spawn_receive(&link, &dest);
    wait_for_progress(&mut out, 6 << 20);
    rx.0.kill().unwrap(); // SIGKILL
    rx.0.wait().unwrap();
    assert!(
        !dest.join("payload.bin").exists(),
        "nothing at the final path after kill -9"
    );
    assert_eq!(final_names_in(&dest).len(), 0);
    assert_eq!(names_in(&dest).len(), 1, "the staging folder is kept");

    let out = receive(&link, &dest, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done");
    let resumed = last["resumed_bytes"].as_u64().unwrap();
    assert!(resumed >= 5 << 20, "resumed only {resumed} bytes");
    assert_eq!(
        fs::read(dest.join("payload.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
    assert_eq!(names_in(&dest), ["payload.bin"]);
}

#[test]
fn ctrl_c_exits_130_and_keeps_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let f = one_file(&tmp, 16 << 20);
    let (_sender, link, _) = send(&[&f], &["--max-rate", "4M"]);
    let dest = sub(&tmp, "out");
    let (mut rx, mut out) = spawn_receive(&link, &dest);
    wait_for_progress(&mut out, 1 << 20);
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(rx.0.id() as i32, libc::SIGINT) };
    let status = rx.0.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!dest.join("payload.bin").exists());
    assert_eq!(names_in(&dest).len(), 1, "the staging folder is kept");
}

#[test]
fn a_changed_source_file_is_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let f = one_file(&tmp, 3 << 20);
    let (_sender, link, _) = send(&[&f], &[]);
    // Same size, different bytes in the middle.
    let mut data = fs::read(&f).unwrap();
    data[(3 << 20) / 2] ^= 0xff;
    fs::write(&f, &data).unwrap();
    let dest = sub(&tmp, "out");
    let out = receive(&link, &dest, &["--wait", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("files changed since the link was made"),
        "{}",
        stderr(&out)
    );
    assert!(!dest.join("payload.bin").exists());
}

/// One source saying its files changed does not decide the error while
/// another source the user gave was never reached (audit F-19: any peer can
/// answer `Stale`).
#[test]
fn one_stale_source_does_not_decide_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let f = one_file(&tmp, 1 << 20);
    let (_sender, link, _) = send(&[&f], &[]);
    let mut data = fs::read(&f).unwrap();
    data[10] ^= 0xff;
    fs::write(&f, &data).unwrap();
    // Nothing listens on the discard port of loopback.
    let dead = format!("/ip4/127.0.0.1/tcp/9/p2p/{}", libp2p::PeerId::random());
    let dest = sub(&tmp, "out");
    let out = receive(&link, &dest, &["--wait", "5", "--peer", &dead]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("no source could provide the share"), "{e}");
    assert!(e.contains("1 source(s) said their files changed"), "{e}");
    assert!(!e.contains("the sender's files changed"), "{e}");
    assert!(!dest.join("payload.bin").exists());
}

#[test]
fn a_wrong_key_and_a_malformed_link_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let f = one_file(&tmp, 1000);
    let (_sender, link, _) = send(&[&f], &[]);
    let (body, _) = link.split_once('#').unwrap();
    let wrong = format!("{body}#{}", peerdrop::link::base32::encode(&[7u8; 32]));
    let dest = sub(&tmp, "out");
    let out = receive(&wrong, &dest, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("wrong key"), "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("peerdrop: error"))
            .count(),
        1
    );

    let out = receive("peerdrop:1/notbase32!", &dest, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not valid base32"),
        "{}",
        stderr(&out)
    );
    let out = receive(body, &dest, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pin link"), "{}", stderr(&out));
    let mut c = Command::new(BIN);
    c.args(["receive", "--no-mdns", "--no-such-flag"]);
    assert_eq!(
        run_bounded(c, Duration::from_secs(30)).status.code(),
        Some(2)
    );
}

#[test]
fn an_existing_destination_file_is_kept_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let f = one_file(&tmp, 5000);
    let (_sender, link, _) = send(&[&f], &[]);
    let dest = sub(&tmp, "out");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("payload.bin"), b"mine").unwrap();
    let out = receive(&link, &dest, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already exists; pass --force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(dest.join("payload.bin")).unwrap(), b"mine");
    let out = receive(&link, &dest, &["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(dest.join("payload.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
}

/// A receive run again into a folder that already holds the share (the
/// first run finished but died before it could say so, or the user simply
/// ran it twice) checks the files and succeeds without writing; files of
/// the same names and sizes that are not the share are left alone.
#[test]
fn receiving_again_checks_the_files_in_place_and_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "album");
    let mut t = Tree::new();
    t.insert("a.bin".into(), (false, false, bytes(3, (1 << 20) + 5)));
    t.insert("sub".into(), (true, false, vec![]));
    t.insert("sub/b.txt".into(), (false, false, b"bee\n".to_vec()));
    write_tree(&root, &t);
    let (_sender, link, _) = send(&[&root], &[]);
    let dest = sub(&tmp, "out");
    let first = receive(&link, &dest, &[]);
    assert!(first.status.success(), "{}", stderr(&first));

    let again = receive(&link, &dest, &["--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let done = String::from_utf8(again.stdout).unwrap();
    let done: serde_json::Value = serde_json::from_str(done.lines().last().unwrap()).unwrap();
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["resumed_bytes"], done["bytes"], "{done}");
    assert_eq!(read_tree(&dest.join("album")), t);
    assert_eq!(names_in(&dest), ["album"]);

    // Same size, other bytes: someone else's file. The refusal is the
    // one the plan gave: `album` exists and nothing merges into it.
    fs::write(dest.join("album/sub/b.txt"), b"wasp").unwrap();
    let out = receive(&link, &dest, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("album already exists; pass --merge"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(dest.join("album/sub/b.txt")).unwrap(), b"wasp");
    assert_eq!(names_in(&dest), ["album"]);
}

#[test]
fn an_unreachable_sender_fails_in_bounded_time_keeping_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let f = one_file(&tmp, 5000);
    let (sender, link, _) = send(&[&f], &[]);
    drop(sender); // killed: its port now refuses connections
    let dest = sub(&tmp, "out");
    let start = Instant::now();
    let out = receive(&link, &dest, &["--wait", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot reach the sender yet"), "{err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn json_mode_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let f = one_file(&tmp, 2 << 20);
    let (_sender, first, mut out) = send(&[&f], &["--json", "--once"]);
    // send() read the first line: with --json it is the link event.
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["event"], "link");
    let link = v["link"].as_str().unwrap().to_owned();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let listening: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(listening["event"], "listening");
    assert_eq!(listening["bytes"], 2 << 20);
    let dest = sub(&tmp, "out");
    let r = receive(&link, &dest, &["--json"]);
    assert!(r.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // What is coming is described before anything is written.
    assert_eq!(events[0]["event"], "offer", "{events:?}");
    assert_eq!(events[1]["event"], "started", "{events:?}");
    assert_eq!(events.last().unwrap()["event"], "done");
    line.clear();
    out.read_line(&mut line).unwrap();
    let done: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(done["event"], "peer_done");
}

#[test]
fn a_password_link_reads_only_with_its_password_and_a_wrong_one_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let f = one_file(&tmp, 1 << 20);
    let pw = sub(&tmp, "pw.txt");
    fs::write(&pw, "open sesame\n").unwrap();
    let (_sender, link, _) = send(&[&f], &["--password-file", pw.to_str().unwrap()]);
    assert!(link.starts_with("peerdrop:p1/"), "{link}");
    let dest = sub(&tmp, "out");

    // No password anywhere and no terminal to ask on.
    let o = receive_with(&link, &dest, &[], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("PEERDROP_PASSWORD"), "{}", stderr(&o));

    // A wrong one: refused before any network, in bounded time.
    let t = Instant::now();
    let o = receive_with(&link, &dest, &[], Some("open sesame "));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wrong password"), "{}", stderr(&o));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(!dest.join("payload.bin").exists());

    let o = receive_with(&link, &dest, &[], Some("open sesame"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(dest.join("payload.bin")).unwrap(),
        fs::read(&f).unwrap()
    );

    // inspect names it and its cost, and its pin link is a plain one.
    let o = run_bounded(
        {
            let mut c = Command::new(BIN);
            c.args(["inspect", "--json", &link]);
            c
        },
        Duration::from_secs(10),
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["kind"], "password");
    assert_eq!(j["password"]["memory_kib"], 65536);
    assert!(j["pin_link"].as_str().unwrap().starts_with("peerdrop:1/"));
}
