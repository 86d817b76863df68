//! Swarming on loopback (issue 11): a fetch draws from every source at
//! once, by each one's rate, and a slow source never holds the tail.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use common::net::*;
use common::swarm::*;
use common::*;
use peerdrop::chunk::ChunkId;
use peerdrop::crypto::ShareKey;
use peerdrop::link::Link;
use peerdrop::manifest::ManifestId;
use peerdrop::net::fetch::{
    fetch, progress_channel, FetchError, FetchOptions, Fetched, Partial, Progress,
};
use peerdrop::net::node::{self, Client, NodeConfig};
use peerdrop::net::serve::{LocalProvider, Provider, Refusal, ServeConfig};
use peerdrop::net::{PeerAddr, PeerId};
use peerdrop::wire::Have;

const LIMIT: Duration = Duration::from_secs(240);
const MIB: usize = 1 << 20;

/// Two sources, one capped at a tenth of the other's upload rate: fetching
/// from both takes at most 1.2 times as long as fetching from the fast one
/// alone (measured here, one after the other), and no chunk is asked of
/// both except in the endgame. Without a rate-aware scheduler the slow
/// source takes a pipeline's worth of chunks at the start and holds the
/// tail: 8 chunks at 1.6 MiB/s are 5 s, where the fast one alone needs 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_ten_times_slower_does_not_hold_the_tail() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "data.bin");
        // 48 chunks: about 3 s from the fast source alone.
        let data = bytes(11, 48 * MIB);
        fs::write(&f, &data).unwrap();
        let key = ShareKey::generate().unwrap();
        let fast_rate = 16 * MIB as u64;
        let (fast, fast_count) = capped(&key, &f, fast_rate).await;
        let (slow, slow_count) = capped(&key, &f, fast_rate / 10).await;
        let share_id = fast_count.inner.share().id();

        let want = blake3::hash(&data);
        let timed = |servers: Vec<&Server>, dest: std::path::PathBuf| {
            let link = link_for(&key, share_id, &servers);
            async move {
                let start = Instant::now();
                let (r, events) = fetch_link(&link, &dest, &quick()).await;
                let took = start.elapsed();
                r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
                assert_eq!(
                    blake3::hash(&fs::read(dest.join("data.bin")).unwrap()),
                    want
                );
                took
            }
        };
        let alone = timed(vec![&fast], sub(&tmp, "alone")).await;
        let served_alone = fast_count.chunks.swap(0, Ordering::SeqCst);
        // The slow source first: it is asked for the manifest.
        let both = timed(vec![&slow, &fast], sub(&tmp, "both")).await;
        let (from_fast, from_slow) = (
            fast_count.chunks.load(Ordering::SeqCst),
            slow_count.chunks.load(Ordering::SeqCst),
        );
        eprintln!(
            "fast alone {alone:?} ({served_alone} chunks); both {both:?} \
             ({from_fast} from the fast source, {from_slow} from the slow one)"
        );
        let ratio = both.as_secs_f64() / alone.as_secs_f64();
        assert!(
            ratio <= 1.2,
            "both sources took {ratio:.2} times as long as the fast one alone ({both:?} vs {alone:?})"
        );
        // 49 chunks (one of the file list); duplicates only in the endgame,
        // at most a pipeline's worth (depth 8), and what a cancelled
        // session had asked for.
        assert!(
            from_fast + from_slow <= served_alone + 16,
            "{from_fast} + {from_slow} chunks served for {served_alone}"
        );
        fast.client.shutdown().await;
        slow.client.shutdown().await;
    })
    .await
    .unwrap();
}

/// A fetch running on its own task.
type Running = tokio::task::JoinHandle<Result<Fetched, FetchError>>;
/// Its progress events, with when each was seen (a few hundred at most in
/// these tests; the channel holds more).
type Seen = mpsc::Receiver<(Instant, Progress)>;

/// Starts fetching `link` from its hints on `client` into `dest`.
fn start_fetch(client: &Client, link: Link, dest: &Path, opts: FetchOptions) -> (Running, Seen) {
    let sources = link
        .hints()
        .iter()
        .filter_map(PeerAddr::from_hint)
        .collect();
    let (tx, mut rx) = progress_channel();
    let (seen_tx, seen) = mpsc::channel(4096);
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let _ = seen_tx.send((Instant::now(), e)).await;
        }
    });
    let (client, dest) = (client.clone(), dest.to_owned());
    let task = tokio::spawn(async move { fetch(&client, &link, sources, &dest, &opts, tx).await });
    (task, seen)
}

