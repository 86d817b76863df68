//! One peer's session: a stream with up to `depth` chunk requests in
//! flight, answers read in order, each verified on the blocking pool while
//! the next one arrives. What to ask for, and whether a copy that arrives
//! is still wanted, the [`Queue`] decides; a session with nothing to ask
//! for waits for the queue to change, asking `Have` again now and then.
//!
//! Blame is decided here and nowhere else: bytes that do not match their id
//! or their length, answers that break the protocol, and a partial holder
//! refusing a chunk it listed in its `Have`, are the peer's fault
//! ([`Fault::Misbehaved`]); a failed or stalled stream may be the
//! path's ([`Fault::Lost`]); a chunk that matches its id but does not open
//! is the share's, and ends the fetch ([`SessionEnd::Fatal`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream as Socket};
use tokio::task::JoinHandle;

use super::scheduler::{Queue, Take};
use super::streams::IdleStreams;
use super::verify::Verify;
use super::FetchError;
use crate::chunk::{ChunkId, Stream};
use crate::manifest::ManifestId;
use crate::net::frame::{read_msg, read_payload, write_msg};
use crate::net::node::{Client, XFER};
use crate::open::OpenError;
use crate::wire::{Have, Request, Response};

/// Where verified chunks go, on the blocking pool.
pub(super) type Sink<T> = dyn Fn(u64, T) -> Result<(), FetchError> + Send + Sync;

/// Chunks of at most this many sealed bytes are verified on the session's
/// own task: opening 64 KiB takes tens of microseconds, about what handing
/// it to the blocking pool and back costs in thread wake-ups (the pool's
/// futex waits were the largest part of a small fetch's CPU). Larger ones
/// go to the pool, so that the session reads the next answer meanwhile.
pub(super) const INLINE_VERIFY: usize = 64 << 10;

/// A chunk's verification: done on the spot, or running on the pool.
enum Verification<T> {
    Done(Result<T, OpenError>),
    Running(JoinHandle<Result<T, OpenError>>),
}

impl<T> Verification<T> {
    fn is_finished(&self) -> bool {
        match self {
            Verification::Done(_) => true,
            Verification::Running(h) => h.is_finished(),
        }
    }

    async fn result(self) -> Result<T, OpenError> {
        match self {
            Verification::Done(r) => r,
            Verification::Running(h) => h.await.expect("verification does not panic"),
        }
    }
}

/// While a session has nothing to ask for, how often it looks at the queue
/// again even if nothing changed (rates change with time alone).
const WAIT_TICK: Duration = Duration::from_millis(200);

/// While a session has nothing to ask for, how often it asks `Have` again:
/// what a partial holder holds grows, and a stream with no request for a
/// minute is closed by its provider. Sooner after a delivered chunk
/// ([`HAVE_FRESH`]) or a changed answer ([`HAVE_CHANGED`]): at most one
/// `Have` per delivered chunk, at most 4 a second while the answers
/// change, else one a second, per session.
pub(super) const HAVE_EVERY: Duration = Duration::from_secs(1);

/// How soon `Have` is asked again instead, by a session that delivered a
/// chunk since it last asked and has nothing left to ask for: a capped
/// sharer offers a few chunks at a time (super-seeding, `net::seed`), and
/// its next offer should not wait a whole [`HAVE_EVERY`].
const HAVE_FRESH: Duration = Duration::from_millis(100);

/// How soon `Have` is asked again by a session with nothing to ask for
/// whose last `Have` answer differed from the one before: the source's
/// offer moves (it is fetching, or a capped sharer offers in turn).
const HAVE_CHANGED: Duration = Duration::from_millis(250);

/// `Have` answers in a row that did not change, from a partial holder that
/// holds nothing that is left, after which its session ends (it is not
/// getting what this fetch still needs).
const UNCHANGED_HAVES: u32 = 10;

