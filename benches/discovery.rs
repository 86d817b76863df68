//! Discovery latency, as two figures (no pass/fail targets):
//!
//! 1. DHT lookup across 50 loopback daemons: each daemon is bootstrapped only
//!    from the previous one, mDNS off, listening only on 127.0.0.1. The last
//!    one shares a 64 KiB file with `--no-hints`; a fresh fetcher daemon,
//!    bootstrapped only from daemon 0, fetches it. The whole `fetch` (lookup
//!    plus a one-chunk transfer) is timed, three times with fresh fetchers
//!    (each stopped before the next starts, so it cannot serve the next).
//!    The time to start all 50 daemons is printed too.
//! 2. `fetch` start to done for a 64 KiB file on a test LAN through mDNS
//!    alone: two hosts on a bridge in network namespaces made (and removed)
//!    by the bench, daemons with mDNS on inside the namespaces only. Needs
//!    root and iproute2; prints "skipped" otherwise. Each run uses a fresh
//!    fetcher daemon and output dir on host 2.
//!
//! Run with `cargo bench --bench discovery`. Figures go to stdout, progress
//! to stderr. Every process is killed by its own PID on drop; namespaces and
//! temp dirs are removed however the run ends.

#[allow(dead_code)]
#[path = "../tests/common/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "../tests/common/netns.rs"]
mod netns;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon::{err, fetch, Daemon};
use netns::Netns;

const NODES: usize = 50;
const RUNS: usize = 3;
const FILE_BYTES: usize = 64 << 10;

fn sub(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    tmp.path().join(name)
}

/// Deterministic, incompressible-looking content.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn median(v: &[Duration]) -> Option<Duration> {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied()
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn loopback_args(bootstrap: Option<&str>) -> Vec<String> {
    let mut a = vec![
        "--no-mdns".to_owned(),
        "--listen".into(),
        "/ip4/127.0.0.1/tcp/0".into(),
    ];
    if let Some(b) = bootstrap {
        assert!(b.starts_with("/ip4/127.0.0.1/"), "not loopback: {b}");
        a.push("--bootstrap".into());
        a.push(b.to_owned());
    }
    a
}

fn start(dir: &Path, args: &[String], ns: Option<&str>) -> Daemon {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_with(dir, &a, ns)
}

/// Runs one fetch; returns its time if it succeeded with the right bytes.
fn timed_fetch(dir: &Path, link: &str, out: &Path, name: &str, want: &[u8]) -> Option<Duration> {
    let t = Instant::now();
    let o = fetch(dir, link, out, &[]);
    let took = t.elapsed();
    if !o.status.success() {
        eprintln!("fetch failed after {}: {}", secs(took), err(&o).trim());
        return None;
    }
    match fs::read(out.join(name)) {
        Ok(got) if got == want => Some(took),
        _ => {
            eprintln!("fetch output differs from the shared file");
            None
        }
    }
}

fn report(label: &str, times: &[Option<Duration>]) {
    for (i, t) in times.iter().enumerate() {
        match t {
            Some(d) => println!("  {label} run {}: {}", i + 1, secs(*d)),
            None => println!("  {label} run {}: FAILED", i + 1),
        }
    }
    let ok: Vec<Duration> = times.iter().flatten().copied().collect();
    match median(&ok) {
        Some(m) => println!(
            "  {label} median: {} ({} of {} runs succeeded)",
            secs(m),
            ok.len(),
            times.len()
        ),
        None => println!("  {label} median: n/a (no run succeeded)"),
    }
}

fn dht() {
    println!("1. DHT lookup across {NODES} loopback daemons (mDNS off, 127.0.0.1 only)");
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Daemon> = Vec::with_capacity(NODES);
    let t = Instant::now();
    for i in 0..NODES {
        let prev = nodes.last().map(Daemon::addr);
        let args = loopback_args(prev.as_deref());
        nodes.push(start(&sub(&tmp, &format!("n{i}")), &args, None));
        if (i + 1) % 10 == 0 {
            eprintln!("  {} daemons up", i + 1);
        }
    }
    println!("  start {NODES} daemons: {}", secs(t.elapsed()));

    let name = "dht.bin";
    let f = sub(&tmp, name);
    let want = content(1, FILE_BYTES);
    fs::write(&f, &want).unwrap();
    let link = nodes[NODES - 1].json(&["share", "--no-hints", f.to_str().unwrap()])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = nodes[0].addr();

    let mut times = Vec::new();
    for r in 0..RUNS {
        let mut fetcher = start(
            &sub(&tmp, &format!("fetcher{r}")),
            &loopback_args(Some(&first)),
            None,
        );
        times.push(timed_fetch(
            &fetcher.dir,
            &link,
            &sub(&tmp, &format!("out{r}")),
            name,
            &want,
        ));
        fetcher.kill();
    }
    report("64 KiB fetch via DHT", &times);
    drop(nodes);
}

fn lan() {
    println!("2. fetch of 64 KiB over mDNS alone on a 2-host test LAN (network namespaces)");
    if !netns::available() {
        println!("  skipped: needs root and iproute2");
        return;
    }
    // Declared before the daemons, so dropped (namespaces removed) after them.
    let mut net = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let br = net.bridge("dbr");
    let hosts: Vec<String> = (1..=2)
        .map(|i| net.host_on(&br, &format!("dh{i}"), "eth0", &format!("10.231.9.{i}/24")))
        .collect();
    // mDNS on (the default); 0.0.0.0 here is the namespace's own interfaces.
    let listen = vec!["--listen".to_owned(), "/ip4/0.0.0.0/tcp/0".into()];
    let a = start(&sub(&tmp, "a"), &listen, Some(&hosts[0]));

    let name = "lan.bin";
    let f = sub(&tmp, name);
    let want = content(2, FILE_BYTES);
    fs::write(&f, &want).unwrap();
    let link = a.json(&["share", "--no-hints", f.to_str().unwrap()])["link"]
        .as_str()
        .unwrap()
        .to_owned();

    // A fresh fetcher daemon (fresh data dir) on host 2 for every run, so
    // each run discovers the sharer anew; the previous one is stopped first.
    let mut times = Vec::new();
    for r in 0..RUNS {
        let mut b = start(&sub(&tmp, &format!("b{r}")), &listen, Some(&hosts[1]));
        times.push(timed_fetch(
            &b.dir,
            &link,
            &sub(&tmp, &format!("out{r}")),
            name,
            &want,
        ));
        b.kill();
    }
    report("64 KiB fetch via mDNS", &times);
    drop(a);
}

fn main() {
    // `cargo bench` passes `--bench`; filters and other flags are ignored.
    dht();
    lan();
}
