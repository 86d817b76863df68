//! The peerdrop DHT on loopback, mDNS off: ten daemons, each bootstrapped
//! only from its neighbour, where a share made without hints is found
//! through the DHT by a fetcher that knows one bootstrap node; and Sybil
//! providers that answer a lookup first cannot hide the real one.

mod common;

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::net::{local_share, provider, quick};
use common::*;
use futures::AsyncWriteExt;
use peerdrop::link::Link;
use peerdrop::net::fetch::{progress_channel, FetchOptions};
use peerdrop::net::frame::{read_msg, write_msg};
use peerdrop::net::inbound::InboundStream;
use peerdrop::net::node::{self, Client, NodeConfig, Role};
use peerdrop::net::serve::{serve, ServeConfig};
use peerdrop::net::{Multiaddr, PeerId};
use peerdrop::wire::{Request, Response};

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

/// A DHT server on loopback, bootstrapped from `boot`; returns it and the
/// address others bootstrap from.
async fn dht_server(boot: Option<&Multiaddr>) -> (Client, Multiaddr) {
    let n = node::spawn(NodeConfig {
        dht_server: Role::On,
        bootstrap: boot.into_iter().cloned().collect(),
        ..NodeConfig::default()
    })
    .unwrap();
    let addr = n
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    (n, addr)
}

