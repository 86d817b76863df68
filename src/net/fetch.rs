//! Fetching a share from peers: manifest, file list, then content, every byte
//! verified before it is used, resumable, from several peers at once.
//!
//! Each peer gets one *session*: one stream with up to `depth` chunk requests
//! in flight, answers read in order, verification and decryption on the
//! blocking pool while the next answer arrives. Sessions take chunk indices
//! from one shared queue, so any number of peers can feed one fetch. A peer
//! that sends bytes that do not match their id, or the wrong amount, or
//! breaks the protocol, or stalls past the deadline, is dropped and not asked
//! again; what it had in flight goes back to the queue. Verified plaintext
//! goes to one writer thread that owns the [`Output`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::chunk::{ChunkId, Stream};
use crate::link::Link;
use crate::manifest::{Manifest, ManifestId, MAX_MANIFEST_LEN};
use crate::meta::Metadata;
use crate::net::frame::{read_msg, read_payload, write_msg};
use crate::net::node::{Client, XFER};
use crate::net::{is_quic, PeerAddr};
use crate::open::{OpenError, Opener, Plaintext};
use crate::seal::Resealer;
use crate::store::chunks::ChunkDir;
use crate::store::output::{Output, OutputError, OutputOptions};
use crate::wire::{Have, Request, Response};

/// Lost sessions (failed connections, stalls) before a source is dropped.
/// Generous, with growing pauses: a busy node (libp2p-stream drops inbound
/// streams under bursts) must not be mistaken for a dead one.
pub const MAX_STRIKES: u32 = 5;

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
        }
    }
}

/// What a fetch reports while it runs.
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
    /// Regular files.
    pub files: usize,
    /// Content bytes of the share.
    pub bytes: u64,
    /// Content bytes that were already present from an interrupted run.
    pub resumed_bytes: u64,
    /// The verified manifest.
    pub manifest: Manifest,
    /// The verified file list.
    pub metadata: Metadata,
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
    /// The local chunk store failed (a pin).
    #[error("storing chunks failed: {0}")]
    Store(String),
}

/// How a session checks each chunk it receives: a reader decrypts
/// ([`Opener`]), a pinning node checks ids only ([`IdCheck`]).
pub trait Verify: Send + Sync + 'static {
    /// What a verified chunk becomes.
    type Out: Send + 'static;
    /// The manifest the chunks belong to.
    fn manifest(&self) -> &Manifest;
    /// Checks (and opens) chunk `index` of `stream`.
    fn verify(&self, stream: Stream, index: u64, bytes: Vec<u8>) -> Result<Self::Out, OpenError>;
}

impl Verify for Opener {
    type Out = Plaintext;
    fn manifest(&self) -> &Manifest {
        Opener::manifest(self)
    }
    fn verify(&self, stream: Stream, index: u64, bytes: Vec<u8>) -> Result<Plaintext, OpenError> {
        self.open_chunk(stream, index, bytes)
    }
}

/// Checks chunks against the manifest without a key (length and id): what a
/// node that only pins ciphertext can verify.
pub struct IdCheck(pub Manifest);

impl Verify for IdCheck {
    type Out = Vec<u8>;
    fn manifest(&self) -> &Manifest {
        &self.0
    }
    fn verify(&self, stream: Stream, index: u64, bytes: Vec<u8>) -> Result<Vec<u8>, OpenError> {
        crate::open::check_chunk(&self.0, stream, index, &bytes)?;
        Ok(bytes)
    }
}

/// Why a session ended.
enum SessionEnd {
    /// Nothing left to take.
    Finished,
    /// The peer misbehaved: not to be asked again.
    Dropped(String),
    /// The connection or stream failed, or the peer stalled: it may be
    /// tried again, a few times.
    Lost(String),
    /// The peer does not hold (all of) the share.
    NotFound,
    /// The peer's files changed.
    Stale,
    /// The share itself is bad: stop everything.
    Fatal(OpenError),
}

/// Chunk indices of one stream still to fetch, shared by the sessions.
struct Queue {
    stream: Stream,
    todo: VecDeque<u64>,
    left: usize,
}

