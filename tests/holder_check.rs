//! Audit F-04: a peer found by discovery (here a DHT "provider" on loopback,
//! mDNS off) hears the manifest id only once it proves it holds the share.
//! A probe that announces the locator, records every byte it is sent and
//! forges what it can from the locator never learns the id.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::net::{local_share, quick};
use common::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use peerdrop::crypto::holder_proof;
use peerdrop::link::Link;
use peerdrop::net::fetch::fetch;
use peerdrop::net::frame::write_msg;
use peerdrop::net::inbound::InboundStream;
use peerdrop::net::node::{self, NodeConfig};
use peerdrop::wire::{self, Request, Response};

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dht_provider_without_the_share_never_learns_the_manifest_id() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "secret.bin");
        std::fs::write(&f, bytes(5, 1 << 20)).unwrap();
        let (key, share) = local_share(std::slice::from_ref(&f));
        let id = share.id();
        let locator = id.locator();

        let dht = node::spawn(NodeConfig {
            dht_server: peerdrop::net::node::Role::On,
            ..NodeConfig::default()
        })
        .unwrap();
        let boot = dht
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        let on_dht = || NodeConfig {
            bootstrap: vec![boot.clone()],
            ..NodeConfig::default()
        };

        // The probe: announces the locator, records every frame body, and
        // answers a holder question with the best forgery the locator allows.
        let probe = node::spawn(on_dht()).unwrap();
        probe
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let mut incoming = probe.incoming().unwrap();
        let (record, probe_id) = (seen.clone(), probe.peer_id());
        tokio::spawn(async move {
            while let Some(InboundStream {
                peer, mut stream, ..
            }) = incoming.recv().await
            {
                let record = record.clone();
                tokio::spawn(async move {
                    loop {
                        let mut prefix = [0u8; 4];
                        if stream.read_exact(&mut prefix).await.is_err() {
                            return;
                        }
                        let Ok(n) = wire::body_len(prefix) else {
                            return;
                        };
                        let mut body = vec![0u8; n];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let answer = match wire::decode::<Request>(&body) {
                            Ok(Request::Holder { locator, nonce }) => Response::Holder {
                                proof: holder_proof(
                                    &locator,
                                    &nonce,
                                    &peer.to_bytes(),
                                    &probe_id.to_bytes(),
                                ),
                            },
                            _ => Response::NotFound,
                        };
                        record.lock().unwrap().push(body);
                        if write_msg(&mut stream, &answer).await.is_err()
                            || stream.flush().await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });

        // The fetcher: a link with no hints, discovery on.
        let fetcher = node::spawn(on_dht()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            probe.provide(locator.to_vec()).await;
            let found = fetcher
                .providers(locator.to_vec())
                .await
                .unwrap_or_default();
            if found.contains(&probe.peer_id()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the probe's record never showed up"
            );
            // A polling interval: the record is stored by another node.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let link = Link::new(id, Vec::new(), Some(key)).unwrap();
        let opts = peerdrop::net::fetch::FetchOptions {
            discover: true,
            wait: Duration::from_secs(5),
            ..quick()
        };
        let (tx, _rx) = peerdrop::net::fetch::progress_channel();
        let dest = sub(&tmp, "dest");
        let r = fetch(&fetcher, &link, Vec::new(), &dest, &opts, tx).await;
        assert!(
            r.is_err(),
            "nobody holds the share, yet the fetch succeeded"
        );

        let seen = seen.lock().unwrap().clone();
        for body in seen.iter() {
            assert!(
                !body.windows(32).any(|w| w == id.0),
                "the probe learned the manifest id: {:?}",
                wire::decode::<Request>(body)
            );
        }
        assert!(
            seen.iter()
                .any(|b| matches!(wire::decode(b), Ok(Request::Holder { .. }))),
            "the probe was never asked (the test did not exercise discovery)"
        );
        for n in [fetcher, probe, dht] {
            n.shutdown().await;
        }
    })
    .await
    .unwrap();
}
