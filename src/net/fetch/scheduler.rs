//! Scheduling: sessions with every usable source at once over one shared
//! [`Queue`] of chunk indices, and what happens to each peer when its
//! session ends.
//!
//! Sessions start together (at most `max_peers`) and run independently: a
//! source that fails is paused and started again on its own, and a source
//! that connects or is found later joins while the others run. The queue
//! hands chunks out by each source's measured rate, so a slow source never
//! holds a chunk it would deliver after the fast ones have finished
//! everything else. Chunks go in index order, each to one source, except in
//! the **endgame**: once nothing is left to hand out, a source with room
//! asks for a chunk another source still holds if it would deliver it
//! sooner. The first copy to arrive is used; the other is ignored when it
//! comes, and once every chunk has landed the remaining sessions are
//! cancelled (their streams reset).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::pex::{ask_round, Round};
use super::session::{Fault, Job, Session, SessionEnd, Sink};
use super::sources::Sources;
use super::verify::Verify;
use super::FetchError;
use crate::chunk::Stream;
use crate::net::PeerAddr;
use crate::wire::Have;

/// How often a fetch that could use more sources (fewer than `max_peers`
/// sessions, and discovery on or a given source not in a session) looks
/// for them while its sessions run.
const REFILL_EVERY: Duration = Duration::from_secs(3);

/// Weight of the older samples in a source's rate, per new sample: the rate
/// follows about the last four answers, so a source that slows down is
/// seen within a few chunks.
const RATE_DECAY: f64 = 0.75;

/// In the endgame, how long a chunk held by a source whose rate is not
/// known yet is left to it before a source that is not measured either
/// asks for it too.
const BLIND_DUPLICATE_AFTER: Duration = Duration::from_secs(1);

/// What one source delivered, smoothed: bytes and seconds of its recent
/// answers, older ones weighing less.
#[derive(Clone, Debug, Default)]
pub(super) struct Rate {
    bytes: f64,
    secs: f64,
    /// Chunks it delivered in this fetch: its pipeline opens up as this
    /// grows, as TCP's window does.
    delivered: u32,
}

impl Rate {
    fn sample(&mut self, bytes: usize, took: Duration) {
        self.bytes = self.bytes * RATE_DECAY + bytes as f64;
        // A zero interval (a clock that did not move) must not make a rate
        // infinite.
        self.secs = self.secs * RATE_DECAY + took.as_secs_f64().max(1e-4);
    }

    /// Bytes per second, once one answer was timed.
    fn per_sec(&self) -> Option<f64> {
        (self.secs > 0.0).then(|| self.bytes / self.secs)
    }
}

/// Rates of the sources of one fetch, carried from one queue to the next
/// (file list, content, `cat`'s windows) so each does not measure afresh.
pub(super) type Rates = HashMap<PeerId, Rate>;

/// Chunks of `todo` looked at for the rarest one, at most: rarest-first
/// within a window, so that a take costs the same whatever the share's
/// size.
const RAREST_WINDOW: usize = 256;

/// What the queue knows of one source.
struct Source {
    rate: Rate,
    /// What it said it holds, last time it was asked (a partial holder's
    /// bitmap grows).
    have: Option<Have>,
    /// When its last answer arrived (or it joined): the start of the
    /// answer it is working on, if it had one in flight since.
    last_arrival: Instant,
    /// Whether it has a session over this queue now.
    live: bool,
}

/// What a session gets when it asks for work.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) enum Take {
    /// Ask for this chunk.
    Chunk(u64),
    /// Nothing for this source now; ask again when the queue changes.
    Wait,
    /// Nothing it holds is left to fetch, and nothing is in flight that
    /// could come back: the session can end.
    Done,
}

/// Chunk indices of one stream still to fetch, shared by the sessions, and
/// the rules for handing them out.
///
/// Memory: `todo` and `out` together hold at most the stream's chunk count
/// (`u64` each, plus at most two holders per chunk in flight), and
/// `sources` one entry per peer that had a session.
pub(super) struct Queue {
    /// Not taken by any session, in the order to ask for them.
    todo: VecDeque<u64>,
    /// In flight: each chunk's holders (the source it was given to, and at
    /// most one more in the endgame), with when each asked.
    out: BTreeMap<u64, Vec<(PeerId, Instant)>>,
    /// Not yet delivered (in flight or not).
    left: usize,
    sources: HashMap<PeerId, Source>,
    /// The length estimates count in: the stream's largest sealed chunk.
    chunk_len: f64,
    /// Most chunks in flight per source.
    depth: usize,
    /// With a key, chunks equally rare go in an order of this fetch's own
    /// (a keyed hash of the index) instead of index order: receivers that
    /// start together then ask the sharer for different chunks.
    spread: Option<std::collections::hash_map::RandomState>,
}