/// A receiver that is still fetching serves what it has verified: a second
/// receiver that knows only the first one fetches from it while it runs,
/// and finishes after the sharer has stopped (the first one, done, serves
/// the share from where it put it). The first receiver uploads at an
/// eighth of the sharer's rate, so the second one is still far from done
/// when the sharer stops. The first one does not pass its sources on in
/// peer exchange: the second one would fetch from the sharer too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_still_fetching_serves_another_after_the_sharer_stops() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "data.bin");
        let data = bytes(12, 18 * MIB);
        fs::write(&f, &data).unwrap();
        let key = ShareKey::generate().unwrap();
        let (sharer, _) = capped(&key, &f, 6 * MIB as u64).await;
        let id = share_of_file(&key, &f).id();

        // Receiver 1: fetches from the sharer, serving what it verified.
        let partial = Arc::new(Partial::new(id));
        let config = ServeConfig {
            max_rate: Some(2 * MIB as u64),
            ..ServeConfig::default()
        };
        let unlisted = Arc::new(Unlisted(partial.clone()));
        let r1 = start_server_with("/ip4/127.0.0.1/tcp/0", unlisted, config).await;
        let opts = FetchOptions {
            serve_as: Some(partial.clone()),
            ..quick()
        };
        let dest1 = sub(&tmp, "r1");
        let (first, mut seen1) =
            start_fetch(&r1.client, link_for(&key, id, &[&sharer]), &dest1, opts);
        // Once it holds a third, receiver 2 starts, knowing only receiver 1.
        while let Some((_, e)) = seen1.recv().await {
            if matches!(e, Progress::Bytes(n) if n >= 6 * MIB as u64) {
                break;
            }
        }
        assert!(!first.is_finished(), "receiver 1 should still be fetching");
        let r2 = node::spawn(NodeConfig::default()).unwrap();
        let dest2 = sub(&tmp, "r2");
        let (second, mut seen2) = start_fetch(&r2, link_for(&key, id, &[&r1]), &dest2, quick());

        first.await.unwrap().unwrap();
        let first_done = Instant::now();
        sharer.client.shutdown().await;
        let early_end = second.is_finished();
        let r = second.await.unwrap();
        assert!(
            !early_end,
            "receiver 2 ended before the sharer stopped: {r:?}"
        );
        r.unwrap();
        let want = blake3::hash(&data);
        for dest in [&dest1, &dest2] {
            assert_eq!(
                blake3::hash(&fs::read(dest.join("data.bin")).unwrap()),
                want
            );
        }
        // Receiver 2 got content from receiver 1 while receiver 1 was
        // still fetching.
        let mut early = 0;
        while let Ok((at, e)) = seen2.try_recv() {
            if let Progress::Bytes(n) = e {
                if at < first_done {
                    early = early.max(n);
                }
            }
        }
        eprintln!("receiver 2 had {early} bytes when receiver 1 finished");
        assert!(
            early > 0,
            "nothing came from receiver 1 while it was fetching"
        );
        r1.client.shutdown().await;
        r2.shutdown().await;
    })
    .await
    .unwrap();
}

