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
