//! The NAT world of the namespace tests and the hole-punch bench: a
//! "public" segment (203.0.113.0/24) with three daemons, and two homes,
//! each behind its own NAT router, with a daemon that knows one public
//! daemon as its bootstrap peer. Namespaces and processes go with it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::daemon::*;
use super::netns::{self, exec_in, home, Nat, Netns};
use super::{bytes, sub};

pub fn skip() -> bool {
    if !netns::available() || !netns::have_iptables() {
        eprintln!(
            "skipped: needs root, iproute2 and iptables to build NAT routers in network namespaces"
        );
        return true;
    }
    false
}

/// A daemon in namespace `ns` logging to `<dir>.log` (info, and the
/// node's debug lines, which record each inbound data stream).
pub fn start(dir: &Path, ns: &str, args: &[&str], config: &str) -> Daemon {
    start_logging(dir, ns, args, config, "")
}

/// As [`start`], with `more` (",target=level", ...) added to the log
/// filter.
pub fn start_logging(dir: &Path, ns: &str, args: &[&str], config: &str, more: &str) -> Daemon {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("peerdrop.toml"), config).unwrap();
    let log = fs::File::create(dir.with_extension("log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "daemon", "--no-mdns"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("PEERDROP_DATA_DIR")
        .env(
            "RUST_LOG",
            format!("info,peerdrop::net::node=debug,peerdrop::net::node::event_loop=info,peerdrop::net::fetch=debug{more}"),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon {
        child: Some(child),
        dir: dir.to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli(dir, &["status", "--json"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

/// Waits (up to `secs`) for `cond` on `d`'s status.
pub fn wait_status(d: &Daemon, secs: u64, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = d.json(&["status"]);
        if cond(&st) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {secs}s; status: {st}\nlog tail:\n{}",
            log_tail(&d.dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn log_of(dir: &Path) -> String {
    fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
}

pub fn log_tail(dir: &Path) -> String {
    let log = log_of(dir);
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Inbound data streams the daemon in `dir` served, (direct, relayed).
pub fn served_streams(dir: &Path) -> (usize, usize) {
    let log = log_of(dir);
    let streams = log.lines().filter(|l| l.contains("inbound data stream"));
    let (mut direct, mut relayed) = (0, 0);
    for l in streams {
        if l.contains("relayed=true") {
            relayed += 1;
        } else if l.contains("relayed=false") {
            direct += 1;
        }
    }
    (direct, relayed)
}

pub fn circuits(st: &serde_json::Value) -> usize {
    st["listen"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|a| a.as_str().is_some_and(|a| a.contains("/p2p-circuit")))
                .count()
        })
        .unwrap_or(0)
}

/// The "public" segment: a bridge with three daemons on it
/// (203.0.113.1-3, TCP and QUIC on port 4001), each configured with
/// `relay_config`, the second and third bootstrapped from the first.
pub struct Public {
    /// The namespace holding the bridge, for homes to join.
    pub bridge: String,
    pub daemons: Vec<Daemon>,
    /// Each daemon's TCP address, ending in /p2p/PEER.
    pub addrs: Vec<String>,
}

impl Public {
    /// Builds the segment (namespace names end with `tag`) and starts its
    /// daemons, with data dirs `pub1..3` in `tmp`.
    pub fn build(
        net: &mut Netns,
        tmp: &tempfile::TempDir,
        tag: &str,
        relay_config: &str,
    ) -> Public {
        let bridge = net.bridge(&format!("{tag}pub"));
        let mut daemons = Vec::new();
        let mut addrs: Vec<String> = Vec::new();
        for i in 1..=3 {
            let ns = public_host(net, &bridge, tag, i);
            let mut args = vec![
                "--listen".to_owned(),
                "/ip4/0.0.0.0/tcp/4001".to_owned(),
                "--listen".to_owned(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".to_owned(),
            ];
            if let Some(first) = addrs.first() {
                args.push("--bootstrap".into());
                args.push(first.clone());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let d = start(&sub(tmp, &format!("pub{i}")), &ns, &args, relay_config);
            let id = d.json(&["status"])["peer_id"].as_str().unwrap().to_owned();
            addrs.push(format!("/ip4/203.0.113.{i}/tcp/4001/p2p/{id}"));
            daemons.push(d);
        }
        Public {
            bridge,
            daemons,
            addrs,
        }
    }

    /// Adds home `side` (0 for A, 1 for B) behind a router with `nat`;
    /// returns the namespace of its host.
    pub fn home(&self, net: &mut Netns, tag: &str, side: usize, nat: Nat) -> String {
        self.home_with(net, tag, side, nat, Transports::Both)
    }

    /// As [`Public::home`], with a router that forwards only `transports`.
    pub fn home_with(
        &self,
        net: &mut Netns,
        tag: &str,
        side: usize,
        nat: Nat,
        transports: Transports,
    ) -> String {
        let name = ["a", "b"][side];
        let (router, host) = home(
            net,
            &self.bridge,
            &format!("{tag}{name}"),
            &format!("203.0.113.{}/24", 11 + side),
            81 + side as u8,
            nat,
        );
        if transports == Transports::QuicOnly {
            // Both ways, so no TCP connection, direct or to a relay, is
            // ever made from the home: every candidate a punch can use is
            // a QUIC one.
            exec_in(
                &router,
                &["iptables", "-I", "FORWARD", "-p", "tcp", "-j", "DROP"],
            );
        }
        host
    }

    /// Adds host `203.0.113.<i>` (namespace `<tag>p<i>`) to the segment,
    /// with nothing running on it; returns its namespace.
    pub fn host(&self, net: &mut Netns, tag: &str, i: u8) -> String {
        public_host(net, &self.bridge, tag, i)
    }

    /// Waits until every public daemon found itself reachable (and so
    /// serves the DHT and relays, unless configured otherwise).
    pub fn wait_public(&self, secs: u64) {
        for d in &self.daemons {
            wait_status(d, secs, "a public daemon found itself reachable", |st| {
                st["reachability"] == "public"
            });
        }
    }
}

/// Host `203.0.113.<i>` (namespace `<tag>p<i>`) on the bridge in
/// `bridge`.
fn public_host(net: &mut Netns, bridge: &str, tag: &str, i: u8) -> String {
    net.host_on(
        bridge,
        &format!("{tag}p{i}"),
        "eth0",
        &format!("203.0.113.{i}/24"),
    )
}

/// What a home's router forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transports {
    /// TCP and UDP.
    Both,
    /// UDP only (TCP dropped both ways): the home's nodes reach others over
    /// QUIC alone.
    QuicOnly,
}

/// The network and its daemons; namespaces and processes go with it.
pub struct World {
    // Field order is drop order: daemons before their namespaces.
    pub a: Daemon,
    pub b: Daemon,
    pub public: Vec<Daemon>,
    /// The public daemons' TCP addresses, ending in /p2p/PEER.
    pub public_addrs: Vec<String>,
    /// The namespaces of the hosts in home A and home B.
    pub hosts: Vec<String>,
    pub net: Netns,
    pub tmp: tempfile::TempDir,
}

impl World {
    /// Builds the topology (namespace names start with "rp" and `tag`),
    /// starts three public daemons with `relay_config`, and a daemon in
    /// each home, and waits until home A holds two circuit reservations.
    pub fn build(tag: &str, nat: Nat, relay_config: &str) -> World {
        World::build_with(tag, nat, relay_config, Transports::Both)
    }

    /// As [`World::build`], with home routers that forward `transports`
    /// only (and the home daemons' bootstrap address a QUIC one when TCP is
    /// not forwarded).
    pub fn build_with(tag: &str, nat: Nat, relay_config: &str, transports: Transports) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let mut net = Netns::with_prefix("rp");
        let public = Public::build(&mut net, &tmp, tag, relay_config);
        let mut homes = Vec::new();
        let mut hosts = Vec::new();
        for (i, side) in ["a", "b"].iter().enumerate() {
            let host = public.home_with(&mut net, tag, i, nat, transports);
            let bootstrap = match transports {
                Transports::Both => public.addrs[i].clone(),
                Transports::QuicOnly => public.addrs[i].replace("/tcp/4001/", "/udp/4001/quic-v1/"),
            };
            // Each home knows one public daemon, not the same one.
            let d = start(
                &sub(&tmp, side),
                &host,
                &[
                    "--listen",
                    "/ip4/0.0.0.0/tcp/0",
                    "--listen",
                    "/ip4/0.0.0.0/udp/0/quic-v1",
                    "--bootstrap",
                    &bootstrap,
                ],
                "",
            );
            homes.push(d);
            hosts.push(host);
        }
        let b = homes.pop().unwrap();
        let a = homes.pop().unwrap();
        // Links carry the circuit addresses reserved when they are made.
        wait_status(&a, 90, "home A reserved two relay circuits", |st| {
            circuits(st) >= 2
        });
        World {
            a,
            b,
            public: public.daemons,
            public_addrs: public.addrs,
            hosts,
            net,
            tmp,
        }
    }

    /// Shares `len` bytes in home A and fetches them in home B with the
    /// link alone; returns the fetcher's status entry for the sharer.
    pub fn transfer(&self, len: usize) -> serde_json::Value {
        let f = sub(&self.tmp, "across-nat.bin");
        fs::write(&f, bytes(9, len)).unwrap();
        let link = self.a.share(&f);
        let out: PathBuf = sub(&self.tmp, "out");
        let o = fetch(&self.b.dir, &link, &out, &[]);
        assert!(
            o.status.success(),
            "{}\nsharer log:\n{}\nfetcher log:\n{}",
            err(&o),
            log_tail(&self.a.dir),
            log_tail(&self.b.dir)
        );
        assert!(
            fs::read(out.join("across-nat.bin")).unwrap() == fs::read(&f).unwrap(),
            "the fetched file differs"
        );
        let a_id = self.a.json(&["status"])["peer_id"].clone();
        let st = self.b.json(&["status"]);
        st["connected"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["peer"] == a_id)
            .cloned()
            .unwrap_or_else(|| panic!("the fetcher is not connected to the sharer: {st}"))
    }
}

/// The firewall rules that refuse new inbound connections (TCP with a
/// reset, UDP with "port unreachable") on a host's `eth0`, so a dial to it
/// fails at once while its own connections out work.
const REFUSE_INBOUND: [&str; 2] = [
    "INPUT -i eth0 -p tcp -m conntrack --ctstate NEW -j REJECT --reject-with tcp-reset",
    "INPUT -i eth0 -p udp -m conntrack --ctstate NEW -j REJECT --reject-with icmp-port-unreachable",
];

/// Makes the host in namespace `ns` refuse new inbound connections
/// (`refuse`), or accept them again.
pub fn refuse_inbound(ns: &str, refuse: bool) {
    for rule in REFUSE_INBOUND {
        let mut cmd = vec!["iptables", if refuse { "-A" } else { "-D" }];
        cmd.extend(rule.split(' '));
        exec_in(ns, &cmd);
    }
}
