//! Fetching a share from peers: manifest, file list, then content, every byte
//! verified before it is used, resumable, from several peers at once.
//!
//! Each peer gets one *session*: one stream with up to `depth` chunk requests
//! in flight, answers read in order, verification and decryption on the
//! blocking pool while the next answer arrives. Sessions take chunk indices
//! from one shared queue, so any number of peers can feed one fetch. A peer
//! that sends bytes that do not match their id, or the wrong amount, or
//! breaks the protocol, is dropped and not asked again; one whose stream
//! fails or stalls past the deadline gets a strike, and is dropped after a
//! few ([`RetryPolicy`]). Either way, what it had in flight goes back to the
//! queue. Sessions write verified plaintext into the [`Output`] themselves,
//! one at a time under its lock.
//!
//! One file per job: `sources` (who to ask, and when to give up),
//! `manifest` (the manifest from the first peer that has it), `scheduler`
//! (sessions over a shared queue), `session` (one peer's pipelined stream),
//! `pex` (asking the sources which other peers they know), `verify` (what
//! a session checks each chunk with). This file holds the
//! public API and the two drivers, [`fetch`] and [`fetch_ciphertext`].

mod listing;
mod manifest;
mod partial;
mod pex;
mod progress;
mod scheduler;
mod session;
mod sources;
mod stream;
mod streams;
mod verify;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::PeerId;

use crate::chunk::Stream;
use crate::link::Link;
use crate::manifest::{Manifest, ManifestId};
use crate::meta::Metadata;
use crate::net::frame::{read_msg, write_msg};
use crate::net::node::{Client, XFER};
use crate::net::PeerAddr;
use crate::open::{OpenError, Plaintext};
use crate::seal::Resealer;
use crate::select::{SelectError, Selection, Subset};
use crate::store::chunks::ChunkDir;
use crate::store::output::{Output, OutputError, OutputOptions};
use crate::store::resume::{self, Stored};
use crate::store::share::LocalShare;
use crate::store::source::Source;
use crate::wire::{Request, Response};

pub use listing::{list, Listing};
use listing::{open_share, Opened};
use manifest::get_manifest;
pub use partial::Partial;
use partial::SharedOutput;
pub use progress::{progress_channel, ProgressTx, PROGRESS_QUEUE};
use scheduler::run_queue;
use sources::Sources;
pub use stream::stream_file;
use verify::IdCheck;

/// How patient a fetch is with its sources: every pause, count and cap the
/// fetcher retries by, in one place (docs/PROTOCOL.md section 6 describes
/// them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Lost sessions (failed connections or streams, stalls) before a source
    /// is dropped. Generous, with growing pauses: a busy node (libp2p-stream
    /// drops inbound streams under bursts) must not be mistaken for a dead
    /// one.
    pub max_strikes: u32,
    /// The pause after a source's first lost session, and after the first
    /// round in which no source had anything left to give; doubled after
    /// each further one (see [`RetryPolicy::pause`]).
    pub pause: Duration,
    /// Rounds in a row in which every source ended its session with nothing
    /// to take (none holds what is left) before the fetch fails with
    /// [`FetchError::NotFound`].
    pub idle_rounds: u32,
    /// The first wait between attempts to reach a source while none
    /// answers; doubled after each attempt, up to `max_connect_backoff`.
    pub connect_backoff: Duration,
    /// The longest wait between attempts to reach a source.
    pub max_connect_backoff: Duration,
    /// How long one DHT lookup for the share's providers may take.
    pub dht_timeout: Duration,
    /// Most peers tried from one discovery round (LAN peers and DHT
    /// providers taken in turn): both are unauthenticated hints.
    pub max_discovered: usize,
    /// How long telling one source `Done` may take (best effort).
    pub done_timeout: Duration,
    /// `Busy` answers in a row from one source after which it counts a
    /// strike: a source that is always busy must not hold a fetch forever.
    pub max_busy: u32,
    /// Bounds on the pause a `Busy` answer asks for.
    pub min_busy_pause: Duration,
    /// See `min_busy_pause`.
    pub max_busy_pause: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_strikes: 5,
            pause: Duration::from_millis(400),
            idle_rounds: 5,
            connect_backoff: Duration::from_millis(500),
            max_connect_backoff: Duration::from_secs(5),
            dht_timeout: Duration::from_secs(15),
            max_discovered: 32,
            done_timeout: Duration::from_secs(5),
            max_busy: 30,
            min_busy_pause: Duration::from_millis(100),
            max_busy_pause: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause after the `n`-th (from 1) lost session of a source, or the
    /// `n`-th idle round in a row: `pause × 2^(n-1)` (0.4, 0.8, 1.6, 3.2 s by
    /// default).
    pub fn pause(&self, n: u32) -> Duration {
        self.pause.saturating_mul(1 << n.saturating_sub(1).min(16))
    }
}

