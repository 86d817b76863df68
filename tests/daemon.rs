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
    let b = Daemon::start(&sub(&tmp, "B"));
    let mut data = fs::read(&f).unwrap();
    data[1 << 20] ^= 1;
    fs::write(&f, &data).unwrap();
    // Refused at once: serving checks the files itself, whatever `list`
    // has found so far.
    let out = sub(&tmp, "out");
    let o = fetch(&b.dir, &link, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("files changed since the link was made"),
        "{}",
        err(&o)
    );
    assert!(!out.join("report.bin").exists());
    // `list` says so once the background sweep has seen it (it pauses at
    // least 2 s between sweeps).
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.json(&["list"])["shares"][0]["state"] != "stale" {
        assert!(Instant::now() < deadline, "never listed stale");
        std::thread::sleep(Duration::from_millis(100));
    }
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
    // That was the CLI refusing a data dir that is not its user's. The
    // daemon checks the peer's uid itself too: a raw client whose effective
    // uid is another user's (this thread's only) is refused.
    let dir = a.dir.clone();
    let refused = std::thread::spawn(move || {
        use rustix::process::Uid;
        use std::io::Write;
        rustix::thread::set_thread_res_uid(None, Uid::from_raw(65534), None).unwrap();
        let s = std::os::unix::net::UnixStream::connect(dir.join("control.sock"));
        rustix::thread::set_thread_res_uid(None, Uid::ROOT, None).unwrap();
        let mut s = s.unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        read_failure(&s)
    })
    .join()
    .unwrap();
    assert_eq!(
        refused.code,
        peerdrop::daemon::control::ErrorCode::Denied,
        "{refused:?}"
    );
    assert!(refused.error.contains("belongs to another user"));
    // The owner still gets in, once the dir is private again (the CLI
    // refuses a data dir others may enter).
    fs::set_permissions(&a.dir, fs::Permissions::from_mode(0o700)).unwrap();
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
    // Every byte left the sharer at least once (it was the only holder);
    // receivers that fetch at the same time also serve each other (peer
    // exchange, PROTOCOL.md 5.4), so it may upload well under 20 copies.
    let up = a.json(&["status"])["uploaded_bytes"].as_u64().unwrap();
    assert!(
        up >= 6 << 20,
        "the sharer uploaded {up} bytes for 20 receivers of 6 MiB"
    );
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

/// Unmounts its tmpfs when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A small tmpfs mounted at `at` with `options`; `None` (the test skips)
/// without root or if it cannot be mounted.
fn small_tmpfs(at: &Path, options: &str) -> Option<Unmount> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return None;
    }
    fs::create_dir_all(at).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: could not mount a tmpfs");
        return None;
    }
    Some(Unmount(at.to_owned()))
}

#[test]
fn a_full_disk_fails_that_fetch_only_and_the_daemon_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let small = sub(&tmp, "small");
    let Some(_unmount) = small_tmpfs(&small, "size=4m") else {
        return;
    };
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

// --- The control socket under stress and attack (audit F-14, F-15, F-20).

fn pid_of(d: &Daemon) -> i32 {
    d.child.as_ref().unwrap().id() as i32
}

/// User plus system CPU seconds that process `pid` has used.
fn cpu_secs(pid: i32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime and
    // stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[0] + f[1]) as f64 / ticks
}