impl Queue {
    /// The next index `have` covers (manifest order puts metadata first).
    fn take(&mut self, have: &Have, metadata_chunks: usize) -> Option<u64> {
        let offset = if self.stream == Stream::Content {
            metadata_chunks
        } else {
            0
        };
        let pos = self
            .todo
            .iter()
            .position(|&i| have.has(offset + i as usize))?;
        self.todo.remove(pos)
    }
}

/// Fetches the share of the read link `link` from `sources` into `dest`.
pub async fn fetch(
    client: &Client,
    link: &Link,
    sources: Vec<PeerAddr>,
    dest: &Path,
    opts: &FetchOptions,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<Fetched, FetchError> {
    let key = link.require_key()?;
    let share = *link.manifest_id();
    let mut f = Fetcher::new(client, share, sources, opts, progress);
    let peers = f.connect().await?;
    let (manifest, peers) = f.manifest(peers).await?;
    let opener = Arc::new(Opener::new(manifest.clone(), key)?);

    // The file list, collected in order.
    let n_meta = manifest.metadata_chunks.len() as u64;
    let meta_plain = Arc::new(Mutex::new(vec![Vec::new(); n_meta as usize]));
    let sink = {
        let meta_plain = meta_plain.clone();
        move |index: u64, p: Plaintext| {
            meta_plain.lock().expect("never poisoned")[index as usize] = p.as_slice().to_vec();
            Ok::<(), FetchError>(())
        }
    };
    let peers = f
        .run_queue(
            &opener,
            Stream::Metadata,
            (0..n_meta).collect(),
            peers,
            sink,
        )
        .await?;
    let plain = std::mem::take(&mut *meta_plain.lock().expect("never poisoned")).concat();
    let metadata = opener.metadata(&plain)?;
    let total = metadata.content_len();
    let files = metadata.file_count();
    let _ = f.progress.send(Progress::Started { total, files });

    let (dest_owned, id, out_opts) = (dest.to_owned(), share, opts.output.clone());
    let metadata_kept = metadata.clone();
    let output = blocking(move || Output::create(&dest_owned, &id, metadata, &out_opts)).await?;
    let resealer =
        Arc::new(Resealer::new(key, manifest.clone()).expect("the key matched the commitment"));
    let (output, done) = if output.resumed() {
        blocking({
            let resealer = resealer.clone();
            move || verify_staged(output, &resealer)
        })
        .await?
    } else {
        (output, Vec::new())
    };
    let chunk_size = manifest.chunk_size.bytes();
    let resumed_bytes: u64 = done
        .iter()
        .map(|&i| manifest.plaintext_len(Stream::Content, i) as u64)
        .sum();
    if resumed_bytes > 0 {
        let _ = f.progress.send(Progress::Resumed {
            bytes: resumed_bytes,
        });
    }
    let done: HashSet<u64> = done.into_iter().collect();
    let todo: Vec<u64> = (0..manifest.content_chunks.len() as u64)
        .filter(|i| !done.contains(i))
        .collect();

    // One writer thread owns the output; sessions hand it verified chunks.
    let (tx, mut rx) = mpsc::channel::<(u64, Plaintext)>(8);
    let progress = f.progress.clone();
    let writer: JoinHandle<Result<Output, OutputError>> = tokio::task::spawn_blocking(move || {
        let mut output = output;
        let mut written = resumed_bytes;
        while let Some((index, p)) = rx.blocking_recv() {
            output.write_content(index * chunk_size, p.as_slice())?;
            written += p.as_slice().len() as u64;
            let _ = progress.send(Progress::Bytes(written));
        }
        Ok(output)
    });
    let sink = move |index: u64, p: Plaintext| {
        tx.blocking_send((index, p))
            .map_err(|_| FetchError::Unreachable("the writer stopped".into()))
    };
    let manifest_peers = peers.clone();
    let run = f
        .run_queue(&opener, Stream::Content, todo, peers, sink)
        .await;
    let output = writer.await.expect("the writer does not panic")?;
    let mut peers = run?;
    if peers.is_empty() {
        // Everything was already here (a resumed fetch): still tell them.
        peers = manifest_peers;
    }
    let paths = blocking(move || output.finish()).await?;
    // Tell the sources; a one-shot sender stops on this. Best effort.
    for peer in peers {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), send_done(client, peer, share.0)).await;
    }
    Ok(Fetched {
        paths,
        files,
        bytes: total,
        resumed_bytes,
        manifest,
        metadata: metadata_kept,
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
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<Manifest, FetchError> {
    let mut f = Fetcher::new(client, share, sources, opts, progress);
    let peers = f.connect().await?;
    let (manifest, mut peers) = f.manifest(peers).await?;
    let bytes = manifest.encode();
    let dir = store.clone();
    blocking(move || dir.put_manifest(&share, &bytes))
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?;
    let total = manifest.sealed_size();
    let _ = f.progress.send(Progress::Started { total, files: 0 });
    let check = Arc::new(IdCheck(manifest.clone()));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for stream in [Stream::Metadata, Stream::Content] {
        // Keep what an earlier run stored, if it still verifies.
        let (dir, m) = (store.clone(), manifest.clone());
        let (todo, kept) = blocking(move || {
            let mut todo = Vec::new();
            let mut kept = 0u64;
            for (i, id) in m.chunks(stream).iter().enumerate() {
                let len = m.sealed_len(stream, i as u64);
                match dir.get(id, len) {
                    Ok(b) if crate::open::check_chunk(&m, stream, i as u64, &b).is_ok() => {
                        kept += len as u64
                    }
                    _ => todo.push(i as u64),
                }
            }
            Ok::<_, FetchError>((todo, kept))
        })
        .await?;
        let now = done.fetch_add(kept, std::sync::atomic::Ordering::Relaxed) + kept;
        if kept > 0 {
            let _ = f.progress.send(Progress::Resumed { bytes: now });
        }
        let (dir, m, done, progress) = (
            store.clone(),
            manifest.clone(),
            done.clone(),
            f.progress.clone(),
        );
        let sink = move |index: u64, bytes: Vec<u8>| {
            dir.put(&m.chunks(stream)[index as usize], &bytes)
                .map_err(|e| FetchError::Store(e.to_string()))?;
            let n = done.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed)
                + bytes.len() as u64;
            let _ = progress.send(Progress::Bytes(n));
            Ok(())
        };
        peers = f.run_queue(&check, stream, todo, peers, sink).await?;
    }
    let dir = store.clone();
    blocking(move || dir.sync())
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?;
    Ok(manifest)
}

/// One entry per peer, with the addresses of all its entries (a hint and a
/// `--peer` for the same node must not become two competing dials).
fn merge(sources: Vec<PeerAddr>) -> Vec<PeerAddr> {
    let mut out: Vec<PeerAddr> = Vec::new();
    for s in sources {
        match out.iter_mut().find(|o| o.peer == s.peer) {
            Some(o) => {
                for a in s.addrs {
                    if !o.addrs.contains(&a) {
                        o.addrs.push(a);
                    }
                }
            }
            None => out.push(s),
        }
    }
    out
}

async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking jobs do not panic")
}

