//! A sender cannot be held hostage (audit F-01): fetchers that stop reading
//! mid-transfer, or a burst of streams opened at once, must not stop it
//! serving an honest fetcher. Loopback only, no mDNS.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::net::*;
use common::*;
use futures::AsyncWriteExt;
use peerdrop::manifest::{Manifest, ManifestId};
use peerdrop::net::frame::{read_msg, read_payload, write_msg};
use peerdrop::net::node::{self, Client, NodeConfig, XFER};
use peerdrop::wire::{Request, Response};

/// A peer that asks for chunks on `streams` streams and then never reads an
/// answer: the frozen receiver of the audit. Returns its node and streams,
/// which must stay alive for the stall to last.
async fn staller(
    server: &Server,
    id: ManifestId,
    manifest: &Manifest,
    streams: usize,
) -> (Client, Vec<libp2p::Stream>) {
    let client = node::spawn(NodeConfig::default()).unwrap();
    client
        .dial(server.addr.peer, server.addr.addrs.clone())
        .await
        .unwrap();
    let mut control = client.control();
    let mut open = Vec::new();
    for s in 0..streams {
        let Ok(mut stream) = control.open_stream(server.addr.peer, XFER).await else {
            continue;
        };
        // Every stream asks for a different run of chunks, more than the
        // server answers at once, and reads nothing.
        for i in 0..8 {
            let chunk = manifest.content_chunks[(s * 8 + i) % manifest.content_chunks.len()];
            let _ = write_msg(&mut stream, &Request::Chunk { share: id, chunk }).await;
        }
        let _ = stream.flush().await;
        open.push(stream);
    }
    (client, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_receivers_do_not_stop_a_sender_serving_an_honest_one() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "big.bin");
        fs::write(&f, bytes(11, 24 << 20)).unwrap();
        let (key, share) = local_share(std::slice::from_ref(&f));
        let id = share.id();
        let manifest = share.manifest().clone();
        let server = start_server("/ip4/127.0.0.1/tcp/0", provider(share)).await;

        // Forty receivers freeze mid-transfer, each with eight streams asking
        // for chunks: together far more than the sender's memory for answers.
        let mut frozen = Vec::new();
        for _ in 0..40 {
            frozen.push(staller(&server, id, &manifest, 8).await);
        }

        // An honest receiver arriving now still gets everything, in bounded
        // time (the limit of the test), with the default serving policy.
        let link = link_for(&key, id, &[&server]);
        let dest = sub(&tmp, "out");
        let started = Instant::now();
        let (r, _) = fetch_link(&link, &dest, &quick()).await;
        r.expect("the honest receiver is served despite the frozen ones");
        assert_eq!(
            fs::read(dest.join("big.bin")).unwrap(),
            fs::read(&f).unwrap()
        );
        eprintln!(
            "honest fetch with 40 frozen receivers ({} streams): {:.1} s",
            frozen.iter().map(|(_, s)| s.len()).sum::<usize>(),
            started.elapsed().as_secs_f64()
        );
        drop(frozen);
    })
    .await
    .expect("bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_in_a_burst_are_all_answered() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "small.bin");
        fs::write(&f, bytes(12, 4096)).unwrap();
        let (_key, share) = local_share(&[f]);
        let id = share.id();
        let server = start_server("/ip4/127.0.0.1/tcp/0", provider(share)).await;

        // Eight fetchers open eight streams each, all at once, each asking
        // which chunks the sender has: 64 streams arriving together.
        let mut fetchers = Vec::new();
        for _ in 0..8 {
            let c = node::spawn(NodeConfig::default()).unwrap();
            c.dial(server.addr.peer, server.addr.addrs.clone())
                .await
                .unwrap();
            fetchers.push(c);
        }
        let peer = server.addr.peer;
        let asks = fetchers.iter().flat_map(|c| {
            (0..8).map(move |_| {
                let mut control = c.control();
                async move {
                    let mut s = control.open_stream(peer, XFER).await.ok()?;
                    write_msg(&mut s, &Request::Have { share: id }).await.ok()?;
                    s.flush().await.ok()?;
                    read_msg::<_, Response>(&mut s).await.ok()?
                }
            })
        });
        let answers: Vec<Option<Response>> = futures::future::join_all(asks).await;
        let answered = answers
            .iter()
            .filter(|a| matches!(a, Some(Response::Have(_))))
            .count();
        assert_eq!(
            answered,
            answers.len(),
            "every stream of the burst gets its answer: {answers:?}"
        );
    })
    .await
    .expect("bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_the_per_peer_limit_is_told_busy() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "small.bin");
        fs::write(&f, bytes(13, 4096)).unwrap();
        let (_key, share) = local_share(&[f]);
        let id = share.id();
        let server = start_server("/ip4/127.0.0.1/tcp/0", provider(share)).await;
        let c = node::spawn(NodeConfig::default()).unwrap();
        c.dial(server.addr.peer, server.addr.addrs.clone())
            .await
            .unwrap();
        let mut control = c.control();
        // Eight streams are the per-peer limit: hold them open (each answered,
        // so each is surely admitted), then open one more.
        let mut held = Vec::new();
        for _ in 0..8 {
            let mut s = control.open_stream(server.addr.peer, XFER).await.unwrap();
            write_msg(&mut s, &Request::Have { share: id })
                .await
                .unwrap();
            s.flush().await.unwrap();
            assert!(matches!(
                read_msg::<_, Response>(&mut s).await.unwrap(),
                Some(Response::Have(_))
            ));
            held.push(s);
        }
        let mut extra = control.open_stream(server.addr.peer, XFER).await.unwrap();
        write_msg(&mut extra, &Request::Have { share: id })
            .await
            .unwrap();
        let _ = extra.flush().await;
        match read_msg::<_, Response>(&mut extra).await {
            Ok(Some(Response::Busy { retry_ms })) => assert!(retry_ms > 0),
            other => panic!("the ninth stream should be told Busy, got {other:?}"),
        }
        // One held stream closes; a new one is admitted again.
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut s = control.open_stream(server.addr.peer, XFER).await.unwrap();
            write_msg(&mut s, &Request::Manifest { share: id })
                .await
                .unwrap();
            s.flush().await.unwrap();
            match read_msg::<_, Response>(&mut s).await.unwrap() {
                Some(Response::Manifest { len }) => {
                    let m = read_payload(&mut s, len as usize).await.unwrap();
                    assert!(Manifest::decode_verified(&id, &m).is_ok());
                    break;
                }
                Some(Response::Busy { .. }) if Instant::now() < deadline => {
                    // The closed stream's slot is given back once the server
                    // sees the close; ask again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("expected the manifest, got {other:?}"),
            }
        }
    })
    .await
    .expect("bounded in time");
}