/// How to fetch.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Chunk requests in flight per peer.
    pub depth: usize,
    /// Deadline for each answer (and for opening a stream).
    pub request_timeout: Duration,
    /// How long to keep trying to reach a source before giving up.
    pub wait: Duration,
    /// Most peers to draw from at once.
    pub max_peers: usize,
    /// How to treat the destination.
    pub output: OutputOptions,
    /// Also look for sources beyond the given ones: peers found on the LAN
    /// (mDNS) and providers in the DHT. With it, a link without hints can
    /// work, and an empty source list is not an error until `wait` runs out.
    pub discover: bool,
    /// When to retry a source and when to give up on it.
    pub retry: RetryPolicy,
    /// Which entries to fetch and write (everything by default); only the
    /// content chunks covering them are asked for.
    pub selection: Selection,
    /// Asked, once the file list is verified and before anything is
    /// written, whether to go on (the receiver agrees first).
    pub approve: Option<Approver>,
    /// Serve what this fetch has verified, as it goes: the fetch keeps this
    /// [`Partial`] up to date, and whoever serves it on the node (with
    /// [`crate::net::serve::serve`]) answers `Have` with what is verified
    /// and serves those chunks (docs/PROTOCOL.md, "Partial holders").
    pub serve_as: Option<Arc<Partial>>,
}

/// Decides whether to write what a verified file list says is coming (the
/// entries chosen, with their folders); called on the blocking pool, so it
/// may ask a person.
#[derive(Clone)]
pub struct Approver(pub Arc<dyn Fn(&Metadata) -> bool + Send + Sync>);

impl std::fmt::Debug for Approver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Approver")
    }
}

/// Most bytes of chunks one fetch has asked for and not yet handed on,
/// across all its sessions (audit F-10). A count of chunks is no bound: the
/// sharer picks the chunk size, up to 64 MiB, so 8 sessions of 8 requests
/// could hold 4 GiB.
pub const FETCH_MEMORY: u64 = 128 << 20;

impl FetchOptions {
    /// These options with `depth`, then `max_peers`, cut so that
    /// `depth × max_peers` chunks of `chunk_size` bytes fit in
    /// [`FETCH_MEMORY`] (never below one request on one peer). Depth goes
    /// first: a big chunk is a long request already, and more peers help
    /// more than a deeper pipeline. With 1 MiB chunks the defaults (8 × 8)
    /// are unchanged; with 4 MiB, 8 peers × 4; with 64 MiB, 2 peers × 1.
    pub fn within_memory(&self, chunk_size: u64) -> FetchOptions {
        let fit = usize::try_from(FETCH_MEMORY / chunk_size.max(1))
            .unwrap_or(usize::MAX)
            .max(1);
        let mut o = self.clone();
        o.depth = o.depth.clamp(1, (fit / o.max_peers.max(1)).max(1));
        o.max_peers = o.max_peers.clamp(1, (fit / o.depth).max(1));
        o
    }
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            depth: 8,
            request_timeout: Duration::from_secs(30),
            wait: Duration::from_secs(60),
            max_peers: 8,
            output: OutputOptions::default(),
            discover: false,
            retry: RetryPolicy::default(),
            selection: Selection::default(),
            approve: None,
            serve_as: None,
        }
    }
}

