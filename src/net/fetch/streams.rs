//! Streams to sources kept open between the steps of one fetch: the
//! manifest, the file list's session, the content's session and `Done` all
//! go over one stream per source when they can, instead of one stream each.
//!
//! A provider answers any sequence of requests on one stream, in order
//! (docs/PROTOCOL.md, "Streams"), so reuse needs no change on the wire.
//! What it saves is per stream: a substream opened and negotiated on both
//! sides, the provider's admission and its two tasks, and the hops between
//! the fetch's task and the swarm's event loop that each of those takes.
//! For a small share that is most of the work of a fetch (three of its four
//! streams).
//!
//! A stream is put back only when nothing is in flight on it (every request
//! sent was answered), so the next step starts on a clean stream. It is
//! reused only within [`REUSE_WITHIN`]: a provider closes a stream that
//! carried no request for its idle timeout (60 s by default), and one that
//! closed under us would cost its source a strike. The cache belongs to one
//! fetch and is dropped with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::{PeerId, Stream as Socket};

use crate::wire::Have;

/// How long an idle stream may be reused: well within a provider's idle
/// timeout.
pub(super) const REUSE_WITHIN: Duration = Duration::from_secs(10);

/// Most idle streams one fetch keeps (one per source; a fetch draws from at
/// most `max_peers`, 8 by default, at once).
pub(super) const MAX_IDLE: usize = 16;

/// One idle stream.
struct Idle {
    stream: Socket,
    since: Instant,
    /// What the source said it holds, if it said it holds everything: a
    /// full holder's answer does not change, so the next session need not
    /// ask again.
    all: bool,
}

/// A stream taken for reuse.
pub(super) struct Reused {
    /// The stream, with nothing in flight.
    pub(super) stream: Socket,
    /// The source answered `Have::All` on it.
    pub(super) all: bool,
}

/// The idle streams of one fetch, at most one per source and
/// [`MAX_IDLE`] in all.
#[derive(Default)]
pub(super) struct IdleStreams(Mutex<HashMap<PeerId, Idle>>);

impl IdleStreams {
    /// The idle stream to `peer`, if there is one fresh enough.
    pub(super) fn take(&self, peer: &PeerId) -> Option<Reused> {
        let idle = self.0.lock().expect("never poisoned").remove(peer)?;
        (idle.since.elapsed() < REUSE_WITHIN).then_some(Reused {
            stream: idle.stream,
            all: idle.all,
        })
    }

    /// Keeps `stream` to `peer` for the next step; the caller has read the
    /// answer to every request it sent on it. `have` is what the source
    /// last said it holds on it, if it was asked.
    pub(super) fn put(&self, peer: PeerId, stream: Socket, have: Option<&Have>) {
        let mut idle = self.0.lock().expect("never poisoned");
        if idle.len() >= MAX_IDLE && !idle.contains_key(&peer) {
            // Dropping it closes it.
            return;
        }
        let all = matches!(have, Some(Have::All));
        idle.insert(
            peer,
            Idle {
                stream,
                since: Instant::now(),
                all,
            },
        );
    }

    /// Whether an idle stream to `peer` is kept (so the peer was connected
    /// a moment ago).
    pub(super) fn holds(&self, peer: &PeerId) -> bool {
        self.0.lock().expect("never poisoned").contains_key(peer)
    }
}
