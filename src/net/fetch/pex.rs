//! The fetcher's side of peer exchange (docs/PROTOCOL.md, "Peer
//! exchange"): while sessions run, every source in one is asked which other
//! peers it knows for the share, now and then; what comes back is only a
//! candidate for [`super::sources::Sources`], dialled and asked to prove it
//! holds the share like any discovered peer. A fetch that serves what it
//! verified says where it can be reached in the same request, so that the
//! sources can tell the others about it.

use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tokio::task::JoinSet;

use super::session::Fault;
use crate::manifest::ManifestId;
use crate::net::frame::{read_msg, write_msg};
use crate::net::node::{Client, XFER};
use crate::net::{pex, PeerAddr};
use crate::wire::{check_peers, Request, Response};

/// How long after a fetch starts the first round is due (unless the node
/// starts serving the share first): a fetch done sooner, such as that of
/// a small share from a source at hand, needs no other peer, and asking
/// would cost it a stream per source (a round started as soon as sessions
/// did was most of the streams of a small fetch, and was cut short when
/// its queue ended).
pub(super) const PEX_START: Duration = Duration::from_millis(250);
/// The first pause between two rounds of asking, and the pause after a
/// round that brought a new candidate.
pub(super) const PEX_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between two rounds: each round that brings nothing
/// new doubles the pause up to this.
pub(super) const PEX_MAX: Duration = Duration::from_secs(16);
/// How long one source may take to answer.
const PEX_TIMEOUT: Duration = Duration::from_secs(5);

/// When to ask next, carried from one queue of a fetch to the next.
#[derive(Debug)]
pub(super) struct Exchange {
    every: Duration,
    next: Instant,
    /// Whether the last round announced this node (it serves the share).
    announced: bool,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            every: PEX_FIRST,
            next: Instant::now() + PEX_START,
            announced: false,
        }
    }
}

impl Exchange {
    /// When the next round is due: now, if this node has just started to
    /// serve the share and has not said so yet.
    pub(super) fn due(&self, serving: bool) -> Instant {
        if serving && !self.announced {
            Instant::now()
        } else {
            self.next
        }
    }

    /// A round ended; `fresh` new candidates came of it.
    pub(super) fn ended(&mut self, fresh: usize, announced: bool) {
        self.every = if fresh > 0 {
            PEX_FIRST
        } else {
            (self.every * 2).min(PEX_MAX)
        };
        self.next = Instant::now() + self.every;
        self.announced |= announced;
    }
}

/// What one round brought: each source asked, with its answer.
pub(super) type Round = Vec<(PeerId, Result<Vec<PeerAddr>, Fault>)>;

/// Asks each of `peers` at once which peers it knows for `share`,
/// announcing this node's listen addresses if `announce`. Returns the
/// answers and whether this node was announced.
pub(super) async fn ask_round(
    client: Client,
    share: ManifestId,
    peers: Vec<PeerId>,
    announce: bool,
) -> (Round, bool) {
    let listen = if announce {
        pex::to_announce(&client.listen_addrs().await.unwrap_or_default())
    } else {
        Vec::new()
    };
    let announced = !listen.is_empty();
    let mut asks = JoinSet::new();
    for peer in peers {
        let (client, listen) = (client.clone(), listen.clone());
        asks.spawn(async move {
            let r = tokio::time::timeout(PEX_TIMEOUT, ask(&client, share, peer, listen)).await;
            let r = r.unwrap_or_else(|_| Err(Fault::Lost("did not answer a peer list".into())));
            (peer, r)
        });
    }
    let mut round = Vec::new();
    while let Some(r) = asks.join_next().await {
        round.extend(r.ok());
    }
    (round, announced)
}

/// Asks `peer` for the peers it knows for `share`, on a stream of its own.
/// A provider without peer exchange (an older one) closes the stream on the
/// unknown request: that, like `NotFound`, is an empty list, not a fault.
async fn ask(
    client: &Client,
    share: ManifestId,
    peer: PeerId,
    listen: Vec<ByteBuf>,
) -> Result<Vec<PeerAddr>, Fault> {
    let mut s = client
        .control()
        .open_stream(peer, XFER)
        .await
        .map_err(|e| Fault::Lost(e.to_string()))?;
    write_msg(&mut s, &Request::Peers { share, listen })
        .await
        .map_err(Fault::from_io)?;
    s.flush().await.map_err(Fault::from_io)?;
    let answer = read_msg::<_, Response>(&mut s).await;
    let _ = s.close().await;
    match answer.map_err(Fault::from_io)? {
        Some(Response::Peers(list)) => {
            check_peers(&list).map_err(|e| Fault::Misbehaved(e.to_string()))?;
            pex::from_wire(&list).map_err(Fault::Misbehaved)
        }
        None | Some(Response::NotFound) | Some(Response::Busy { .. }) => Ok(Vec::new()),
        Some(other) => Err(Fault::Misbehaved(format!(
            "answered a peer list request with {other:?}"
        ))),
    }
}
