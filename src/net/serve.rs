//! Answering peers: the accept loop and one task per stream.
//!
//! Requests on a stream are answered in order, but several are worked on at
//! once (chunks are read and sealed on the blocking pool), so a pipelining
//! fetcher keeps both the CPU and the wire busy. Everything is bounded:
//! streams per peer, requests in flight per stream, CPU jobs per node, and
//! idle time per stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesOrdered;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use tokio::sync::{mpsc, Semaphore};

use crate::chunk::ChunkId;
use crate::manifest::ManifestId;
use crate::net::frame::{read_msg, write_msg};
use crate::net::node::XFER;
use crate::store::share::{LocalShare, ServeError};
use crate::wire::{Have, Request, Response};

/// Why a chunk is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not held here.
    NotFound,
    /// The source files changed; the chunk would not match its id.
    Stale,
}

/// What a node serves. Implementations must never return bytes that do not
/// hash to the requested chunk id.
pub trait Provider: Send + Sync + 'static {
    /// The bytes of a manifest this node serves.
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>>;
    /// Which chunks of a share this node holds.
    fn have(&self, share: &ManifestId) -> Option<Have>;
    /// A chunk, verified against its id. Called on the blocking pool.
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal>;
    /// A peer reports it now holds the whole share.
    fn done(&self, _share: &ManifestId, _peer: PeerId) {}
}

/// Serves one [`LocalShare`], reporting peers that finished on a channel.
pub struct LocalProvider {
    share: LocalShare,
    done: Option<mpsc::UnboundedSender<PeerId>>,
    /// Which chunks have been served at least once, to anyone.
    served: Mutex<Served>,
}

/// A bit per chunk of the share, and how many are still clear.
struct Served {
    bits: Vec<u64>,
    left: usize,
}

impl Served {
    fn new(count: usize) -> Served {
        Served {
            bits: vec![0; count.div_ceil(64)],
            left: count,
        }
    }

    fn mark(&mut self, pos: usize) {
        let (word, bit) = (pos / 64, 1u64 << (pos % 64));
        if let Some(w) = self.bits.get_mut(word) {
            if *w & bit == 0 {
                *w |= bit;
                self.left -= 1;
            }
        }
    }
}

impl LocalProvider {
    /// Serves `share`; `done` hears of every peer that reports completion
    /// once every chunk has been served (see [`Provider::done`]).
    pub fn new(share: LocalShare, done: Option<mpsc::UnboundedSender<PeerId>>) -> LocalProvider {
        let served = Mutex::new(Served::new(share.manifest().chunk_count()));
        LocalProvider {
            share,
            done,
            served,
        }
    }

    /// The share.
    pub fn share(&self) -> &LocalShare {
        &self.share
    }
}

impl Provider for LocalProvider {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        (*share == self.share.id()).then(|| self.share.manifest_bytes())
    }

    fn have(&self, share: &ManifestId) -> Option<Have> {
        (*share == self.share.id()).then_some(Have::All)
    }

    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        if *share != self.share.id() {
            return Err(Refusal::NotFound);
        }
        match self.share.chunk(chunk) {
            Ok(bytes) => {
                if let Some(pos) = self.share.position(chunk) {
                    self.served.lock().expect("never poisoned").mark(pos);
                }
                Ok(bytes)
            }
            Err(ServeError::NotFound) => Err(Refusal::NotFound),
            Err(e @ ServeError::Stale(_)) => {
                tracing::warn!("refusing to serve: {e}; make a new link to share the new version");
                Err(Refusal::Stale)
            }
            Err(ServeError::Io(e)) => {
                tracing::warn!("refusing to serve a chunk: {e}");
                Err(Refusal::Stale)
            }
        }
    }

    /// `Done` carries no proof, and anyone who knows the manifest id (a pin
    /// link holder, a LAN peer that saw it asked for) can send it. So it
    /// counts only once this node has served every chunk at least once: to
    /// stop a one-shot sender, a peer must first have made it send
    /// everything, which is what "someone received everything" means. A
    /// receiver that resumed (under a new peer id) still counts, as its
    /// first run's chunks were served too.
    fn done(&self, share: &ManifestId, peer: PeerId) {
        if *share != self.share.id() {
            return;
        }
        let left = self.served.lock().expect("never poisoned").left;
        if left > 0 {
            tracing::warn!(%peer, left, "a peer said it has everything, but {left} chunk(s) were never served; ignored");
            return;
        }
        if let Some(tx) = &self.done {
            let _ = tx.send(peer);
        }
    }
}

/// Limits of the serving side.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Most concurrent streams from one peer.
    pub max_streams_per_peer: usize,
    /// Most answers worked on or waiting to be sent at once per stream (the
    /// fetcher may have more requests in flight; they wait, unread).
    pub depth: usize,
    /// A stream with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Most chunks being read and sealed at once, for the whole node.
    pub cpu_jobs: usize,
    /// Upload limit in bytes per second, for the whole node.
    pub max_rate: Option<u64>,
    /// Most streams answered at once, for the whole node; more wait their
    /// turn. With `depth`, this bounds the chunks in memory: at most
    /// `max_active × depth` (plus `cpu_jobs` being produced).
    pub max_active: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_streams_per_peer: 8,
            depth: 2,
            idle_timeout: Duration::from_secs(120),
            cpu_jobs: crate::pipeline::default_threads(),
            max_rate: None,
            max_active: 32,
        }
    }
}