/// What went wrong with a peer, and so what happens to it.
pub(super) enum Fault {
    /// The connection or stream failed, or the peer stalled: it may be
    /// tried again, a few times.
    Lost(String),
    /// The peer misbehaved: not to be asked again.
    Misbehaved(String),
    /// The peer is serving as much as it will ([`Response::Busy`]): ask
    /// again after this long. Not held against it unless it keeps saying so.
    Busy(Duration),
    /// The session ran through a relay, delivered chunks, then lost its
    /// connection: a relay closes a circuit at its byte or time limit.
    /// Not held against the peer, which is reconnected at once (through a
    /// new circuit, or directly).
    CircuitEnded(String),
}

impl Fault {
    /// A `Busy { retry_ms }` answer.
    pub(super) fn busy(retry_ms: u32) -> Fault {
        Fault::Busy(Duration::from_millis(retry_ms.into()))
    }

    /// Malformed frames are misbehaviour; other I/O errors are a lost
    /// connection (or an inbound stream the peer's node dropped under load).
    pub(super) fn from_io(e: std::io::Error) -> Fault {
        if e.kind() == std::io::ErrorKind::InvalidData {
            Fault::Misbehaved(e.to_string())
        } else {
            Fault::Lost(e.to_string())
        }
    }
}

/// Why a session ended.
pub(super) enum SessionEnd {
    /// Nothing left to take: every chunk is in, or nothing this peer holds
    /// is left and nothing is in flight elsewhere.
    Finished,
    /// The peer or the path failed.
    Fault(Fault),
    /// The peer does not hold (all of) the share.
    NotFound,
    /// The peer's files changed.
    Stale,
    /// The share itself is bad, or the local side failed: stop everything.
    Fatal(FetchError),
}

impl SessionEnd {
    /// A word for the logs.
    pub(super) fn label(&self) -> String {
        match self {
            SessionEnd::Finished => "finished".into(),
            SessionEnd::Fault(Fault::Lost(r)) => format!("lost: {r}"),
            SessionEnd::Fault(Fault::Misbehaved(r)) => format!("misbehaved: {r}"),
            SessionEnd::Fault(Fault::Busy(d)) => format!("busy {d:?}"),
            SessionEnd::Fault(Fault::CircuitEnded(r)) => format!("circuit ended: {r}"),
            SessionEnd::NotFound => "not found".into(),
            SessionEnd::Stale => "stale".into(),
            SessionEnd::Fatal(e) => format!("fatal: {e}"),
        }
    }
}

impl From<Fault> for SessionEnd {
    fn from(f: Fault) -> SessionEnd {
        SessionEnd::Fault(f)
    }
}

/// A peer's answer to one chunk request.
enum Answer {
    /// The chunk's bytes, of the length the manifest gives (not yet checked
    /// against the id).
    Chunk(Vec<u8>),
    /// The peer's files changed since the share was made.
    Stale,
    /// The peer does not hold it.
    NotFound,
    /// The peer asks to be asked again later.
    Busy(u32),
    /// An answer that breaks the protocol.
    Violation(String),
}

/// What every session over one queue shares.
pub(super) struct Job<V: Verify> {
    pub(super) client: Client,
    pub(super) share: ManifestId,
    pub(super) stream: Stream,
    pub(super) check: Arc<V>,
    pub(super) queue: Arc<Mutex<Queue>>,
    /// Bumped whenever the queue changes in a way that may give a waiting
    /// session work (a chunk given back or delivered, a source joining or
    /// leaving).
    pub(super) changes: tokio::sync::watch::Sender<u64>,
    pub(super) sink: Arc<Sink<V::Out>>,
    /// Chunk requests in flight or being verified, at most.
    pub(super) depth: usize,
    /// Deadline for each answer, and for opening the stream.
    pub(super) timeout: Duration,
    /// Streams kept open between the fetch's steps: a session starts on
    /// one if its source has one, and leaves its own there when it ends
    /// with nothing in flight.
    pub(super) idle: Arc<IdleStreams>,
}

