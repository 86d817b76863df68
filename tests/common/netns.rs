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
        Netns { names: Vec::new() }
    }

    /// Adds namespace `name` (unique per test process) with loopback up.
    pub fn add(&mut self, name: &str) -> String {
        let full = format!("pd{}{name}", std::process::id() % 100_000);
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
