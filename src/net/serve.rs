//! Answering peers: admission, then one task per stream.
//!
//! Requests on a stream are answered in order, but several are worked on at
//! once (chunks are read and sealed on the blocking pool), so a pipelining
//! fetcher keeps both the CPU and the wire busy.
//!
//! A server must not be held hostage by the peers it serves (audit F-01):
//! a fetcher that stops reading, or thousands of identities opening streams,
//! must not stop it serving honest fetchers. So:
//!
//! - **Admission.** Streams are capped per peer id, per remote address
//!   ([`AddrKey`]: identities are free, addresses less so) and per node; a
//!   stream over a cap is answered [`Response::Busy`] and closed. A peer or
//!   address that was caught stalling is refused for a while.
//! - **Memory in bytes.** Every chunk answer reserves its sealed length from
//!   one node-wide budget ([`ServeConfig::memory`]) before it is produced and
//!   releases it once written, so memory is bounded in bytes whatever chunk
//!   size a share uses. Answers in progress are also capped per address, so
//!   one address cannot take the whole budget.
//! - **Deadlines.** A request waits at most [`ServeConfig::queue_wait`] for
//!   its share of the budget, then is answered `Busy`; every write must make
//!   progress within [`ServeConfig::write_stall`], or the stream is reset and
//!   its peer is banned for [`ServeConfig::ban`] (an address after repeated
//!   stalls); a stream with no request for [`ServeConfig::idle_timeout`] is
//!   closed.
//!
//! docs/PROTOCOL.md ("Serving policy") states the policy and its defaults.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesOrdered;
use futures::{AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::chunk::ChunkId;
use crate::chunk::CHUNK_OVERHEAD;
use crate::crypto::{holder_proof, ChallengeKey, DoneKey};
use crate::manifest::{Expiry, Manifest, ManifestId};
use crate::net::budget::{Budget, Permit};
use crate::net::frame::{read_msg, write_msg};
use crate::net::inbound::{InboundStream, Incoming};
use crate::net::pex;
use crate::net::seed::Seeding;
use crate::net::PeerAddr;
use crate::store::share::{LocalShare, ServeError};
use crate::wire::{self, Have, Request, Response};

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
    /// The sealed length of a chunk, if known without producing it: the
    /// server reserves that much of its memory budget before asking for
    /// the chunk. `None` reserves [`DEFAULT_RESERVE`] and tops up once the
    /// real length is known.
    fn chunk_len(&self, _share: &ManifestId, _chunk: &ChunkId) -> Option<usize> {
        None
    }
    /// The share whose DHT locator is `locator`, if this node holds it: a
    /// peer that found this node on the LAN or in the DHT asks before it
    /// names the share ([`Request::Holder`]).
    fn holds(&self, _locator: &[u8; 32]) -> Option<ManifestId> {
        None
    }
    /// Whether `claim` proves its receiver holds the read key of `share`.
    /// Only a provider that knows the key can tell; the others never count
    /// a `Done`.
    fn verify_done(&self, _share: &ManifestId, _claim: &DoneClaim) -> bool {
        false
    }
    /// A peer proved it now holds the whole share (see
    /// [`Provider::verify_done`]).
    fn done(&self, _share: &ManifestId, _peer: PeerId) {}
    /// Peers this provider's own fetch of `share` used as sources lately,
    /// with the addresses it reached them at, to pass on in peer exchange
    /// besides the askers the server heard of (a node still fetching knows
    /// its sources; a sharer has none).
    fn sources(&self, _share: &ManifestId) -> Vec<PeerAddr> {
        Vec::new()
    }
    /// When `share` expires, if it does: read from the header of the
    /// manifest served (docs/FORMAT.md, 4.2). From then on the server
    /// answers every request naming the share `NotFound`, whatever the
    /// provider, so re-seeders, pinners and partial holders stop as the
    /// sharer does.
    fn expires(&self, share: &ManifestId) -> Option<Expiry> {
        self.manifest(share)
            .and_then(|bytes| Manifest::expiry_in(&bytes))
    }
}

/// Whether `share` has expired at `p` by this machine's clock.
fn expired(p: &dyn Provider, share: &ManifestId) -> bool {
    p.expires(share).is_some_and(|e| e.passed())
}

/// A receiver's `Done` as the server saw it: who proved what, against which
/// challenge (docs/PROTOCOL.md, "Done").
#[derive(Clone, Debug)]
pub struct DoneClaim {
    /// This node.
    pub sender: PeerId,
    /// The authenticated peer that sent it.
    pub receiver: PeerId,
    /// The challenge this node gives that peer for the share.
    pub challenge: [u8; 32],
    /// What the peer sent.
    pub proof: [u8; 32],
}

impl DoneClaim {
    /// Whether the proof is right under `key` for `share`.
    pub fn verify(&self, share: &ManifestId, key: &DoneKey) -> bool {
        key.verify(
            &share.0,
            &self.challenge,
            &self.sender.to_bytes(),
            &self.receiver.to_bytes(),
            &self.proof,
        )
    }
}

/// Where a [`LocalProvider`] reports receivers that proved they have
/// everything.
pub struct DoneReport {
    /// The share's done-proof key.
    pub key: DoneKey,
    /// Hears the peer id of each receiver that proved it (a full channel
    /// drops the report).
    pub to: mpsc::Sender<PeerId>,
}

/// Serves one [`LocalShare`], reporting receivers that proved they finished
/// on a channel. Once its manifest's expiry passes, or once as many
/// distinct receivers as [`LocalProvider::with_max_downloads`] allows have
/// proved they have everything, it serves nothing more.
pub struct LocalProvider {
    share: LocalShare,
    locator: [u8; 32],
    done: Option<DoneReport>,
    limit: Option<DownloadLimit>,
}

/// The receivers counted against `--max-downloads`.
struct DownloadLimit {
    key: DoneKey,
    max: usize,
    /// Distinct peers that proved it; at most `max`.
    peers: Mutex<std::collections::HashSet<PeerId>>,
}