impl<V: Verify> Job<V> {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("never poisoned")
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// One peer's session over a [`Job`].
pub(super) struct Session<V: Verify> {
    job: Arc<Job<V>>,
    peer: PeerId,
    /// Indices taken from the queue and not yet delivered, in order: they go
    /// back to the queue when the session ends.
    taken: VecDeque<u64>,
    /// Answers being verified, in the order they came.
    verifying: VecDeque<(u64, Verification<V::Out>)>,
    /// Chunks this session handed to the sink.
    delivered: u64,
    /// Whether the peer answered anything on the current stream.
    answered: bool,
}

impl<V: Verify> Session<V> {
    pub(super) fn new(job: Arc<Job<V>>, peer: PeerId) -> Session<V> {
        Session {
            job,
            peer,
            taken: VecDeque::new(),
            verifying: VecDeque::new(),
            delivered: 0,
            answered: false,
        }
    }

    /// Runs the session to its end. Returns the peer, why it ended, and how
    /// many chunks it delivered; indices it took but did not deliver go back
    /// to the queue.
    pub(super) async fn run(mut self) -> (PeerId, SessionEnd, u64) {
        self.job.queue().join(self.peer, Instant::now());
        self.job.changed();
        // Connected by now (the scheduler starts sessions with connected
        // sources), so this says what the stream below goes through.
        let relayed = self
            .job
            .client
            .only_relayed(self.peer)
            .await
            .unwrap_or(false);
        let mut end = match self.exchange().await {
            Ok(end) | Err(end) => end,
        };
        // Chunks that arrived before the session ended are still good if
        // they verify: keep them.
        while let Some((i, h)) = self.verifying.pop_front() {
            if let Err(fatal @ SessionEnd::Fatal(_)) = self.settle(i, h).await {
                end = fatal;
            }
        }
        // A circuit that carried chunks and then closed reached its relay's
        // limit (or the relay went away); one that closes before carrying
        // a chunk still counts as a strike, so a relay whose limit is too
        // small for one chunk cannot keep a fetch going forever.
        if let SessionEnd::Fault(Fault::Lost(reason)) = &end {
            if relayed && self.delivered > 0 {
                end = Fault::CircuitEnded(reason.clone()).into();
            }
        }
        let taken = std::mem::take(&mut self.taken);
        self.job.queue().leave(self.peer, taken);
        self.job.changed();
        (self.peer, end, self.delivered)
    }

    /// The session's stream: the fetch's idle one to this peer if it has
    /// one, else a new one. A reused stream the provider closed before
    /// answering anything on it (its idle timeout, or it is draining) is
    /// no fault of the peer's: the session starts again on a new stream.
    async fn exchange(&mut self) -> Result<SessionEnd, SessionEnd> {
        if let Some(r) = self.job.idle.take(&self.peer) {
            // A full holder's `Have` does not change: not asked again.
            let have = r.all.then_some(Have::All);
            self.answered = false;
            match self.exchange_on(r.stream, have).await {
                Err(SessionEnd::Fault(Fault::Lost(reason))) if !self.answered => {
                    tracing::debug!(peer = %self.peer, %reason, "a reused stream ended before any answer; going on on a new one");
                    // Nothing was answered, so nothing is being verified:
                    // what it asked for goes back, and the session joins
                    // afresh.
                    let taken = std::mem::take(&mut self.taken);
                    let mut q = self.job.queue();
                    q.leave(self.peer, taken);
                    q.join(self.peer, Instant::now());
                }
                end => return end,
            }
        }
        let job = self.job.clone();
        let s = match tokio::time::timeout(
            job.timeout,
            job.client.control().open_stream(self.peer, XFER),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Fault::Lost(e.to_string()).into()),
            Err(_) => return Err(self.stalled().into()),
        };
        self.exchange_on(s, None).await
    }