fn connect(dir: &Path) -> std::os::unix::net::UnixStream {
    let s = std::os::unix::net::UnixStream::connect(dir.join("control.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    s
}

/// Reads one answer line from `s` and returns it as an error line.
fn read_failure(s: &std::os::unix::net::UnixStream) -> peerdrop::daemon::control::Failure {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn a_connection_that_sends_nothing_is_told_so_and_closed() {
    use peerdrop::daemon::control::ErrorCode;
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    let mut s = connect(&a.dir);
    let asked = Instant::now();
    let f = read_failure(&s);
    assert_eq!(f.code, ErrorCode::Timeout, "{f:?}");
    assert!(asked.elapsed() < Duration::from_secs(20));
    assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0, "then closed");
    assert_eq!(a.json(&["status"])["ok"], true);
}

#[test]
fn control_connections_beyond_the_cap_wait_their_turn() {
    use peerdrop::daemon::control::ErrorCode;
    const CAP: usize = 64;
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    // CAP + 16 clients that send nothing: the daemon holds at most CAP of
    // them at once, so the last 16 are only answered (timed out) after the
    // first ones are.
    let start = Instant::now();
    let readers: Vec<_> = (0..CAP + 16)
        .map(|_| {
            let s = connect(&a.dir);
            std::thread::spawn(move || {
                let f = read_failure(&s);
                assert_eq!(f.code, ErrorCode::Timeout, "{f:?}");
                start.elapsed()
            })
        })
        .collect();
    let mut at: Vec<Duration> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    at.sort();
    let first = at[0];
    let in_first_wave = at.iter().filter(|t| **t < first + (first / 2)).count();
    assert!(
        in_first_wave <= CAP,
        "{in_first_wave} connections were served at once (answers at {at:?})"
    );
    assert_eq!(a.json(&["status"])["ok"], true);
}

#[test]
fn the_daemon_backs_off_instead_of_spinning_when_out_of_descriptors() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    let pid = pid_of(&a);
    // peerdrop marks itself not dumpable (no core files, SECURITY.md), so
    // only root may list its descriptors.
    let open = match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(fds) => fds.count() as u64,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: counting a peerdrop process's descriptors needs root");
            return;
        }
        Err(e) => panic!("/proc/{pid}/fd: {e}"),
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Room for two more descriptors only; the connections after those wait
    // in the backlog, so every accept() fails with EMFILE.
    let mut tight = libc::rlimit {
        rlim_cur: open + 2,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on our own child, with valid pointers.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) },
        0
    );
    tight.rlim_max = old.rlim_max;
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &tight, std::ptr::null_mut()) },
        0
    );
    let conns: Vec<_> = (0..8).map(|_| connect(&a.dir)).collect();
    // Measure its CPU over a window shorter than the request timeout (so
    // the two it accepted are still held).
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_secs(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) },
        0
    );
    drop(conns);
    assert!(
        used < 0.25 * wall,
        "the daemon used {used:.2} s of CPU in {wall:.2} s while out of descriptors"
    );
    // And it serves again once descriptors are back.
    assert_eq!(a.json(&["status"])["ok"], true);
}

/// A listener planted at `dir/control.sock` by someone else; returns what
/// it received once `done` is set.
fn planted_listener(
    dir: &Path,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u8>> {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let l = std::os::unix::net::UnixListener::bind(dir.join("control.sock")).unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut line = [0u8; 4096];
                    let n = s.read(&mut line).unwrap_or(0);
                    got.extend_from_slice(&line[..n]);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        got
    })
}

fn a_read_link() -> String {
    use peerdrop::crypto::ShareKey;
    use peerdrop::manifest::ManifestId;
    peerdrop::link::Link::new(
        ManifestId([7; 32]),
        Vec::new(),
        Some(ShareKey::generate().unwrap()),
    )
    .unwrap()
    .to_uri_string()
}

#[test]
fn the_cli_sends_no_link_into_a_data_dir_that_is_not_private_and_its_own() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let dir = sub(&tmp, "shared-dir");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let planted = planted_listener(&dir, done.clone());
    let o = fetch(&dir, &a_read_link(), &sub(&tmp, "out"), &[]);
    let stderr = err(&o);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // Mode 0700 but another user's: refused too.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    }
    let o2 = root.then(|| fetch(&dir, &a_read_link(), &sub(&tmp, "out"), &[]));
    done.store(true, Ordering::SeqCst);
    let got = planted.join().unwrap();
    assert!(
        got.is_empty(),
        "the CLI sent {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr.contains("mode is 755"), "{stderr}");
    if let Some(o2) = o2 {
        assert_eq!(o2.status.code(), Some(1));
        assert!(err(&o2).contains("uid 65534"), "{}", err(&o2));
    }
}