/// Re-verifies a previous run's staged content by sealing it again and
/// comparing with the manifest (sealing is deterministic). Returns the
/// indices that match.
fn verify_staged(output: Output, resealer: &Resealer) -> Result<(Output, Vec<u64>), OutputError> {
    let m = resealer.manifest();
    let count = m.content_chunks.len() as u64;
    let mut good = Vec::new();
    let mut next = 0u64;
    crate::pipeline::ordered(
        crate::pipeline::default_threads(),
        || {
            if next == count {
                return Ok(None);
            }
            let i = next;
            next += 1;
            let mut buf = vec![0; m.plaintext_len(Stream::Content, i)];
            // A file not written yet (or cut short) just means "fetch it".
            let present = output
                .read_content(i * m.chunk_size.bytes(), &mut buf)
                .is_ok();
            Ok(Some((i, present.then_some(buf))))
        },
        |(i, buf): (u64, Option<Vec<u8>>)| {
            let ok = buf.is_some_and(|b| resealer.reseal(Stream::Content, i, &b).is_ok());
            Ok::<_, OutputError>((i, ok))
        },
        |(i, ok)| {
            if ok {
                good.push(i);
            }
            Ok(())
        },
    )?;
    Ok((output, good))
}

async fn send_done(client: &Client, peer: PeerId, share: [u8; 32]) -> std::io::Result<()> {
    let mut s = client
        .control()
        .open_stream(peer, XFER)
        .await
        .map_err(std::io::Error::other)?;
    write_msg(&mut s, &Request::Done { share }).await?;
    s.flush().await?;
    let _ = read_msg::<_, Response>(&mut s).await?;
    s.close().await
}

