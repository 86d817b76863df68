//! One-shot commands across two homes behind cone NATs, in network
//! namespaces made by the test: three daemons on a "public" segment
//! (203.0.113.0/24) find by AutoNAT that they are reachable and offer
//! relaying. In home A a one-shot `peerdrop send --bootstrap <public
//! daemon>` reserves circuits on them by itself (nobody names a relay) and
//! prints a link; in home B a one-shot `peerdrop receive --bootstrap
//! <another public daemon>` fetches it with the link alone. The relayed
//! connection must be hole-punched: the sender serves every data stream
//! directly (its log records each inbound data stream with the kind of its
//! connection), and `receive --json` ends with a direct connection to it.
//!
//! Runs as root with iptables (as in CI); reported as skipped otherwise.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::daemon::{bounded, err, BIN};
use common::nat::*;
use common::netns::{Nat, Netns};
use common::{bytes, sub};
use peerdrop::link::Link;
use peerdrop::net::addr::is_relayed;
use peerdrop::net::PeerAddr;

/// A process killed (by its own PID) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_one_shot_send_behind_a_cone_nat_is_received_direct_in_another_home() {
    if skip() {
        return;
    }
    // Declared first, dropped last: processes go before their namespaces.
    let tmp = tempfile::tempdir().unwrap();
    let mut net = Netns::with_prefix("rp");
    let public = Public::build(&mut net, &tmp, "o", "");
    let home_a = public.home(&mut net, "o", 0, Nat::Cone);
    let home_b = public.home(&mut net, "o", 1, Nat::Cone);
    public.wait_public(90);

    let file = sub(&tmp, "oneshot.bin");
    fs::write(&file, bytes(5, 4 << 20)).unwrap();
    let send_dir = sub(&tmp, "send");
    let mut sender = Command::new("ip");
    sender
        // Not --once: a sender that exits as soon as the receiver proved
        // it holds the share can close the connection before receive
        // reports it in its last event, which is what is asserted.
        .args(["netns", "exec", &home_a, BIN, "send", "--no-mdns"])
        .args(["--json", "--bootstrap", &public.addrs[0]])
        .arg(&file)
        .env("RUST_LOG", "info,peerdrop::net::node=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(send_dir.with_extension("log")).unwrap());
    let mut sender = Running(sender.spawn().unwrap());

    // The link comes once the relays are reserved (at most 30 s).
    let stdout = sender.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end, not just to the link: `send` restores SIGPIPE's
        // default, so a pipe closed after the link would kill it at its
        // next event (it prints "listening" right after the link).
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["event"] == "link" {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(v["link"].as_str().unwrap().to_owned());
                }
            }
        }
    });
    let link = rx
        .recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| panic!("send printed no link\nsender log:\n{}", log_tail(&send_dir)));
    let hints: Vec<PeerAddr> = Link::parse_read_link(&link)
        .unwrap()
        .hints()
        .iter()
        .filter_map(PeerAddr::from_hint)
        .collect();
    let circuits = hints[0].addrs.iter().filter(|a| is_relayed(a)).count();
    assert!(
        circuits >= 2,
        "the link's hint has {circuits} circuit address(es), not 2: {:?}\nsender log:\n{}",
        hints[0].addrs,
        log_tail(&send_dir)
    );

    let out = sub(&tmp, "out");
    let mut receive = Command::new("ip");
    receive
        .args([
            "netns",
            "exec",
            &home_b,
            BIN,
            "receive",
            "--no-mdns",
            "--yes",
        ])
        .args(["--json", "--bootstrap", &public.addrs[1], "-o"])
        .arg(&out)
        .env("PEERDROP_LINK", &link);
    let o = bounded(receive);
    assert!(
        o.status.success(),
        "{}\nsender log:\n{}",
        err(&o),
        log_tail(&send_dir)
    );
    assert!(
        fs::read(out.join("oneshot.bin")).unwrap() == fs::read(&file).unwrap(),
        "the received file differs"
    );

    let sender_id = hints[0].peer.to_base58();
    let stdout = String::from_utf8(o.stdout).unwrap();
    let conns: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "connections")
        .unwrap_or_else(|| panic!("receive --json printed no connections event: {stdout}"));
    let to_sender = conns["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["peer"] == sender_id.as_str())
        .unwrap_or_else(|| panic!("no connection to the sender at the end: {conns}"));
    assert!(
        to_sender["direct"].as_u64() > Some(0) && to_sender["relayed"] == 0,
        "the connection to the sender is not (only) direct: {to_sender}\nsender log:\n{}",
        log_tail(&send_dir)
    );
    let (direct, relayed) = served_streams(&send_dir);
    assert!(direct > 0, "the sender served no data stream directly");
    assert_eq!(
        relayed, 0,
        "the sender served {relayed} data stream(s) through a relay"
    );
}
