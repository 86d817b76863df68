//! One stream per source per fetch (issue 12): the manifest, the file
//! list's session, the content's session and the `Done` proof go over the
//! same stream when they can, and a reused stream the source closed costs
//! it nothing. Loopback only, no mDNS.

mod common;

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::net::*;
use common::*;
use futures::AsyncWriteExt;
use peerdrop::crypto::DoneKey;
use peerdrop::net::fetch::RetryPolicy;
use peerdrop::net::frame::{read_msg, write_msg};
use peerdrop::net::inbound::InboundStream;
use peerdrop::net::node::{self, NodeConfig};
use peerdrop::net::serve::{serve, DoneReport, LocalProvider, ServeConfig};
use peerdrop::net::{Multiaddr, PeerAddr};
use peerdrop::store::share::LocalShare;
use peerdrop::wire::{Request, Response};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(120);

/// A node serving a share, counting the streams it is opened, and the
/// receivers that proved they are done.
struct Counted {
    server: Server,
    streams: Arc<AtomicUsize>,
    done: mpsc::Receiver<libp2p::PeerId>,
}

/// Answers a stream in place of the server, given the manifest's bytes.
type FirstStream = fn(InboundStream, Arc<[u8]>) -> futures::future::BoxFuture<'static, ()>;

/// Serves `share` (sealed with `key`); the first stream opened goes to
/// `first` instead of the real server, if given.
async fn counted(
    share: LocalShare,
    key: &peerdrop::crypto::ShareKey,
    first: Option<FirstStream>,
) -> Counted {
    let client = node::spawn(NodeConfig::default()).unwrap();
    let mut addr: Multiaddr = client
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    addr.pop();
    let manifest = share.manifest_bytes();
    let (done_tx, done) = mpsc::channel(8);
    let provider = Arc::new(LocalProvider::new(
        share,
        Some(DoneReport {
            key: DoneKey::new(key),
            to: done_tx,
        }),
    ));
    let streams = Arc::new(AtomicUsize::new(0));
    let mut incoming = client.incoming().unwrap();
    let (tx, rx) = mpsc::channel(16);
    let n = streams.clone();
    tokio::spawn(async move {
        while let Some(s) = incoming.recv().await {
            let k = n.fetch_add(1, Ordering::SeqCst);
            match first {
                Some(f) if k == 0 => {
                    tokio::spawn(f(s, manifest.clone()));
                }
                _ => {
                    if tx.send(s).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let config = ServeConfig {
        identity: Some(client.peer_id()),
        ..ServeConfig::default()
    };
    tokio::spawn(serve(rx, provider, config));
    Counted {
        server: Server {
            addr: PeerAddr {
                peer: client.peer_id(),
                addrs: vec![addr],
            },
            client,
        },
        streams,
        done,
    }
}

/// Answers the stream's first request (a `Manifest`) and closes it, as a
/// provider whose idle timeout ran out between a fetch's steps would.
fn manifest_then_close(
    s: InboundStream,
    manifest: Arc<[u8]>,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        let mut stream = s.stream;
        let req: Option<Request> = read_msg(&mut stream).await.unwrap();
        assert!(matches!(req, Some(Request::Manifest { .. })), "{req:?}");
        let head = Response::Manifest {
            len: manifest.len() as u32,
        };
        write_msg(&mut stream, &head).await.unwrap();
        stream.write_all(&manifest).await.unwrap();
        stream.close().await.unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_uses_one_stream_at_its_source_and_proves_done_on_it() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        // A small share (one content chunk) and one of several chunks with
        // a file list of several entries.
        let small = sub(&tmp, "small.bin");
        fs::write(&small, bytes(1, 4096)).unwrap();
        let folder = sub(&tmp, "folder");
        fs::create_dir(&folder).unwrap();
        for i in 0..3u64 {
            fs::write(folder.join(format!("f{i}")), bytes(10 + i, 1 << 20)).unwrap();
        }
        for input in [small, folder] {
            let (key, share) = local_share(std::slice::from_ref(&input));
            let id = share.id();
            let chunks = share.manifest().content_chunks.len();
            let mut c = counted(share, &key, None).await;
            let link = link_for(&key, id, &[&c.server]);
            let dest = sub(&tmp, &format!("out-{chunks}"));
            let (r, _) = fetch_link(&link, &dest, &quick()).await;
            let done = r.expect("the fetch succeeds");
            let out = dest.join(input.file_name().unwrap());
            if input.is_dir() {
                assert_eq!(read_tree(&out), read_tree(&input));
            } else {
                assert_eq!(fs::read(&out).unwrap(), fs::read(&input).unwrap());
            }
            // Done is proven before the fetch returns.
            let told = c.done.try_recv();
            assert!(told.is_ok(), "no proven Done: {told:?}");
            assert_eq!(
                c.streams.load(Ordering::SeqCst),
                1,
                "streams opened for a fetch of {chunks} content chunk(s), {} bytes",
                done.bytes
            );
        }
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_stream_the_source_closed_costs_it_no_strike() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "small.bin");
        fs::write(&f, bytes(2, 4096)).unwrap();
        let (key, share) = local_share(std::slice::from_ref(&f));
        let id = share.id();
        let mut c = counted(share, &key, Some(manifest_then_close)).await;
        let link = link_for(&key, id, &[&c.server]);
        let dest = sub(&tmp, "out");
        // One lost session drops the source: the fetch succeeds only if
        // the closed stream was not held against it.
        let opts = peerdrop::net::fetch::FetchOptions {
            retry: RetryPolicy {
                max_strikes: 1,
                ..RetryPolicy::default()
            },
            ..quick()
        };
        let (r, events) = fetch_link(&link, &dest, &opts).await;
        r.expect("the fetch succeeds");
        assert!(dropped(&events).is_empty(), "{events:?}");
        assert_eq!(
            fs::read(dest.join("small.bin")).unwrap(),
            fs::read(&f).unwrap()
        );
        assert!(c.done.try_recv().is_ok(), "no proven Done");
        // The manifest's stream, then one more for everything else.
        assert_eq!(c.streams.load(Ordering::SeqCst), 2);
    })
    .await
    .expect("within the limit");
}