/// What a fetch reports while it runs.
///
/// The order a caller can rely on:
///
/// - `Connected`, `Waiting` and `PeerDropped` may come at any point, also
///   after `Started`: sources are reconnected when sessions end.
/// - `Started` comes exactly once in a fetch that succeeds, before any
///   `Resumed` or `Bytes`: for [`fetch`] once the manifest and the file list
///   are verified, for [`fetch_ciphertext`] once the manifest is verified
///   and stored. A fetch that fails before then never sends it.
/// - `Resumed` comes only if something was kept. For [`fetch`]: at most
///   once, right after `Started` and before any `Bytes`. For
///   [`fetch_ciphertext`]: at most once per stream (the file list's chunks,
///   then the content's), carrying the running total.
/// - `Bytes(n)` counts verified bytes, resumed ones included. For [`fetch`],
///   `n` only grows, and the last one equals `Started`'s `total` (none comes
///   if everything was resumed). For [`fetch_ciphertext`], chunks are stored
///   by several threads at once, so two events may arrive out of order: the
///   largest `n` seen is the progress.
/// - Nothing is sent after [`fetch`] returns. After [`fetch_ciphertext`]
///   fails, a chunk that was being stored may still report its `Bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Connected to a source.
    Connected(PeerId),
    /// No source reachable yet; retrying until the deadline.
    Waiting {
        /// Why the last attempt failed.
        reason: String,
        /// Seconds left before giving up.
        secs_left: u64,
    },
    /// The manifest and file list are verified.
    Started {
        /// Content bytes of the share.
        total: u64,
        /// Regular files in the share.
        files: usize,
    },
    /// A previous run's verified content was found and kept.
    Resumed {
        /// Content bytes already present and verified.
        bytes: u64,
    },
    /// Content bytes verified and written so far (including resumed ones).
    Bytes(u64),
    /// A source was dropped.
    PeerDropped {
        /// Which.
        peer: PeerId,
        /// Why.
        reason: String,
    },
}

/// The result of a fetch.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// Top-level paths created in the destination.
    pub paths: Vec<PathBuf>,
    /// Regular files written.
    pub files: usize,
    /// Content bytes written (of the share, or of the chosen part).
    pub bytes: u64,
    /// Content bytes that were already present from an interrupted run.
    pub resumed_bytes: u64,
    /// The verified manifest.
    pub manifest: Manifest,
    /// The verified file list (of the whole share).
    pub metadata: Metadata,
    /// Whether the whole share was fetched (no `--only`/`--exclude` left
    /// anything out): only then does this node hold all of it.
    pub whole: bool,
}

