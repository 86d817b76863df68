//! The peerdrop DHT on loopback: ten daemons, each bootstrapped only from
//! its neighbour, mDNS off. A share made without hints is found through the
//! DHT by a fetcher that knows one bootstrap node.

mod common;

use std::fs;
use std::time::Instant;

use common::daemon::*;
use common::*;

#[test]
fn a_fetcher_finds_the_sharer_through_the_dht_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Daemon> = Vec::new();
    for i in 0..10 {
        let dir = sub(&tmp, &format!("n{i}"));
        let mut args = vec![
            "--no-mdns".to_owned(),
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
        ];
        if let Some(prev) = nodes.last() {
            args.push("--bootstrap".into());
            args.push(prev.addr());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(Daemon::start_with(&dir, &args, None));
    }
    let f = sub(&tmp, "found-by-dht.bin");
    fs::write(&f, bytes(7, 3 << 20)).unwrap();
    let sharer = nodes.last().unwrap();
    let v = sharer.json(&["share", "--no-hints", f.to_str().unwrap()]);
    let link = v["link"].as_str().unwrap().to_owned();
    assert!(
        !link.contains('/') || link.matches('/').count() == 1,
        "a link without hints: {link}"
    );

    let first = nodes[0].addr();
    let fetcher = Daemon::start_with(
        &sub(&tmp, "fetcher"),
        &[
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &first,
        ],
        None,
    );
    let out = sub(&tmp, "out");
    let start = Instant::now();
    let o = fetch(&fetcher.dir, &link, &out, &[]);
    let took = start.elapsed();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        fs::read(out.join("found-by-dht.bin")).unwrap(),
        fs::read(&f).unwrap()
    );
    // A figure, not a timed assertion: lookup plus transfer of 3 MiB.
    eprintln!(
        "DHT fetch across 11 loopback nodes: {:.2}s",
        took.as_secs_f64()
    );
}