impl Queue {
    /// A queue of `indices`, chunks of at most `chunk_len` bytes, at most
    /// `depth` in flight per source, seeded with the `rates` measured so
    /// far; `spread`: equally rare chunks in an order of this queue's own.
    pub(super) fn new(
        indices: Vec<u64>,
        chunk_len: usize,
        depth: usize,
        rates: Rates,
        spread: bool,
    ) -> Queue {
        let now = Instant::now();
        Queue {
            spread: spread.then(Default::default),
            left: indices.len(),
            todo: indices.into(),
            out: BTreeMap::new(),
            sources: rates
                .into_iter()
                .map(|(peer, rate)| {
                    let s = Source {
                        rate,
                        have: None,
                        last_arrival: now,
                        live: false,
                    };
                    (peer, s)
                })
                .collect(),
            chunk_len: chunk_len.max(1) as f64,
            depth: depth.max(1),
        }
    }

    /// Chunks not yet delivered.
    pub(super) fn left(&self) -> usize {
        self.left
    }

    /// `peer`'s session starts.
    pub(super) fn join(&mut self, peer: PeerId, now: Instant) {
        let s = self.sources.entry(peer).or_insert_with(|| Source {
            rate: Rate::default(),
            have: None,
            last_arrival: now,
            live: true,
        });
        s.live = true;
        s.last_arrival = now;
    }

    /// `peer`'s session ended: what it held and did not deliver is handed
    /// out again (first next time), unless another source holds it too.
    pub(super) fn leave(&mut self, peer: PeerId, taken: VecDeque<u64>) {
        for i in taken.into_iter().rev() {
            if let Some(holders) = self.out.get_mut(&i) {
                holders.retain(|(p, _)| *p != peer);
                if holders.is_empty() {
                    self.out.remove(&i);
                    self.todo.push_front(i);
                }
            }
        }
        if let Some(s) = self.sources.get_mut(&peer) {
            s.live = false;
            s.have = None;
        }
    }

    /// `peer` answered `Have` with `have`: what rarity counts.
    pub(super) fn have(&mut self, peer: PeerId, have: &Have) {
        if let Some(s) = self.sources.get_mut(&peer) {
            s.have = Some(have.clone());
        }
    }

    /// Where in `todo` the chunk to hand `peer` (holding `have`) is: the
    /// rarest among the live sources' `Have`s, the first of equals (or, with
    /// `spread`, the first in this queue's own order), within the first
    /// [`RAREST_WINDOW`] chunks `peer` holds. When every other live source
    /// holds everything, simply the first (in that order).
    fn pick(&self, peer: PeerId, have: &Have, offset: usize) -> Option<usize> {
        let held = |i: u64| have.has(offset + i as usize);
        // Only the partial holders make a difference: the others hold every
        // chunk alike.
        let partial: Vec<&Have> = self
            .sources
            .iter()
            .filter(|(p, s)| s.live && **p != peer)
            .filter_map(|(_, s)| s.have.as_ref())
            .filter(|h| !matches!(h, Have::All))
            .collect();
        let candidates = self
            .todo
            .iter()
            .enumerate()
            .filter(|(_, &i)| held(i))
            .take(RAREST_WINDOW);
        let order = |pos: usize, i: u64| match &self.spread {
            Some(key) => std::hash::BuildHasher::hash_one(key, i),
            None => pos as u64,
        };
        if partial.is_empty() {
            return candidates
                .min_by_key(|(pos, &i)| order(*pos, i))
                .map(|(pos, _)| pos);
        }
        candidates
            .min_by_key(|(pos, &i)| {
                let holders = partial
                    .iter()
                    .filter(|h| h.has(offset + i as usize))
                    .count();
                (holders, order(*pos, i))
            })
            .map(|(pos, _)| pos)
    }

    /// Whether a live source other than `peer` holds chunk `i` (at
    /// `offset + i` in a `Have`), or may (it has not said yet): if none
    /// does, `peer` is the only one that can deliver it, however slow.
    fn others_hold(&self, peer: PeerId, i: u64, offset: usize) -> bool {
        self.sources.iter().any(|(p, s)| {
            // One that has not answered `Have` yet may hold it.
            *p != peer && s.live && s.have.as_ref().is_none_or(|h| h.has(offset + i as usize))
        })
    }