impl LocalProvider {
    /// Serves `share`; `done` hears of every receiver that proves it holds
    /// the read key when it says it has everything (see
    /// [`Provider::verify_done`]).
    pub fn new(share: LocalShare, done: Option<DoneReport>) -> LocalProvider {
        LocalProvider {
            locator: share.id().locator(),
            share,
            done,
            limit: None,
        }
    }

    /// Stops serving once `max` distinct receivers proved, with `key` (the
    /// share's done-proof key), that they hold the whole share.
    pub fn with_max_downloads(mut self, key: DoneKey, max: u32) -> LocalProvider {
        self.limit = Some(DownloadLimit {
            key,
            max: max as usize,
            peers: Mutex::default(),
        });
        self
    }

    /// Counts `peers` (receivers a previous run of this node counted, kept
    /// across its restart) against the download limit, up to its maximum;
    /// without a limit, nothing.
    pub fn with_downloads(self, peers: impl IntoIterator<Item = PeerId>) -> LocalProvider {
        if let Some(l) = &self.limit {
            let mut counted = l.peers.lock().expect("never poisoned");
            for p in peers {
                if counted.len() >= l.max {
                    break;
                }
                counted.insert(p);
            }
        }
        self
    }

    /// The share.
    pub fn share(&self) -> &LocalShare {
        &self.share
    }

    /// Distinct receivers counted so far against the download limit.
    pub fn downloads(&self) -> usize {
        self.limit
            .as_ref()
            .map_or(0, |l| l.peers.lock().expect("never poisoned").len())
    }

    /// Whether the download limit has been reached.
    pub fn used_up(&self) -> bool {
        self.limit
            .as_ref()
            .is_some_and(|l| l.peers.lock().expect("never poisoned").len() >= l.max)
    }

    /// Whether the share has expired by this machine's clock.
    pub fn expired(&self) -> bool {
        self.share.manifest().expires.is_some_and(|e| e.passed())
    }

    /// Whether `share` is this one and still served: not expired, not
    /// used up.
    fn serves(&self, share: &ManifestId) -> bool {
        *share == self.share.id() && !self.expired() && !self.used_up()
    }
}

impl Provider for LocalProvider {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.serves(share).then(|| self.share.manifest_bytes())
    }

    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.serves(share).then_some(Have::All)
    }

    fn expires(&self, share: &ManifestId) -> Option<Expiry> {
        (*share == self.share.id())
            .then(|| self.share.manifest().expires)
            .flatten()
    }

    fn chunk_len(&self, share: &ManifestId, chunk: &ChunkId) -> Option<usize> {
        if !self.serves(share) {
            return None;
        }
        let m = self.share.manifest();
        let pos = self.share.position(chunk)?;
        let meta = m.metadata_chunks.len();
        Some(if pos < meta {
            m.sealed_len(crate::chunk::Stream::Metadata, pos as u64)
        } else {
            m.sealed_len(crate::chunk::Stream::Content, (pos - meta) as u64)
        })
    }

    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        if !self.serves(share) {
            return Err(Refusal::NotFound);
        }
        match self.share.chunk(chunk) {
            Ok(bytes) => Ok(bytes),
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

    fn holds(&self, locator: &[u8; 32]) -> Option<ManifestId> {
        let id = self.share.id();
        (*locator == self.locator && self.serves(&id)).then_some(id)
    }

    /// Anyone who knows the manifest id (a pin link's holder, a peer that
    /// saw it asked for) could say "done"; only a holder of the read key can
    /// prove it (audit F-03), which is what "a receiver has everything"
    /// must mean before a one-shot sender stops.
    fn verify_done(&self, share: &ManifestId, claim: &DoneClaim) -> bool {
        let key = match (&self.done, &self.limit) {
            (Some(d), _) => &d.key,
            (None, Some(l)) => &l.key,
            (None, None) => return false,
        };
        *share == self.share.id() && claim.verify(share, key)
    }

    fn done(&self, share: &ManifestId, peer: PeerId) {
        if *share != self.share.id() {
            return;
        }
        if let Some(l) = &self.limit {
            let mut peers = l.peers.lock().expect("never poisoned");
            // Bounded: nothing is served, so nothing proven, past `max`.
            if peers.len() < l.max && peers.insert(peer) && peers.len() == l.max {
                tracing::info!(
                    share = %share,
                    "{} receiver(s) have the whole share; no longer serving it",
                    l.max
                );
            }
        }
        if let Some(d) = &self.done {
            if d.to.try_send(peer).is_err() {
                tracing::debug!(%peer, "done reports are not being read; dropped one");
            }
        }
    }
}

/// What a chunk answer reserves when the provider cannot say its length in
/// advance: a default-size chunk (1 MiB) and its overhead.
pub const DEFAULT_RESERVE: usize = (1 << crate::chunk::DEFAULT_CHUNK_LOG2) + CHUNK_OVERHEAD;

/// Limits of the serving side. docs/PROTOCOL.md ("Serving policy") lists
/// the defaults.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Most open streams, for the whole node.
    pub max_streams: usize,
    /// Most open streams from one peer id.
    pub max_streams_per_peer: usize,
    /// Most open streams from one remote address ([`AddrKey`]).
    pub max_streams_per_addr: usize,
    /// Most answers worked on or waiting to be sent at once per stream (the
    /// fetcher may have more requests in flight; they wait, unread).
    pub depth: usize,
    /// Most chunk answers in progress at once for one remote address, once
    /// it has shown that it reads what it asks for (one chunk written to
    /// it in full); until then it gets one at a time, so addresses that
    /// never read hold little of the memory budget.
    pub max_answers_per_addr: usize,
    /// A stream with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Most chunks being read and sealed at once, for the whole node.
    pub cpu_jobs: usize,
    /// Upload limit in bytes per second, for the whole node.
    pub max_rate: Option<u64>,
    /// Bytes of chunks held in memory at once (being produced or waiting
    /// to be written), for the whole node.
    pub memory: usize,
    /// How long a request waits for its share of [`Self::memory`] before it
    /// is answered `Busy`.
    pub queue_wait: Duration,
    /// A write that makes no progress for this long resets the stream: the
    /// fetcher stopped reading.
    pub write_stall: Duration,
    /// How long a peer caught stalling (and an address caught
    /// [`STALLS_PER_ADDR`] times) is refused.
    pub ban: Duration,
    /// This node's peer id. The proofs of `Done` and of holding a share
    /// bind it, so without it the node answers `DoneChallenge`,
    /// `ProvenDone` and `Holder` with `NotFound`.
    pub identity: Option<PeerId>,
    /// A handle that stops this server gracefully (none: it runs until the
    /// node stops).
    pub drain: Option<Drain>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_streams: 256,
            max_streams_per_peer: 8,
            max_streams_per_addr: 32,
            depth: 2,
            max_answers_per_addr: 8,
            idle_timeout: Duration::from_secs(60),
            cpu_jobs: crate::pipeline::default_threads(),
            max_rate: None,
            memory: 64 << 20,
            queue_wait: Duration::from_secs(10),
            write_stall: Duration::from_secs(10),
            ban: Duration::from_secs(60),
            identity: None,
            drain: None,
        }
    }
}

