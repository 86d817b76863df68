//! The crowd (issue 11): one sharer with a capped upload and eight
//! receivers fetching its link at once, on loopback with mDNS off and no
//! DHT, each knowing only the sharer's link hint. Peer exchange makes them
//! a swarm: each serves what it verified (as one-shot `receive` does) and
//! stops when it has everything (as `receive` exits).
//!
//! Measured in the same run: one receiver alone, then eight at once. The
//! issue's targets: all eight finish in at most 3 times the time one takes
//! alone (without swarming, about 8.7 times), the sharer uploads at most
//! two copies' worth of bytes (counted where it produces chunks), and
//! every copy is byte-identical.

mod common;

use std::fs;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::*;
use common::swarm::*;
use common::*;
use peerdrop::crypto::ShareKey;
use peerdrop::link::Link;
use peerdrop::net::fetch::{fetch, progress_channel, FetchOptions, Partial};
use peerdrop::net::serve::ServeConfig;
use peerdrop::net::PeerAddr;

const LIMIT: Duration = Duration::from_secs(120);
const MIB: usize = 1 << 20;
/// Receivers at once.
const CROWD: usize = 8;
/// The share: 16 MiB, 16 chunks of 1 MiB (the default chunk size).
const SIZE: usize = 16 * MIB;
/// The sharer's upload cap: one receiver alone takes about 4 s. (At
/// 2 MiB/s the crowd's ratio and the sharer's copies were no better,
/// 2.49x and 2.38: what limits is the sharer's upload, not this machine.)
const RATE: u64 = 4 * MIB as u64;

/// What one receiver of a crowd did.
struct Received {
    took: Duration,
    /// Bytes it served to others while it fetched.
    served: usize,
    hash: blake3::Hash,
    /// Sealed bytes of the share (manifest's count).
    sealed: u64,
}

/// `n` receivers fetch `link` at once, each on a node of its own that
/// serves what it verified and stops once its fetch is done. Returns each
/// one's outcome, timed from one common start.
async fn crowd(n: usize, link: &Link, tmp: &tempfile::TempDir) -> Vec<Received> {
    let id = *link.manifest_id();
    let mut nodes = Vec::new();
    for k in 0..n {
        let partial = Arc::new(Partial::new(id));
        let served = Arc::new(Counting::new(partial.clone()));
        let node = start_server_with(
            "/ip4/127.0.0.1/tcp/0",
            served.clone(),
            ServeConfig::default(),
        )
        .await;
        nodes.push((node, partial, served, sub(tmp, &format!("crowd{n}-{k}"))));
    }
    let start = Instant::now();
    let runs: Vec<_> = nodes
        .into_iter()
        .map(|(node, partial, served, dest)| {
            // The same link, by its text (a link is not `Clone`: it holds
            // the key).
            let link: Link = link.to_uri_string().parse().unwrap();
            tokio::spawn(async move {
                let sources = link
                    .hints()
                    .iter()
                    .filter_map(PeerAddr::from_hint)
                    .collect();
                let opts = FetchOptions {
                    serve_as: Some(partial),
                    ..quick()
                };
                // Nobody reads the progress: a fetch drops what its reader
                // does not take.
                let (tx, _) = progress_channel();
                let r = fetch(&node.client, &link, sources, &dest, &opts, tx).await;
                let took = start.elapsed();
                // A one-shot receiver exits once it has everything.
                node.client.shutdown().await;
                let fetched = r.unwrap_or_else(|e| panic!("a receiver failed: {e}"));
                Received {
                    took,
                    served: served.bytes.load(Ordering::SeqCst),
                    hash: blake3::hash(&fs::read(dest.join("data.bin")).unwrap()),
                    sealed: fetched.manifest.sealed_size(),
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for r in runs {
        out.push(r.await.unwrap());
    }
    out
}

/// What one run measured: one receiver alone, then eight at once.
struct Outcome {
    alone: Duration,
    last: Duration,
    /// The crowd's time over the lone receiver's.
    ratio: f64,
    /// What the sharer uploaded for the crowd, in copies of the share.
    copies: f64,
}

/// One crowd at a time in this binary: two at once on a small machine
/// would each measure the other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one receiver alone, then eight at once, against one capped
/// sharer; checks every copy and prints the figures.
async fn measure() -> Outcome {
    let _alone = ONE_AT_A_TIME.lock().await;
    // RUST_LOG=peerdrop::net=debug shows each session's end.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "data.bin");
    let data = bytes(21, SIZE);
    fs::write(&f, &data).unwrap();
    let want = blake3::hash(&data);
    let key = ShareKey::generate().unwrap();
    let (sharer, uploaded) = capped(&key, &f, RATE).await;
    let link = link_for(&key, share_of_file(&key, &f).id(), &[&sharer]);

    let alone = crowd(1, &link, &tmp).await;
    let alone_took = alone[0].took;
    let alone_bytes = uploaded.bytes.swap(0, Ordering::SeqCst);
    let all = crowd(CROWD, &link, &tmp).await;
    let crowd_bytes = uploaded.bytes.load(Ordering::SeqCst);
    sharer.client.shutdown().await;
    let last = all.iter().map(|r| r.took).max().unwrap();
    let copy = all[0].sealed as f64;
    let ratio = last.as_secs_f64() / alone_took.as_secs_f64();
    let copies = crowd_bytes as f64 / copy;
    eprintln!(
        "one alone: {alone_took:.2?}, sharer uploaded {:.2} copies; {CROWD} at once: all done in \
         {last:.2?} ({ratio:.2}x), sharer uploaded {copies:.2} copies; each took {:?}; \
         each served others {:?} MiB",
        alone_bytes as f64 / copy,
        all.iter()
            .map(|r| format!("{:.2?}", r.took))
            .collect::<Vec<_>>(),
        all.iter()
            .map(|r| format!("{:.1}", r.served as f64 / MIB as f64))
            .collect::<Vec<_>>(),
    );
    for r in alone.iter().chain(&all) {
        assert_eq!(r.hash, want, "a copy differs");
    }
    Outcome {
        alone: alone_took,
        last,
        ratio,
        copies,
    }
}

/// Eight receivers at once finish in at most three times the time one
/// takes alone (measured 1.3-1.7x on a loaded 2-core machine; before
/// super-seeding 1.9-2.3x, without swarming about 8.7x), every copy
/// byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_eight_finishes_within_three_times_one_alone() {
    let o = tokio::time::timeout(LIMIT, measure()).await.unwrap();
    assert!(
        o.ratio <= 3.0,
        "{CROWD} receivers took {:.2} times as long as one alone ({:?} vs {:?})",
        o.ratio,
        o.last,
        o.alone
    );
}

/// The sharer uploads at most two copies for eight receivers: a capped
/// sharer offers each receiver only chunks no live swarm member got from
/// it yet (super-seeding, `peerdrop::net::seed`). Measured 1.31-1.50
/// copies (before super-seeding 2.0-2.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_eight_costs_the_sharer_at_most_two_copies() {
    let o = tokio::time::timeout(LIMIT, measure()).await.unwrap();
    assert!(
        o.copies <= 2.0,
        "the sharer uploaded {:.2} copies' worth for {CROWD} receivers",
        o.copies
    );
}