/// Why a fetch failed. Progress is kept in the destination's staging folder
/// unless the share itself is bad.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No source could be reached, or every source failed.
    #[error("no source could provide the share ({0}); progress is kept: run the same command again to resume")]
    Unreachable(String),
    /// Sources answered, but none holds this share.
    #[error("none of the sources has this share; check the link, or that the sender is still sharing it")]
    NotFound,
    /// The sharer's files changed since the link was made.
    #[error("the sender's files changed since the link was made, so it refuses to send them; ask for a new link")]
    Stale,
    /// Verification failed in a way no other source can fix (wrong key,
    /// corrupt share, unsafe file list).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The destination could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The link has no key.
    #[error(transparent)]
    Link(#[from] crate::link::ParseError),
    /// The share expired, or the link's stated expiry is not the
    /// manifest's.
    #[error(transparent)]
    Expiry(#[from] crate::link::ExpiryError),
    /// The `--only`/`--exclude` patterns take nothing of this share.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// The receiver declined what the file list offered.
    #[error("declined; nothing was written")]
    Declined,
    /// The share has no regular file at the path asked for (`cat`).
    #[error("the share has no file {0:?}; list it with `peerdrop ls LINK`")]
    NoSuchFile(String),
    /// Writing what was fetched failed (`cat`'s output was closed).
    #[error("writing the output failed: {0}")]
    Write(std::io::Error),
    /// The local chunk store failed (a pin).
    #[error("storing chunks failed: {0}")]
    Store(String),
}

/// Fetches the share of the read link `link` from `sources` into `dest`.
pub async fn fetch(
    client: &Client,
    link: &Link,
    sources: Vec<PeerAddr>,
    dest: &Path,
    opts: &FetchOptions,
    progress: ProgressTx,
) -> Result<Fetched, FetchError> {
    let key = link.require_key()?;
    let share = *link.manifest_id();
    let mut f = Sources::new(client, share, sources, opts, progress);
    let Opened {
        manifest,
        metadata,
        opener,
        peers,
    } = open_share(&mut f, link).await?;
    let subset = if opts.selection.is_everything() {
        Subset::everything(&metadata)
    } else {
        opts.selection.apply(&metadata)?
    };
    let total = subset.metadata().content_len();
    let files = subset.metadata().file_count();
    if let Some(Approver(ask)) = opts.approve.clone() {
        let offer = subset.metadata().clone();
        if !blocking(move || Ok::<_, FetchError>(ask(&offer))).await? {
            return Err(FetchError::Declined);
        }
    }
    f.report(Progress::Started { total, files });
    let resealer =
        Arc::new(Resealer::new(key, manifest.clone()).expect("the key matched the commitment"));
    let whole = subset.is_everything();
    let partial = opts.serve_as.clone();
    if let Some(p) = &partial {
        p.keyed(resealer.clone(), crate::crypto::DoneKey::new(key));
        p.file_list(metadata.encode().into());
    }

    let (dest_owned, id, out_opts) = (dest.to_owned(), share, opts.output.clone());
    let chosen = subset.metadata().clone();
    let output = blocking(move || Output::create(&dest_owned, &id, chosen, &out_opts)).await?;
    // A previous run's staged bytes, or files of an earlier part found in
    // place: what checks out is not fetched again.
    let (output, done) = if output.needs_check() {
        blocking({
            let (resealer, subset, mut output) = (resealer.clone(), subset.clone(), output);
            move || {
                resume::staged_content(&mut output, &resealer, &subset).map(|done| (output, done))
            }
        })
        .await?
    } else {
        (output, Vec::new())
    };
    let chunk_size = manifest.chunk_size.bytes();
    let chosen_len = |i: u64| -> u64 {
        let len = manifest.plaintext_len(Stream::Content, i);
        subset
            .map(i * chunk_size, len)
            .map(|(_, r)| r.len() as u64)
            .sum()
    };
    let resumed_bytes: u64 = done.iter().map(|&i| chosen_len(i)).sum();
    if resumed_bytes > 0 {
        f.report(Progress::Resumed {
            bytes: resumed_bytes,
        });
    }
    // Only a whole share's staged content lines up with the manifest's
    // chunks; a part is not served.
    let output: SharedOutput = Arc::new(RwLock::new(Some(output)));
    let serving = partial.filter(|_| whole);
    if let Some(p) = &serving {
        p.staging(output.clone());
        for &i in &done {
            p.verified_chunk(Stream::Content, i);
        }
    }
    let done: HashSet<u64> = done.into_iter().collect();
    let todo: Vec<u64> = subset
        .chunks(chunk_size)
        .into_iter()
        .filter(|i| !done.contains(i))
        .collect();

    // Sessions write verified chunks themselves, from the blocking pool
    // where their sink runs, one at a time under the output's lock: a
    // writer thread of its own cost every chunk one more hand-off (and a
    // small fetch a thread wake-up), and bought nothing, since a session
    // waits for its sink either way. What is written is counted under the
    // same lock, so the `Bytes` reported only grow.
    let progress = f.progress.clone();
    let staged = output.clone();
    let held = serving.clone();
    let written = std::sync::atomic::AtomicU64::new(resumed_bytes);
    let sink = move |index: u64, p: Plaintext| {
        let mut g = staged.write().unwrap_or_else(|e| e.into_inner());
        // Taken back only once the sessions are done; one whose sink was
        // still running when a fatal error ended the fetch finds it gone.
        let output = g
            .as_mut()
            .ok_or_else(|| FetchError::Unreachable("the fetch ended".into()))?;
        // Only the chosen bytes: a chunk shared with an unchosen neighbour
        // was verified whole, but only part of it is written.
        let mut n = 0;
        for (to, r) in subset.map(index * chunk_size, p.as_slice().len()) {
            n += r.len() as u64;
            output.write_content(to, &p.as_slice()[r])?;
        }
        let total = written.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        drop(g);
        if let Some(h) = &held {
            h.verified_chunk(Stream::Content, index);
        }
        progress.send(Progress::Bytes(total));
        Ok(())
    };
    let manifest_peers = peers.clone();
    let run = run_queue(&mut f, &opener, Stream::Content, todo, peers, sink).await;
    if let Some(p) = &serving {
        p.unstaged();
    }
    let output = output
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("taken back only here");
    if let (Some(p), true) = (&serving, run.is_err()) {
        p.abandoned();
    }
    let mut peers = run?;
    if peers.is_empty() {
        // Everything was already here (a resumed fetch): still tell them.
        peers = manifest_peers;
    }
    let placed = blocking(move || output.finish()).await;
    let paths = match placed {
        Ok(paths) => paths,
        Err(e) => {
            if let Some(p) = &serving {
                p.abandoned();
            }
            return Err(e.into());
        }
    };
    if let Some(p) = &serving {
        // From now on the share is served from where it was put.
        let roots = paths
            .iter()
            .filter_map(|p| Some((p.file_name()?.to_str()?.to_owned(), p.clone())))
            .collect();
        let share = Source::from_metadata(metadata.clone(), &roots)
            .map_err(|e| tracing::debug!(error = %e, "the fetched share cannot be served from its place"))
            .ok()
            .and_then(|source| LocalShare::open(source, key, manifest.clone()));
        match share {
            Some(share) => p.placed(share),
            None => p.abandoned(),
        }
    }
    // Tell the sources, proving the key; a one-shot sender stops on this.
    // Best effort. Only for the whole share: `Done` says "I hold it all"
    // (a part does not count as a download). Only those still connected
    // (in a swarm, receivers that finished have gone: opening a stream to
    // one would wait out the whole timeout), all at once (one after the
    // other, a crowd's members took 5 s each).
    let done_key = crate::crypto::DoneKey::new(key);
    // A source with an idle stream was connected a moment ago; the node is
    // asked about the others only (one hop to its event loop fewer for a
    // fetch from one source).
    let connected: HashSet<PeerId> = if whole && peers.iter().any(|p| !f.idle.holds(p)) {
        match client.connected().await {
            Ok(c) => c.into_iter().map(|(p, _)| p).collect(),
            Err(_) => HashSet::new(),
        }
    } else {
        HashSet::new()
    };
    let idle = f.idle.clone();
    let tells = peers
        .into_iter()
        .filter(|p| whole && (idle.holds(p) || connected.contains(p)))
        .map(|peer| {
            let done_key = &done_key;
            let reused = idle.take(&peer).map(|r| r.stream);
            async move {
                let told = send_done(client, peer, share, done_key, reused);
                if let Ok(Err(e)) = tokio::time::timeout(opts.retry.done_timeout, told).await {
                    tracing::debug!(%peer, error = %e, "telling a source we are done failed");
                }
            }
        });
    futures::future::join_all(tells).await;
    Ok(Fetched {
        paths,
        files,
        bytes: total,
        resumed_bytes,
        manifest,
        metadata,
        whole,
    })
}

/// Fetches the ciphertext of share `share` into `store`, verifying every
/// chunk against its id: what a pinning node does, with no key. Chunks
/// already in the store (from an interrupted run) are verified and kept.
/// Progress counts sealed bytes.
pub async fn fetch_ciphertext(
    client: &Client,
    share: ManifestId,
    sources: Vec<PeerAddr>,
    store: &ChunkDir,
    opts: &FetchOptions,
    progress: ProgressTx,
) -> Result<Manifest, FetchError> {
    let mut f = Sources::new(client, share, sources, opts, progress);
    let peers = f.connect().await?;
    let (manifest, mut peers) = get_manifest(&mut f, peers).await?;
    let bytes = manifest.encode();
    let dir = store.clone();
    blocking(move || dir.put_manifest(&share, &bytes))
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?;
    let partial = opts.serve_as.clone();
    if let Some(p) = &partial {
        p.stored(manifest.clone(), store.clone());
    }
    let total = manifest.sealed_size();
    f.report(Progress::Started { total, files: 0 });
    let check = Arc::new(IdCheck(manifest.clone()));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for stream in [Stream::Metadata, Stream::Content] {
        // Keep what an earlier run stored, if it still verifies.
        let (dir, m) = (store.clone(), manifest.clone());
        let Stored {
            todo,
            kept_bytes: kept,
        } = blocking(move || Ok::<_, FetchError>(resume::stored_chunks(&dir, &m, stream))).await?;
        let now = done.fetch_add(kept, std::sync::atomic::Ordering::Relaxed) + kept;
        if kept > 0 {
            f.report(Progress::Resumed { bytes: now });
        }
        if let Some(p) = &partial {
            let missing: HashSet<u64> = todo.iter().copied().collect();
            let n = manifest.chunks(stream).len() as u64;
            for i in (0..n).filter(|i| !missing.contains(i)) {
                p.verified_chunk(stream, i);
            }
        }
        let (dir, m, done, progress, held) = (
            store.clone(),
            manifest.clone(),
            done.clone(),
            f.progress.clone(),
            partial.clone(),
        );
        let sink = move |index: u64, bytes: Vec<u8>| {
            dir.put(&m.chunks(stream)[index as usize], &bytes)
                .map_err(|e| FetchError::Store(e.to_string()))?;
            if let Some(h) = &held {
                h.verified_chunk(stream, index);
            }
            let n = done.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed)
                + bytes.len() as u64;
            progress.send(Progress::Bytes(n));
            Ok(())
        };
        peers = run_queue(&mut f, &check, stream, todo, peers, sink).await?;
    }
    let dir = store.clone();
    blocking(move || dir.sync())
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?;
    Ok(manifest)
}