struct Fetcher {
    client: Client,
    sources: Vec<PeerAddr>,
    share: [u8; 32],
    /// Sources not to ask again: they misbehaved or stalled.
    banned: HashSet<PeerId>,
    /// Sources that answered they do not hold the share.
    not_found: HashSet<PeerId>,
    /// Lost sessions per source.
    strikes: HashMap<PeerId, u32>,
    /// Whether a source refused because its files changed.
    stale: bool,
    progress: mpsc::UnboundedSender<Progress>,
    opts: FetchOptions,
    deadline: Instant,
}

impl Fetcher {
    fn new(
        client: &Client,
        share: ManifestId,
        sources: Vec<PeerAddr>,
        opts: &FetchOptions,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Fetcher {
        Fetcher {
            client: client.clone(),
            sources: merge(sources),
            share: share.0,
            banned: HashSet::new(),
            not_found: HashSet::new(),
            strikes: HashMap::new(),
            stale: false,
            progress,
            opts: opts.clone(),
            deadline: Instant::now() + opts.wait,
        }
    }

    /// Counts a lost session against `peer`; after [`MAX_STRIKES`] it is
    /// dropped. Between strikes it is reconnected, after a short pause.
    async fn strike(&mut self, peer: PeerId, reason: String) {
        let n = self.strikes.entry(peer).or_default();
        *n += 1;
        tracing::debug!(%peer, %reason, strikes = *n, "lost a source");
        if *n >= MAX_STRIKES {
            self.drop_peer(peer, reason).await;
        } else {
            tokio::time::sleep(Duration::from_millis(200 << *n)).await;
        }
    }

    /// Stops using `peer` for this fetch and closes its connections.
    async fn drop_peer(&mut self, peer: PeerId, reason: String) {
        tracing::info!(%peer, %reason, "dropping source");
        self.banned.insert(peer);
        self.client.disconnect(peer).await;
        let _ = self.progress.send(Progress::PeerDropped { peer, reason });
    }

    /// Sources found beyond the given ones: LAN peers, and with `dht`, DHT
    /// providers.
    async fn discover(&mut self, dht: bool) -> Vec<PeerAddr> {
        if !self.opts.discover {
            return Vec::new();
        }
        let mut found: Vec<PeerAddr> = self
            .client
            .discovered()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(peer, addrs)| PeerAddr { peer, addrs })
            .collect();
        let locator = ManifestId(self.share).locator().to_vec();
        if !dht {
            return found;
        }
        let lookup = tokio::time::timeout(Duration::from_secs(15), self.client.providers(locator));
        if let Ok(Ok(providers)) = lookup.await {
            tracing::debug!(found = providers.len(), "DHT lookup for providers");
            for peer in providers {
                if !found.iter().any(|f| f.peer == peer) {
                    found.push(PeerAddr {
                        peer,
                        addrs: Vec::new(),
                    });
                }
            }
        }
        // LAN announcements are unauthenticated hints: bound how many are tried.
        found.truncate(32);
        found
    }