    /// The rates measured, to seed the next queue of the same fetch.
    pub(super) fn rates(&self) -> Rates {
        self.sources
            .iter()
            .map(|(p, s)| (*p, s.rate.clone()))
            .collect()
    }

    /// What `peer` should ask for next, given what it holds (`have`, in
    /// manifest order, where this stream starts at `offset`).
    pub(super) fn take(&mut self, peer: PeerId, have: &Have, offset: usize, now: Instant) -> Take {
        if self.left == 0 {
            return Take::Done;
        }
        if let Some(pos) = self.pick(peer, have, offset) {
            let sole = !self.others_hold(peer, self.todo[pos], offset);
            if !self.wants(peer, now, sole) {
                return Take::Wait;
            }
            let i = self.todo.remove(pos).expect("the position exists");
            self.out.insert(i, vec![(peer, now)]);
            return Take::Chunk(i);
        }
        if let Some(i) = self.endgame(peer, have, offset, now) {
            self.out
                .get_mut(&i)
                .expect("endgame picks a chunk in flight")
                .push((peer, now));
            return Take::Chunk(i);
        }
        if self.out.is_empty() {
            Take::Done
        } else {
            Take::Wait
        }
    }

    /// An answer from `peer` for chunk `i`, asked at `asked`, arrived
    /// (`bytes` long): timed for its rate. Returns whether the chunk is
    /// still wanted from it (not already delivered by another source).
    pub(super) fn arrived(
        &mut self,
        peer: PeerId,
        i: u64,
        bytes: usize,
        asked: Instant,
        now: Instant,
    ) -> bool {
        if let Some(s) = self.sources.get_mut(&peer) {
            let start = s.last_arrival.max(asked);
            s.rate.sample(bytes, now.saturating_duration_since(start));
            s.last_arrival = now;
        }
        self.holds(peer, i)
    }

    /// `peer` verified chunk `i` and is about to hand it over: `true` if it
    /// is the first to, and from now on no other copy is used.
    pub(super) fn claim(&mut self, peer: PeerId, i: u64) -> bool {
        if self.holds(peer, i) {
            self.out.remove(&i);
            true
        } else {
            false
        }
    }

    /// A claimed chunk was handed over.
    pub(super) fn delivered(&mut self, peer: PeerId) {
        self.left -= 1;
        if let Some(s) = self.sources.get_mut(&peer) {
            s.rate.delivered = s.rate.delivered.saturating_add(1);
        }
    }

    fn holds(&self, peer: PeerId, i: u64) -> bool {
        self.out
            .get(&i)
            .is_some_and(|h| h.iter().any(|(p, _)| *p == peer))
    }

    /// `peer`'s chunks in flight, with when it asked, oldest first.
    fn in_flight(&self, peer: PeerId) -> Vec<(u64, Instant)> {
        let mut mine: Vec<(u64, Instant)> = self
            .out
            .iter()
            .filter_map(|(&i, h)| h.iter().find(|(p, _)| *p == peer).map(|(_, t)| (i, *t)))
            .collect();
        mine.sort_by_key(|&(i, t)| (t, i));
        mine
    }

    /// `peer`'s rate now: what it measured, or less if the answer it is
    /// working on is already later than that rate allows (a source that
    /// stalls slows down in the estimates at once, not after its timeout).
    fn rate(&self, peer: PeerId, now: Instant) -> Option<f64> {
        let s = self.sources.get(&peer)?;
        let r = s.rate.per_sec()?;
        let Some(&(_, oldest)) = self.in_flight(peer).first() else {
            return Some(r);
        };
        let working = now
            .saturating_duration_since(s.last_arrival.max(oldest))
            .as_secs_f64();
        Some(if working * r > self.chunk_len {
            self.chunk_len / working
        } else {
            r
        })
    }

    /// Seconds `peer` would take to deliver one more chunk after those it
    /// holds.
    fn finish(&self, peer: PeerId, now: Instant) -> Option<f64> {
        let r = self.rate(peer, now)?;
        Some((self.in_flight(peer).len() + 1) as f64 * self.chunk_len / r)
    }