/// Stalls from one address (within ten minutes) after which the whole
/// address is refused for [`ServeConfig::ban`].
pub const STALLS_PER_ADDR: u32 = 4;
/// How long a stall is remembered against its address.
const STALL_MEMORY: Duration = Duration::from_secs(600);
/// Most peers and addresses remembered as banned or stalling; past this the
/// oldest entries are forgotten (a flood of identities cannot grow it).
const MAX_REMEMBERED: usize = 4096;
/// Writes are cut into pieces this large so a stall is seen within one
/// piece, not one whole chunk.
const WRITE_PIECE: usize = 64 * 1024;
/// How long the server waits to write a `Busy` refusal before dropping it.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(2);
/// Most refusals being written at once; beyond this, streams are dropped.
const MAX_REFUSALS: usize = 64;

/// Who a remote address stands for, for the per-address limits: its IP
/// (IPv6 by /64, the block one subscriber usually gets), except where the IP
/// says nothing about the peer: loopback (this machine), relayed connections
/// (the relay's address) and connections with no IP, which count per peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrKey {
    /// An IPv4 address, or an IPv6 /64 (the rest zeroed).
    Ip(IpAddr),
    /// The peer itself.
    Peer(PeerId),
}

impl AddrKey {
    /// The key for a stream from `peer` on a connection to `addr`.
    pub fn of(peer: PeerId, addr: &Multiaddr) -> AddrKey {
        if addr.iter().any(|p| p == Protocol::P2pCircuit) {
            return AddrKey::Peer(peer);
        }
        let ip = addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        match ip {
            Some(ip) if ip.is_loopback() => AddrKey::Peer(peer),
            Some(IpAddr::V6(ip)) => {
                let seg = ip.segments();
                AddrKey::Ip(IpAddr::V6(std::net::Ipv6Addr::new(
                    seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0,
                )))
            }
            Some(ip) => AddrKey::Ip(ip),
            None => AddrKey::Peer(peer),
        }
    }
}

/// A node-wide upload rate limit: each payload reserves its share of time.
/// The web server (`crate::web`) paces its answers with one too.
pub(crate) struct RateLimit {
    bytes_per_sec: u64,
    next_free: Mutex<Instant>,
}

impl RateLimit {
    /// A limit of `bytes_per_sec` (at least 1).
    pub(crate) fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec: bytes_per_sec.max(1),
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Waits until `n` more bytes may go out.
    pub(crate) async fn take(&self, n: usize) {
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

/// Most chunks whose sends [`Turns`] counts; past this the counts start
/// again from zero (only the order of answers depends on them).
const MAX_COUNTED: usize = 1 << 16;

/// How long a chunk answer may be passed over in favour of chunks sent
/// fewer times before it goes first regardless (well within a fetcher's
/// 30 s answer deadline, and `queue_wait`).
const TURN_PATIENCE: Duration = Duration::from_secs(10);

/// The upload limit for chunk answers, handing out turns so that the chunk
/// sent the fewest times so far goes first (then the one waiting longest;
/// one passed over for [`TURN_PATIENCE`] goes first regardless). With many
/// receivers of one share asking a capped sharer at once, the chunks nobody
/// has yet leave before the copies they could also get from each other, so
/// the crowd holds the whole share sooner (docs/PROTOCOL.md, "Peer
/// exchange"). The limit itself is [`RateLimit`]'s: one schedule for the
/// node, no burst.
struct Turns {
    bytes_per_sec: u64,
    state: Mutex<TurnState>,
}

#[derive(Default)]
struct TurnState {
    /// When the next turn may start.
    next_free: Option<Instant>,
    /// Answers waiting for a turn: at most one per open stream (a stream
    /// writes its answers in order).
    waiting: Vec<Waiter>,
    /// Chunks sent so far, by id (at most [`MAX_COUNTED`]).
    sent: HashMap<ChunkId, u32>,
    /// Whether a task is handing out turns.
    dispatching: bool,
}

struct Waiter {
    chunk: ChunkId,
    len: usize,
    since: Instant,
    go: oneshot::Sender<()>,
}

impl Turns {
    fn new(bytes_per_sec: u64) -> Arc<Turns> {
        Arc::new(Turns {
            bytes_per_sec: bytes_per_sec.max(1),
            state: Mutex::default(),
        })
    }

    /// Waits for the turn to send `len` bytes of `chunk`.
    async fn take(self: &Arc<Self>, chunk: ChunkId, len: usize) {
        let (go, turn) = oneshot::channel();
        {
            let mut st = self.state.lock().expect("never poisoned");
            st.waiting.push(Waiter {
                chunk,
                len,
                since: Instant::now(),
                go,
            });
            if !st.dispatching {
                st.dispatching = true;
                tokio::spawn(self.clone().dispatch());
            }
        }
        // Dropped only if the dispatcher is gone (the runtime stops).
        let _ = turn.await;
    }

    /// Hands out turns while answers wait: at each turn's start, the best
    /// waiting answer goes.
    async fn dispatch(self: Arc<Self>) {
        loop {
            let at = self.state.lock().expect("never poisoned").next_free;
            if let Some(at) = at {
                tokio::time::sleep_until(at.into()).await;
            }
            let mut st = self.state.lock().expect("never poisoned");
            // Answers given up meanwhile (their stream ended) take no turn.
            st.waiting.retain(|w| !w.go.is_closed());
            let now = Instant::now();
            let best = st
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| {
                    let overdue = now.saturating_duration_since(w.since) >= TURN_PATIENCE;
                    let sent = st.sent.get(&w.chunk).copied().unwrap_or(0);
                    (!overdue, if overdue { 0 } else { sent }, w.since)
                })
                .map(|(k, _)| k);
            let Some(k) = best else {
                st.dispatching = false;
                return;
            };
            let w = st.waiting.swap_remove(k);
            if st.sent.len() >= MAX_COUNTED && !st.sent.contains_key(&w.chunk) {
                st.sent.clear();
            }
            *st.sent.entry(w.chunk).or_default() += 1;
            let start = st.next_free.map_or(now, |t| t.max(now));
            st.next_free =
                Some(start + Duration::from_secs_f64(w.len as f64 / self.bytes_per_sec as f64));
            let _ = w.go.send(());
        }
    }
}

/// Open streams and answer slots, per peer and per address.
#[derive(Default)]
struct Streams {
    total: usize,
    per_peer: HashMap<PeerId, usize>,
    per_addr: HashMap<AddrKey, (usize, Arc<Slots>)>,
}

/// One address's answer slots: one while on probation, all once it has
/// read a whole chunk.
struct Slots {
    permits: Arc<Semaphore>,
    proven: std::sync::atomic::AtomicBool,
    /// Permits added when it is proven.
    extra: usize,
}

impl Slots {
    fn new(max: usize) -> Slots {
        Slots {
            permits: Arc::new(Semaphore::new(1)),
            proven: false.into(),
            extra: max.max(1) - 1,
        }
    }

