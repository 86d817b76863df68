//! Scheduling: sessions with the connected sources over one shared queue of
//! chunk indices, and what to do with each peer when its session ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;

use super::session::{session, SessionEnd, Sink};
use super::sources::Fetcher;
use super::verify::Verify;
use super::{FetchError, MAX_STRIKES};
use crate::chunk::Stream;
use crate::wire::Have;

/// Chunk indices of one stream still to fetch, shared by the sessions.
pub(super) struct Queue {
    pub(super) stream: Stream,
    pub(super) todo: VecDeque<u64>,
    pub(super) left: usize,
}

impl Queue {
    /// The next index `have` covers (manifest order puts metadata first).
    pub(super) fn take(&mut self, have: &Have, metadata_chunks: usize) -> Option<u64> {
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

impl Fetcher {
    /// Fetches `indices` of `stream` from `peers` (reconnecting to the other
    /// sources while any are left), handing verified plaintext to `sink` on
    /// the blocking pool. Returns the peers that took part.
    pub(super) async fn run_queue<V, S>(
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
