//! Test networks in network namespaces made (and removed) by the test itself:
//! a bridge and hosts on veth pairs, with private addresses. Multicast (mDNS)
//! and any other traffic stay inside them. Needs root, as CI has.

use std::process::Command;

/// Whether namespaces can be made here.
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces deleted (with everything in them) when dropped.
pub struct Netns {
    names: Vec<String>,
    prefix: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

impl Netns {
    /// An empty set, to add namespaces to.
    pub fn new() -> Netns {
        Netns::with_prefix("pd")
    }

    /// An empty set whose namespaces are named `<prefix><pid><name>`, so
    /// tests running at the same time never share a name.
    pub fn with_prefix(prefix: &str) -> Netns {
        Netns {
            names: Vec::new(),
            prefix: prefix.to_owned(),
        }
    }

    /// Adds namespace `name` (unique per test process) with loopback up.
    pub fn add(&mut self, name: &str) -> String {
        let full = format!("{}{}{name}", self.prefix, std::process::id() % 100_000);
        // A namespace left by a killed run of this test: remove it quietly.
        let _ = Command::new("ip").args(["netns", "del", &full]).output();
        ip(&["netns", "add", &full]);
        self.names.push(full.clone());
        ip(&["-n", &full, "link", "set", "lo", "up"]);
        full
    }

    /// Adds a namespace holding bridge `br0`; returns its name.
    pub fn bridge(&mut self, name: &str) -> String {
        let ns = self.add(name);
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &ns, "link", "set", "br0", "up"]);
        ns
    }

    /// Adds host `name` wired to the bridge in `bridge_ns` through a veth
    /// pair, its end called `ifname` with address `cidr`.
    pub fn host_on(&mut self, bridge_ns: &str, name: &str, ifname: &str, cidr: &str) -> String {
        let ns = self.add(name);
        let port = format!("p{}", self.names.len());
        ip(&[
            "-n", bridge_ns, "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns",
            &ns,
        ]);
        ip(&["-n", bridge_ns, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns, "addr", "add", cidr, "dev", ifname]);
        ip(&["-n", &ns, "link", "set", ifname, "up"]);
        ns
    }
}

impl Netns {
    /// A veth pair between namespaces `a` and `b`, with addresses.
    pub fn wire(&mut self, a: (&str, &str, &str), b: (&str, &str, &str)) {
        ip(&[
            "-n", a.0, "link", "add", a.1, "type", "veth", "peer", "name", b.1, "netns", b.0,
        ]);
        for (ns, ifname, cidr) in [a, b] {
            ip(&["-n", ns, "addr", "add", cidr, "dev", ifname]);
            ip(&["-n", ns, "link", "set", ifname, "up"]);
        }
    }
}

/// Moves the calling thread into namespace `ns`; threads it starts from
/// then on (a tokio runtime's, say) are in it too.
pub fn enter(ns: &str) {
    let nsfd = std::fs::File::open(format!("/run/netns/{ns}")).expect("the namespace exists");
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&nsfd),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .expect("entering the namespace");
}

/// Runs a command inside namespace `ns`, asserting success.
pub fn exec_in(ns: &str, cmd: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .expect("running ip netns exec");
    assert!(
        out.status.success(),
        "{cmd:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether iptables is installed (for NAT routers).
pub fn have_iptables() -> bool {
    Command::new("iptables")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `ip` with `args` in namespace `ns`, asserting success.
pub fn ip_in(ns: &str, args: &[&str]) {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    ip(&a);
}

/// How a test router maps ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Masquerade keeping source ports where it can: endpoint-independent
    /// mapping ("cone"), which hole punching can get through.
    Cone,
    /// Masquerade with `--random-fully`: a new port per flow ("symmetric"),
    /// which hole punching cannot get through.
    Symmetric,
}

/// A home behind its own NAT router on the bridge in `public_ns`: the
/// router gets `wan_cidr` on the public side and `192.168.<lan>.1/24` on
/// the LAN, the host `192.168.<lan>.2/24`. The router masquerades (`nat`)
/// and drops every unsolicited inbound packet, to itself as well as
/// forwarded: only replies to what the home sent get in (it must not answer
/// a stray SYN with a reset, or a punch arriving first is torn down).
/// Returns (router, host) namespaces.
pub fn home(
    net: &mut Netns,
    public_ns: &str,
    name: &str,
    wan_cidr: &str,
    lan: u8,
    nat: Nat,
) -> (String, String) {
    let router = net.host_on(public_ns, &format!("r{name}"), "eth0", wan_cidr);
    let host = net.add(&format!("h{name}"));
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
    let mut masq = vec![
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "eth0",
        "-j",
        "MASQUERADE",
    ];
    if nat == Nat::Symmetric {
        masq.push("--random-fully");
    }
    exec_in(&router, &masq);
    // The prerouting nat chain must exist for replies to be un-NATed.
    exec_in(
        &router,
        &["iptables", "-t", "nat", "-A", "PREROUTING", "-j", "RETURN"],
    );
    for chain in ["INPUT", "FORWARD"] {
        exec_in(
            &router,
            &[
                "iptables",
                "-A",
                chain,
                "-i",
                "eth0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
        exec_in(
            &router,
            &["iptables", "-A", chain, "-i", "eth0", "-j", "DROP"],
        );
    }
    (router, host)
}
