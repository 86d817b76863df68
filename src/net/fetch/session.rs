//! One peer's session: a stream with up to `depth` chunk requests in
//! flight, answers read in order, each verified on the blocking pool while
//! the next one arrives.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::AsyncWriteExt;
use libp2p::PeerId;
use tokio::task::JoinHandle;

use super::scheduler::Queue;
use super::verify::Verify;
use super::{FetchError, FetchOptions};
use crate::chunk::ChunkId;
use crate::net::frame::{read_msg, read_payload, write_msg};
use crate::net::node::{Client, XFER};
use crate::open::OpenError;
use crate::wire::{Request, Response};

/// Why a session ended.
pub(super) enum SessionEnd {
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

pub(super) type Sink<T> = dyn Fn(u64, T) -> Result<(), FetchError> + Send + Sync;
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
pub(super) async fn session<V: Verify>(
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