    /// The stream's life: ask what the peer holds (unless `have` is
    /// known), then keep `depth` chunk requests in flight until nothing is
    /// left to take. Ends with `Ok` or `Err` alike; `Err` only lets `?` cut
    /// it short.
    async fn exchange_on(
        &mut self,
        mut s: Socket,
        have: Option<Have>,
    ) -> Result<SessionEnd, SessionEnd> {
        let job = self.job.clone();
        let mut have = match have {
            Some(h) => h,
            None => {
                let h = self.have(&mut s).await?;
                self.answered = true;
                h
            }
        };
        job.queue().have(self.peer, &have);
        let mut have_asked = Instant::now();
        // Chunks this session had delivered when it last asked `Have`.
        let mut delivered_at_have = self.delivered;
        let mut unchanged = 0;
        let m = job.check.manifest();
        // A Have bitmap is in manifest order: metadata chunks, then content.
        let offset = match job.stream {
            Stream::Metadata => 0,
            Stream::Content => m.metadata_chunks.len(),
        };
        // Requested, in order, not yet answered, with when.
        let mut asked: VecDeque<(u64, Instant)> = VecDeque::new();
        let depth = job.depth.max(1);
        let mut changes = job.changes.subscribe();
        loop {
            changes.borrow_and_update();
            // Top up the pipeline.
            let mut wrote = false;
            let mut done = false;
            while asked.len() + self.verifying.len() < depth {
                let now = Instant::now();
                let i = match job.queue().take(self.peer, &have, offset, now) {
                    Take::Chunk(i) => i,
                    Take::Wait => break,
                    Take::Done => {
                        done = true;
                        break;
                    }
                };
                self.taken.push_back(i);
                let id: ChunkId = m.chunks(job.stream)[i as usize];
                let req = Request::Chunk {
                    share: job.share,
                    chunk: id,
                };
                write_msg(&mut s, &req).await.map_err(Fault::from_io)?;
                asked.push_back((i, now));
                wrote = true;
            }
            // A partial holder may get what is left: wait for it, a while.
            let may_grow = matches!(have, Have::Bitmap(_)) && unchanged < UNCHANGED_HAVES;
            if done && (!may_grow || job.queue().left() == 0) {
                // Everything is in, or nothing this peer holds is left:
                // what is still asked of it is not needed (what is being
                // verified is settled by `run`). A stream with nothing in
                // flight serves the fetch's next step.
                if asked.is_empty() {
                    job.idle.put(self.peer, s, Some(&have));
                }
                return Ok(SessionEnd::Finished);
            }
            if wrote {
                s.flush().await.map_err(Fault::from_io)?;
            }
            // Hand over what is verified; wait only when the pipeline is
            // full or nothing else is left to do.
            while let Some((_, h)) = self.verifying.front() {
                if !(h.is_finished() || asked.is_empty() || self.verifying.len() >= depth) {
                    break;
                }
                let (i, h) = self.verifying.pop_front().expect("front exists");
                self.settle(i, h).await?;
            }
            let Some(&(i, at)) = asked.front() else {
                if !self.verifying.is_empty() {
                    continue;
                }
                // Nothing in flight and nothing to ask for yet.
                let every = if self.delivered > delivered_at_have {
                    HAVE_FRESH
                } else if unchanged == 0 {
                    HAVE_CHANGED
                } else {
                    HAVE_EVERY
                };
                if have_asked.elapsed() >= every {
                    delivered_at_have = self.delivered;
                    let now = self.have(&mut s).await?;
                    unchanged = if now == have { unchanged + 1 } else { 0 };
                    have = now;
                    job.queue().have(self.peer, &have);
                    have_asked = Instant::now();
                    // What this peer holds may be what another waits for.
                    job.changed();
                } else {
                    let due = every.saturating_sub(have_asked.elapsed());
                    let _ = tokio::time::timeout(WAIT_TICK.min(due), changes.changed()).await;
                }
                continue;
            };
            let answer = self.answer(&mut s, m.sealed_len(job.stream, i)).await?;
            self.answered = true;
            let bytes = match answer {
                Answer::Chunk(b) => b,
                Answer::Stale => return Ok(SessionEnd::Stale),
                // A partial holder lists what it has verified, so saying it
                // lacks a chunk it listed is a lie (an honest one waits
                // out its own placement rather than refuse); a full holder
                // that lacks one just lacks the share.
                Answer::NotFound if matches!(have, Have::Bitmap(_)) => {
                    return Err(Fault::Misbehaved(format!(
                        "it listed chunk {i} as held, then said it does not hold it"
                    ))
                    .into())
                }
                Answer::NotFound => return Ok(SessionEnd::NotFound),
                Answer::Busy(ms) => return Err(Fault::busy(ms).into()),
                Answer::Violation(r) => return Err(Fault::Misbehaved(r).into()),
            };
            asked.pop_front();
            let wanted = job
                .queue()
                .arrived(self.peer, i, bytes.len(), at, Instant::now());
            if !wanted {
                // Another source delivered it first (the endgame): this
                // copy is not used, not even checked.
                self.taken.retain(|&x| x != i);
                continue;
            }
            let (check, stream) = (job.check.clone(), job.stream);
            let verification = if bytes.len() <= INLINE_VERIFY {
                Verification::Done(check.verify(stream, i, bytes))
            } else {
                Verification::Running(tokio::task::spawn_blocking(move || {
                    check.verify(stream, i, bytes)
                }))
            };
            self.verifying.push_back((i, verification));
        }
    }

