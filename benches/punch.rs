//! Hole punching between two homes behind cone NATs: success rate and time
//! to a direct connection over independent attempts (no pass/fail target).
//!
//! The world is the one tests/nat_netns.rs asserts on (tests/common/nat.rs):
//! three daemons on a "public" segment in network namespaces, home A behind
//! its own NAT router (masquerade keeping ports, inbound packets dropped
//! unless they answer something the home sent), with a daemon that knows one
//! public daemon as bootstrap and reserves two circuits by AutoRelay. Nobody
//! names a relay. Each attempt starts a fresh daemon in home B (new data dir,
//! so a new peer id and new ports: nothing of an earlier punch is reused),
//! waits until it too holds two circuits (a home daemon that has been up a
//! while), shares a new 1 MiB file in home A and fetches it in home B with
//! the link alone. An attempt succeeds when the fetch completes with the
//! right bytes, the fetcher's `status` shows the connection to the sharer
//! direct, and the sharer served none of this attempt's data streams
//! through a relay (the checks of the cone test).
//!
//! Time to direct is read from the fetcher's log, whose lines carry
//! microsecond timestamps from one clock: from the fetch's first
//! "looking for sources" line (written just before it dials the link's
//! hints) to the first connection to the sharer that is not a
//! `/p2p-circuit`. The part of it after the relayed connection came up is
//! printed too: that is the punch itself (DCUtR's exchange and both dials).
//! For scale, the machine's own TCP connect round trip on 127.0.0.1 is
//! measured in the same run.
//!
//! Run with `cargo bench --bench punch` as root (iproute2 and iptables);
//! prints "skipped" otherwise. `PUNCH_ATTEMPTS` changes the number of
//! attempts (default 20). Figures go to stdout, progress to stderr. Every
//! process is killed by its own PID on drop; namespaces and temp dirs are
//! removed however the run ends. Bounded: each fetcher gets 90 s to reserve
//! its circuits, each fetch 120 s, the whole run stops starting attempts
//! after 15 minutes.

mod common;
#[path = "../tests/common/mod.rs"]
mod world;

use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use world::daemon::{cli, err, fetch, Daemon, BIN};
use world::nat::{circuits, log_of, served_streams, World};
use world::netns::Nat;

const FILE_BYTES: usize = 1 << 20;
/// How long a fresh fetcher may take to reserve its two circuits.
const READY_SECS: u64 = 90;
/// No attempt is started after this much time.
const RUN_LIMIT: Duration = Duration::from_secs(15 * 60);
/// The fetcher's log: the fetch's dial rounds and every connection, with
/// its remote address.
const FETCHER_LOG: &str = "info,peerdrop::net::fetch::sources=debug,peerdrop::net::node::event_loop=debug,libp2p_kad=warn";

/// What one attempt found.
struct Attempt {
    /// Why it did not count as a success, if it did not.
    failure: Option<String>,
    /// First dial to the first direct connection to the sharer.
    to_direct: Option<Duration>,
    /// Relayed connection up to the first direct connection.
    punch: Option<Duration>,
    /// The direct connection's transport ("QUIC" or "TCP").
    transport: Option<&'static str>,
    /// How long the fresh fetcher took to reserve its circuits.
    ready: Duration,
    /// The whole `fetch` command.
    fetch: Duration,
}

