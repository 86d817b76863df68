//! The real binary, run as a user runs it.

mod common;

use std::fs;
use std::path::Path;

use assert_cmd::Command;
use common::*;
use peerdrop::link::base32;

fn peerdrop() -> Command {
    let mut c = Command::cargo_bin("peerdrop").unwrap();
    c.env_remove("PEERDROP_LINK")
        .timeout(std::time::Duration::from_secs(60));
    c
}

/// Seals `paths` into `store`, returning the link printed on stdout.
fn seal(paths: &[&Path], store: &Path) -> String {
    let out = peerdrop()
        .arg("seal")
        .args(paths)
        .arg("--out")
        .arg(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is the link alone: {stdout:?}");
    lines[0].to_owned()
}

fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("album");
    let mut t = Tree::new();
    t.insert("a.jpg".into(), (false, false, bytes(1, 300_000)));
    t.insert("sub".into(), (true, false, vec![]));
    t.insert(
        "sub/run.sh".into(),
        (false, true, b"#!/bin/sh\necho hi\n".to_vec()),
    );
    t.insert("sub/empty".into(), (false, false, vec![]));
    write_tree(&root, &t);
    (tmp, root)
}

#[test]
fn help_and_version() {
    peerdrop()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicates::str::contains("inspect"));
    peerdrop()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicates::str::contains(env!("CARGO_PKG_VERSION")));
    peerdrop().arg("frobnicate").assert().code(2);
    peerdrop().args(["seal"]).assert().code(2);
}

#[test]
fn seal_then_unseal_round_trip() {
    let (tmp, root) = fixture();
    let store = tmp.path().join("store");
    let link = seal(&[&root], &store);
    assert!(link.starts_with("peerdrop:1/"));
    let dest = tmp.path().join("out");
    // The link goes in on stdin, keeping it out of the process list.
    peerdrop()
        .args(["unseal", "--from"])
        .arg(&store)
        .arg("-o")
        .arg(&dest)
        .write_stdin(format!("{link}\n"))
        .assert()
        .success()
        .stdout("");
    assert_eq!(read_tree(&root), read_tree(&dest.join("album")));
}

/// A read link on argv is visible in `ps` while a long command runs (audit
/// F-13): the command says so; on stdin or in PEERDROP_LINK it does not.
#[test]
fn a_key_on_the_command_line_is_warned_about() {
    let (tmp, root) = fixture();
    let store = tmp.path().join("store");
    let link = seal(&[&root], &store);
    let unseal = |dest: &str| {
        let mut c = peerdrop();
        c.args(["unseal", "--from"])
            .arg(&store)
            .arg("-o")
            .arg(tmp.path().join(dest));
        c
    };
    let out = unseal("argv").arg(&link).output().unwrap();
    assert!(out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("warning: the link's key is on the command line"),
        "{e}"
    );
    assert!(
        !e.contains(link.split('#').nth(1).unwrap()),
        "the key was echoed: {e}"
    );
    for out in [
        unseal("stdin")
            .write_stdin(format!("{link}\n"))
            .output()
            .unwrap(),
        unseal("env").env("PEERDROP_LINK", &link).output().unwrap(),
    ] {
        assert!(out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!e.contains("warning"), "{e}");
    }
}

/// A hostile name in a folder being shared cannot drive the sharer's
/// terminal through an error message (audit F-16).
#[test]
fn names_with_control_characters_are_escaped_in_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("dir");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("a\x1b]0;owned\x07\x1b[2Jb"), b"x").unwrap();
    let out = peerdrop()
        .arg("seal")
        .arg(&root)
        .arg("--out")
        .arg(tmp.path().join("store"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !out.stderr.iter().any(|b| *b == 0x1b || *b == 0x07),
        "raw control bytes on stderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("cannot share") && e.contains("\\u{1b}"), "{e}");
}

#[test]
fn failures_exit_1_with_one_line_that_says_what_to_do() {
    let (tmp, root) = fixture();
    let store = tmp.path().join("store");
    let link = seal(&[&root], &store);
    let (body, key) = link.split_once('#').unwrap();
    let other_key = base32::encode(&[9u8; 32]);
    let dest = tmp.path().join("out");
    let cases = [
        (format!("{body}#{other_key}"), "wrong key"),
        (body.to_owned(), "this is a pin link"),
        (format!("{body}#{}", &key[..20]), "was the link cut"),
        ("http://example.com/x".to_owned(), "not a peerdrop link"),
        (
            link.replacen("peerdrop:1/", "peerdrop:7/", 1),
            "link version \"7\" is not supported",
        ),
    ];
    for (bad, want) in cases {
        let out = peerdrop()
            .args(["unseal", "--from"])
            .arg(&store)
            .arg("-o")
            .arg(&dest)
            // Not on argv, which adds a warning line (see above).
            .env("PEERDROP_LINK", &bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{bad}: {err}");
        assert!(!dest.exists() || final_names_in(&dest).is_empty());
    }
    // An existing destination file is never overwritten without --force.
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("album"), b"mine").unwrap();
    peerdrop()
        .args(["unseal", "--from"])
        .arg(&store)
        .arg("-o")
        .arg(&dest)
        .arg(&link)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("in the way"));
    assert_eq!(fs::read(dest.join("album")).unwrap(), b"mine");
}