    /// A whole chunk was written to this address.
    fn prove(&self) {
        if !self.proven.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.permits.add_permits(self.extra);
        }
    }
}

/// Peers and addresses refused for a while, and stalls remembered.
#[derive(Default)]
struct Bans {
    until: HashMap<AddrOrPeer, Instant>,
    stalls: HashMap<AddrKey, (u32, Instant)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AddrOrPeer {
    Addr(AddrKey),
    Peer(PeerId),
}

impl Bans {
    fn banned(&mut self, peer: PeerId, addr: AddrKey) -> bool {
        let now = Instant::now();
        [AddrOrPeer::Peer(peer), AddrOrPeer::Addr(addr)]
            .iter()
            .any(|k| match self.until.get(k) {
                Some(t) if *t > now => true,
                Some(_) => {
                    self.until.remove(k);
                    false
                }
                None => false,
            })
    }

    /// Records that `peer` at `addr` stopped reading.
    fn stalled(&mut self, peer: PeerId, addr: AddrKey, ban: Duration) {
        let now = Instant::now();
        let s = self.stalls.entry(addr).or_insert((0, now));
        if now.duration_since(s.1) > STALL_MEMORY {
            *s = (0, now);
        }
        s.0 += 1;
        s.1 = now;
        let addr_banned = s.0 >= STALLS_PER_ADDR && !matches!(addr, AddrKey::Peer(_));
        self.until.insert(AddrOrPeer::Peer(peer), now + ban);
        if addr_banned {
            tracing::info!(
                ?addr,
                "an address keeps stalling its streams; refusing it for a while"
            );
            self.until.insert(AddrOrPeer::Addr(addr), now + ban);
        }
        if self.until.len() > MAX_REMEMBERED {
            self.until.retain(|_, t| *t > now);
            forget_oldest(&mut self.until, |t| *t);
        }
        if self.stalls.len() > MAX_REMEMBERED {
            self.stalls
                .retain(|_, s| now.duration_since(s.1) <= STALL_MEMORY);
            forget_oldest(&mut self.stalls, |s| s.1);
        }
    }
}

/// Drops the older half of `map` if it is still over [`MAX_REMEMBERED`].
fn forget_oldest<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    when: impl Fn(&V) -> Instant,
) {
    if map.len() <= MAX_REMEMBERED {
        return;
    }
    let mut times: Vec<Instant> = map.values().map(&when).collect();
    times.sort_unstable();
    let cut = times[times.len() / 2];
    map.retain(|_, v| when(v) > cut);
}

struct Shared {
    provider: Arc<dyn Provider>,
    config: ServeConfig,
    cpu: Semaphore,
    /// The memory budget, in bytes, shared fairly across addresses.
    memory: Arc<Budget<AddrKey>>,
    rate: Option<Arc<Turns>>,
    streams: Mutex<Streams>,
    bans: Mutex<Bans>,
    /// Bumped at every new ban, so streams of a banned peer end at once
    /// instead of each stalling in turn.
    banned: tokio::sync::watch::Sender<u64>,
    refusals: Arc<Semaphore>,
    /// Makes the `Done` challenges (one secret per run).
    challenges: ChallengeKey,
    /// Whether to stop, and the open streams to wait for.
    drain: Drain,
    /// Who asked for which share, for peer exchange (bounded).
    book: Mutex<pex::Book>,
    /// What a capped server sent to whom, for its `Have` answers
    /// (super-seeding; unused without an upload limit).
    seeding: Mutex<Seeding>,
}

/// Lets the owner of a server stop it gracefully (a one-shot sender whose
/// receiver is done): no new streams or requests, answers in progress
/// written. Given to [`serve`] in [`ServeConfig::drain`].
#[derive(Clone, Default)]
pub struct Drain(Arc<DrainState>);

struct DrainState {
    /// Set once the server stops taking streams and requests.
    draining: tokio::sync::watch::Sender<bool>,
    /// Streams open.
    open: tokio::sync::watch::Sender<usize>,
}

