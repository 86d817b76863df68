//! Hostile sources: a peer that corrupts chunks, sends another chunk's bytes,
//! sends an oversized frame or a lying length, sends garbage, or stalls. The
//! fetch must never write bad data, never hang, and must say what happened.

mod common;

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::*;
use common::*;
use futures::AsyncWriteExt;
use peerdrop::chunk::ChunkId;
use peerdrop::manifest::ManifestId;
use peerdrop::net::fetch::{FetchError, Progress};
use peerdrop::net::frame::{read_msg, write_msg};
use peerdrop::net::inbound::InboundStream;
use peerdrop::net::node::{self, NodeConfig};
use peerdrop::net::serve::{LocalProvider, Provider, Refusal};
use peerdrop::net::{Multiaddr, PeerAddr};
use peerdrop::wire::{Have, Request, Response};

const LIMIT: Duration = Duration::from_secs(60);

/// How a raw test peer answers chunk requests (it answers manifest and
/// Have requests honestly, to get the fetcher that far).
#[derive(Clone, Copy, Debug)]
enum Evil {
    /// A length prefix of 4 GiB.
    HugeFrame,
    /// A chunk header announcing far more bytes than the chunk has.
    LyingLength,
    /// Bytes that are not a frame at all.
    Garbage,
    /// Reads requests and never answers.
    Stall,
}

async fn evil_server(manifest: Arc<[u8]>, evil: Evil) -> Server {
    let client = node::spawn(NodeConfig::default()).unwrap();
    let mut addr: Multiaddr = client
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    addr.pop();
    let mut incoming = client.incoming().unwrap();
    tokio::spawn(async move {
        while let Some(InboundStream { stream: mut s, .. }) = incoming.recv().await {
            let manifest = manifest.clone();
            tokio::spawn(async move {
                while let Ok(Some(req)) = read_msg::<_, Request>(&mut s).await {
                    let r = match req {
                        Request::Manifest { .. } => {
                            let _ = write_msg(
                                &mut s,
                                &Response::Manifest {
                                    len: manifest.len() as u32,
                                },
                            )
                            .await;
                            s.write_all(&manifest).await
                        }
                        Request::Have { .. } => write_msg(&mut s, &Response::Have(Have::All)).await,
                        Request::Chunk { .. } => match evil {
                            Evil::HugeFrame => s.write_all(&u32::MAX.to_be_bytes()).await,
                            Evil::LyingLength => {
                                write_msg(&mut s, &Response::Chunk { len: u32::MAX }).await
                            }
                            Evil::Garbage => {
                                s.write_all(&[0x00, 0x00, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x99])
                                    .await
                            }
                            Evil::Stall => Ok(()),
                        },
                        Request::Done { .. } => write_msg(&mut s, &Response::Ack).await,
                        _ => write_msg(&mut s, &Response::NotFound).await,
                    };
                    if r.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
                // Keep a stalled stream open until the test ends.
                if matches!(evil, Evil::Stall) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
    });
    Server {
        addr: PeerAddr {
            peer: client.peer_id(),
            addrs: vec![addr],
        },
        client,
    }
}

/// Serves chunks wrongly, per `mode`, through the normal serving code.
struct Wrong {
    inner: LocalProvider,
    /// Serve the next chunk's bytes instead of the one asked for.
    shift: bool,
}

impl Provider for Wrong {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.inner.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.inner.have(share)
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        let m = self.inner.share().manifest();
        if self.shift {
            let all: Vec<_> = m.content_chunks.clone();
            if let Some(i) = all.iter().position(|c| c == chunk) {
                return self.inner.chunk(share, &all[(i + 1) % all.len()]);
            }
        }
        let mut c = self.inner.chunk(share, chunk)?;
        c[0] ^= 1;
        Ok(c)
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    key: peerdrop::crypto::ShareKey,
    id: ManifestId,
    share: Option<peerdrop::store::share::LocalShare>,
    dest: std::path::PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "victim.bin");
    // Four 1 MiB chunks of the same size, so a shifted chunk has the right length.
    fs::write(&f, bytes(8, 4 << 20)).unwrap();
    let (key, share) = local_share(&[f]);
    Setup {
        id: share.id(),
        dest: sub(&tmp, "dest"),
        key,
        share: Some(share),
        _tmp: tmp,
    }
}

async fn expect_failure(s: &Setup, server: &Server, want: &str) {
    let start = Instant::now();
    let (r, events) = fetch_link(&link_for(&s.key, s.id, &[server]), &s.dest, &impatient()).await;
    assert!(matches!(r, Err(FetchError::Unreachable(_))), "{r:?}");
    let reasons: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Progress::PeerDropped { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains(want)),
        "{reasons:?} lacks {want:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Progress::Bytes(_))),
        "no byte was accepted"
    );
    assert!(
        !s.dest.join("victim.bin").exists(),
        "nothing at the final path"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "gave up in bounded time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupted_chunks_is_dropped() {
    tokio::time::timeout(LIMIT, async {
        let mut s = setup();
        let p = Wrong {
            inner: LocalProvider::new(s.share.take().unwrap(), None),
            shift: false,
        };
        let server = start_server("/ip4/127.0.0.1/tcp/0", Arc::new(p)).await;
        expect_failure(&s, &server, "does not match its id").await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_another_chunk_for_an_id_is_dropped() {
    tokio::time::timeout(LIMIT, async {
        let mut s = setup();
        let p = Wrong {
            inner: LocalProvider::new(s.share.take().unwrap(), None),
            shift: true,
        };
        let server = start_server("/ip4/127.0.0.1/tcp/0", Arc::new(p)).await;
        expect_failure(&s, &server, "does not match its id").await;
    })
    .await
    .unwrap();
}

async fn raw(evil: Evil, want: &str) {
    let mut s = setup();
    let manifest = s.share.take().unwrap().manifest_bytes();
    let server = evil_server(manifest, evil).await;
    expect_failure(&s, &server, want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_before_allocating() {
    tokio::time::timeout(LIMIT, raw(Evil::HugeFrame, "over the 81920-byte limit"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_chunk_length_is_refused_before_reading() {
    tokio::time::timeout(LIMIT, raw(Evil::LyingLength, "bytes were due"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_a_protocol_error() {
    tokio::time::timeout(LIMIT, raw(Evil::Garbage, "invalid message"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_peer_times_out() {
    tokio::time::timeout(LIMIT, raw(Evil::Stall, "stalled"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiving_process_stays_small_against_size_bombs() {
    tokio::time::timeout(LIMIT, async {
        for evil in [Evil::HugeFrame, Evil::LyingLength] {
            let mut s = setup();
            let manifest = s.share.take().unwrap().manifest_bytes();
            let server = evil_server(manifest, evil).await;
            let link = link_for(&s.key, s.id, &[&server]).to_uri_string();
            let dest = s.dest.clone();
            let (code, rss_kib, err) = tokio::task::spawn_blocking(move || {
                receive_peak_rss(&link, &dest, &["--timeout", "2", "--wait", "2"])
            })
            .await
            .unwrap();
            assert_eq!(code, 1, "{evil:?}: {err}");
            assert!(err.contains("stopped using peer"), "{evil:?}: {err}");
            // A 4 GiB claim honoured even partly would show here.
            assert!(rss_kib < 100 * 1024, "{evil:?}: peak RSS {rss_kib} KiB");
            assert!(!s.dest.join("victim.bin").exists());
        }
    })
    .await
    .unwrap();
}