#[test]
fn inspect_shows_everything_but_the_key() {
    let (tmp, root) = fixture();
    let link = seal(&[&root], &tmp.path().join("store"));
    let key = link.split_once('#').unwrap().1.to_owned();
    let text = peerdrop().args(["inspect", &link]).output().unwrap();
    assert!(text.status.success());
    let stdout = String::from_utf8(text.stdout).unwrap();
    assert!(stdout.contains("key:         present"));
    assert!(!stdout.contains(&key) && !String::from_utf8_lossy(&text.stderr).contains(&key));

    let json = peerdrop()
        .args(["inspect", "--json", "-"])
        .write_stdin(link.clone())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["has_key"], true);
    assert_eq!(v["pin_link"], link.split_once('#').unwrap().0);
    assert!(!String::from_utf8_lossy(&json.stdout).contains(&key));

    peerdrop()
        .args(["inspect", "--json"])
        .env("PEERDROP_LINK", link.split_once('#').unwrap().0)
        .assert()
        .success()
        .stdout(predicates::str::contains("\"kind\":\"pin\""));
    peerdrop()
        .args(["inspect", "peerdrop:1/zzzz"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("manifest id part of the link"));
}

#[test]
fn json_mode_emits_events_and_the_key_never_reaches_the_store() {
    let (tmp, root) = fixture();
    let store = tmp.path().join("store");
    let out = peerdrop()
        .arg("seal")
        .arg(&root)
        .arg("--json")
        .arg("--out")
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "link");
    assert_eq!(events.last().unwrap()["event"], "done");
    assert_eq!(events.last().unwrap()["files"], 3);
    let link = events[0]["link"].as_str().unwrap().to_owned();
    let key_b32 = link.split_once('#').unwrap().1;
    let key = base32::decode(key_b32).unwrap();
    // Canary: neither the key's bytes nor its text are stored anywhere.
    for (_, (is_dir, _, data)) in read_tree(&store) {
        if !is_dir {
            assert!(!data.windows(32).any(|w| w == key.as_slice()));
            assert!(!data.windows(key_b32.len()).any(|w| w == key_b32.as_bytes()));
        }
    }
    let dest = tmp.path().join("out");
    let out = peerdrop()
        .args(["unseal", "--json", "--from"])
        .arg(&store)
        .arg("-o")
        .arg(&dest)
        .env("PEERDROP_LINK", &link)
        .output()
        .unwrap();
    assert!(out.status.success());
    let last: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["event"], "done");
    assert_eq!(last["bytes"], 300_000 + 18);
    let err = peerdrop()
        .args(["unseal", "--json", "--from"])
        // A second unseal into the same folder now checks and keeps what is
        // there (exit 0), so the error comes from a chunk folder that is gone.
        .arg(store.join("missing"))
        .arg("-o")
        .arg(&dest)
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(1));
    let ev: serde_json::Value = serde_json::from_slice(&err.stdout).unwrap();
    assert_eq!(ev["event"], "error");
}

/// The core-size limit `/proc/PID/limits` shows for `pid`: (soft, hard).
fn core_limit(pid: u32) -> Option<(String, String)> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))?;
    let mut f = line["Max core file size".len()..].split_whitespace();
    Some((f.next()?.to_owned(), f.next()?.to_owned()))
}

/// Audit F-15: a process holding a key never writes it to a core file.
#[test]
fn a_running_command_writes_no_core_file() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // Raise this test's own soft limit so the child inherits a nonzero one:
    // only the binary's own start-up can then bring it to zero.
    let ours = getrlimit(Resource::Core);
    if ours.maximum == Some(0) {
        eprintln!("skipped: the hard core limit is already 0 here (the unit test in cli::harden still checks)");
        return;
    }
    setrlimit(
        Resource::Core,
        Rlimit {
            current: ours.maximum,
            maximum: ours.maximum,
        },
    )
    .unwrap();
    // `inspect` with no argument waits for the link on stdin: a live process
    // that has started but holds no key yet.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_peerdrop"))
        .arg("inspect")
        .env_remove("PEERDROP_LINK")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = None;
    while std::time::Instant::now() < deadline {
        seen = core_limit(pid);
        if seen.as_ref().is_some_and(|(s, h)| s == "0" && h == "0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        Some(("0".to_owned(), "0".to_owned())),
        "the child's core limit (soft, hard) within 10 s"
    );
}