impl Default for DrainState {
    fn default() -> Self {
        DrainState {
            draining: tokio::sync::watch::Sender::new(false),
            open: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("draining", &*self.0.draining.borrow())
            .field("open", &*self.0.open.borrow())
            .finish()
    }
}

impl Drain {
    /// Stops taking streams and requests, and waits until every open stream
    /// has written the answers it had in progress and closed, or `deadline`
    /// passes. Returns whether all of them did.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.0.draining.send_replace(true);
        let mut open = self.0.open.subscribe();
        let closed = tokio::time::timeout(deadline, open.wait_for(|n| *n == 0)).await;
        closed.is_ok()
    }
}

/// An admitted stream's place in the counts; given back when dropped.
struct Admission {
    shared: Arc<Shared>,
    peer: PeerId,
    addr: AddrKey,
    /// The address's answer slots.
    answers: Arc<Slots>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut s = self.shared.streams.lock().expect("never poisoned");
        s.total -= 1;
        self.shared.drain.0.open.send_replace(s.total);
        if let Some(n) = s.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                s.per_peer.remove(&self.peer);
            }
        }
        if let Some((n, _)) = s.per_addr.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                s.per_addr.remove(&self.addr);
            }
        }
    }
}

impl Shared {
    /// Counts a new stream in, or says why not.
    fn admit(self: &Arc<Self>, peer: PeerId, addr: AddrKey) -> Result<Admission, &'static str> {
        if self.bans.lock().expect("never poisoned").banned(peer, addr) {
            return Err("banned for stalling");
        }
        let c = &self.config;
        let mut s = self.streams.lock().expect("never poisoned");
        let per_peer = s.per_peer.get(&peer).copied().unwrap_or(0);
        let per_addr = s.per_addr.get(&addr).map_or(0, |e| e.0);
        if s.total >= c.max_streams {
            return Err("too many streams in all");
        }
        if per_peer >= c.max_streams_per_peer {
            return Err("too many streams from this peer");
        }
        if per_addr >= c.max_streams_per_addr {
            return Err("too many streams from this address");
        }
        s.total += 1;
        self.drain.0.open.send_replace(s.total);
        *s.per_peer.entry(peer).or_default() += 1;
        let e = s
            .per_addr
            .entry(addr)
            .or_insert_with(|| (0, Arc::new(Slots::new(c.max_answers_per_addr))));
        e.0 += 1;
        let answers = e.1.clone();
        Ok(Admission {
            shared: self.clone(),
            peer,
            addr,
            answers,
        })
    }
}

/// Accepts data streams and answers them from `provider` until the node
/// stops (every [`crate::net::node::Client`] is gone).
pub async fn serve(mut incoming: Incoming, provider: Arc<dyn Provider>, config: ServeConfig) {
    let drain = config.drain.clone().unwrap_or_default();
    let challenges = ChallengeKey::generate().expect("the system random number generator works");
    let shared = Arc::new(Shared {
        provider,
        cpu: Semaphore::new(config.cpu_jobs.max(1)),
        memory: Budget::new(config.memory.max(DEFAULT_RESERVE)),
        rate: config.max_rate.map(Turns::new),
        config,
        streams: Mutex::default(),
        bans: Mutex::default(),
        banned: tokio::sync::watch::Sender::new(0),
        refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
        challenges,
        drain,
        book: Mutex::default(),
        seeding: Mutex::default(),
    });
    while let Some(InboundStream { peer, addr, stream }) = incoming.recv().await {
        let key = AddrKey::of(peer, &addr);
        if *shared.drain.0.draining.borrow() {
            refuse(stream, &shared);
            continue;
        }
        match shared.admit(peer, key) {
            Ok(admission) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, admission, addr, &shared).await {
                        tracing::debug!(%peer, error = %e, "stream ended");
                    }
                });
            }
            Err(why) => {
                tracing::debug!(%peer, %addr, "refusing a stream: {why}");
                refuse(stream, &shared);
            }
        }
    }
}

/// Answers a refused stream `Busy` (so the fetcher waits rather than
/// counting it as a failure), within a deadline and a bound on refusals in
/// progress; otherwise just drops it.
fn refuse(stream: libp2p::Stream, shared: &Shared) {
    let Ok(permit) = shared.refusals.clone().try_acquire_owned() else {
        return;
    };
    let retry = shared.config.queue_wait;
    tokio::spawn(async move {
        let mut stream = stream;
        let busy = Response::Busy {
            retry_ms: retry.as_millis().min(u32::MAX as u128) as u32,
        };
        let _ = tokio::time::timeout(REFUSAL_DEADLINE, async {
            write_msg(&mut stream, &busy).await?;
            stream.close().await
        })
        .await;
        drop(permit);
    });
}

