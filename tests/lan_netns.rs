//! A test LAN in network namespaces (a bridge, three hosts with private
//! addresses, made and removed by the test): a link without hints is
//! fetched through mDNS alone; then the sharer goes away and the share is
//! fetched from the host that fetched it earlier. Runs as root (as in CI);
//! reported as skipped otherwise. mDNS runs only inside these namespaces.

mod common;

use std::fs;
use std::time::Instant;

use common::daemon::*;
use common::netns::{self, Netns};
use common::*;

#[test]
fn a_hintless_link_is_fetched_over_mdns_and_survives_its_sharer() {
    if !netns::available() {
        eprintln!("skipped: needs root and iproute2 to build a test LAN in network namespaces");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Declared first, so it is dropped (and the namespaces removed) last.
    let mut lan = Netns::new();
    let br = lan.bridge("br");
    let hosts: Vec<String> = (1..=3)
        .map(|i| lan.host_on(&br, &format!("h{i}"), "eth0", &format!("10.231.7.{i}/24")))
        .collect();
    // mDNS on (the default), listening on the namespace's own interfaces.
    let start = |i: usize| {
        Daemon::start_with(
            &sub(&tmp, &format!("d{i}")),
            &["--listen", "/ip4/0.0.0.0/tcp/0"],
            Some(&hosts[i]),
        )
    };
    let mut a = start(0);
    let b = start(1);
    let c = start(2);

    let f = sub(&tmp, "lan.bin");
    fs::write(&f, bytes(5, 2 << 20)).unwrap();
    let link = a.json(&["share", "--no-hints", f.to_str().unwrap()])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = link.split('#').next().unwrap();
    assert_eq!(body.matches('/').count(), 1, "no hints in {link}");

    let t = Instant::now();
    let o = fetch(&c.dir, &link, &sub(&tmp, "c1"), &[]);
    assert!(o.status.success(), "{}", err(&o));
    eprintln!(
        "fetch over mDNS alone (2 MiB, includes discovery): {:.2}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        fs::read(sub(&tmp, "c1").join("lan.bin")).unwrap(),
        fs::read(&f).unwrap()
    );

    // B fetches too, and re-seeds; then the sharer goes away.
    let o = fetch(&b.dir, &link, &sub(&tmp, "b1"), &[]);
    assert!(o.status.success(), "{}", err(&o));
    a.stop();
    let o = fetch(&c.dir, &link, &sub(&tmp, "c2"), &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        fs::read(sub(&tmp, "c2").join("lan.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
    drop((b, c));
}

/// The one-shot commands on a LAN: `send --no-hints` in one namespace,
/// `receive` of that link (no hints, no `--peer`, no bootstrap) in another,
/// found through mDNS alone.
#[test]
fn a_hintless_link_from_send_is_received_over_mdns() {
    if !netns::available() {
        eprintln!("skipped: needs root and iproute2 to build a test LAN in network namespaces");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut lan = Netns::new();
    let br = lan.bridge("rcbr");
    let h1 = lan.host_on(&br, "rch1", "eth0", "10.231.42.1/24");
    let h2 = lan.host_on(&br, "rch2", "eth0", "10.231.42.2/24");
    let f = sub(&tmp, "oneshot.bin");
    fs::write(&f, bytes(9, 1 << 20)).unwrap();

    let mut sender = std::process::Command::new("ip")
        .args(["netns", "exec", &h1, BIN, "send", "--no-hints", "--once"])
        .args(["--listen", "/ip4/0.0.0.0/tcp/0"])
        .arg(&f)
        .env_remove("PEERDROP_LINK")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed by its own PID however the test ends.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let kill = Kill(sender.id());
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sender.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let link = line.trim().to_owned();
    assert!(link.starts_with("peerdrop:1/"), "send printed {line:?}");
    assert_eq!(
        link.split('#').next().unwrap().matches('/').count(),
        1,
        "no hints in {link}"
    );

    let out = sub(&tmp, "out");
    let t = Instant::now();
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", &h2, BIN, "receive", "--wait", "60", "-o"])
        .arg(&out)
        .env("PEERDROP_LINK", &link);
    let o = bounded(c);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        fs::read(out.join("oneshot.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
    eprintln!(
        "one-shot receive over mDNS alone (1 MiB, includes discovery): {:.2}s",
        t.elapsed().as_secs_f64()
    );
    // --once: the sender exits once the receiver has everything (and
    // wait_bounded kills it by its PID if not).
    std::mem::forget(kill);
    let status = wait_bounded(sender);
    assert!(status.status.success());
}

/// One mDNS response announcing `peers` (name, peer id), each at
/// `/ip4/IP/tcp/4001` (libp2p replaces the IP with the packet's source), as
/// libp2p-mdns reads them: PTR answers for `_p2p._udp.local` and a TXT
/// `dnsaddr=` record per peer among the additionals.
fn forged_mdns_answer(peers: &[(String, libp2p::PeerId)]) -> Vec<u8> {
    fn name(out: &mut Vec<u8>, labels: &[&str]) {
        for l in labels {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        out.push(0);
    }
    fn record(out: &mut Vec<u8>, owner: &[&str], kind: u16, rdata: &[u8]) {
        name(out, owner);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // class IN
        out.extend_from_slice(&3600u32.to_be_bytes()); // TTL: an hour
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    let service = ["_p2p", "_udp", "local"];
    let n = peers.len() as u16;
    // A response (QR, AA), no questions, n answers, n additionals.
    let mut out = vec![0, 0, 0x84, 0];
    for count in [0, n, 0, n] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    for (label, _) in peers {
        let mut target = Vec::new();
        name(&mut target, &[label, "_p2p", "_udp", "local"]);
        record(&mut out, &service, 12, &target); // PTR
    }
    for (label, id) in peers {
        let txt = format!("dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/{id}");
        let mut rdata = vec![txt.len() as u8];
        rdata.extend_from_slice(txt.as_bytes());
        record(&mut out, &[label, "_p2p", "_udp", "local"], 16, &rdata); // TXT
    }
    out
}

/// A LAN flooded with forged mDNS answers (audit F-05): one host announces
/// a hundred thousand peer ids. The daemons' table of LAN peers keeps at most
/// 8 of them (peers per IP address are capped), the honest peer stays
/// found, `status` keeps answering, and a hintless link is still fetched
/// over mDNS while the flood goes on.
#[test]
fn a_flood_of_forged_mdns_answers_stays_bounded_and_the_honest_peer_is_found() {
    if !netns::available() {
        eprintln!("skipped: needs root and iproute2 to build a test LAN in network namespaces");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut lan = Netns::new();
    let br = lan.bridge("flbr");
    let h1 = lan.host_on(&br, "flh1", "eth0", "10.231.43.1/24");
    let h2 = lan.host_on(&br, "flh2", "eth0", "10.231.43.2/24");
    let h3 = lan.host_on(&br, "flh3", "eth0", "10.231.43.3/24");
    // The flooder sends to the mDNS group through its LAN interface.
    netns::ip_in(&h3, &["route", "add", "224.0.0.0/4", "dev", "eth0"]);
    let start = |name: &str, ns: &str| {
        Daemon::start_with(
            &sub(&tmp, name),
            &["--listen", "/ip4/0.0.0.0/tcp/0"],
            Some(ns),
        )
    };
    let a = start("a", &h1);
    let b = start("b", &h2);
    let lan_peers = |d: &Daemon| d.json(&["status"])["lan_peers"].as_u64().unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while lan_peers(&b) < 1 {
        assert!(
            Instant::now() < deadline,
            "the fetcher never found the sharer by mDNS"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // The flood, from a thread that moved into the flooder's namespace.
    const PEERS: usize = 100_000;
    const PER_PACKET: usize = 16;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        let ns_path = format!("/run/netns/{h3}");
        std::thread::spawn(move || -> usize {
            let nsfd = fs::File::open(&ns_path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&nsfd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let mut sent = 0;
            // Round after round, so the flood lasts while the fetch runs.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<(String, libp2p::PeerId)> = (0..PER_PACKET)
                    .map(|i| (format!("flood{sent}x{i}"), libp2p::PeerId::random()))
                    .collect();
                if sock
                    .send_to(&forged_mdns_answer(&batch), "224.0.0.251:5353")
                    .is_ok()
                {
                    sent += PER_PACKET;
                }
            }
            sent
        })
    };
    struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop_guard = Stop(stop.clone());

    // Let the flood reach PEERS announcements, checking the daemon answers
    // all along.
    let t = Instant::now();
    let mut slowest = std::time::Duration::ZERO;
    while t.elapsed() < std::time::Duration::from_secs(8) {
        let asked = Instant::now();
        let n = lan_peers(&b);
        slowest = slowest.max(asked.elapsed());
        assert!(
            n <= 1 + 8,
            "{n} LAN peers kept: the flood got past the bound"
        );
    }
    assert!(
        slowest < std::time::Duration::from_secs(3),
        "status took {slowest:?} under the flood"
    );

    let f = sub(&tmp, "flood.bin");
    fs::write(&f, bytes(6, 1 << 20)).unwrap();
    let link = a.json(&["share", "--no-hints", f.to_str().unwrap()])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = fetch(&b.dir, &link, &sub(&tmp, "out"), &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        fs::read(sub(&tmp, "out").join("flood.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
    let n = lan_peers(&b);
    assert!(n <= 1 + 8, "{n} LAN peers kept after the flood");
    drop(stop_guard);
    let sent = flooder.join().unwrap();
    eprintln!("forged mDNS announcements sent: {sent}; LAN peers kept: {n}");
    assert!(sent >= PEERS, "the flood sent only {sent} announcements");
    drop((a, b));
}