/// A fresh daemon in home B (namespace `ns`), bootstrapped from
/// `bootstrap` alone, logging [`FETCHER_LOG`] to `<dir>.log`.
fn fetcher(dir: &Path, ns: &str, bootstrap: &str) -> Daemon {
    fs::create_dir_all(dir).unwrap();
    let log = fs::File::create(dir.with_extension("log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "daemon", "--no-mdns"])
        .args(["--listen", "/ip4/0.0.0.0/tcp/0"])
        .args(["--listen", "/ip4/0.0.0.0/udp/0/quic-v1"])
        .args(["--bootstrap", bootstrap, "--data-dir"])
        .arg(dir)
        .env_remove("PEERDROP_DATA_DIR")
        .env("RUST_LOG", FETCHER_LOG)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon {
        child: Some(child),
        dir: dir.to_owned(),
    }
}

/// Waits (up to `secs`) until `d` answers and holds two circuit
/// reservations.
fn wait_circuits(d: &Daemon, secs: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let o = cli(&d.dir, &["status", "--json"]);
        if o.status.success() {
            let text = String::from_utf8_lossy(&o.stdout);
            let st: serde_json::Value = text
                .lines()
                .last()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_default();
            if circuits(&st) >= 2 {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("the fetcher reserved no two circuits in {secs}s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seconds since midnight of a log line's RFC 3339 UTC timestamp
/// ("2026-01-02T03:04:05.678901Z …"): every line compared is from one
/// short attempt.
fn stamp(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let time = ts.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The span from `from` to `to`, across midnight if need be.
fn between(from: f64, to: f64) -> Duration {
    let d = if to < from {
        to + 86_400.0 - from
    } else {
        to - from
    };
    Duration::from_secs_f64(d)
}

/// From the fetcher's log: (first dial, relayed connection to `sharer`,
/// first direct connection to `sharer` and its address), as timestamps.
fn dial_marks(log: &str, sharer: &str) -> (Option<f64>, Option<f64>, Option<(f64, String)>) {
    let mut dial = None;
    let mut relayed = None;
    let mut direct = None;
    let peer = format!("peer={sharer}");
    for l in log.lines() {
        if dial.is_none() && l.contains("looking for sources") {
            dial = stamp(l);
        }
        if !(l.contains(" connected ") && l.contains(&peer)) {
            continue;
        }
        let addr = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_default();
        if addr.contains("/p2p-circuit") {
            relayed = relayed.or(stamp(l));
        } else if direct.is_none() {
            direct = stamp(l).map(|t| (t, addr.to_owned()));
        }
    }
    (dial, relayed, direct)
}

/// One attempt with a fresh fetcher in home B; `n` names its files.
fn attempt(w: &World, sharer: &str, n: usize) -> Attempt {
    let dir = world::sub(&w.tmp, &format!("fetcher{n}"));
    let mut b = fetcher(&dir, &w.hosts[1], &w.public_addrs[1]);
    let t = Instant::now();
    let ready = wait_circuits(&b, READY_SECS);
    let mut a = Attempt {
        failure: ready.err(),
        to_direct: None,
        punch: None,
        transport: None,
        ready: t.elapsed(),
        fetch: Duration::ZERO,
    };
    if a.failure.is_some() {
        return a;
    }
    let name = format!("punch{n}.bin");
    let f = world::sub(&w.tmp, &name);
    let want = world::bytes(n as u64, FILE_BYTES);
    fs::write(&f, &want).unwrap();
    let link = w.a.share(&f);
    let out = world::sub(&w.tmp, &format!("out{n}"));
    let (_, relayed_before) = served_streams(&w.a.dir);
    let t = Instant::now();
    let o = fetch(&b.dir, &link, &out, &[]);
    a.fetch = t.elapsed();
    let (_, relayed_after) = served_streams(&w.a.dir);

    let (dial, relayed, direct) = dial_marks(&log_of(&b.dir), sharer);
    if let (Some(d), Some((t, addr))) = (dial, &direct) {
        a.to_direct = Some(between(d, *t));
        a.transport = Some(if addr.contains("/quic") {
            "QUIC"
        } else {
            "TCP"
        });
    }
    if let (Some(r), Some((t, _))) = (relayed, &direct) {
        a.punch = Some(between(r, *t));
    }
    a.failure = if !o.status.success() {
        Some(format!("fetch failed: {}", err(&o).trim()))
    } else if fs::read(out.join(&name)).ok().as_deref() != Some(&want[..]) {
        Some("the fetched file differs".into())
    } else {
        let st = b.json(&["status"]);
        let conn = st["connected"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["peer"] == sharer).cloned());
        match conn {
            None => Some("the fetcher is not connected to the sharer".into()),
            Some(c) if c["relayed"] != false => Some(format!("the connection stayed relayed: {c}")),
            Some(_) if relayed_after > relayed_before => Some(format!(
                "the sharer served {} data stream(s) through a relay",
                relayed_after - relayed_before
            )),
            Some(_) if a.to_direct.is_none() => Some(
                "direct, but the fetcher's log shows no first dial or direct connection".into(),
            ),
            Some(_) => None,
        }
    };
    b.kill();
    a
}

/// Sorted copies: (median, p90, max), nearest rank.
fn spread(v: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    let mut s = v.to_vec();
    s.sort();
    let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    (!s.is_empty()).then(|| (rank(0.5), rank(0.9), s[s.len() - 1]))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn report_spread(label: &str, v: &[Duration]) {
    match spread(v) {
        Some((med, p90, max)) => println!(
            "  {label}: median {}, p90 {}, max {} ({} attempts)",
            ms(med),
            ms(p90),
            ms(max),
            v.len()
        ),
        None => println!("  {label}: n/a (no successful attempt)"),
    }
}

/// The machine's own reference: TCP connect round trips on 127.0.0.1
/// (SYN out, SYN-ACK back), as (median, p90) over `n` connects.
fn loopback_connect(n: usize) -> (Duration, Duration) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let c = TcpStream::connect(addr).unwrap();
        times.push(t.elapsed());
        drop(c);
        // Accepted and dropped, so the backlog never fills.
        drop(listener.accept().unwrap());
    }
    let (med, p90, _) = spread(&times).expect("n > 0");
    (med, p90)
}

fn main() {
    // `cargo bench` passes `--bench`; filters and other flags are ignored.
    let attempts = common::env_u64("PUNCH_ATTEMPTS", 20).unwrap_or_else(|e| panic!("{e}")) as usize;
    println!("Hole punching between two homes behind cone NATs (network namespaces), {attempts} attempts");
    if world::nat::skip() {
        println!("  skipped: needs root, iproute2 and iptables");
        return;
    }
    println!("  load average at start: {}", common::loadavg());
    let t = Instant::now();
    let mut w = World::build("q", Nat::Cone, "");
    // Every attempt brings its own fetcher; the world's is not needed.
    w.b.kill();
    println!(
        "  world up (3 public daemons, home A holding two circuits): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let sharer = w.a.json(&["status"])["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let run = Instant::now();
    let mut done = Vec::new();
    for n in 1..=attempts {
        if run.elapsed() > RUN_LIMIT {
            println!("  stopped after {} attempts: the run's time limit", n - 1);
            break;
        }
        let a = attempt(&w, &sharer, n);
        let times = match (a.to_direct, a.punch) {
            (Some(d), Some(p)) => format!(
                "first dial -> direct {}, relayed -> direct {}",
                ms(d),
                ms(p)
            ),
            (Some(d), None) => format!("first dial -> direct {}", ms(d)),
            _ => "no direct connection in the log".into(),
        };
        let verdict = match &a.failure {
            None => format!("direct over {}", a.transport.unwrap_or("?")),
            Some(why) => format!("FAILED ({why})"),
        };
        println!(
            "  attempt {n}: {verdict}; {times}; fetcher ready {:.1} s, fetch {:.2} s",
            a.ready.as_secs_f64(),
            a.fetch.as_secs_f64()
        );
        done.push(a);
    }

    let ok: Vec<&Attempt> = done.iter().filter(|a| a.failure.is_none()).collect();
    println!(
        "  attempts: {}, successes: {}, success rate: {:.0}%",
        done.len(),
        ok.len(),
        if done.is_empty() {
            0.0
        } else {
            100.0 * ok.len() as f64 / done.len() as f64
        }
    );
    let to_direct: Vec<Duration> = ok.iter().filter_map(|a| a.to_direct).collect();
    let punch: Vec<Duration> = ok.iter().filter_map(|a| a.punch).collect();
    report_spread(
        "time to direct (first dial -> direct connection)",
        &to_direct,
    );
    report_spread("of which the punch (relayed connection -> direct)", &punch);
    let quic = ok.iter().filter(|a| a.transport == Some("QUIC")).count();
    println!("  direct connections: {quic} QUIC, {} TCP", ok.len() - quic);
    let (med, p90) = loopback_connect(200);
    println!(
        "  reference: TCP connect round trip on 127.0.0.1: median {:.0} µs, p90 {:.0} µs (200 connects)",
        med.as_secs_f64() * 1e6,
        p90.as_secs_f64() * 1e6
    );
    println!("  load average at end: {}", common::loadavg());
}
