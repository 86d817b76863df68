//! Shared by the crash and fault campaigns (tests/campaign_*.rs): a seeded
//! random source whose seed is printed, a child process killed by its own
//! PID, a JSON-lines reader with deadlines, and the check that nothing
//! unverified sits at a final path.
//!
//! Included with `#[path]` by each campaign, so tests/common/mod.rs stays as
//! it is.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::daemon::BIN;
use crate::common::{final_names_in, read_tree, Tree};

/// splitmix64: tiny, and the same sequence everywhere for a seed.
pub struct Rng(u64);

impl Rng {
    /// From `PEERDROP_CAMPAIGN_SEED`, or the clock; printed either way so a
    /// failing run can be replayed.
    pub fn from_env(campaign: &str) -> Rng {
        let seed = std::env::var("PEERDROP_CAMPAIGN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{campaign}: seed {seed} (replay with PEERDROP_CAMPAIGN_SEED={seed})");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How many kills a campaign makes: `PEERDROP_CAMPAIGN_KILLS`, or `default`
/// (the short version `cargo test` runs; scripts/campaigns.sh runs 20).
pub fn kills(default: usize) -> usize {
    std::env::var("PEERDROP_CAMPAIGN_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A child killed (SIGKILL, by its own PID) when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Waits for the process to exit; returns its stderr (if piped).
    pub fn finish(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.0.wait().unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            e.read_to_string(&mut stderr).unwrap();
        }
        (status, stderr)
    }

    /// kill -9 and reap; whether it was still running.
    pub fn kill9(&mut self) -> bool {
        let running = self.0.try_wait().unwrap().is_none();
        let _ = self.0.kill();
        let _ = self.0.wait();
        running
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// JSON lines from a child's stdout, read on a thread into a bounded queue.
pub struct Events(Receiver<Value>);

impl Events {
    pub fn new(out: impl Read + Send + 'static) -> Events {
        let (tx, rx) = sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Events(rx)
    }

    /// The next event, or `None` at the deadline or when the stream ends.
    pub fn next_before(&self, deadline: Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.0.recv_timeout(left).ok()
    }

    /// Waits for an event named one of `names`; `None` if the stream ends
    /// first. Panics at the deadline.
    pub fn wait_for(&self, names: &[&str], limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(v) if names.iter().any(|n| v["event"] == *n) => return Some(v),
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => panic!("no {names:?} event within {limit:?}"),
            }
        }
    }

    /// Drains what is queued now, returning the events named `name`.
    pub fn drain(&self, name: &str) -> Vec<Value> {
        self.0.try_iter().filter(|v| v["event"] == name).collect()
    }
}

/// The invariant after every kill: `dest` holds nothing at a final path, or
/// exactly `name` and it is the whole source, byte for byte (the run had
/// finished before the kill landed). Returns whether it was complete.
pub fn nothing_unverified(dest: &Path, name: &str, source: &Tree) -> bool {
    let finals = final_names_in(dest);
    if finals.is_empty() {
        return false;
    }
    assert_eq!(
        finals,
        [name],
        "unexpected names at final paths in {dest:?}"
    );
    let got = read_tree(&dest.join(name));
    assert!(
        got == *source,
        "{name} sits at its final path but is not the verified share"
    );
    true
}

/// A running `peerdrop send`: its link, peer id and TCP port.
pub struct Sender {
    pub proc: Proc,
    pub link: String,
    pub peer: String,
    pub port: u16,
}

/// Starts `peerdrop send` on loopback (inside network namespace `ns` if
/// given) with `extra` flags, and waits for its link and address.
pub fn spawn_send(paths: &[&Path], extra: &[&str], ns: Option<&str>) -> Sender {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    let mut child = c
        .arg("send")
        .args(paths)
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--json"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_remove("PEERDROP_LINK")
        .spawn()
        .unwrap();
    let events = Events::new(child.stdout.take().unwrap());
    let link = events
        .wait_for(&["link"], Duration::from_secs(60))
        .expect("send printed its link")["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let l = events
        .wait_for(&["listening"], Duration::from_secs(10))
        .expect("send printed where it listens");
    let addr = l["addrs"][0].as_str().unwrap();
    Sender {
        proc: Proc(child),
        link,
        peer: l["peer"].as_str().unwrap().to_owned(),
        port: addr.split('/').nth(4).unwrap().parse().unwrap(),
    }
}

/// Starts `peerdrop receive --json` into `dest`, the link in the
/// environment; its events on a queue, its stderr piped.
pub fn spawn_receive(link: &str, dest: &Path, extra: &[&str]) -> (Proc, Events) {
    let mut child = Command::new(BIN)
        .args(["receive", "--no-mdns", "--json", "-o"])
        .arg(dest)
        .args(extra)
        .env("PEERDROP_LINK", link)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let events = Events::new(child.stdout.take().unwrap());
    (Proc(child), events)
}