async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking jobs do not panic")
}

/// Tells `peer` this node holds the whole share now, proving it holds the
/// read key: asks for the peer's challenge, then answers it
/// (docs/PROTOCOL.md, "Done"); on `reused`, the fetch's idle stream to it,
/// if it has one.
async fn send_done(
    client: &Client,
    peer: PeerId,
    share: ManifestId,
    key: &crate::crypto::DoneKey,
    reused: Option<libp2p::Stream>,
) -> std::io::Result<()> {
    let mut s = match reused {
        Some(s) => s,
        None => client
            .control()
            .open_stream(peer, XFER)
            .await
            .map_err(std::io::Error::other)?,
    };
    write_msg(&mut s, &Request::DoneChallenge { share }).await?;
    s.flush().await?;
    let challenge = match read_msg::<_, Response>(&mut s).await? {
        Some(Response::Challenge { challenge }) => challenge,
        other => {
            return Err(std::io::Error::other(format!(
                "answered a done challenge request with {other:?}"
            )))
        }
    };
    let proof = key.prove(
        &share.0,
        &challenge,
        &peer.to_bytes(),
        &client.peer_id().to_bytes(),
    );
    write_msg(&mut s, &Request::ProvenDone { share, proof }).await?;
    s.flush().await?;
    match read_msg::<_, Response>(&mut s).await? {
        Some(Response::Ack) => s.close().await,
        other => Err(std::io::Error::other(format!(
            "did not accept our proof: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_from_the_first_and_never_overflow() {
        let p = RetryPolicy::default();
        let ms: Vec<u128> = (1..p.max_strikes).map(|n| p.pause(n).as_millis()).collect();
        assert_eq!(ms, [400, 800, 1600, 3200]);
        assert_eq!(p.pause(0), p.pause);
        let huge = RetryPolicy {
            pause: Duration::MAX,
            ..p
        };
        assert_eq!(huge.pause(u32::MAX), Duration::MAX);
    }

    #[test]
    fn chunks_in_flight_are_bounded_in_bytes_for_every_chunk_size() {
        let o = FetchOptions::default();
        let mut last = (0, 0);
        for shift in 10..=26 {
            let chunk = 1u64 << shift;
            let w = o.within_memory(chunk);
            assert!(w.depth >= 1 && w.max_peers >= 1);
            assert!(w.depth <= o.depth && w.max_peers <= o.max_peers);
            let held = (w.depth * w.max_peers) as u64 * chunk;
            assert!(
                held <= FETCH_MEMORY.max(chunk),
                "{chunk}: {held} bytes in flight"
            );
            last = (w.depth, w.max_peers);
        }
        assert_eq!(last, (1, 2), "64 MiB chunks");
        let one_mib = o.within_memory(1 << 20);
        assert_eq!((one_mib.depth, one_mib.max_peers), (8, 8));
        // A chunk larger than the whole budget still gets one request.
        let huge = o.within_memory(u64::MAX);
        assert_eq!((huge.depth, huge.max_peers), (1, 1));
    }
}