/// Writes `buf` in pieces, each of which must go out within `stall`.
async fn write_timed<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    for piece in buf.chunks(WRITE_PIECE) {
        tokio::time::timeout(stall, w.write_all(piece))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
    tokio::time::timeout(stall, w.flush())
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// One answer, ready to write.
enum Reply {
    Msg(Response),
    Manifest(Arc<[u8]>),
    /// A chunk, and the budget it holds until written (under an upload
    /// limit, its turn was taken before it was produced).
    Chunk(Vec<u8>, Reserved),
}

/// A chunk answer's hold on the memory budget and on its address's answer
/// slots.
struct Reserved {
    _memory: Permit<AddrKey>,
    _slot: OwnedSemaphorePermit,
}

async fn handle(
    stream: libp2p::Stream,
    admission: Admission,
    remote: Multiaddr,
    shared: &Arc<Shared>,
) -> std::io::Result<()> {
    let peer = admission.peer;
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
    let ctx = Arc::new(StreamCtx {
        peer,
        remote,
        addr: admission.addr,
        slots: admission.answers.clone(),
        shared: shared.clone(),
    });
    let stall = shared.config.write_stall;
    let mut bans = shared.banned.subscribe();
    let mut draining = shared.drain.0.draining.subscribe();
    let mut pending = FuturesOrdered::new();
    // Answers reserve memory in request order: a later answer never holds
    // budget while an earlier one, which must be written first, waits.
    let mut turn: Option<oneshot::Receiver<()>> = None;
    let mut open = true;
    let result: std::io::Result<()> = async {
        while open || !pending.is_empty() {
            tokio::select! {
                Ok(()) = bans.changed() => {
                    if shared.bans.lock().expect("never poisoned").banned(peer, admission.addr) {
                        return Err(std::io::Error::other("its peer or address was banned for stalling"));
                    }
                }
                // Draining: answer what is in progress, then close.
                Ok(()) = draining.changed(), if open => open = !*draining.borrow(),
                req = requests.recv(), if open && pending.len() < depth => match req {
                    Some(req) => {
                        let (next, after) = oneshot::channel();
                        // On a task of its own, so that the answer's permits
                        // (CPU, memory) are let go when it is done even while
                        // this loop waits on a slow write.
                        let task = tokio::spawn(answer(ctx.clone(), req, turn.replace(after), next));
                        pending.push_back(Answer(task));
                    }
                    None => open = false,
                },
                Some(reply) = pending.next() => match reply {
                    Reply::Msg(m) => write_timed(&mut wr, &wire::encode(&m), stall).await?,
                    Reply::Manifest(bytes) => {
                        let head = wire::encode(&Response::Manifest { len: bytes.len() as u32 });
                        write_timed(&mut wr, &head, stall).await?;
                        write_timed(&mut wr, &bytes, stall).await?;
                    }
                    Reply::Chunk(bytes, reserved) => {
                        let head = wire::encode(&Response::Chunk { len: bytes.len() as u32 });
                        write_timed(&mut wr, &head, stall).await?;
                        write_timed(&mut wr, &bytes, stall).await?;
                        drop(reserved);
                        ctx.slots.prove();
                    }
                },
            }
        }
        tokio::time::timeout(stall, wr.close())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
    .await;
    reader.abort();
    if matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::TimedOut) {
        tracing::debug!(%peer, "the peer stopped reading; resetting its stream");
        shared.bans.lock().expect("never poisoned").stalled(
            peer,
            admission.addr,
            shared.config.ban,
        );
        shared.banned.send_modify(|g| *g += 1);
    }
    result
}

/// An answer being worked on; aborted if the stream ends first, which lets
/// go of what it holds.
struct Answer(tokio::task::JoinHandle<Reply>);

impl std::future::Future for Answer {
    type Output = Reply;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Reply> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Reply::Msg(Response::NotFound)))
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the answers of one stream share.
struct StreamCtx {
    peer: PeerId,
    /// The remote address of the stream's connection.
    remote: Multiaddr,
    addr: AddrKey,
    /// The address's answer slots.
    slots: Arc<Slots>,
    shared: Arc<Shared>,
}

impl StreamCtx {
    /// Reserves what a chunk answer needs: one of its address's answer
    /// slots, then `len` bytes of the budget (in turn with other addresses),
    /// all within the queue deadline.
    async fn reserve(&self, len: usize) -> Option<Reserved> {
        tokio::time::timeout(self.shared.config.queue_wait, async {
            let slot = self.slots.permits.clone().acquire_owned().await.ok()?;
            let memory = self.shared.memory.acquire(self.addr, len).await;
            Some(Reserved {
                _memory: memory,
                _slot: slot,
            })
        })
        .await
        .ok()
        .flatten()
    }

    /// The challenge this node gives the peer for `share`, if it serves it.
    fn challenge(&self, share: &ManifestId) -> Option<(PeerId, [u8; 32])> {
        let local = self.shared.config.identity?;
        self.shared.provider.have(share)?;
        let c = self
            .shared
            .challenges
            .challenge(&share.0, &self.peer.to_bytes());
        Some((local, c))
    }

    fn done_challenge(&self, share: &ManifestId) -> Response {
        match self.challenge(share) {
            Some((_, challenge)) => Response::Challenge { challenge },
            None => Response::NotFound,
        }
    }

    /// A `Done` counts only if it proves the read key (audit F-03).
    fn proven_done(&self, share: &ManifestId, proof: [u8; 32]) -> Response {
        let Some((sender, challenge)) = self.challenge(share) else {
            return Response::NotFound;
        };
        let claim = DoneClaim {
            sender,
            receiver: self.peer,
            challenge,
            proof,
        };
        let p = &self.shared.provider;
        if p.verify_done(share, &claim) {
            p.done(share, self.peer);
            Response::Ack
        } else {
            tracing::info!(peer = %self.peer, "a peer said it has everything, with a proof that does not verify; ignored");
            Response::NotFound
        }
    }

    /// Proves this node holds the share with `locator`, if it does.
    fn holder(&self, locator: &[u8; 32], nonce: &[u8; 32]) -> Response {
        let (Some(local), Some(share)) = (
            self.shared.config.identity,
            self.shared.provider.holds(locator),
        ) else {
            return Response::NotFound;
        };
        if expired(self.shared.provider.as_ref(), &share) {
            return Response::NotFound;
        }
        Response::Holder {
            proof: holder_proof(&share.0, nonce, &self.peer.to_bytes(), &local.to_bytes()),
        }
    }

    /// Peer exchange: records the asker (where it announced it can be
    /// reached, on the IP it came from) and answers with the other peers
    /// known for the share: the provider's own sources first, then the
    /// askers heard of most recently. Nothing for a share not served here.
    fn peers(&self, share: &ManifestId, listen: &[serde_bytes::ByteBuf]) -> Response {
        let p = &self.shared.provider;
        if p.have(share).is_none() {
            return Response::NotFound;
        }
        let now = Instant::now();
        let mut book = self.shared.book.lock().expect("never poisoned");
        book.met(
            *share,
            self.peer,
            pex::announced_addrs(listen, &self.remote),
            now,
        );
        let mut list: Vec<PeerAddr> = p
            .sources(share)
            .into_iter()
            .filter(|s| s.peer != self.peer)
            .collect();
        for b in book.list(share, self.peer, now) {
            if !list.iter().any(|l| l.peer == b.peer) {
                list.push(b);
            }
        }
        drop(book);
        Response::Peers(pex::to_wire(&list))
    }