    /// Asks what the peer holds.
    async fn have(&self, s: &mut Socket) -> Result<Have, SessionEnd> {
        let req = Request::Have {
            share: self.job.share,
        };
        write_msg(s, &req).await.map_err(Fault::from_io)?;
        s.flush().await.map_err(Fault::from_io)?;
        match tokio::time::timeout(self.job.timeout, read_msg::<_, Response>(s)).await {
            Err(_) => Err(self.stalled().into()),
            Ok(Err(e)) => Err(Fault::from_io(e).into()),
            Ok(Ok(Some(Response::Have(h)))) => Ok(h),
            Ok(Ok(Some(Response::NotFound))) => Err(SessionEnd::NotFound),
            Ok(Ok(Some(Response::Busy { retry_ms }))) => Err(Fault::busy(retry_ms).into()),
            // The stream closed before any answer: the peer's node may have
            // dropped it under load (libp2p-stream does with bursts).
            Ok(Ok(None)) => Err(Fault::Lost("closed the stream".into()).into()),
            Ok(Ok(Some(other))) => {
                Err(Fault::Misbehaved(format!("answered Have with {other:?}")).into())
            }
        }
    }

    /// Reads the answer to the oldest chunk request, which must carry
    /// exactly `expected` bytes: the length is checked before the payload
    /// is read.
    async fn answer(&self, s: &mut Socket, expected: usize) -> Result<Answer, Fault> {
        let read = async {
            Ok(match read_msg::<_, Response>(s).await? {
                Some(Response::Chunk { len }) if len as usize == expected => {
                    Answer::Chunk(read_payload(s, expected).await?)
                }
                Some(Response::Chunk { len }) => Answer::Violation(format!(
                    "sent a {len}-byte chunk where {expected} bytes were due"
                )),
                Some(Response::Stale) => Answer::Stale,
                Some(Response::NotFound) => Answer::NotFound,
                Some(Response::Busy { retry_ms }) => Answer::Busy(retry_ms),
                Some(other) => {
                    Answer::Violation(format!("answered a chunk request with {other:?}"))
                }
                None => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            })
        };
        match tokio::time::timeout(self.job.timeout, read).await {
            Err(_) => Err(self.stalled()),
            Ok(r) => r.map_err(Fault::from_io),
        }
    }

    /// Waits for one chunk's verification and hands it to the sink. `Err`
    /// if the session must end: the bytes were the peer's fault, or the
    /// share's, or the sink failed.
    async fn settle(&mut self, i: u64, h: Verification<V::Out>) -> Result<(), SessionEnd> {
        match h.result().await {
            Ok(out) => {
                let first = self.job.queue().claim(self.peer, i);
                self.taken.retain(|&x| x != i);
                if !first {
                    // Another source's copy was handed over meanwhile.
                    return Ok(());
                }
                let sink = self.job.sink.clone();
                tokio::task::spawn_blocking(move || sink(i, out))
                    .await
                    .expect("the sink does not panic")
                    .map_err(SessionEnd::Fatal)?;
                self.delivered += 1;
                self.job.queue().delivered(self.peer);
                self.job.changed();
                Ok(())
            }
            Err(e) if e.blames_source() => Err(Fault::Misbehaved(e.to_string()).into()),
            Err(e) => Err(SessionEnd::Fatal(e.into())),
        }
    }

    fn stalled(&self) -> Fault {
        Fault::Lost(format!(
            "stalled: no answer within {}s",
            self.job.timeout.as_secs()
        ))
    }
}
