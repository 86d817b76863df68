//! Two nodes in one process on loopback, over TCP and over QUIC: real
//! transfers of a 64 MiB file, a tree of 1,000 small files with an empty file
//! and an empty folder, and a zero-byte share; an interrupted fetch resumes,
//! and a fetch draws from a good and a bad source at once.

mod common;

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::net::*;
use common::*;
use peerdrop::chunk::ChunkId;
use peerdrop::manifest::ManifestId;
use peerdrop::net::fetch::{FetchError, Progress};
use peerdrop::net::serve::{LocalProvider, Provider, Refusal};
use peerdrop::wire::Have;

const LIMIT: Duration = Duration::from_secs(180);

async fn transfer_file(listen: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "big.bin");
    let data = bytes(64, 64 << 20);
    fs::write(&f, &data).unwrap();
    let (key, share) = local_share(std::slice::from_ref(&f));
    let id = share.id();
    let server = start_server(listen, provider(share)).await;
    let link = link_for(&key, id, &[&server]);
    let dest = sub(&tmp, "dest");
    let (r, events) = fetch_link(&link, &dest, &quick()).await;
    let done = r.unwrap();
    assert_eq!(done.bytes, 64 << 20);
    assert_eq!(done.resumed_bytes, 0);
    assert_eq!(
        blake3::hash(&fs::read(dest.join("big.bin")).unwrap()),
        blake3::hash(&data)
    );
    assert!(events.contains(&Progress::Bytes(64 << 20)));
    server.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_file_over_tcp() {
    tokio::time::timeout(LIMIT, transfer_file("/ip4/127.0.0.1/tcp/0"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_file_over_quic() {
    tokio::time::timeout(LIMIT, transfer_file("/ip4/127.0.0.1/udp/0/quic-v1"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_of_1000_small_files_with_empty_file_and_folder() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let root = sub(&tmp, "src/tree");
        let mut t = Tree::new();
        for d in 0..10 {
            t.insert(format!("d{d}"), (true, false, vec![]));
            for f in 0..100 {
                t.insert(
                    format!("d{d}/f{f}.txt"),
                    (
                        false,
                        f % 7 == 0,
                        bytes(d * 100 + f, (f as usize * 37) % 3000),
                    ),
                );
            }
        }
        t.insert("empty.txt".into(), (false, false, vec![]));
        t.insert("empty-dir".into(), (true, false, vec![]));
        write_tree(&root, &t);
        let (key, share) = local_share(std::slice::from_ref(&root));
        let id = share.id();
        let server = start_server("/ip4/127.0.0.1/tcp/0", provider(share)).await;
        let dest = sub(&tmp, "dest");
        let (r, _) = fetch_link(&link_for(&key, id, &[&server]), &dest, &quick()).await;
        assert_eq!(r.unwrap().files, 1001);
        assert_eq!(read_tree(&root), read_tree(&dest.join("tree")));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_byte_share() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let empty = sub(&tmp, "src/nothing");
        fs::create_dir_all(&empty).unwrap();
        let (key, share) = local_share(std::slice::from_ref(&empty));
        let id = share.id();
        let server = start_server("/ip4/127.0.0.1/tcp/0", provider(share)).await;
        let dest = sub(&tmp, "dest");
        let (r, _) = fetch_link(&link_for(&key, id, &[&server]), &dest, &quick()).await;
        assert_eq!(r.unwrap().bytes, 0);
        assert!(dest.join("nothing").is_dir());
    })
    .await
    .unwrap();
}

/// Serves only the first `limit` content chunks, then claims to hold nothing
/// more: a source that went away in the middle.
struct GoesAway {
    inner: LocalProvider,
    served: AtomicUsize,
    limit: usize,
}

impl Provider for GoesAway {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.inner.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.inner.have(share)
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        if self.served.fetch_add(1, Ordering::SeqCst) >= self.limit {
            return Err(Refusal::NotFound);
        }
        self.inner.chunk(share, chunk)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_and_verifies_what_it_has() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "data.bin");
        let data = bytes(5, 20 << 20);
        fs::write(&f, &data).unwrap();
        let (key, share) = local_share(std::slice::from_ref(&f));
        let id = share.id();
        // 1 metadata chunk + 7 content chunks, then it stops serving.
        let flaky = Arc::new(GoesAway {
            inner: LocalProvider::new(share, None),
            served: AtomicUsize::new(0),
            limit: 8,
        });
        let server = start_server("/ip4/127.0.0.1/tcp/0", flaky).await;
        let dest = sub(&tmp, "dest");
        let link = link_for(&key, id, &[&server]);
        let (r, _) = fetch_link(&link, &dest, &quick()).await;
        assert!(matches!(r, Err(FetchError::NotFound)), "{r:?}");
        assert!(!dest.join("data.bin").exists(), "nothing at the final path");
        // Corrupt one byte of the staged data: resume must not trust it.
        let staging = fs::read_dir(&dest).unwrap().next().unwrap().unwrap().path();
        let staged = staging.join("tree/data.bin");
        let mut bytes_on_disk = fs::read(&staged).unwrap();
        bytes_on_disk[100] ^= 1;
        fs::write(&staged, &bytes_on_disk).unwrap();
        // Which 1 MiB chunks are intact on disk now: exactly those must be
        // kept (how many the source served before going away depends on
        // timing; chunk 0 is never among them).
        let intact = (0..20)
            .filter(|i| {
                let r = i << 20..(i + 1) << 20;
                bytes_on_disk.get(r.clone()) == Some(&data[r])
            })
            .count() as u64;
        assert!(
            intact >= 1,
            "the source served some chunks before going away"
        );
        server.client.shutdown().await;

        let good = start_server("/ip4/127.0.0.1/tcp/0", provider(local_share_with(&key, &f))).await;
        let (r, events) = fetch_link(&link_for(&key, id, &[&good]), &dest, &quick()).await;
        let done = r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
        // The intact chunks were kept; chunk 0, corrupted, was fetched again.
        assert_eq!(done.resumed_bytes, intact << 20, "{events:?}");
        assert_eq!(
            blake3::hash(&fs::read(dest.join("data.bin")).unwrap()),
            blake3::hash(&data)
        );
        assert_eq!(
            final_names_in(&dest),
            names_in(&dest),
            "staging folder removed"
        );
    })
    .await
    .unwrap();
}

