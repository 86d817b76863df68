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