    /// Whether `peer` may take one more chunk: within its pipeline (which
    /// opens as it delivers), and only if it would deliver it before the
    /// sources together are expected to finish everything left, or sooner
    /// than any other source could. If it is the `sole` live source of that
    /// chunk: with nothing in flight always, and with something in flight
    /// never while other sources are live.
    fn wants(&self, peer: PeerId, now: Instant, sole: bool) -> bool {
        let mine = self.in_flight(peer).len();
        let delivered = self.sources.get(&peer).map_or(0, |s| s.rate.delivered);
        let window = (1 + 2 * delivered as usize).min(self.depth);
        if mine >= window {
            return false;
        }
        if sole {
            // Waiting for other sources would wait for ever: they do not
            // hold it (yet). One at a time while there are others, though:
            // they may soon hold what this one would be asked next (a
            // crowd's members, from the sharer), and a request queued
            // behind others at a busy source is a choice made long before
            // its answer.
            let others = self.sources.iter().any(|(p, s)| *p != peer && s.live);
            if mine == 0 {
                return true;
            }
            if others {
                return false;
            }
        }
        let Some(finish) = self.finish(peer, now) else {
            // Not measured yet: one chunk to measure it by.
            return mine == 0;
        };
        let live = || self.sources.iter().filter(|(_, s)| s.live);
        let total: f64 = live().filter_map(|(p, _)| self.rate(*p, now)).sum();
        let end = self.left as f64 * self.chunk_len / total.max(f64::MIN_POSITIVE);
        finish <= end
            || live()
                .filter(|(p, _)| **p != peer)
                .all(|(p, _)| self.finish(*p, now).is_none_or(|f| f >= finish))
    }