#[test]
fn the_cli_sends_no_link_to_a_socket_served_by_another_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run a daemon as another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    // Another user's daemon, in a dir of theirs.
    let theirs = sub(&tmp, "theirs");
    fs::create_dir_all(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let child = Command::new(BIN)
        .args([
            "daemon",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data-dir",
        ])
        .arg(&theirs)
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _theirs = Daemon {
        child: Some(child),
        dir: theirs.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !theirs.join("control.sock").exists() {
        assert!(Instant::now() < deadline, "their daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Our private data dir, whose control.sock leads to their daemon.
    let ours = sub(&tmp, "ours");
    fs::create_dir_all(&ours).unwrap();
    fs::set_permissions(&ours, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(theirs.join("control.sock"), ours.join("control.sock")).unwrap();
    let o = fetch(&ours, &a_read_link(), &sub(&tmp, "out"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("served by uid 65534"), "{}", err(&o));
}

#[test]
fn the_daemon_refuses_to_share_its_own_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    fs::write(sub(&tmp, "notes.txt"), b"mine").unwrap();
    // The folder holding the data dir, and a file inside it.
    for p in [tmp.path().to_path_buf(), a.dir.join("state.json")] {
        let o = cli(&a.dir, &["share", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "shared {}", p.display());
        assert!(err(&o).contains("data dir"), "{}", err(&o));
    }
    assert_eq!(a.json(&["list"])["shares"].as_array().unwrap().len(), 0);
    // A folder beside it is fine.
    a.share(&sub(&tmp, "notes.txt"));
}

// --- The job queue (issue 12).

/// `n` small files shared by `a` through its control socket, `threads` at
/// a time; their read links, in order.
fn share_many(a: &Daemon, dir: &Path, n: usize, threads: usize) -> Vec<String> {
    use peerdrop::daemon::control::{call, ShareRequest};
    fs::create_dir_all(dir).unwrap();
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| {
            let p = dir.join(format!("f{i:05}.txt"));
            fs::write(&p, format!("small file {i}\n").repeat(i % 7 + 1)).unwrap();
            p
        })
        .collect();
    let mut links = vec![String::new(); n];
    std::thread::scope(|s| {
        for (t, chunk) in links.chunks_mut(n.div_ceil(threads)).enumerate() {
            let paths = &paths;
            let adir = a.dir.clone();
            s.spawn(move || {
                let base = t * n.div_ceil(threads);
                for (j, link) in chunk.iter_mut().enumerate() {
                    let req = ShareRequest {
                        paths: vec![paths[base + j].clone()],
                        hints: true,
                        expires: None,
                        max_downloads: None,
                    };
                    *link = call(&adir, req, |_, _| {}).unwrap().link;
                }
            });
        }
    });
    links
}

/// Polls `list` until every fetch is done (none may fail); returns it.
fn wait_all_fetched(d: &Daemon, n: usize, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let l = d.json(&["list"]);
        let fetches = l["fetches"].as_array().unwrap();
        for f in fetches {
            assert!(
                f["status"]["state"] != "failed" && f["status"]["state"] != "cancelled",
                "{f}"
            );
        }
        let done = fetches
            .iter()
            .filter(|f| f["status"]["state"] == "done")
            .count();
        if done == n {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {n} fetches done after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_thousand_queued_background_fetches_from_one_source_all_complete() {
    use peerdrop::daemon::control::{call, FetchRequest};
    const N: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    let b = Daemon::start(&sub(&tmp, "B"));
    let input = sub(&tmp, "in");
    let links = share_many(&a, &input, N, 8);
    let out = sub(&tmp, "out");
    fs::create_dir_all(&out).unwrap();
    // All queued at once (detached), far more than run at a time.
    for link in &links {
        let req = FetchRequest {
            link: link.clone(),
            out: out.clone(),
            force: false,
            merge: false,
            peers: Vec::new(),
            detach: true,
            ..FetchRequest::default()
        };
        call(&b.dir, req, |_, _| {}).unwrap();
    }
    let status = b.json(&["status"]);
    assert!(
        status["transfers"].as_array().unwrap().len() <= 16,
        "at most max_jobs run at once: {status}"
    );
    wait_all_fetched(&b, N, Duration::from_secs(240));
    for i in 0..N {
        let name = format!("f{i:05}.txt");
        assert_eq!(
            fs::read(out.join(&name)).unwrap(),
            fs::read(input.join(&name)).unwrap()
        );
    }
    assert_eq!(names_in(&out).len(), N, "no staging folder left");
}

#[test]
fn a_cancelled_fetch_leaves_no_partial_data_and_a_later_fetch_starts_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let (_a, f, link) = slow_share(&tmp, 4 << 20, 6);
    let b = Daemon::start(&sub(&tmp, "B"));
    let out = sub(&tmp, "out");
    let o = fetch(&b.dir, &link, &out, &["--detach"]);
    assert!(o.status.success(), "{}", err(&o));
    wait_for_bytes(&b, 2 << 20);
    assert!(!names_in(&out).is_empty(), "the fetch has staged data");
    let id = b.json(&["list"])["fetches"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = b.json(&["cancel", &id[..12]]);
    assert_eq!(r["status"]["state"], "cancelled", "{r}");
    assert_eq!(
        names_in(&out),
        Vec::<String>::new(),
        "nothing of the cancelled fetch is left"
    );
    let l = b.json(&["list"]);
    assert_eq!(l["fetches"][0]["status"]["state"], "cancelled", "{l}");
    assert!(b.json(&["status"])["transfers"]
        .as_array()
        .unwrap()
        .is_empty());
    // Fetching the link again starts from nothing and completes.
    let o = cli(
        &b.dir,
        &["fetch", "--json", "-o", out.to_str().unwrap(), &link],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        fs::read(out.join("movie.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
}

/// Polls `list` until `pred` holds for its fetches.
fn wait_fetches(d: &Daemon, what: &str, pred: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = d.json(&["list"]);
        if pred(l["fetches"].as_array().unwrap()) {
            return l;
        }
        assert!(Instant::now() < deadline, "never {what}: {l}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn state_of<'a>(fetches: &'a [Value], id: &str) -> &'a Value {
    &fetches.iter().find(|f| f["id"] == id).unwrap()["status"]["state"]
}

#[test]
fn the_queue_runs_in_order_takes_priorities_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, f, slow) = slow_share(&tmp, 2 << 20, 7);
    let bdir = sub(&tmp, "B");
    fs::create_dir_all(&bdir).unwrap();
    fs::write(bdir.join("peerdrop.toml"), "max_jobs = 1\n").unwrap();
    let mut b = Daemon::start(&bdir);
    let out = sub(&tmp, "out");
    let o = fetch(&b.dir, &slow, &out, &["--detach"]);
    assert!(o.status.success(), "{}", err(&o));
    wait_for_bytes(&b, 1 << 20);
    // Three more, queued behind the slow one (one job at a time).
    let mut ids = Vec::new();
    for i in 0..3 {
        let p = sub(&tmp, &format!("small{i}.bin"));
        // Half a second each at A's rate: the order shows in `list`.
        fs::write(&p, bytes(20 + i, 1 << 20)).unwrap();
        let link = a.share(&p);
        let o = fetch(&b.dir, &link, &out, &["--detach"]);
        assert!(o.status.success(), "{}", err(&o));
        ids.push(
            b.json(&["list"])["fetches"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let l = b.json(&["list"]);
    let fetches = l["fetches"].as_array().unwrap();
    for id in &ids {
        assert_eq!(state_of(fetches, id), "queued", "{l}");
    }
    assert_eq!(b.json(&["status"])["queued"], 3);
    // The last one goes first.
    let r = b.json(&["priority", &ids[2][..10]]);
    assert_eq!(r["status"]["state"], "queued", "{r}");
    // Priority of a running job is refused.
    let slow_id = fetches[0]["id"].as_str().unwrap().to_owned();
    let o = cli(&b.dir, &["priority", &slow_id[..10]]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("running"), "{}", err(&o));

    // A restart keeps the queue (and the slow one resumes first).
    b.stop();
    let b = Daemon::start(&bdir);
    let l = b.json(&["list"]);
    let fetches = l["fetches"].as_array().unwrap();
    assert_eq!(fetches.len(), 4, "{l}");
    for id in &ids {
        assert_eq!(state_of(fetches, id), "queued", "{l}");
    }
    assert_eq!(state_of(fetches, &slow_id), "running", "{l}");
    // Cancelling the slow one frees the slot: the prioritised one runs
    // next, then the others in their order.
    let r = b.json(&["cancel", &slow_id[..10], "--keep"]);
    assert_eq!(r["status"]["state"], "cancelled", "{r}");
    let l = wait_fetches(&b, "the prioritised fetch done", |fs| {
        state_of(fs, &ids[2]) == "done"
    });
    let fetches = l["fetches"].as_array().unwrap();
    assert_ne!(state_of(fetches, &ids[1]), "done", "{l}");
    wait_fetches(&b, "all small fetches done", |fs| {
        ids.iter().all(|id| state_of(fs, id) == "done")
    });
    // The kept partial data lets a retry resume; it completes.
    let r = b.json(&["retry", &slow_id[..10]]);
    assert_eq!(r["status"]["state"], "queued", "{r}");
    wait_fetches(&b, "the retried fetch done", |fs| {
        state_of(fs, &slow_id) == "done"
    });
    assert_eq!(
        fs::read(out.join("movie.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
}

#[test]
fn a_pin_into_a_too_small_file_system_fails_at_once_and_nothing_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let small = sub(&tmp, "B");
    let Some(_unmount) = small_tmpfs(&small, "size=4m,mode=0700") else {
        return;
    };
    let f = sub(&tmp, "big.bin");
    fs::write(&f, bytes(11, 8 << 20)).unwrap();
    let a = Daemon::start(&sub(&tmp, "A"));
    let link = a.share(&f);
    let pin_link = link.split('#').next().unwrap().to_owned();
    let mut b = Daemon::start(&small);
    let o = cli(&b.dir, &["pin", &pin_link]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("not enough free space"), "{}", err(&o));
    let l = b.json(&["list"]);
    assert_eq!(l["pins"][0]["status"]["state"], "failed", "{l}");
    assert!(b.json(&["status"])["transfers"]
        .as_array()
        .unwrap()
        .is_empty());
    // Checked up front: the store holds far less than the share.
    let stored = Command::new("du")
        .args(["-sk"])
        .arg(small.join("store"))
        .output()
        .unwrap();
    let kib: u64 = String::from_utf8_lossy(&stored.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(kib < 1024, "{kib} KiB stored before refusing");
    b.stop();
}

/// Runs `c` in a session of its own, so it has no terminal to ask a
/// password on even when the tests run in one.
fn without_terminal(c: &mut Command) -> &mut Command {
    // SAFETY: setsid(2) only, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    }
}

/// `peerdrop fetch` run with `env` set, the link in PEERDROP_LINK.
fn fetch_env(dir: &Path, link: &str, out: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.arg("fetch")
        .arg("-o")
        .arg(out)
        .arg("--data-dir")
        .arg(dir)
        .env("PEERDROP_LINK", link)
        .env_remove("PEERDROP_PASSWORD")
        .envs(env.iter().copied());
    without_terminal(&mut c);
    bounded(c)
}

/// Whether `needle` appears in any file under `dir`.
fn found_in(dir: &Path, needle: &[u8]) -> Option<String> {
    read_tree(dir)
        .into_iter()
        .find(|(_, (is_dir, _, data))| !is_dir && data.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p)
}

#[test]
fn a_password_link_goes_through_the_daemon_and_a_wrong_password_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "album");
    tree_fixture(&root);
    let a = Daemon::start(&sub(&tmp, "A"));
    let b = Daemon::start(&sub(&tmp, "B"));
    let password = "a long pass phrase, 7 words";
    let pw_file = sub(&tmp, "pw");
    fs::write(&pw_file, format!("{password}\n")).unwrap();
    let share = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("share")
            .arg(&root)
            .args(args)
            .args(["--json", "--data-dir"])
            .arg(&a.dir)
            .env_remove("PEERDROP_PASSWORD");
        without_terminal(&mut c);
        bounded(c)
    };
    let o = share(&["--password-file", pw_file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    let reply: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    let link = reply["link"].as_str().unwrap().to_owned();
    assert!(link.starts_with("peerdrop:p1/"), "{link}");
    // `--password` with no file, no PEERDROP_PASSWORD and no terminal
    // shares nothing.
    let o = share(&["--password"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("no terminal"), "{}", err(&o));
    assert_eq!(a.json(&["list"])["shares"].as_array().unwrap().len(), 1);

    // The right password (from the environment) fetches the share.
    let out = sub(&tmp, "out");
    let o = fetch_env(&b.dir, &link, &out, &[("PEERDROP_PASSWORD", password)]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(read_tree(&root), read_tree(&out.join("album")));

    // A wrong one fails in the CLI, at once and saying so; no job starts.
    let out2 = sub(&tmp, "out2");
    let t = Instant::now();
    let o = fetch_env(&b.dir, &link, &out2, &[("PEERDROP_PASSWORD", "guess")]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("wrong password"), "{}", err(&o));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(!out2.exists(), "nothing written");
    assert_eq!(b.json(&["list"])["fetches"].as_array().unwrap().len(), 1);
    // No password and no terminal: told how to give one.
    let o = fetch_env(&b.dir, &link, &out2, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("PEERDROP_PASSWORD"), "{}", err(&o));
    // Given the password link itself, the daemon refuses it: the password
    // is unlocked by the client, never sent.
    let line = format!(
        r#"{{"version":1,"cmd":"fetch","link":"{link}","out":"{}"}}"#,
        out2.display()
    );
    let lines = raw_request(&b.dir, &line);
    assert!(lines[0].contains("password-protected"), "{lines:?}");
    assert!(lines[0].contains(r#""code":"invalid""#), "{lines:?}");

    // The password is in neither daemon's data dir.
    for d in [&a.dir, &b.dir] {
        assert_eq!(found_in(d, password.as_bytes()), None, "{}", d.display());
    }
    drop(b);
}

/// A running daemon fetch serves what it verified (issue 11): daemon C,
/// given only daemon B as a source, gets chunks from B while B is still
/// fetching them from a slow sharer A (24 MiB at 2 MiB/s: about 12 s).
/// Every copy is byte-identical.
#[test]
fn a_daemon_still_fetching_serves_what_it_verified() {
    served_while_running("fetches");
}

/// The same for a pin: B pins the share (never holding its key) and
/// serves what it stored while it pins.
#[test]
fn a_daemon_still_pinning_serves_what_it_stored() {
    served_while_running("pins");
}

/// Daemon B runs a job of `kind` ("fetches" or "pins") for a share of
/// slow daemon A; daemon C, given only B, fetches it and must have got
/// chunks from B while B's job was still running.
fn served_while_running(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, f, _) = slow_share(&tmp, 2 << 20, 4);
    // A link with no hint: each fetcher is told its source.
    let link = a.json(&["share", "--no-hints", f.to_str().unwrap()])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = Daemon::start(&sub(&tmp, "B"));
    let c = Daemon::start(&sub(&tmp, "C"));
    let (out_b, out_c) = (sub(&tmp, "out-b"), sub(&tmp, "out-c"));
    let o = if kind == "pins" {
        cli(&b.dir, &["pin", "--detach", &link, "--peer", &a.addr()])
    } else {
        fetch(&b.dir, &link, &out_b, &["--detach", "--peer", &a.addr()])
    };
    assert!(o.status.success(), "{}", err(&o));
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.json(&["list"])[kind][0]["bytes"].as_u64().unwrap_or(0) < 4 << 20 {
        assert!(Instant::now() < deadline, "B made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = fetch(&c.dir, &link, &out_c, &["--detach", "--peer", &b.addr()]);
    assert!(o.status.success(), "{}", err(&o));
    // B uploads to C while its own job runs.
    let (uploaded, state) = loop {
        let uploaded = b.json(&["status"])["uploaded_bytes"].as_u64().unwrap();
        let l = b.json(&["list"]);
        if uploaded >= 1 << 20 {
            break (uploaded, l[kind][0]["status"]["state"].clone());
        }
        assert!(Instant::now() < deadline, "B served nothing: {l}");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("B had uploaded {uploaded} bytes, its job {state}");
    assert_eq!(state, "running", "B served only once done");
    wait_for(&b, kind, "done");
    wait_for(&c, "fetches", "done");
    let want = fs::read(&f).unwrap();
    assert!(fs::read(out_c.join("movie.bin")).unwrap() == want);
    if kind == "fetches" {
        assert!(fs::read(out_b.join("movie.bin")).unwrap() == want);
    }
}
