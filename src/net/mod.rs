//! The network layer: the only place with sockets.
//!
//! - [`node`]: the libp2p node. One task owns the `Swarm` (TCP + Noise +
//!   Yamux, and QUIC; identify, ping, connection limits); the rest of the
//!   program holds a cloneable [`node::Client`] that sends it commands. Bulk
//!   bytes never pass through that task: transfers run on their own streams.
//! - [`status`]: the node's reachability, relays and connections, as a
//!   snapshot; [`autorelay`]: choosing relays while not publicly reachable;
//!   [`addr`]: what an address says about reachability.
//! - [`budget`]: a memory budget granted fairly across remote addresses.
//! - [`dht_store`]: the DHT record store, bounded against floods.
//! - [`inbound`]: inbound data streams, queued (bounded) with the address
//!   they came from.
//! - [`frame`]: reading and writing [`crate::wire`] frames on a stream.
//! - [`peer_cache`]: the peers met, kept (bounded) across restarts to
//!   bootstrap from.
//! - [`serve`]: answering peers' requests from a [`serve::Provider`].
//! - [`fetch`]: fetching a whole share from one or more peers, verifying
//!   every byte, resumable (one file per job under `fetch/`: sources, the
//!   manifest, the scheduler, one peer's session, chunk verification; what
//!   an interrupted run left is checked by [`crate::store::resume`]).

pub mod addr;
pub mod autorelay;
pub mod budget;
pub mod dht_store;
pub mod fetch;
pub mod frame;
pub mod inbound;
pub mod node;
pub mod peer_cache;
pub mod pex;
pub mod seed;
pub mod serve;
pub mod status;

pub use libp2p::{Multiaddr, PeerId};

/// A peer and addresses to reach it at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    /// Who.
    pub peer: PeerId,
    /// Where (may be empty if the node already knows).
    pub addrs: Vec<Multiaddr>,
}

impl PeerAddr {
    /// Parses a multiaddr ending in `/p2p/<peer id>`.
    pub fn from_multiaddr(mut addr: Multiaddr) -> Option<PeerAddr> {
        match addr.pop() {
            Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(PeerAddr {
                peer,
                addrs: if addr.is_empty() { vec![] } else { vec![addr] },
            }),
            _ => None,
        }
    }

    /// Reads a link hint, skipping addresses that do not parse. `None` if
    /// the peer id itself is invalid.
    pub fn from_hint(h: &crate::link::Hint) -> Option<PeerAddr> {
        let peer = PeerId::from_bytes(&h.peer).ok()?;
        let addrs = h
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect();
        Some(PeerAddr { peer, addrs })
    }

    /// The link hint for this peer (at most [`crate::link::MAX_ADDRS_PER_HINT`]
    /// addresses, in the order given).
    pub fn to_hint(&self) -> crate::link::Hint {
        let mut addrs = Vec::new();
        let mut len = 2 + self.peer.to_bytes().len();
        for a in &self.addrs {
            let b = a.to_vec();
            if addrs.len() == crate::link::MAX_ADDRS_PER_HINT
                || len + 1 + b.len() > crate::link::MAX_HINT_LEN
            {
                break;
            }
            len += 1 + b.len();
            addrs.push(b);
        }
        crate::link::Hint {
            peer: self.peer.to_bytes(),
            addrs,
        }
    }
}

/// Whether an address uses QUIC (used to prefer TCP for bulk transfers:
/// rust-libp2p's QUIC runs at about half the speed of TCP + Noise + Yamux).
pub fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1))
}

/// Whether an address is loopback (useful only on this machine).
pub fn is_loopback(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_loopback(),
        libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// Orders listen addresses for a link hint: reachable from elsewhere first,
/// TCP before QUIC, loopback last; `/p2p` suffixes removed (the hint carries
/// the peer id once).
pub fn hint_addrs(mut addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    for a in &mut addrs {
        if matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
            a.pop();
        }
    }
    addrs.sort_by_key(|a| (is_loopback(a), is_quic(a)));
    addrs.dedup();
    addrs
}