    /// In the endgame (nothing `peer` holds is left to hand out), the chunk
    /// another source holds that `peer` would deliver soonest before it:
    /// the one expected latest, of those held by one source only.
    fn endgame(&self, peer: PeerId, have: &Have, offset: usize, now: Instant) -> Option<u64> {
        let mine = self.in_flight(peer).len();
        let delivered = self.sources.get(&peer).map_or(0, |s| s.rate.delivered);
        if mine >= (1 + 2 * delivered as usize).min(self.depth) {
            return None;
        }
        let finish = self.finish(peer, now);
        if finish.is_none() && mine > 0 {
            return None;
        }
        let mut best: Option<(f64, u64)> = None;
        let mut queues: HashMap<PeerId, Vec<(u64, Instant)>> = HashMap::new();
        for (&i, holders) in &self.out {
            let [(holder, asked)] = holders[..] else {
                continue;
            };
            if holder == peer || !have.has(offset + i as usize) {
                continue;
            }
            let queue = queues
                .entry(holder)
                .or_insert_with(|| self.in_flight(holder));
            let ahead = queue.iter().position(|&(j, _)| j == i).unwrap_or(0) + 1;
            let age = now.saturating_duration_since(asked).as_secs_f64();
            // How long the holder still needs for it.
            let holder_rate = self.sources.get(&holder).and_then(|s| s.rate.per_sec());
            let due = match (holder_rate, finish) {
                (Some(r), _) => {
                    let s = &self.sources[&holder];
                    let working = now
                        .saturating_duration_since(s.last_arrival.max(queue[0].1))
                        .as_secs_f64();
                    let expected = ahead as f64 * self.chunk_len / r;
                    if working < expected {
                        expected - working
                    } else {
                        // Overdue: as late again as it already is, at
                        // least (a stalled source is no sooner than that).
                        working + (ahead - 1) as f64 * self.chunk_len / r
                    }
                }
                // A holder not measured yet: assume half this one's speed.
                (None, Some(f)) => (2.0 * ahead as f64 * f - age).max(0.0),
                (None, None) => {
                    if age < BLIND_DUPLICATE_AFTER.as_secs_f64() {
                        continue;
                    }
                    f64::INFINITY
                }
            };
            if finish.is_some_and(|f| f >= due) {
                continue;
            }
            if best.is_none_or(|(d, _)| due > d) {
                best = Some((due, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

/// Sessions of one queue: who runs, who waits, and when to look for more.
struct Crew {
    sessions: JoinSet<(PeerId, SessionEnd, u64)>,
    running: HashSet<PeerId>,
    /// Sources not to start again before then (after a lost session or a
    /// `Busy`).
    paused: HashMap<PeerId, Instant>,
    /// Sources whose session ended holding nothing that is left: started
    /// again only after every session has ended.
    idle: HashSet<PeerId>,
    /// Every source that had a session.
    used: Vec<PeerId>,
}

impl Crew {
    /// Starts a session with each of `peers` that may have one now, up to
    /// `max_peers` at once. Returns how many started.
    fn start<V: Verify>(&mut self, src: &Sources, job: &Arc<Job<V>>, peers: Vec<PeerId>) -> usize {
        let now = Instant::now();
        let mut started = 0;
        for peer in peers {
            let paused = self.paused.get(&peer).is_some_and(|t| *t > now);
            if self.running.len() >= src.opts.max_peers
                || paused
                || !src.usable(&peer)
                || self.running.contains(&peer)
                || self.idle.contains(&peer)
            {
                continue;
            }
            self.paused.remove(&peer);
            self.running.insert(peer);
            if !self.used.contains(&peer) {
                self.used.push(peer);
            }
            self.sessions.spawn(Session::new(job.clone(), peer).run());
            started += 1;
        }
        started
    }

    /// Whether more sources could help: room for another session, and
    /// somewhere to find one.
    fn wants_more(&self, src: &Sources) -> bool {
        self.running.len() < src.opts.max_peers
            && (src.opts.discover
                || src.given_peers().chain(src.candidate_peers()).any(|p| {
                    src.usable(&p) && !self.running.contains(&p) && !self.idle.contains(&p)
                }))
    }

    /// The earliest end of a pause of a source still usable, if in the
    /// future.
    fn next_unpause(&self, src: &Sources) -> Option<Instant> {
        let now = Instant::now();
        self.paused
            .iter()
            .filter(|(p, t)| **t > now && src.usable(p))
            .map(|(_, t)| *t)
            .min()
    }
}

/// Fetches `indices` of `stream` from `peers` and from the other sources
/// (reconnecting while any are left), handing verified chunks to `sink` on
/// the blocking pool. Returns the peers that took part.
pub(super) async fn run_queue<V, S>(
    src: &mut Sources,
    check: &Arc<V>,
    stream: Stream,
    indices: Vec<u64>,
    peers: Vec<PeerId>,
    sink: S,
) -> Result<Vec<PeerId>, FetchError>
where
    V: Verify,
    S: Fn(u64, V::Out) -> Result<(), FetchError> + Send + Sync + 'static,
{
    let sink: Arc<Sink<V::Out>> = Arc::new(sink);
    let m = check.manifest();
    // Every chunk but a stream's last is full size.
    let chunk_len = if m.chunks(stream).is_empty() {
        1
    } else {
        m.sealed_len(stream, 0)
    };
    // A fetch that serves what it verifies is a swarm member: its order
    // matters to the others.
    let spread = src.opts.serve_as.is_some();
    let queue = Queue::new(
        indices,
        chunk_len,
        src.opts.depth,
        src.rates.clone(),
        spread,
    );
    let job = Arc::new(Job {
        client: src.client.clone(),
        share: src.share,
        stream,
        check: check.clone(),
        queue: Arc::new(Mutex::new(queue)),
        changes: watch::Sender::new(0),
        sink,
        depth: src.opts.depth,
        timeout: src.opts.request_timeout,
        idle: src.idle.clone(),
    });
    let r = schedule(src, &job, peers).await;
    src.rates = job.queue.lock().expect("never poisoned").rates();
    r
}

/// [`run_queue`]'s loop: starts sessions, judges them as they end, looks
/// for more sources while it could use them, and stops once every chunk
/// is in.
async fn schedule<V: Verify>(
    src: &mut Sources,
    job: &Arc<Job<V>>,
    peers: Vec<PeerId>,
) -> Result<Vec<PeerId>, FetchError> {
    let left = || job.queue.lock().expect("never poisoned").left();
    let mut crew = Crew {
        sessions: JoinSet::new(),
        running: HashSet::new(),
        paused: HashMap::new(),
        idle: HashSet::new(),
        used: Vec::new(),
    };
    crew.start(src, job, peers);
    let mut complete = job.changes.subscribe();
    // Chunks left when the sessions last ran out, and whether any of them
    // ended for another reason than having nothing left to give.
    let mut mark: Option<usize> = None;
    let mut faulted = false;
    let mut idle_rounds = 0;
    // Candidates an earlier queue of this fetch learned of are dialled at
    // once rather than at the first refill.
    let mut next_refill: Option<Instant> = src.candidate_peers().next().map(|_| Instant::now());
    // A round of peer exchange with the sources in a session, on a task
    // of its own so that sessions are judged meanwhile.
    let mut exchange = Asking(None);
    loop {
        if left() == 0 {
            // The losers of the endgame, and sessions waiting for nothing.
            crew.sessions.shutdown().await;
            return Ok(crew.used);
        }
        if crew.sessions.is_empty() {
            // Nobody is working: wait out the pauses, or, when every
            // source ended with nothing to give, count an idle round.
            let now_left = left();
            if mark == Some(now_left) && !faulted {
                idle_rounds += 1;
                if idle_rounds >= src.opts.retry.idle_rounds {
                    return Err(FetchError::NotFound);
                }
                tokio::time::sleep(src.opts.retry.pause(idle_rounds)).await;
            } else if mark.is_some() {
                idle_rounds = 0;
            }
            mark = Some(now_left);
            faulted = false;
            crew.idle.clear();
            if let Some(t) = crew.next_unpause(src) {
                tokio::time::sleep_until(t.into()).await;
            }
            let peers = src.connect().await?;
            if crew.start(src, job, peers) == 0 {
                // All still paused: not an idle round.
                faulted = true;
            }
            next_refill = None;
            continue;
        }
        if next_refill.is_none() && crew.wants_more(src) {
            next_refill = Some(Instant::now() + REFILL_EVERY);
        }
        let refill_at = next_refill;
        let serving = src.opts.serve_as.as_ref().is_some_and(|p| p.serving());
        let exchange_at = src.exchange.due(serving);
        tokio::select! {
            () = tokio::time::sleep_until(exchange_at.into()), if exchange.0.is_none() => {
                let peers: Vec<PeerId> = crew.running.iter().copied().collect();
                exchange.0 = Some(tokio::spawn(ask_round(
                    src.client.clone(),
                    src.share,
                    peers,
                    serving,
                )));
            }
            round = async { exchange.0.as_mut().expect("guarded").await }, if exchange.0.is_some() => {
                exchange.0 = None;
                let (round, announced) = round.expect("peer exchange does not panic");
                let mut fresh = 0;
                for (peer, answer) in round {
                    match answer {
                        Ok(peers) => {
                            // It answered for the share: a source worth
                            // passing on in turn.
                            if let Some(p) = &src.opts.serve_as {
                                p.used_source(PeerAddr { peer, addrs: src.addrs_of(&peer) });
                            }
                            fresh += src.offer(peers);
                        }
                        Err(fault @ Fault::Misbehaved(_)) => {
                            let _ = src.judge(peer, fault).await;
                        }
                        // Its session will find out if the source is gone.
                        Err(_) => {}
                    }
                }
                src.exchange.ended(fresh, announced);
                if fresh > 0 {
                    // Dial the new candidates now.
                    next_refill = Some(Instant::now());
                }
            }
            Some(joined) = crew.sessions.join_next() => {
                let (peer, end, delivered) = joined.expect("sessions do not panic");
                crew.running.remove(&peer);
                tracing::debug!(
                    local = %src.client.peer_id(),
                    %peer,
                    end = end.label(),
                    delivered,
                    left = left(),
                    running = crew.running.len(),
                    "a session ended"
                );
                if delivered > 0 {
                    src.delivered(peer);
                }
                if !matches!(end, SessionEnd::Finished) {
                    faulted = true;
                }
                match end {
                    SessionEnd::Finished => {
                        src.served(peer);
                        crew.idle.insert(peer);
                    }
                    SessionEnd::Fault(fault) => {
                        if let Some(pause) = src.judge(peer, fault).await {
                            let at = Instant::now() + pause;
                            crew.paused.insert(peer, at);
                            next_refill = Some(next_refill.map_or(at, |t| t.min(at)));
                        }
                    }
                    SessionEnd::NotFound => src.lacks_share(peer),
                    SessionEnd::Stale => src.refused_stale(peer).await,
                    SessionEnd::Fatal(e) => {
                        crew.sessions.shutdown().await;
                        return Err(e);
                    }
                }
            }
            found = async {
                tokio::time::sleep_until(refill_at.expect("guarded").into()).await;
                src.connect().await
            }, if refill_at.is_some() => {
                next_refill = None;
                // Sessions are running: a round that found nobody new is
                // not an error.
                if let Ok(peers) = found {
                    crew.start(src, job, peers);
                }
            }
            () = async {
                // The guard `wait_for` returns must not live on in this
                // future (it is not `Send`).
                let _ = complete.wait_for(|_| left() == 0).await.map(|_| ());
            } => {}
        }
    }
}

/// A round of peer exchange in progress, stopped if its queue is done
/// first.
struct Asking(Option<JoinHandle<(Round, bool)>>);

impl Drop for Asking {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn queue(n: u64, depth: usize) -> Queue {
        Queue::new((0..n).collect(), MIB, depth, Rates::new(), false)
    }

    /// A queue of `n` chunks with two sources joined.
    fn two(n: u64, depth: usize) -> (Queue, PeerId, PeerId, Instant) {
        let mut q = queue(n, depth);
        let (a, b, now) = (PeerId::random(), PeerId::random(), Instant::now());
        q.join(a, now);
        q.join(b, now);
        (q, a, b, now)
    }

    /// `peer`'s copy of chunk `i` arrives at `now` and is handed over,
    /// timed from `peer`'s previous answer.
    fn deliver(q: &mut Queue, peer: PeerId, i: u64, now: Instant) {
        let long_ago = now - Duration::from_secs(100);
        assert!(q.arrived(peer, i, MIB, long_ago, now));
        assert!(q.claim(peer, i));
        q.delivered(peer);
    }

    /// Feeds `peer` answers so that its rate is `bytes_per_sec`, delivering
    /// `n` chunks it takes.
    fn serve_at(q: &mut Queue, peer: PeerId, bytes_per_sec: f64, n: usize, now: &mut Instant) {
        for _ in 0..n {
            let Take::Chunk(i) = q.take(peer, &Have::All, 0, *now) else {
                panic!("no chunk for a source that should get one");
            };
            *now += Duration::from_secs_f64(MIB as f64 / bytes_per_sec);
            deliver(q, peer, i, *now);
        }
    }

    #[test]
    fn a_source_not_measured_gets_one_chunk_then_its_window_opens() {
        let mut q = queue(100, 8);
        let (a, mut now) = (PeerId::random(), Instant::now());
        q.join(a, now);
        assert_eq!(q.take(a, &Have::All, 0, now), Take::Chunk(0));
        assert_eq!(q.take(a, &Have::All, 0, now), Take::Wait);
        now += Duration::from_millis(10);
        deliver(&mut q, a, 0, now);
        // One delivered: three in flight at most, then five, ... up to depth.
        let took: Vec<Take> = (0..4).map(|_| q.take(a, &Have::All, 0, now)).collect();
        assert_eq!(
            took,
            [Take::Chunk(1), Take::Chunk(2), Take::Chunk(3), Take::Wait]
        );
    }

    /// Near the end, a source ten times slower is not given a chunk it
    /// would deliver after the fast one has finished everything.
    #[test]
    fn a_slow_source_is_not_given_the_tail() {
        let (mut q, fast, slow, mut now) = two(40, 8);
        serve_at(&mut q, slow, 1e6, 3, &mut now);
        serve_at(&mut q, fast, 10e6, 30, &mut now);
        // 7 chunks left: the fast source needs 0.7 s for all of them, the
        // slow one 1 s for one.
        assert_eq!(q.left(), 7);
        assert_eq!(q.take(slow, &Have::All, 0, now), Take::Wait);
        assert!(matches!(q.take(fast, &Have::All, 0, now), Take::Chunk(_)));
        // Early on, with much left, the slow source does get work.
        let mut q = queue(400, 8);
        q.join(fast, now);
        q.join(slow, now);
        serve_at(&mut q, slow, 1e6, 3, &mut now);
        serve_at(&mut q, fast, 10e6, 30, &mut now);
        assert!(matches!(q.take(slow, &Have::All, 0, now), Take::Chunk(_)));
    }

    /// Once nothing is left to hand out, a fast source asks for the chunk a
    /// slow one still holds; the first copy in wins and the other is not
    /// used.
    #[test]
    fn the_endgame_duplicates_a_late_chunk_and_the_first_copy_wins() {
        let (mut q, fast, slow, mut now) = two(10, 8);
        serve_at(&mut q, slow, 1e6, 1, &mut now);
        assert_eq!(q.take(slow, &Have::All, 0, now), Take::Chunk(1));
        serve_at(&mut q, fast, 10e6, 8, &mut now);
        // Everything handed out; the slow source still holds chunk 1.
        assert_eq!(q.left(), 1);
        assert_eq!(q.take(fast, &Have::All, 0, now), Take::Chunk(1));
        // No third copy.
        let other = PeerId::random();
        q.join(other, now);
        assert_eq!(q.take(other, &Have::All, 0, now), Take::Wait);
        now += Duration::from_millis(100);
        deliver(&mut q, fast, 1, now);
        // The slow copy arrives later and is not wanted.
        now += Duration::from_millis(500);
        assert!(!q.arrived(slow, 1, MIB, now, now));
        assert!(!q.claim(slow, 1));
        assert_eq!(q.left(), 0);
        assert_eq!(q.take(slow, &Have::All, 0, now), Take::Done);
    }

    /// No chunk is held by two sources while others are still to hand out.
    #[test]
    fn no_duplicates_before_the_endgame() {
        let (mut q, a, b, mut now) = two(50, 4);
        serve_at(&mut q, a, 5e6, 2, &mut now);
        serve_at(&mut q, b, 5e6, 2, &mut now);
        while !q.todo.is_empty() {
            for p in [a, b] {
                if q.todo.is_empty() {
                    break;
                }
                if let Take::Chunk(i) = q.take(p, &Have::All, 0, now) {
                    assert_eq!(q.out[&i].len(), 1, "chunk {i} asked twice");
                }
            }
            // Deliver the oldest chunk in flight.
            let (&i, h) = q.out.iter().next().unwrap();
            let p = h[0].0;
            now += Duration::from_millis(200);
            q.arrived(p, i, MIB, now, now);
            assert!(q.claim(p, i));
            q.delivered(p);
        }
    }

    /// A source that leaves gives back what it held, first in line; a
    /// chunk also held by another source stays with that one.
    #[test]
    fn a_leaving_source_gives_back_what_only_it_held() {
        let (mut q, a, b, mut now) = two(3, 8);
        serve_at(&mut q, a, 1e6, 1, &mut now);
        serve_at(&mut q, b, 1e6, 1, &mut now);
        assert_eq!(q.take(a, &Have::All, 0, now), Take::Chunk(2));
        now += BLIND_DUPLICATE_AFTER * 10;
        assert_eq!(q.take(b, &Have::All, 0, now), Take::Chunk(2));
        q.leave(a, VecDeque::from([2]));
        assert!(q.todo.is_empty(), "b still holds it");
        q.leave(b, VecDeque::from([2]));
        assert_eq!(q.todo, [2]);
        assert_eq!(q.left(), 1);
    }

    /// With a partial holder among the sources, a source that holds
    /// everything is first given what the partial holder lacks.
    #[test]
    fn the_rarest_chunk_goes_first() {
        let (mut q, full, partial, now) = two(8, 8);
        // The partial holder has chunks 0-3.
        let some = Have::Bitmap(vec![0b0000_1111]);
        q.have(partial, &some);
        q.have(full, &Have::All);
        assert_eq!(q.take(full, &Have::All, 0, now), Take::Chunk(4));
        // Among the chunks it holds, the partial holder gets the first.
        assert_eq!(q.take(partial, &some, 0, now), Take::Chunk(0));
        // With only full holders left, chunks go in order.
        q.leave(partial, VecDeque::from([0]));
        let other = PeerId::random();
        q.join(other, now);
        q.have(other, &Have::All);
        assert_eq!(q.take(other, &Have::All, 0, now), Take::Chunk(0));
    }

    /// A slow source is still given a chunk near the end if no other
    /// source holds it: nobody else could deliver it.
    #[test]
    fn the_only_holder_of_a_chunk_gets_it_however_slow() {
        let (mut q, fast, slow, mut now) = two(40, 8);
        serve_at(&mut q, slow, 1e6, 3, &mut now);
        serve_at(&mut q, fast, 10e6, 27, &mut now);
        assert_eq!(q.left(), 10);
        // The fast one is a partial holder with 30..=38, not 39.
        let mut bits = vec![0u8; 5];
        for i in 30..=38 {
            bits[i / 8] |= 1 << (i % 8);
        }
        q.have(fast, &Have::Bitmap(bits));
        q.have(slow, &Have::All);
        assert_eq!(q.take(slow, &Have::All, 0, now), Take::Chunk(39));
        // What the fast one holds is not given to the slow one this late.
        assert_eq!(q.take(slow, &Have::All, 0, now), Take::Wait);
    }

    /// Receivers that start together (each serving what it verifies) ask
    /// for the chunks in orders of their own, not all for chunk 0 first.
    #[test]
    fn swarm_members_spread_their_first_requests() {
        let firsts: HashSet<Take> = (0..8)
            .map(|_| {
                let mut q = Queue::new((0..64).collect(), MIB, 8, Rates::new(), true);
                let (p, now) = (PeerId::random(), Instant::now());
                q.join(p, now);
                q.take(p, &Have::All, 0, now)
            })
            .collect();
        assert!(firsts.len() > 1, "{firsts:?}");
        // Without spreading, in order.
        let mut q = queue(64, 8);
        let (p, now) = (PeerId::random(), Instant::now());
        q.join(p, now);
        assert_eq!(q.take(p, &Have::All, 0, now), Take::Chunk(0));
    }

    /// A source lacking what is left waits while others fetch it, and is
    /// done once nothing is in flight that could come back.
    #[test]
    fn a_source_lacking_what_is_left_waits_then_is_done() {
        let (mut q, a, b, now) = two(2, 8);
        let only_first = Have::Bitmap(vec![0b01]);
        assert_eq!(q.take(a, &Have::All, 0, now), Take::Chunk(0));
        assert_eq!(q.take(b, &only_first, 0, now), Take::Wait);
        deliver(&mut q, a, 0, now);
        assert_eq!(q.take(b, &only_first, 0, now), Take::Done);
        assert_eq!(q.take(a, &Have::All, 0, now), Take::Chunk(1));
    }
}