/// Peer exchange: receiver B knows only the sharer (mDNS off, no DHT);
/// receiver A, already fetching from the sharer, is found through it and
/// serves B chunks while both run. Both copies are byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_finds_another_through_peer_exchange() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "data.bin");
        let data = bytes(14, 16 * MIB);
        fs::write(&f, &data).unwrap();
        let key = ShareKey::generate().unwrap();
        let (sharer, from_sharer) = capped(&key, &f, 4 * MIB as u64).await;
        let id = share_of_file(&key, &f).id();

        // Receiver A serves what it verified, counting what it serves.
        let partial = Arc::new(Partial::new(id));
        let a_served = Arc::new(Counting::new(partial.clone()));
        let a = start_server_with("/ip4/127.0.0.1/tcp/0", a_served.clone(), ServeConfig::default())
            .await;
        let opts = FetchOptions {
            serve_as: Some(partial.clone()),
            ..quick()
        };
        let dest_a = sub(&tmp, "a");
        let (first, mut seen_a) =
            start_fetch(&a.client, link_for(&key, id, &[&sharer]), &dest_a, opts);
        while let Some((_, e)) = seen_a.recv().await {
            if matches!(e, Progress::Bytes(n) if n >= 4 * MIB as u64) {
                break;
            }
        }
        assert!(!first.is_finished(), "receiver A should still be fetching");
        // Receiver B: the link's hint (the sharer) and nothing else.
        let b = node::spawn(NodeConfig::default()).unwrap();
        let dest_b = sub(&tmp, "b");
        let (second, mut seen_b) = start_fetch(&b, link_for(&key, id, &[&sharer]), &dest_b, quick());
        let (ra, rb) = (first.await.unwrap(), second.await.unwrap());
        ra.unwrap();
        rb.unwrap();
        let want = blake3::hash(&data);
        for dest in [&dest_a, &dest_b] {
            assert_eq!(
                blake3::hash(&fs::read(dest.join("data.bin")).unwrap()),
                want
            );
        }
        let mut met_a = false;
        while let Ok((_, e)) = seen_b.try_recv() {
            met_a |= e == Progress::Connected(a.addr.peer);
        }
        let (from_a, sharer_bytes) = (
            a_served.bytes.load(Ordering::SeqCst),
            from_sharer.bytes.load(Ordering::SeqCst),
        );
        eprintln!(
            "B got {from_a} bytes from A; the sharer uploaded {sharer_bytes} bytes for two copies of {}",
            data.len()
        );
        assert!(met_a, "B never connected to A");
        // Only B asks A for chunks.
        assert!(from_a > 0, "A served B nothing");
        sharer.client.shutdown().await;
        a.client.shutdown().await;
        b.shutdown().await;
    })
    .await
    .unwrap();
}

/// A hostile swarm member: it lists every chunk in a `Have` bitmap, as a
/// partial holder does, then refuses them (`lies`) or serves them with a
/// byte flipped.
struct Hostile {
    inner: LocalProvider,
    lies: bool,
}

impl Provider for Hostile {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.inner.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.inner.manifest(share)?;
        let n = self.inner.share().manifest().chunk_count();
        Some(Have::Bitmap(vec![0xff; n.div_ceil(8)]))
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        if self.lies {
            return Err(Refusal::NotFound);
        }
        let mut c = self.inner.chunk(share, chunk)?;
        let n = c.len();
        c[n / 3] ^= 0x10;
        Ok(c)
    }
}

/// Two hostile members among the sources, one advertising chunks it does
/// not have and one serving wrong bytes: both are dropped, saying why, and
/// the fetch completes from the honest sharer, byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_swarm_members_are_dropped_and_the_fetch_completes() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "data.bin");
        let data = bytes(13, 12 * MIB);
        fs::write(&f, &data).unwrap();
        let key = ShareKey::generate().unwrap();
        let (honest, _) = capped(&key, &f, 8 * MIB as u64).await;
        let id = share_of_file(&key, &f).id();
        let hostile = |lies| {
            let inner = LocalProvider::new(share_of_file(&key, &f), None);
            start_server("/ip4/127.0.0.1/tcp/0", Arc::new(Hostile { inner, lies }))
        };
        let liar = hostile(true).await;
        let corrupter = hostile(false).await;
        let dest = sub(&tmp, "dest");
        // The hostile ones first: they are asked for the manifest first.
        let link = link_for(&key, id, &[&liar, &corrupter, &honest]);
        let (r, events) = fetch_link(&link, &dest, &quick()).await;
        r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
        assert_eq!(
            blake3::hash(&fs::read(dest.join("data.bin")).unwrap()),
            blake3::hash(&data)
        );
        let dropped = dropped(&events);
        let why = |p: PeerId| {
            dropped
                .iter()
                .find(|(d, _)| *d == p)
                .map(|(_, r)| r.clone())
        };
        let lie = why(liar.addr.peer).unwrap_or_default();
        assert!(lie.contains("listed chunk"), "{dropped:?}");
        let wrong = why(corrupter.addr.peer).unwrap_or_default();
        assert!(wrong.contains("does not match its id"), "{dropped:?}");
        assert_eq!(why(honest.addr.peer), None, "{dropped:?}");
        for s in [honest, liar, corrupter] {
            s.client.shutdown().await;
        }
    })
    .await
    .unwrap();
}