    /// What this node holds of `share`, as offered to this peer: all of
    /// it, or under an upload limit while others fetch too, what no live
    /// swarm member got from it yet (super-seeding, [`Seeding::offer`]).
    fn have(&self, share: &ManifestId) -> Response {
        let p = &self.shared.provider;
        let Some(held) = p.have(share) else {
            return Response::NotFound;
        };
        if self.shared.rate.is_none() {
            return Response::Have(held);
        }
        // Members that announced they serve the share and are connected
        // (the book's lock, then the streams', never both at once).
        let announced: Vec<PeerId> = {
            let book = self.shared.book.lock().expect("never poisoned");
            book.announced(share).copied().collect()
        };
        // At most `max_streams` peers.
        let connected: HashSet<PeerId> = {
            let streams = self.shared.streams.lock().expect("never poisoned");
            streams.per_peer.keys().copied().collect()
        };
        let live: HashSet<PeerId> = announced
            .into_iter()
            .filter(|a| connected.contains(a))
            .collect();
        let manifest = || p.manifest(share).and_then(|b| Manifest::decode(&b).ok());
        Response::Have(self.seeding().offer(
            *share,
            self.peer,
            &held,
            manifest,
            (&live, &connected),
            Instant::now(),
        ))
    }

    fn seeding(&self) -> std::sync::MutexGuard<'_, Seeding> {
        self.shared.seeding.lock().expect("never poisoned")
    }

    fn busy(&self) -> Reply {
        Reply::Msg(Response::Busy {
            retry_ms: self
                .shared
                .config
                .queue_wait
                .as_millis()
                .min(u32::MAX as u128) as u32,
        })
    }
}

