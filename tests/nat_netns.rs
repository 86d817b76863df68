//! Two hosts, each behind its own NAT router (masquerading), and a relay on
//! the "public" segment, all in network namespaces made by the test. The
//! transfer between the two NAT'd hosts must complete; the test reports
//! whether the connection ended direct (hole-punched) or relayed. Runs as
//! root with iptables (as in CI); reported as skipped otherwise.

mod common;

use std::fs;

use common::daemon::*;
use common::netns::{self, exec_in, ip_in, Netns};
use common::*;

#[test]
fn two_hosts_behind_nat_exchange_a_share_through_a_relay() {
    if !netns::available() || !netns::have_iptables() {
        eprintln!(
            "skipped: needs root, iproute2 and iptables to build NAT routers in network namespaces"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut net = Netns::new();
    let public = net.bridge("pub");
    let relay = net.host_on(&public, "rl", "eth0", "203.0.113.1/24");
    let mut routers = Vec::new();
    let mut hosts = Vec::new();
    for (i, side) in ["a", "b"].iter().enumerate() {
        let router = net.host_on(
            &public,
            &format!("r{side}"),
            "eth0",
            &format!("203.0.113.{}/24", 2 + i),
        );
        let host = net.add(&format!("h{side}"));
        let lan = 71 + i;
        net.wire(
            (&router, "eth1", &format!("192.168.{lan}.1/24")),
            (&host, "eth0", &format!("192.168.{lan}.2/24")),
        );
        ip_in(
            &host,
            &[
                "route",
                "add",
                "default",
                "via",
                &format!("192.168.{lan}.1"),
            ],
        );
        exec_in(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        exec_in(
            &router,
            &[
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "eth0",
                "-j",
                "MASQUERADE",
            ],
        );
        routers.push(router);
        hosts.push(host);
    }
    let tcp = ["--no-mdns", "--listen", "/ip4/0.0.0.0/tcp/0"];
    let r = Daemon::start_with(
        &sub(&tmp, "relay"),
        &[&tcp[..], &["--relay-server"]].concat(),
        Some(&relay),
    );
    // The interface address is reported shortly after start-up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let relay_addr = loop {
        let a = r.addr();
        if a.starts_with("/ip4/203.0.113.1/") {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "relay never reported its public address: {a}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let a = Daemon::start_with(
        &sub(&tmp, "a"),
        &[&tcp[..], &["--relay", &relay_addr]].concat(),
        Some(&hosts[0]),
    );
    let b = Daemon::start_with(&sub(&tmp, "b"), &tcp, Some(&hosts[1]));

    let f = sub(&tmp, "behind-nat.bin");
    fs::write(&f, bytes(6, 1 << 20)).unwrap();
    let link = a.share(&f);
    let out = sub(&tmp, "out");
    let o = fetch(&b.dir, &link, &out, &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        fs::read(out.join("behind-nat.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
    let st = b.json(&["status"]);
    let a_id = a.json(&["status"])["peer_id"].clone();
    let conns: Vec<_> = st["connected"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["peer"] == a_id)
        .collect();
    let how = if conns.iter().any(|c| c["relayed"] == false) {
        "direct (hole-punched)"
    } else {
        "relayed"
    };
    eprintln!("transfer between two NAT'd hosts completed; connection to the sharer: {how}");
    drop((a, b, r));
}
