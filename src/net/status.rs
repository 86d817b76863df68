//! What the node knows about its own reachability, its relays and its
//! connections, as a snapshot for `status` and for a peer cache
//! ([`crate::net::node::Client::reach_status`],
//! [`crate::net::node::Client::known_peers`]).

use libp2p::{Multiaddr, PeerId};

/// Whether other peers can dial this node, as AutoNAT found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// No verdict yet (no reachability test has finished).
    #[default]
    Unknown,
    /// At least one address was confirmed reachable by another peer (or the
    /// node was configured as a public relay).
    Public,
    /// Reachability tests failed and no address is confirmed: the node is
    /// behind NAT or a firewall, and is reached through relays.
    Private,
}

/// Where a reservation on one relay stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayState {
    /// Asked for, no answer yet.
    Requesting,
    /// Accepted; the relay client renews it before it expires.
    Reserved,
}

/// One relay this node holds (or asks for) a reservation on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayStatus {
    /// The relay.
    pub peer: PeerId,
    /// This node's addresses through it (`…/p2p/RELAY/p2p-circuit`), once
    /// reserved.
    pub circuit_addrs: Vec<Multiaddr>,
    /// Where the reservation stands.
    pub state: RelayState,
    /// Whether the relay was named by configuration (`relays = [...]`,
    /// `--relay`) rather than picked by AutoRelay.
    pub configured: bool,
}

/// The connections to one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConnections {
    /// The peer.
    pub peer: PeerId,
    /// Remote addresses of its direct connections.
    pub direct: Vec<Multiaddr>,
    /// Remote addresses of its relayed connections (`/p2p-circuit`).
    pub relayed: Vec<Multiaddr>,
}

impl PeerConnections {
    /// Whether at least one connection to the peer is direct.
    pub fn is_direct(&self) -> bool {
        !self.direct.is_empty()
    }
}

/// Hole punching (DCUtR) outcomes since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PunchStats {
    /// Relayed connections upgraded to direct ones (counted on whichever
    /// side saw the upgrade).
    pub succeeded: u64,
    /// Upgrades that failed after all attempts.
    pub failed: u64,
}

/// Inbound data streams served, by the kind of connection they came on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Over direct connections.
    pub direct: u64,
    /// Over relayed connections.
    pub relayed: u64,
}

/// A snapshot of the node's reachability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReachStatus {
    /// AutoNAT's verdict.
    pub reachability: Reachability,
    /// Addresses confirmed reachable from outside (no relay addresses).
    pub external_addrs: Vec<Multiaddr>,
    /// Whether this node offers a relay service now.
    pub relay_service: bool,
    /// Whether this node is a DHT server now.
    pub dht_server: bool,
    /// Relays this node is reachable through.
    pub relays: Vec<RelayStatus>,
    /// Connected peers, each with its direct and relayed connections.
    pub connections: Vec<PeerConnections>,
    /// Hole punching outcomes.
    pub punches: PunchStats,
    /// Inbound data streams, by connection kind.
    pub data_streams: StreamCounts,
    /// Peers in the node's bounded table of LAN (mDNS) peers.
    pub lan_peers: usize,
}

impl ReachStatus {
    /// The connections to `peer`, if connected.
    pub fn connection(&self, peer: &PeerId) -> Option<&PeerConnections> {
        self.connections.iter().find(|c| c.peer == *peer)
    }
}

/// A peer met on the network, with what identify said about it. Only what
/// the peer claims: addresses are hints, Noise authenticates the peer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownPeer {
    /// The peer.
    pub peer: PeerId,
    /// Addresses it listens on, as it reported them (bounded).
    pub addrs: Vec<Multiaddr>,
    /// Whether it answers DHT queries (peerdrop's Kademlia, server mode).
    pub dht_server: bool,
    /// Whether it offers the relay (circuit v2 hop) protocol.
    pub relay: bool,
}
