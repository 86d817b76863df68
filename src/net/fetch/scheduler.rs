//! Scheduling: sessions with the connected sources over one shared queue of
//! chunk indices, in rounds, and what happens to each peer when its session
//! ends.
//!
//! A round starts one session per usable peer (at most `max_peers`) and
//! waits for all of them; a source found meanwhile joins the next round.
//! Chunks go in index order, each to one session at a time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;

use super::session::{Job, Session, SessionEnd, Sink};
use super::sources::Sources;
use super::verify::Verify;
use super::FetchError;
use crate::chunk::Stream;
use crate::wire::Have;

/// Chunk indices of one stream still to fetch, shared by the sessions.
pub(super) struct Queue {
    /// Not yet taken by a session, in the order to ask for them.
    todo: VecDeque<u64>,
    /// Not yet delivered (taken or not).
    left: usize,
}

impl Queue {
    fn new(indices: Vec<u64>) -> Queue {
        Queue {
            left: indices.len(),
            todo: indices.into(),
        }
    }

    /// The next index `have` covers; `offset` is the stream's first position
    /// in manifest order (what `have` counts in).
    pub(super) fn take(&mut self, have: &Have, offset: usize) -> Option<u64> {
        let pos = self
            .todo
            .iter()
            .position(|&i| have.has(offset + i as usize))?;
        self.todo.remove(pos)
    }

    /// One taken index was verified and handed over.
    pub(super) fn delivered(&mut self) {
        self.left -= 1;
    }

    /// Indices a session took but did not deliver, in the order it took
    /// them: asked for first next time.
    pub(super) fn give_back(&mut self, taken: VecDeque<u64>) {
        for i in taken.into_iter().rev() {
            self.todo.push_front(i);
        }
    }
}

/// Fetches `indices` of `stream` from `peers` (reconnecting to the other
/// sources while any are left), handing verified chunks to `sink` on the
/// blocking pool. Returns the peers that took part.
pub(super) async fn run_queue<V, S>(
    src: &mut Sources,
    check: &Arc<V>,
    stream: Stream,
    indices: Vec<u64>,
    mut peers: Vec<PeerId>,
    sink: S,
) -> Result<Vec<PeerId>, FetchError>
where
    V: Verify,
    S: Fn(u64, V::Out) -> Result<(), FetchError> + Send + Sync + 'static,
{
    let sink: Arc<Sink<V::Out>> = Arc::new(sink);
    let job = Arc::new(Job {
        client: src.client.clone(),
        share: src.share,
        stream,
        check: check.clone(),
        queue: Arc::new(Mutex::new(Queue::new(indices))),
        sink,
        depth: src.opts.depth,
        timeout: src.opts.request_timeout,
    });
    let left = || job.queue.lock().expect("never poisoned").left;
    let mut used = Vec::new();
    let mut idle_rounds = 0;
    loop {
        let before = left();
        if before == 0 {
            return Ok(used);
        }
        peers.retain(|p| src.usable(p));
        peers.truncate(src.opts.max_peers);
        if peers.is_empty() {
            peers = src.connect().await?;
            continue;
        }
        let mut sessions = tokio::task::JoinSet::new();
        for &peer in &peers {
            if !used.contains(&peer) {
                used.push(peer);
            }
            sessions.spawn(Session::new(job.clone(), peer).run());
        }
        // Whether every session ended for want of anything to take.
        let mut all_idle = true;
        while let Some(joined) = sessions.join_next().await {
            let (peer, end, delivered) = joined.expect("sessions do not panic");
            if !matches!(end, SessionEnd::Finished) {
                all_idle = false;
            }
            if delivered > 0 {
                src.delivered(peer);
            }
            match end {
                SessionEnd::Finished => src.served(peer),
                SessionEnd::Fault(fault) => src.blame(peer, fault).await,
                SessionEnd::NotFound => src.lacks_share(peer),
                SessionEnd::Stale => src.refused_stale(peer).await,
                SessionEnd::Fatal(e) => return Err(e),
            }
        }
        peers.clear();
        // Sources that hold none of what is left (by their Have) end at
        // once; do not spin on them.
        if all_idle && left() == before {
            idle_rounds += 1;
            if idle_rounds >= src.opts.retry.idle_rounds {
                return Err(FetchError::NotFound);
            }
            tokio::time::sleep(src.opts.retry.pause(idle_rounds)).await;
        } else {
            idle_rounds = 0;
        }
    }
}