fn local_share_with(
    key: &peerdrop::crypto::ShareKey,
    f: &std::path::Path,
) -> peerdrop::store::share::LocalShare {
    peerdrop::store::share::LocalShare::create(
        &[f.to_path_buf()],
        key,
        &peerdrop::seal::SealOptions::default(),
        |_| {},
    )
    .unwrap()
}

/// Serves every chunk with one byte flipped.
struct Corrupting(LocalProvider);

impl Provider for Corrupting {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.0.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.0.have(share)
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        let mut c = self.0.chunk(share, chunk)?;
        let n = c.len();
        c[n / 2] ^= 0x40;
        Ok(c)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fetch_draws_from_two_sources_and_drops_the_bad_one() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "data.bin");
        let data = bytes(6, 16 << 20);
        fs::write(&f, &data).unwrap();
        let (key, share) = local_share(std::slice::from_ref(&f));
        let id = share.id();
        let bad = start_server(
            "/ip4/127.0.0.1/tcp/0",
            Arc::new(Corrupting(LocalProvider::new(share, None))),
        )
        .await;
        let good = start_server("/ip4/127.0.0.1/tcp/0", provider(local_share_with(&key, &f))).await;
        let dest = sub(&tmp, "dest");
        let (r, events) = fetch_link(&link_for(&key, id, &[&bad, &good]), &dest, &quick()).await;
        r.unwrap();
        assert_eq!(
            blake3::hash(&fs::read(dest.join("data.bin")).unwrap()),
            blake3::hash(&data)
        );
        let dropped = dropped(&events);
        assert!(
            dropped
                .iter()
                .any(|(p, r)| *p == bad.addr.peer && r.contains("does not match its id")),
            "{dropped:?}"
        );
        assert!(dropped.iter().all(|(p, _)| *p != good.addr.peer));
    })
    .await
    .unwrap();
}