    /// Connects to every source not dropped (and, with discovery, to peers
    /// found on the LAN or in the DHT), retrying with backoff until at least
    /// one answers or the deadline passes.
    async fn connect(&mut self) -> Result<Vec<PeerId>, FetchError> {
        let mut backoff = Duration::from_millis(500);
        // The DHT is asked only when the cheaper sources did not answer.
        let mut dht = false;
        loop {
            let usable = |s: &PeerAddr, f: &Fetcher| {
                !f.banned.contains(&s.peer) && !f.not_found.contains(&s.peer)
            };
            let mut candidates: Vec<PeerAddr> = self
                .sources
                .iter()
                .filter(|s| usable(s, self))
                .cloned()
                .collect();
            tracing::debug!(dht, sources = self.sources.len(), "looking for sources");
            for d in self.discover(dht).await {
                if usable(&d, self)
                    && !candidates.iter().any(|c| c.peer == d.peer)
                    && d.peer != self.client.peer_id()
                {
                    candidates.push(d);
                }
            }
            // Nothing left to try, and the known sources gave definite
            // answers (stale, or not holding it): say so now rather than
            // wait for discovery to turn up another copy.
            let definite = self.stale || !self.not_found.is_empty();
            if candidates.is_empty() && (!self.opts.discover || definite) {
                return Err(if self.sources.is_empty() {
                    FetchError::Unreachable("the link has no peer hints; pass --peer".into())
                } else if self.stale {
                    FetchError::Stale
                } else if !self.not_found.is_empty() {
                    FetchError::NotFound
                } else {
                    FetchError::Unreachable(
                        "every source was dropped for misbehaving or stalling".into(),
                    )
                });
            }
            let attempts = candidates.iter().map(|s| {
                let client = self.client.clone();
                let s = s.clone();
                async move {
                    // TCP first: rust-libp2p's QUIC is about half as fast for bulk.
                    let (tcp, quic): (Vec<_>, Vec<_>) =
                        s.addrs.iter().cloned().partition(|a| !is_quic(a));
                    let addrs = tcp.into_iter().chain(quic).collect();
                    (s.peer, client.dial(s.peer, addrs).await)
                }
            });
            let results = futures::future::join_all(attempts).await;
            let mut connected = Vec::new();
            let mut last_error = String::new();
            for (peer, r) in results {
                match r {
                    Ok(()) => {
                        let _ = self.progress.send(Progress::Connected(peer));
                        connected.push(peer);
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
            if !connected.is_empty() {
                return Ok(connected);
            }
            let now = Instant::now();
            if candidates.is_empty() {
                last_error = "no source found yet on the LAN or in the DHT".into();
            }
            if now >= self.deadline {
                return Err(if self.stale {
                    FetchError::Stale
                } else if !self.not_found.is_empty() && candidates.is_empty() {
                    FetchError::NotFound
                } else {
                    FetchError::Unreachable(format!(
                        "gave up after {}s: {last_error}",
                        self.opts.wait.as_secs()
                    ))
                });
            }
            if !dht && self.opts.discover {
                // Try the DHT straight away, before waiting.
                dht = true;
                continue;
            }
            let _ = self.progress.send(Progress::Waiting {
                reason: last_error,
                secs_left: (self.deadline - now).as_secs(),
            });
            tokio::time::sleep(backoff.min(self.deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Gets and verifies the manifest from the first peer that has it.
    async fn manifest(
        &mut self,
        mut peers: Vec<PeerId>,
    ) -> Result<(Manifest, Vec<PeerId>), FetchError> {
        loop {
            let all = std::mem::take(&mut peers);
            for (k, &peer) in all.iter().enumerate() {
                match self.try_manifest(peer).await {
                    Ok(Some(m)) => {
                        // This peer and every one not yet asked: the
                        // sessions find out whether the others hold it.
                        peers.push(peer);
                        peers.extend_from_slice(&all[k + 1..]);
                        return Ok((m, peers));
                    }
                    Ok(None) => {
                        self.not_found.insert(peer);
                    }
                    Err(SessionEnd::Lost(reason)) => self.strike(peer, reason).await,
                    Err(SessionEnd::Dropped(reason)) => self.drop_peer(peer, reason).await,
                    Err(_) => unreachable!("try_manifest returns only Lost or Dropped"),
                }
            }
            peers = self.connect().await?;
        }
    }

    /// Asks `peer` for the manifest: `Ok(None)` if it does not hold it;
    /// `Err(Dropped)` if it misbehaved, `Err(Lost)` if the stream failed.
    async fn try_manifest(&self, peer: PeerId) -> Result<Option<Manifest>, SessionEnd> {
        let t = self.opts.request_timeout;
        let io = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                SessionEnd::Dropped(e.to_string())
            } else {
                SessionEnd::Lost(e.to_string())
            }
        };
        let work = async {
            let mut s = self
                .client
                .control()
                .open_stream(peer, XFER)
                .await
                .map_err(|e| SessionEnd::Lost(e.to_string()))?;
            write_msg(&mut s, &Request::Manifest { share: self.share })
                .await
                .map_err(io)?;
            s.flush().await.map_err(io)?;
            match read_msg::<_, Response>(&mut s).await.map_err(io)? {
                Some(Response::Manifest { len }) if len as usize <= MAX_MANIFEST_LEN => {
                    let bytes = read_payload(&mut s, len as usize).await.map_err(io)?;
                    let _ = s.close().await;
                    Manifest::decode_verified(&crate::manifest::ManifestId(self.share), &bytes)
                        .map(Some)
                        .map_err(|e| SessionEnd::Dropped(e.to_string()))
                }
                Some(Response::NotFound) => Ok(None),
                Some(other) => Err(SessionEnd::Dropped(format!(
                    "answered a manifest request with {other:?}"
                ))),
                None => Err(SessionEnd::Lost("closed the stream".into())),
            }
        };
        match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => Err(SessionEnd::Lost(format!(
                "did not answer within {}s",
                t.as_secs()
            ))),
        }
    }

    /// Fetches `indices` of `stream` from `peers` (reconnecting to the other
    /// sources while any are left), handing verified plaintext to `sink` on
    /// the blocking pool. Returns the peers that took part.
    async fn run_queue<V, S>(
        &mut self,
        opener: &Arc<V>,
        stream: Stream,
        indices: Vec<u64>,
        mut peers: Vec<PeerId>,
        sink: S,
    ) -> Result<Vec<PeerId>, FetchError>
    where
        V: Verify,
        S: Fn(u64, V::Out) -> Result<(), FetchError> + Send + Sync + 'static,
    {
        let queue = Arc::new(Mutex::new(Queue {
            stream,
            left: indices.len(),
            todo: indices.into(),
        }));
        let sink: Arc<Sink<V::Out>> = Arc::new(sink);
        let mut used = Vec::new();
        let mut idle_rounds = 0;
        loop {
            let left = queue.lock().expect("never poisoned").left;
            if left == 0 {
                return Ok(used);
            }
            peers.retain(|p| !self.banned.contains(p) && !self.not_found.contains(p));
            peers.truncate(self.opts.max_peers);
            if peers.is_empty() {
                peers = self.connect().await?;
                continue;
            }
            let mut sessions = tokio::task::JoinSet::new();
            for &peer in &peers {
                if !used.contains(&peer) {
                    used.push(peer);
                }
                sessions.spawn(session(
                    self.client.clone(),
                    peer,
                    self.share,
                    opener.clone(),
                    queue.clone(),
                    sink.clone(),
                    self.opts.clone(),
                ));
            }
            // Whether every session ended for want of anything to take.
            let mut all_idle = true;
            while let Some(joined) = sessions.join_next().await {
                let (peer, end) = joined.expect("sessions do not panic");
                if !matches!(end, Ok(SessionEnd::Finished)) {
                    all_idle = false;
                }
                match end {
                    Ok(SessionEnd::Finished) => {}
                    Ok(SessionEnd::Dropped(reason)) => self.drop_peer(peer, reason).await,
                    Ok(SessionEnd::Lost(reason)) => self.strike(peer, reason).await,
                    Ok(SessionEnd::NotFound) => {
                        self.not_found.insert(peer);
                    }
                    Ok(SessionEnd::Stale) => {
                        self.stale = true;
                        self.drop_peer(peer, "its files changed since the link was made".into())
                            .await;
                    }
                    Ok(SessionEnd::Fatal(e)) => return Err(e.into()),
                    Err(e) => return Err(e),
                }
            }
            peers.clear();
            // Sources that hold none of what is left (by their Have) end at
            // once; do not spin on them.
            if all_idle && queue.lock().expect("never poisoned").left == left {
                idle_rounds += 1;
                if idle_rounds >= MAX_STRIKES {
                    return Err(FetchError::NotFound);
                }
                tokio::time::sleep(Duration::from_millis(200 << idle_rounds)).await;
            } else {
                idle_rounds = 0;
            }
        }
    }
}

type Sink<T> = dyn Fn(u64, T) -> Result<(), FetchError> + Send + Sync;
type Verification<T> = JoinHandle<Result<T, OpenError>>;

/// Waits for one chunk's verification and hands it over; `Some` if the
/// session must end.
async fn settle<T: Send + 'static>(
    i: u64,
    h: Verification<T>,
    sink: &Arc<Sink<T>>,
    queue: &Arc<Mutex<Queue>>,
    taken: &mut VecDeque<u64>,
) -> Result<Option<SessionEnd>, FetchError> {
    match h.await.expect("verification does not panic") {
        Ok(plain) => {
            let sink = sink.clone();
            tokio::task::spawn_blocking(move || sink(i, plain))
                .await
                .expect("the sink does not panic")?;
            taken.retain(|&x| x != i);
            queue.lock().expect("never poisoned").left -= 1;
            Ok(None)
        }
        Err(e) if e.blames_source() => Ok(Some(SessionEnd::Dropped(e.to_string()))),
        Err(e) => Ok(Some(SessionEnd::Fatal(e))),
    }
}

/// One peer's session. Returns the peer and why it ended; indices it took
/// but did not deliver go back to the queue.
async fn session<V: Verify>(
    client: Client,
    peer: PeerId,
    share: [u8; 32],
    opener: Arc<V>,
    queue: Arc<Mutex<Queue>>,
    sink: Arc<Sink<V::Out>>,
    opts: FetchOptions,
) -> (PeerId, Result<SessionEnd, FetchError>) {
    let mut taken: VecDeque<u64> = VecDeque::new();
    let mut verifying = VecDeque::new();
    let mut end = run_session(
        &client,
        peer,
        share,
        &opener,
        &queue,
        &sink,
        &opts,
        &mut taken,
        &mut verifying,
    )
    .await;
    // Chunks that arrived before the session ended are still good if they
    // verify: keep them.
    for (i, h) in verifying {
        match settle(i, h, &sink, &queue, &mut taken).await {
            Ok(None) => {}
            Ok(Some(SessionEnd::Fatal(e))) => end = Ok(SessionEnd::Fatal(e)),
            Ok(Some(_)) => {}
            Err(e) => end = Err(e),
        }
    }
    let mut q = queue.lock().expect("never poisoned");
    for i in taken.into_iter().rev() {
        q.todo.push_front(i);
    }
    (peer, end)
}

#[allow(clippy::too_many_arguments)]
async fn run_session<V: Verify>(
    client: &Client,
    peer: PeerId,
    share: [u8; 32],
    opener: &Arc<V>,
    queue: &Arc<Mutex<Queue>>,
    sink: &Arc<Sink<V::Out>>,
    opts: &FetchOptions,
    taken: &mut VecDeque<u64>,
    verifying: &mut VecDeque<(u64, Verification<V::Out>)>,
) -> Result<SessionEnd, FetchError> {
    let t = opts.request_timeout;
    // Malformed frames are misbehaviour; other I/O errors are a lost
    // connection (or an inbound stream the peer's node dropped under load).
    let io = |e: std::io::Error| {
        Ok(if e.kind() == std::io::ErrorKind::InvalidData {
            SessionEnd::Dropped(e.to_string())
        } else {
            SessionEnd::Lost(e.to_string())
        })
    };
    let timed_out = || {
        Ok(SessionEnd::Lost(format!(
            "stalled: no answer within {}s",
            t.as_secs()
        )))
    };
    let mut s = match tokio::time::timeout(t, client.control().open_stream(peer, XFER)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Ok(SessionEnd::Lost(e.to_string())),
        Err(_) => return timed_out(),
    };
    // Ask what the peer holds.
    if let Err(e) = write_msg(&mut s, &Request::Have { share }).await {
        return io(e);
    }
    if let Err(e) = s.flush().await {
        return io(e);
    }
    let have = match tokio::time::timeout(t, read_msg::<_, Response>(&mut s)).await {
        Err(_) => return timed_out(),
        Ok(Err(e)) => return io(e),
        Ok(Ok(Some(Response::Have(h)))) => h,
        Ok(Ok(Some(Response::NotFound))) => return Ok(SessionEnd::NotFound),
        // The stream closed before any answer: the peer's node may have
        // dropped it under load (libp2p-stream does with bursts).
        Ok(Ok(None)) => return Ok(SessionEnd::Lost("closed the stream".into())),
        Ok(Ok(Some(other))) => {
            return Ok(SessionEnd::Dropped(format!("answered Have with {other:?}")))
        }
    };
    let m = opener.manifest();
    let n_meta = m.metadata_chunks.len();
    let stream = queue.lock().expect("never poisoned").stream;
    // Requested, in order, not yet answered.
    let mut asked: VecDeque<u64> = VecDeque::new();
    let depth = opts.depth.max(1);
    loop {
        // Top up the pipeline.
        let mut wrote = false;
        while asked.len() + verifying.len() < depth {
            let Some(i) = queue.lock().expect("never poisoned").take(&have, n_meta) else {
                break;
            };
            taken.push_back(i);
            let id: ChunkId = m.chunks(stream)[i as usize];
            if let Err(e) = write_msg(&mut s, &Request::Chunk { share, chunk: id.0 }).await {
                return io(e);
            }
            asked.push_back(i);
            wrote = true;
        }
        if wrote {
            if let Err(e) = s.flush().await {
                return io(e);
            }
        }
        // Hand over what is verified; wait only when the pipeline is full
        // or nothing else is left to do.
        while let Some((_, h)) = verifying.front() {
            if !(h.is_finished() || asked.is_empty() || verifying.len() >= depth) {
                break;
            }
            let (i, h) = verifying.pop_front().expect("front exists");
            if let Some(end) = settle(i, h, sink, queue, taken).await? {
                return Ok(end);
            }
        }
        let Some(&i) = asked.front() else {
            if verifying.is_empty() {
                return Ok(SessionEnd::Finished);
            }
            continue;
        };
        let expected = m.sealed_len(stream, i);
        let answer = async {
            match read_msg::<_, Response>(&mut s).await? {
                Some(Response::Chunk { len }) if len as usize == expected => {
                    Ok(Ok(read_payload(&mut s, expected).await?))
                }
                Some(Response::Chunk { len }) => Ok(Err(format!(
                    "sent a {len}-byte chunk where {expected} bytes were due"
                ))),
                Some(Response::Stale) => Ok(Err("stale".into())),
                Some(Response::NotFound) => Ok(Err("notfound".into())),
                Some(other) => Ok(Err(format!("answered a chunk request with {other:?}"))),
                None => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            }
        };
        let bytes = match tokio::time::timeout(t, answer).await {
            Err(_) => return timed_out(),
            Ok(Err(e)) => return io(e),
            Ok(Ok(Err(r))) if r == "stale" => return Ok(SessionEnd::Stale),
            Ok(Ok(Err(r))) if r == "notfound" => return Ok(SessionEnd::NotFound),
            Ok(Ok(Err(r))) => return Ok(SessionEnd::Dropped(r)),
            Ok(Ok(Ok(b))) => b,
        };
        asked.pop_front();
        let opener = opener.clone();
        verifying.push_back((
            i,
            tokio::task::spawn_blocking(move || opener.verify(stream, i, bytes)),
        ));
    }
}
