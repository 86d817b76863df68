//! Audit F-03: `Done` proves something. A one-shot `peerdrop send` stops only
//! for a receiver that shows it holds the read key; a peer that knows only the
//! manifest id (a pin link's holder, or a LAN peer that saw it asked for) can
//! say "done" as often as it likes without stopping it, and `peer_done` names
//! the real receiver.
//!
//! Loopback only, no mDNS.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::net::quick;
use common::*;
use futures::AsyncWriteExt;
use peerdrop::link::Link;
use peerdrop::net::fetch::fetch;
use peerdrop::net::frame::{read_msg, write_msg};
use peerdrop::net::node::{self, NodeConfig, XFER};
use peerdrop::net::PeerAddr;
use peerdrop::wire::{Request, Response};

const BIN: &str = env!("CARGO_BIN_EXE_peerdrop");
const LIMIT: Duration = Duration::from_secs(150);

/// A child process killed (by its own PID) when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `peerdrop send --once --json` of `path` on loopback, throttled so that
/// the last chunks are produced well before they are written (the window the
/// old `Done` race used). Returns the process, its link, and its later JSON
/// lines.
fn send_once(path: &std::path::Path) -> (Proc, Link, std::sync::mpsc::Receiver<String>) {
    let mut c = Command::new(BIN);
    c.arg("send")
        .arg(path)
        .args(["--once", "--json", "--no-mdns", "--max-rate", "4M"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "link", "{line}");
    let link = Link::parse_read_link(v["link"].as_str().unwrap()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    (Proc(child), link, rx)
}

/// The `peer` of the first `peer_done` line, waiting at most `limit`.
fn peer_done(lines: &std::sync::mpsc::Receiver<String>, limit: Duration) -> Option<String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        let line = lines.recv_timeout(left).ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "peer_done" {
            return Some(v["peer"].as_str().unwrap().to_owned());
        }
    }
}

/// Waits for the process to exit, at most `limit`.
fn exit_status(p: &mut Proc, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return Some(s);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A rogue that knows only the manifest id sends `Done` back to back on
/// one stream while an honest receiver fetches: `send --once` keeps serving
/// the receiver to the end, then exits naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_done_does_not_stop_send_once() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "payload.bin");
        let data = bytes(3, 8 << 20);
        fs::write(&f, &data).unwrap();
        let (mut sender, link, lines) = send_once(&f);
        let share = *link.manifest_id();
        let hint = PeerAddr::from_hint(&link.hints()[0]).unwrap();

        let rogue = node::spawn(NodeConfig::default()).unwrap();
        rogue.dial(hint.peer, hint.addrs.clone()).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let rogue_task = {
            let (rogue, stop, peer) = (rogue.clone(), stop.clone(), hint.peer);
            tokio::spawn(async move {
                let mut said = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = rogue.control().open_stream(peer, XFER).await else {
                        return said;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        if write_msg(&mut s, &Request::Done { share }).await.is_err()
                            || s.flush().await.is_err()
                        {
                            break;
                        }
                        match read_msg::<_, Response>(&mut s).await {
                            Ok(Some(_)) => said += 1,
                            _ => break,
                        }
                    }
                }
                said
            })
        };

        let honest = node::spawn(NodeConfig::default()).unwrap();
        let dest = sub(&tmp, "dest");
        let (tx, _rx) = peerdrop::net::fetch::progress_channel();
        let r = fetch(&honest, &link, vec![hint], &dest, &quick(), tx).await;
        stop.store(true, Ordering::Relaxed);
        let said = rogue_task.await.unwrap();
        assert!(said > 0, "the rogue never got a Done across");
        let fetched = r.expect("the honest receiver completes");
        assert_eq!(fetched.bytes, data.len() as u64);
        assert_eq!(fs::read(dest.join("payload.bin")).unwrap(), data);

        let who = tokio::task::spawn_blocking(move || peer_done(&lines, Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(
            who.as_deref(),
            Some(honest.peer_id().to_base58().as_str()),
            "peer_done must name the honest receiver (the rogue is {})",
            rogue.peer_id()
        );
        let status =
            tokio::task::spawn_blocking(move || exit_status(&mut sender, Duration::from_secs(30)))
                .await
                .unwrap();
        assert!(status.expect("send --once exits").success());
        honest.shutdown().await;
        rogue.shutdown().await;
    })
    .await
    .unwrap();
}
