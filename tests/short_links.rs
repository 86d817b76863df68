//! Links without peer hints, fetched by the one-shot `peerdrop receive` on
//! loopback with mDNS off: found through the DHT from one `--bootstrap`
//! peer; and a fetch that finds no source says so, on stderr (not a
//! terminal here) and as `--json` `waiting` events, at least every 3 s.
//! (The LAN case, over mDNS, is in tests/lan_netns.rs.)

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;

/// The most time allowed between two "still waiting" reports.
const WAITING_GAP: Duration = Duration::from_secs(3);

/// Lines of output, each with when it arrived.
type Lines = Vec<(Duration, String)>;

/// Shares `f` in `d` without hints; the link.
fn hintless_share(d: &Daemon, f: &std::path::Path) -> String {
    let link = d.json(&["share", "--no-hints", f.to_str().unwrap()])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = link.split('#').next().unwrap();
    assert_eq!(body.matches('/').count(), 1, "hints in {link}");
    link
}

/// `receive`'s arguments: mDNS off, one bootstrap peer.
fn receive_args(boot: &str, out: &std::path::Path, wait: u32, json: bool) -> Vec<String> {
    let mut a: Vec<String> = ["--no-mdns", "--bootstrap", boot, "-o"]
        .map(str::to_owned)
        .into();
    a.push(out.to_str().unwrap().to_owned());
    a.push("--wait".into());
    a.push(wait.to_string());
    if json {
        a.push("--json".into());
    }
    a
}

/// Runs `peerdrop receive` on `link` with `args`, recording when each line
/// of stdout and stderr arrived (from the start); killed by its PID after
/// `limit`.
fn receive_timed(link: &str, args: &[String], limit: Duration) -> (ExitStatus, Lines, Lines) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .arg("receive")
        .args(args)
        .env("PEERDROP_LINK", link)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let lines = |r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            BufReader::new(r)
                .lines()
                .map_while(Result::ok)
                .map(|l| (start.elapsed(), l))
                .collect::<Vec<_>>()
        })
    };
    let out = lines(Box::new(child.stdout.take().unwrap()));
    let err = lines(Box::new(child.stderr.take().unwrap()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(limit) {
        Ok(s) => s.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("receive did not finish within {limit:?}");
        }
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Asserts that `times` (of "waiting" reports) start within `first` and are
/// never more than [`WAITING_GAP`] apart, up to `end`.
fn assert_regular(times: &[Duration], first: Duration, end: Duration, what: &str) {
    assert!(!times.is_empty(), "no {what} at all");
    assert!(times[0] <= first, "the first {what} came at {:?}", times[0]);
    let mut gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.push(end.saturating_sub(*times.last().unwrap()));
    let worst = gaps.iter().max().unwrap();
    assert!(
        *worst <= WAITING_GAP,
        "{what} {:?} apart at worst; times {times:?}, end {end:?}",
        worst
    );
}

#[test]
fn a_hintless_link_is_received_through_the_dht_from_one_bootstrap_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let boot = Daemon::start(&sub(&tmp, "boot"));
    let boot_addr = boot.addr();
    let sharer = Daemon::start_with(
        &sub(&tmp, "sharer"),
        &[
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &boot_addr,
        ],
        None,
    );
    let f = sub(&tmp, "short.bin");
    fs::write(&f, bytes(11, 1 << 20)).unwrap();
    let link = hintless_share(&sharer, &f);

    let out = sub(&tmp, "out");
    let t = Instant::now();
    let (status, _, err) = receive_timed(
        &link,
        &receive_args(&boot_addr, &out, 60, false),
        Duration::from_secs(120),
    );
    let errs: Vec<&str> = err.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "{errs:#?}");
    assert_eq!(
        fs::read(out.join("short.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
    eprintln!(
        "one-shot receive of a hintless link via the DHT (1 MiB, 3 nodes on loopback): {:.2}s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn a_fetch_with_no_source_says_so_every_few_seconds_on_stderr_and_in_json() {
    let tmp = tempfile::tempdir().unwrap();
    let boot = Daemon::start(&sub(&tmp, "boot"));
    let boot_addr = boot.addr();
    // Shared by a daemon on no network: nobody can find it.
    let hermit = Daemon::start(&sub(&tmp, "hermit"));
    let f = sub(&tmp, "nowhere.bin");
    fs::write(&f, b"nobody has this").unwrap();
    let link = hintless_share(&hermit, &f);
    let out = sub(&tmp, "out");
    // The first report may wait for the process and its node to start.
    let first = Duration::from_secs(6);

    let a = receive_args(&boot_addr, &out, 9, false);
    let (status, _, err) = receive_timed(&link, &a, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{err:#?}");
    let end = err.last().unwrap().0;
    let waits: Vec<Duration> = err
        .iter()
        .filter(|(_, l)| l.contains("cannot reach the sender yet"))
        .map(|(t, _)| *t)
        .collect();
    assert_regular(&waits, first, end, "waiting lines on stderr");
    assert!(waits.len() >= 3, "{err:#?}");
    assert!(
        err.iter()
            .any(|(_, l)| l.contains("run the same command again")),
        "{err:#?}"
    );

    let a = receive_args(&boot_addr, &out, 9, true);
    let (status, stdout, err) = receive_timed(&link, &a, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{err:#?}");
    let events: Vec<(Duration, serde_json::Value)> = stdout
        .iter()
        .map(|(t, l)| (*t, serde_json::from_str(l).unwrap()))
        .collect();
    let end = events.last().unwrap().0;
    let waits: Vec<Duration> = events
        .iter()
        .filter(|(_, v)| v["event"] == "waiting")
        .map(|(t, _)| *t)
        .collect();
    assert_regular(&waits, first, end, "waiting events");
    for (_, v) in events.iter().filter(|(_, v)| v["event"] == "waiting") {
        assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
        assert!(v["secs_left"].as_u64().is_some_and(|s| s <= 9), "{v}");
    }
    // Nothing on stderr is a waiting line: in JSON mode they are events.
    assert!(
        !err.iter()
            .any(|(_, l)| l.contains("cannot reach the sender yet")),
        "{err:#?}"
    );
    drop((boot, hermit));
}