/// A node-wide upload rate limit: each payload reserves its share of time.
struct RateLimit {
    bytes_per_sec: u64,
    next_free: Mutex<Instant>,
}

impl RateLimit {
    async fn take(&self, n: usize) {
        let start = {
            let mut next = self
                .next_free
                .lock()
                .expect("never poisoned: no panics while held");
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

struct Shared {
    provider: Arc<dyn Provider>,
    config: ServeConfig,
    cpu: Semaphore,
    /// One permit per stream being answered.
    active: Semaphore,
    rate: Option<RateLimit>,
    streams: Mutex<HashMap<PeerId, usize>>,
}

/// Accepts data streams and answers them from `provider` until the node
/// stops. Runs until every [`crate::net::node::Client`] is gone.
pub async fn serve(
    mut control: libp2p_stream::Control,
    provider: Arc<dyn Provider>,
    config: ServeConfig,
) {
    let Ok(mut incoming) = control.accept(XFER) else {
        tracing::error!("the data protocol is already being served");
        return;
    };
    let shared = Arc::new(Shared {
        provider,
        cpu: Semaphore::new(config.cpu_jobs.max(1)),
        active: Semaphore::new(config.max_active.max(1)),
        rate: config.max_rate.map(|r| RateLimit {
            bytes_per_sec: r.max(1),
            next_free: Mutex::new(Instant::now()),
        }),
        config,
        streams: Mutex::new(HashMap::new()),
    });
    // Only spawn here: libp2p-stream drops inbound streams while this loop
    // is busy.
    while let Some((peer, stream)) = incoming.next().await {
        let admitted = {
            let mut s = shared.streams.lock().expect("never poisoned");
            let n = s.entry(peer).or_default();
            (*n < shared.config.max_streams_per_peer)
                .then(|| *n += 1)
                .is_some()
        };
        if !admitted {
            tracing::debug!(%peer, "too many streams from one peer; dropping one");
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(peer, stream, &shared).await {
                tracing::debug!(%peer, error = %e, "stream ended");
            }
            let mut s = shared.streams.lock().expect("never poisoned");
            if let Some(n) = s.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    s.remove(&peer);
                }
            }
        });
    }
}

/// One answer, ready to write.
enum Reply {
    Msg(Response),
    Manifest(Arc<[u8]>),
    Chunk(Vec<u8>),
}

async fn handle(peer: PeerId, stream: libp2p::Stream, shared: &Arc<Shared>) -> std::io::Result<()> {
    // Wait for a turn: memory is bounded per active stream. A waiting
    // fetcher sees a slow first answer, not an error.
    let Ok(_turn) = shared.active.acquire().await else {
        return Ok(());
    };
    let (mut rd, mut wr) = stream.split();
    let depth = shared.config.depth.max(1);
    let (tx, mut requests) = mpsc::channel::<Request>(depth);
    let idle = shared.config.idle_timeout;
    // Requests are read on their own task so reading never waits on work.
    let reader = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(idle, read_msg::<_, Request>(&mut rd)).await {
                Ok(Ok(Some(req))) => {
                    if tx.send(req).await.is_err() {
                        return;
                    }
                }
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "bad request; closing the stream");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "idle stream; closing it");
                    return;
                }
            }
        }
    });
    let mut pending = FuturesOrdered::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            req = requests.recv(), if open && pending.len() < depth => match req {
                Some(req) => pending.push_back(answer(peer, req, shared.clone())),
                None => open = false,
            },
            Some(reply) = pending.next() => {
                match reply {
                    Reply::Msg(m) => write_msg(&mut wr, &m).await?,
                    Reply::Manifest(bytes) => {
                        write_msg(&mut wr, &Response::Manifest { len: bytes.len() as u32 }).await?;
                        wr.write_all(&bytes).await?;
                    }
                    Reply::Chunk(bytes) => {
                        if let Some(rate) = &shared.rate {
                            rate.take(bytes.len()).await;
                        }
                        write_msg(&mut wr, &Response::Chunk { len: bytes.len() as u32 }).await?;
                        wr.write_all(&bytes).await?;
                    }
                }
                wr.flush().await?;
            }
        }
    }
    reader.abort();
    wr.close().await
}

async fn answer(peer: PeerId, req: Request, shared: Arc<Shared>) -> Reply {
    let p = &shared.provider;
    match req {
        Request::Manifest { share } => match p.manifest(&share) {
            Some(bytes) => Reply::Manifest(bytes),
            None => Reply::Msg(Response::NotFound),
        },
        Request::Have { share } => {
            Reply::Msg(p.have(&share).map_or(Response::NotFound, Response::Have))
        }
        Request::Done { share } => {
            p.done(&share, peer);
            Reply::Msg(Response::Ack)
        }
        Request::Chunk { share, chunk } => {
            let Ok(cpu) = shared.cpu.acquire().await else {
                return Reply::Msg(Response::NotFound);
            };
            let provider = shared.provider.clone();
            let job = tokio::task::spawn_blocking(move || provider.chunk(&share, &chunk));
            let result = job.await;
            drop(cpu);
            match result {
                Ok(Ok(bytes)) => Reply::Chunk(bytes),
                Ok(Err(Refusal::Stale)) => Reply::Msg(Response::Stale),
                Ok(Err(Refusal::NotFound)) | Err(_) => Reply::Msg(Response::NotFound),
            }
        }
    }
}