/// Answers one request. A chunk answer first waits for the answer before it
/// on the stream to have its reservation (`after`), then reserves, then
/// lets the next one go (`next`).
async fn answer(
    ctx: Arc<StreamCtx>,
    req: Request,
    after: Option<oneshot::Receiver<()>>,
    next: oneshot::Sender<()>,
) -> Reply {
    let p = &ctx.shared.provider;
    let named = match &req {
        Request::Manifest { share }
        | Request::Have { share }
        | Request::Chunk { share, .. }
        | Request::DoneChallenge { share }
        | Request::ProvenDone { share, .. }
        | Request::Done { share }
        | Request::Peers { share, .. } => Some(share),
        // Checked once the locator is resolved (`StreamCtx::holder`).
        Request::Holder { .. } => None,
    };
    if named.is_some_and(|s| expired(p.as_ref(), s)) {
        let _ = next.send(());
        return Reply::Msg(Response::NotFound);
    }
    let Request::Chunk { share, chunk } = req else {
        let _ = next.send(());
        return match req {
            Request::Manifest { share } => match p.manifest(&share) {
                Some(bytes) => Reply::Manifest(bytes),
                None => Reply::Msg(Response::NotFound),
            },
            Request::Have { share } => Reply::Msg(ctx.have(&share)),
            Request::Done { .. } => {
                tracing::debug!(peer = %ctx.peer, "ignoring a Done without proof");
                Reply::Msg(Response::Ack)
            }
            Request::DoneChallenge { share } => Reply::Msg(ctx.done_challenge(&share)),
            Request::ProvenDone { share, proof } => Reply::Msg(ctx.proven_done(&share, proof)),
            Request::Holder { locator, nonce } => Reply::Msg(ctx.holder(&locator, &nonce)),
            Request::Peers { share, listen } => Reply::Msg(ctx.peers(&share, &listen)),
            Request::Chunk { .. } => unreachable!("handled below"),
        };
    };
    if let Some(after) = after {
        // An error means the earlier answer is gone: nothing to wait for.
        let _ = after.await;
    }
    let len = p.chunk_len(&share, &chunk).unwrap_or(DEFAULT_RESERVE);
    let reserved = ctx.reserve(len).await;
    let _ = next.send(());
    let Some(mut reserved) = reserved else {
        return ctx.busy();
    };
    if let Some(rate) = &ctx.shared.rate {
        // The turn comes before the chunk is produced: an answer given up
        // while it waits (its stream reset) costs neither CPU nor upload.
        // Kept from others' offers meanwhile (super-seeding).
        ctx.seeding()
            .asked(&share, &chunk, ctx.peer, Instant::now());
        rate.take(chunk, len).await;
        ctx.seeding().sent(&share, &chunk, ctx.peer, Instant::now());
    }
    let Ok(cpu) = ctx.shared.cpu.acquire().await else {
        return Reply::Msg(Response::NotFound);
    };
    let provider = ctx.shared.provider.clone();
    let job = tokio::task::spawn_blocking(move || provider.chunk(&share, &chunk));
    let result = job.await;
    drop(cpu);
    match result {
        Ok(Ok(bytes)) => {
            if bytes.len() > len {
                // The provider could not say the length in advance (or said
                // too little): hold what it really is.
                drop(reserved);
                reserved = match ctx.reserve(bytes.len()).await {
                    Some(r) => r,
                    None => return ctx.busy(),
                };
            }
            Reply::Chunk(bytes, reserved)
        }
        Ok(Err(Refusal::Stale)) => Reply::Msg(Response::Stale),
        Ok(Err(Refusal::NotFound)) | Err(_) => Reply::Msg(Response::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn addresses_are_keyed_by_ip_except_where_the_ip_says_nothing() {
        let p = peer();
        let key = |a: &str| AddrKey::of(p, &a.parse().unwrap());
        assert_eq!(
            key("/ip4/192.0.2.7/tcp/4001"),
            AddrKey::Ip("192.0.2.7".parse().unwrap())
        );
        // One IPv6 subscriber usually has a whole /64.
        assert_eq!(
            key("/ip6/2001:db8:1:2:aaaa::1/udp/1/quic-v1"),
            key("/ip6/2001:db8:1:2:bbbb::9/tcp/2")
        );
        assert_ne!(
            key("/ip6/2001:db8:1:2::1/tcp/1"),
            key("/ip6/2001:db8:1:3::1/tcp/1")
        );
        // Loopback is this machine; a relayed connection shows the relay's IP.
        assert_eq!(key("/ip4/127.0.0.1/tcp/1"), AddrKey::Peer(p));
        assert_eq!(key("/ip6/::1/tcp/1"), AddrKey::Peer(p));
        let relayed = format!("/ip4/192.0.2.1/tcp/1/p2p/{}/p2p-circuit", peer());
        assert_eq!(key(&relayed), AddrKey::Peer(p));
        assert_eq!(AddrKey::of(p, &Multiaddr::empty()), AddrKey::Peer(p));
    }

    struct Nothing;
    impl Provider for Nothing {
        fn manifest(&self, _: &ManifestId) -> Option<Arc<[u8]>> {
            None
        }
        fn have(&self, _: &ManifestId) -> Option<Have> {
            None
        }
        fn chunk(&self, _: &ManifestId, _: &ChunkId) -> Result<Vec<u8>, Refusal> {
            Err(Refusal::NotFound)
        }
    }

    fn shared(config: ServeConfig) -> Arc<Shared> {
        Arc::new(Shared {
            provider: Arc::new(Nothing),
            cpu: Semaphore::new(1),
            memory: Budget::new(config.memory),
            rate: None,
            config,
            streams: Mutex::default(),
            bans: Mutex::default(),
            banned: tokio::sync::watch::Sender::new(0),
            refusals: Arc::new(Semaphore::new(1)),
            challenges: ChallengeKey::generate().unwrap(),
            drain: Drain::default(),
            book: Mutex::default(),
            seeding: Mutex::default(),
        })
    }

    #[test]
    fn streams_are_capped_per_address_per_peer_and_in_all() {
        let s = shared(ServeConfig {
            max_streams: 10,
            max_streams_per_peer: 2,
            max_streams_per_addr: 3,
            ..ServeConfig::default()
        });
        let ip = AddrKey::Ip("192.0.2.1".parse().unwrap());
        let mut held = Vec::new();
        // Many identities behind one address: the address cap holds.
        for _ in 0..3 {
            held.push(s.admit(peer(), ip).unwrap());
        }
        assert_eq!(
            s.admit(peer(), ip).err(),
            Some("too many streams from this address")
        );
        // One identity: the peer cap holds.
        let p = peer();
        let other = AddrKey::Ip("192.0.2.2".parse().unwrap());
        held.push(s.admit(p, other).unwrap());
        held.push(s.admit(p, other).unwrap());
        assert_eq!(
            s.admit(p, other).err(),
            Some("too many streams from this peer")
        );
        // The node cap holds whatever the addresses.
        for i in 0..5 {
            let a = AddrKey::Ip(std::net::IpAddr::V4([198, 51, 100, i].into()));
            held.push(s.admit(peer(), a).unwrap());
        }
        assert_eq!(
            s.admit(peer(), AddrKey::Peer(peer())).err(),
            Some("too many streams in all")
        );
        // Closing streams gives their places back.
        held.clear();
        assert!(s.admit(peer(), ip).is_ok());
        assert_eq!(s.streams.lock().unwrap().total, 0);
    }

    #[test]
    fn a_stalling_peer_is_banned_and_a_stalling_address_after_a_few() {
        let s = shared(ServeConfig::default());
        let ban = Duration::from_secs(60);
        let ip = AddrKey::Ip("192.0.2.9".parse().unwrap());
        let staller = peer();
        s.bans.lock().unwrap().stalled(staller, ip, ban);
        assert_eq!(s.admit(staller, ip).err(), Some("banned for stalling"));
        // Other peers at that address are still served, until the address
        // has stalled STALLS_PER_ADDR times.
        assert!(s.admit(peer(), ip).is_ok());
        for _ in 1..STALLS_PER_ADDR {
            s.bans.lock().unwrap().stalled(peer(), ip, ban);
        }
        assert_eq!(s.admit(peer(), ip).err(), Some("banned for stalling"));
        // A per-peer key (loopback, relayed) bans only that peer, never an
        // "address".
        let lo = peer();
        for _ in 0..=STALLS_PER_ADDR {
            s.bans.lock().unwrap().stalled(lo, AddrKey::Peer(lo), ban);
        }
        let b = s.bans.lock().unwrap();
        assert!(b.until.contains_key(&AddrOrPeer::Peer(lo)));
        assert!(!b.until.contains_key(&AddrOrPeer::Addr(AddrKey::Peer(lo))));
    }

    /// Under the upload limit, a chunk not sent yet goes before one sent
    /// already, whichever asked first.
    #[tokio::test]
    async fn the_chunk_sent_fewest_times_goes_first() {
        let turns = Turns::new(1_000_000);
        let (a, b) = (ChunkId([1; 32]), ChunkId([2; 32]));
        // A goes out once: a 100 ms turn, during which both wait.
        turns.take(a, 100_000).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let again = |c: ChunkId| {
            let (turns, order) = (turns.clone(), order.clone());
            tokio::spawn(async move {
                turns.take(c, 1000).await;
                order.lock().unwrap().push(c);
            })
        };
        let first = again(a);
        tokio::task::yield_now().await;
        let second = again(b);
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(*order.lock().unwrap(), [b, a]);
    }

    #[test]
    fn remembered_bans_stay_bounded() {
        let s = shared(ServeConfig::default());
        for _ in 0..3 * MAX_REMEMBERED {
            s.bans
                .lock()
                .unwrap()
                .stalled(peer(), AddrKey::Peer(peer()), Duration::from_secs(60));
        }
        let b = s.bans.lock().unwrap();
        assert!(b.until.len() <= MAX_REMEMBERED + 1, "{}", b.until.len());
        assert!(b.stalls.len() <= MAX_REMEMBERED + 1, "{}", b.stalls.len());
    }
}