/// A peer that only knows the manifest id cannot stop a one-shot sender: a
/// bare `Done`, or one with a made-up proof, counts for nothing; a real
/// fetch's `Done` proves the key and counts, naming the fetcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_done_that_proves_the_key_counts() {
    use futures::AsyncWriteExt;
    use peerdrop::crypto::DoneKey;
    use peerdrop::net::frame::{read_msg, write_msg};
    use peerdrop::net::node::{self, NodeConfig, XFER};
    use peerdrop::net::serve::DoneReport;
    use peerdrop::wire::{Request, Response};

    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "a.bin");
        fs::write(&f, bytes(7, 3 << 20)).unwrap();
        let (key, share) = local_share(std::slice::from_ref(&f));
        let id = share.id();
        let (tx, mut done) = tokio::sync::mpsc::channel(4);
        let report = DoneReport {
            key: DoneKey::new(&key),
            to: tx,
        };
        let server = start_server(
            "/ip4/127.0.0.1/tcp/0",
            Arc::new(LocalProvider::new(share, Some(report))),
        )
        .await;

        // A peer that knows the id says "done" without fetching anything.
        let rogue = node::spawn(NodeConfig::default()).unwrap();
        rogue
            .dial(server.addr.peer, server.addr.addrs.clone())
            .await
            .unwrap();
        let mut s = rogue
            .control()
            .open_stream(server.addr.peer, XFER)
            .await
            .unwrap();
        // One request, one answer.
        async fn ask(s: &mut libp2p::Stream, req: Request) -> Option<Response> {
            write_msg(s, &req).await.unwrap();
            s.flush().await.unwrap();
            read_msg(s).await.unwrap()
        }
        let ack = ask(&mut s, Request::Done { share: id }).await;
        assert_eq!(ack, Some(Response::Ack));
        // The provider is told before the answer is written.
        assert!(done.try_recv().is_err(), "a bare Done was accepted");
        // With the challenge, but no key: any proof it makes up is refused.
        let challenge = match ask(&mut s, Request::DoneChallenge { share: id }).await {
            Some(Response::Challenge { challenge }) => challenge,
            other => panic!("{other:?}"),
        };
        let other = node::spawn(NodeConfig::default()).unwrap();
        let (sender, rogue_id) = (server.addr.peer.to_bytes(), rogue.peer_id().to_bytes());
        let wrong_key = DoneKey::new(&peerdrop::crypto::ShareKey::generate().unwrap());
        let forgeries = [
            // Under the wrong key (what a pin link's holder could compute).
            wrong_key.prove(&id.0, &challenge, &sender, &rogue_id),
            // The right key, but made for another receiver (one the rogue
            // might have seen).
            DoneKey::new(&key).prove(&id.0, &challenge, &sender, &other.peer_id().to_bytes()),
        ];
        other.shutdown().await;
        for proof in forgeries {
            let answer = ask(&mut s, Request::ProvenDone { share: id, proof }).await;
            assert_eq!(answer, Some(Response::NotFound));
            assert!(done.try_recv().is_err(), "a forged proof was accepted");
        }

        // A real fetch gets everything served, then its Done counts.
        let dest = sub(&tmp, "dest");
        let (r, _) = fetch_link(&link_for(&key, id, &[&server]), &dest, &quick()).await;
        r.unwrap();
        let who = done.recv().await.expect("the fetch's Done was accepted");
        assert_ne!(who, rogue.peer_id());
        rogue.shutdown().await;
        server.client.shutdown().await;
    })
    .await
    .unwrap();
}