/// Answers every request on every stream to `node` with `NotFound` (a
/// holder question included, so it never passes as a holder); counts the
/// streams.
fn answer_nothing(node: &Client) -> Arc<AtomicUsize> {
    let streams = Arc::new(AtomicUsize::new(0));
    let mut incoming = node.incoming().unwrap();
    let count = streams.clone();
    tokio::spawn(async move {
        while let Some(InboundStream { mut stream, .. }) = incoming.recv().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                while let Ok(Some(_)) = read_msg::<_, Request>(&mut stream).await {
                    if write_msg(&mut stream, &Response::NotFound).await.is_err()
                        || stream.flush().await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    streams
}

/// Looks `locator` up from `node` until every one of `want` is among the
/// providers found (records travel to other nodes), within 60 s.
async fn until_found(node: &Client, locator: [u8; 32], want: &[PeerId], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = node.providers(locator.to_vec()).await.unwrap_or_default();
        if want.iter().all(|p| found.contains(p)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: found only {found:?}");
        // A polling interval between lookups, not a stand-in for an event.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Audit F-05: a DHT lookup used to end at its first answer. Here that
/// answer is the fetcher's own store, which holds only Sybil records: four
/// Sybils joined the DHT through the fetcher after the real sharer had
/// announced to another node, and each announced the locator, answering
/// every request with `NotFound`. The lookup keeps collecting, so the real
/// provider is found and the fetch completes (before the fix it failed
/// with only the Sybils to try).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybil_providers_that_answer_first_do_not_hide_the_real_one() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "real.bin");
        fs::write(&f, bytes(11, 2 << 20)).unwrap();
        let (key, share) = local_share(std::slice::from_ref(&f));
        let (id, locator) = (share.id(), share.id().locator());

        // The honest DHT, and the sharer on it: a DHT server (as every
        // daemon is by default; a record of a client on loopback carries no
        // address, so other nodes could not pass it on) that announces the
        // locator while only `dht` is there to store it.
        let (dht, boot) = dht_server(None).await;
        let (sharer, _) = dht_server(Some(&boot)).await;
        let config = ServeConfig {
            identity: Some(sharer.peer_id()),
            ..ServeConfig::default()
        };
        tokio::spawn(serve(sharer.incoming().unwrap(), provider(share), config));
        sharer.provide(locator.to_vec()).await;
        until_found(&dht, locator, &[sharer.peer_id()], "the sharer's record").await;

        // The fetcher, a DHT server as every daemon is, then the Sybils,
        // which join through it: it stores their records, not the sharer's
        // (announced before it joined, next due in an hour).
        let (fetcher, fetcher_addr) = dht_server(Some(&boot)).await;
        let mut sybils = Vec::new();
        for _ in 0..4 {
            let (s, _) = dht_server(Some(&fetcher_addr)).await;
            let asked = answer_nothing(&s);
            s.provide(locator.to_vec()).await;
            sybils.push((s, asked));
        }
        let ids: Vec<PeerId> = sybils.iter().map(|(s, _)| s.peer_id()).collect();
        until_found(&fetcher, locator, &ids, "the Sybils' records").await;

        let link = Link::new(id, Vec::new(), Some(key)).unwrap();
        let opts = FetchOptions {
            discover: true,
            wait: Duration::from_secs(20),
            ..quick()
        };
        let dest = sub(&tmp, "dest");
        let (tx, mut rx) = progress_channel();
        let events = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let r = peerdrop::net::fetch::fetch(&fetcher, &link, Vec::new(), &dest, &opts, tx).await;
        events.await.unwrap();
        let got = r.expect("the real provider was hidden by the Sybils");
        assert_eq!(got.bytes, 2 << 20);
        assert_eq!(
            fs::read(dest.join("real.bin")).unwrap(),
            fs::read(&f).unwrap()
        );
        let asked: usize = sybils.iter().map(|(_, a)| a.load(Ordering::Relaxed)).sum();
        assert!(
            asked > 0,
            "no Sybil was tried: the test did not exercise them"
        );
        for (s, _) in sybils {
            s.shutdown().await;
        }
        for n in [fetcher, sharer, dht] {
            n.shutdown().await;
        }
    })
    .await
    .unwrap();
}

/// Audit F-20: a node configured as no DHT server (`send` and `receive`
/// are) stays a DHT client even once it has a confirmed external address,
/// where kad's automatic mode used to switch it to server mode. `--relay`
/// declares a node's listen addresses external, but never loopback ones:
/// so the node listens on a veth interface in a namespace of the test's
/// own (root), and the test's runtime runs from a thread moved into it.
#[test]
fn a_node_that_is_no_dht_server_stays_a_client_with_an_external_address() {
    if !common::netns::available() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let mut nets = common::netns::Netns::new();
    let ns = nets.add("kadmode");
    for args in [
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"][..],
        &["addr", "add", "10.77.0.1/24", "dev", "v0"],
        &["link", "set", "v0", "up"],
        &["link", "set", "v1", "up"],
    ] {
        common::netns::ip_in(&ns, args);
    }
    let inside = ns.clone();
    std::thread::spawn(move || {
        common::netns::enter(&inside);
        // Built here, so its threads (and every socket) are in the namespace.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let body = async {
            let relay = node::spawn(NodeConfig {
                relay_server: Role::On,
                ..NodeConfig::default()
            })
            .unwrap();
            let addr = relay
                .listen("/ip4/10.77.0.1/tcp/0".parse().unwrap())
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while relay
                .reach_status()
                .await
                .unwrap()
                .external_addrs
                .is_empty()
            {
                assert!(Instant::now() < deadline, "no external address declared");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Connected only now, so identify tells it what the node runs
            // with its external address.
            let other = node::spawn(NodeConfig::default()).unwrap();
            other.dial(relay.peer_id(), vec![addr]).await.unwrap();
            let seen = loop {
                let known = other.known_peers().await.unwrap();
                if let Some(k) = known.into_iter().find(|k| k.peer == relay.peer_id()) {
                    break k;
                }
                assert!(Instant::now() < deadline, "identify never arrived");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(seen.relay, "the relay service is on: {seen:?}");
            assert!(
                !seen.dht_server,
                "a node configured as no DHT server offers the DHT: {seen:?}"
            );
            assert!(!relay.reach_status().await.unwrap().dht_server);
            for n in [other, relay] {
                n.shutdown().await;
            }
        };
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), body).await })
            .unwrap();
    })
    .join()
    .unwrap();
    drop(nets);
}
