//! Swarming on loopback (issue 11): a fetch draws from every source at
//! once, by each one's rate, and a slow source never holds the tail.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::*;
use common::*;
use peerdrop::chunk::ChunkId;
use peerdrop::crypto::ShareKey;
use peerdrop::manifest::ManifestId;
use peerdrop::net::serve::{LocalProvider, Provider, Refusal, ServeConfig};
use peerdrop::seal::SealOptions;
use peerdrop::store::share::LocalShare;
use peerdrop::wire::Have;

const LIMIT: Duration = Duration::from_secs(240);
const MIB: usize = 1 << 20;

/// Serves a share, counting the chunks it produces.
struct Counting {
    inner: LocalProvider,
    chunks: AtomicUsize,
}

impl Provider for Counting {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.inner.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.inner.have(share)
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        self.chunks.fetch_add(1, Ordering::SeqCst);
        self.inner.chunk(share, chunk)
    }
    fn chunk_len(&self, share: &ManifestId, chunk: &ChunkId) -> Option<usize> {
        self.inner.chunk_len(share, chunk)
    }
}

/// A share of `file` under `key`, served with an upload cap, counting what
/// it serves.
async fn capped(key: &ShareKey, file: &Path, rate: u64) -> (Server, Arc<Counting>) {
    let share =
        LocalShare::create(&[file.to_path_buf()], key, &SealOptions::default(), |_| {}).unwrap();
    let counting = Arc::new(Counting {
        inner: LocalProvider::new(share, None),
        chunks: AtomicUsize::new(0),
    });
    let config = ServeConfig {
        max_rate: Some(rate),
        ..ServeConfig::default()
    };
    let server = start_server_with("/ip4/127.0.0.1/tcp/0", counting.clone(), config).await;
    (server, counting)
}

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
