//! The libp2p node: one task owns the `Swarm`; everything else talks to it
//! through a [`Client`].
//!
//! - `behaviour`: the protocols and how the swarm is built.
//! - `event_loop`: the task that owns the swarm.
//! - `retest`: AutoNAT's client, made to test addresses again.

mod behaviour;
mod event_loop;
mod lan;
mod reach;
mod relay_gate;
mod retest;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{identity, Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::net::inbound::Incoming;
use crate::net::status::{KnownPeer, ReachStatus, StreamCounts};
use crate::wire;

/// The data protocol's name as a libp2p protocol.
pub const XFER: StreamProtocol = StreamProtocol::new(wire::PROTOCOL);
/// peerdrop's own Kademlia protocol: a private DHT, never the public IPFS one.
pub const KAD: StreamProtocol = StreamProtocol::new("/peerdrop/kad/1.0.0");

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Building the transport stack failed.
    #[error("starting the network failed: {0}")]
    Start(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// What went wrong.
        reason: String,
    },
    /// A peer could not be reached.
    #[error("cannot reach peer {peer}: {reason}")]
    Dial {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: String,
    },
    /// The node has shut down.
    #[error("the network node has stopped")]
    Stopped,
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's identity; `None` generates a fresh one.
    pub keypair: Option<identity::Keypair>,
    /// How long a connection with no open stream stays up.
    pub idle_timeout: Duration,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections per peer.
    pub max_connections_per_peer: u32,
    /// Discover peers on the LAN with mDNS. Off by default: it multicasts on
    /// every interface, which the binary turns on deliberately.
    pub mdns: bool,
    /// Whether to answer DHT queries and store provider records for others
    /// (and answer AutoNAT reachability tests, unless [`Role::Off`]):
    /// [`Role::Auto`] once AutoNAT finds the node publicly reachable.
    pub dht_server: Role,
    /// DHT bootstrap peers (multiaddrs ending in /p2p/PEER).
    pub bootstrap: Vec<Multiaddr>,
    /// Whether to relay circuits for other peers (relay v2 server):
    /// [`Role::Auto`] once AutoNAT finds the node publicly reachable;
    /// [`Role::On`] assumes the node's listen addresses are reachable.
    pub relay_server: Role,
    /// What the relay service allows.
    pub relay_limits: RelayLimits,
    /// Pick relays and reserve circuits on them while not publicly
    /// reachable (AutoRelay). Relays named with a `/p2p-circuit` listen
    /// address override the choice.
    pub auto_relay: bool,
    /// How long a dial that ended on a relayed connection waits for hole
    /// punching to give a direct one, before it is answered anyway (bulk
    /// streams go on whichever connection exists).
    pub punch_wait: Duration,
}

/// Whether the node takes on a role for others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Never.
    #[default]
    Off,
    /// When AutoNAT finds the node publicly reachable.
    Auto,
    /// Always.
    On,
}

/// The relay service's limits, for every circuit it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Circuits relayed at once.
    pub max_circuits: usize,
    /// Circuits at once per peer.
    pub max_circuits_per_peer: usize,
    /// Bytes one circuit may carry (both ways); then it is closed.
    pub max_circuit_bytes: u64,
    /// How long one circuit may stay open.
    pub max_circuit_duration: Duration,
    /// Reservations held at once.
    pub max_reservations: usize,
    /// Reservations at once per peer.
    pub max_reservations_per_peer: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_circuits: 16,
            max_circuits_per_peer: 4,
            max_circuit_bytes: 64 << 20,
            max_circuit_duration: Duration::from_secs(600),
            max_reservations: 128,
            max_reservations_per_peer: 4,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            keypair: None,
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_connections_per_peer: 4,
            mdns: false,
            dht_server: Role::Off,
            bootstrap: Vec::new(),
            relay_server: Role::Off,
            relay_limits: RelayLimits::default(),
            auto_relay: false,
            punch_wait: Duration::from_secs(8),
        }
    }
}

pub(crate) enum Command {
    Listen(Multiaddr, oneshot::Sender<Result<Multiaddr, NetError>>),
    Dial(
        PeerId,
        Vec<Multiaddr>,
        oneshot::Sender<Result<(), NetError>>,
    ),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Disconnect(PeerId),
    Connected(oneshot::Sender<Vec<(PeerId, Multiaddr)>>),
    Discovered(oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>),
    Provide(Vec<u8>),
    /// Stop announcing a key (see [`Client::unprovide`]).
    Unprovide(Vec<u8>),
    Providers(Vec<u8>, oneshot::Sender<Vec<PeerId>>),
    ReachStatus(oneshot::Sender<ReachStatus>),
    KnownPeers(oneshot::Sender<Vec<KnownPeer>>),
    WaitDirect(PeerId, Duration, oneshot::Sender<bool>),
    OnlyRelayed(PeerId, oneshot::Sender<bool>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on a running node. Cheap to clone; the node stops when every
/// clone is dropped or [`Client::shutdown`] is called.
#[derive(Clone)]
pub struct Client {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    /// Inbound data streams, until a server takes them.
    incoming: Arc<Mutex<Option<Incoming>>>,
}

impl Client {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A stream control for opening data streams; bulk bytes go through
    /// these, not through the swarm task.
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// The queue of inbound data streams, for the one server of this node;
    /// `None` once taken.
    pub fn incoming(&self) -> Option<Incoming> {
        self.incoming.lock().expect("never poisoned").take()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Starts listening on `addr` and returns the first concrete address
    /// (with the port filled in).
    pub async fn listen(&self, addr: Multiaddr) -> Result<Multiaddr, NetError> {
        self.call(|tx| Command::Listen(addr, tx)).await?
    }

    /// Every address the node listens on now.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.call(Command::ListenAddrs).await
    }

    /// Connects to `peer` at `addrs` (tried in order), unless already
    /// connected. Noise authenticates the peer id.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        self.call(|tx| Command::Dial(peer, addrs, tx)).await?
    }

    /// Connected peers, each with the remote address of one connection.
    pub async fn connected(&self) -> Result<Vec<(PeerId, Multiaddr)>, NetError> {
        self.call(Command::Connected).await
    }

    /// Peers found on the LAN by mDNS, with their addresses.
    pub async fn discovered(&self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, NetError> {
        self.call(Command::Discovered).await
    }

    /// Announces in the DHT that this node provides `key` (kept up by
    /// re-publishing while the node runs).
    pub async fn provide(&self, key: Vec<u8>) {
        let _ = self.commands.send(Command::Provide(key)).await;
    }

    /// Stops announcing `key`: this node's own provider record is dropped,
    /// so it is no longer re-published nor given in answers to lookups.
    /// Records other DHT nodes already hold expire on their own, within the
    /// record TTL (24 h); the DHT has no way to delete them.
    pub async fn unprovide(&self, key: Vec<u8>) {
        let _ = self.commands.send(Command::Unprovide(key)).await;
    }

    /// Looks `key` up in the DHT; returns the providers found (already being
    /// dialled, since the DHT only knows their addresses during the query).
    pub async fn providers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, NetError> {
        self.call(|tx| Command::Providers(key, tx)).await
    }

    /// What the node knows of its reachability, relays and connections.
    pub async fn reach_status(&self) -> Result<ReachStatus, NetError> {
        self.call(Command::ReachStatus).await
    }

    /// Peers met on the network with what they said of themselves
    /// (identify), most recent first; bounded.
    pub async fn known_peers(&self) -> Result<Vec<KnownPeer>, NetError> {
        self.call(Command::KnownPeers).await
    }

    /// Waits until the node has a direct connection to `peer` (true), or
    /// `timeout` passes (false).
    pub async fn wait_direct(&self, peer: PeerId, timeout: Duration) -> Result<bool, NetError> {
        self.call(|tx| Command::WaitDirect(peer, timeout, tx)).await
    }

    /// Whether `peer` is connected through relays only (false when not
    /// connected, or once a connection to it is direct): streams opened to
    /// it now go through a circuit, which its relay closes at a limit.
    pub async fn only_relayed(&self, peer: PeerId) -> Result<bool, NetError> {
        self.call(|tx| Command::OnlyRelayed(peer, tx)).await
    }

    /// Closes every connection to `peer` (for one that misbehaved).
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self.commands.send(Command::Disconnect(peer)).await;
    }

    /// Closes listeners and connections, then stops the swarm task.
    pub async fn shutdown(&self) {
        let _ = self.call(Command::Shutdown).await;
    }
}

/// Builds the swarm and spawns the task that owns it (on the current tokio
/// runtime).
pub fn spawn(config: NodeConfig) -> Result<Client, NetError> {
    let (inbound, incoming) = crate::net::inbound::Behaviour::new(XFER);
    let streams = Arc::new(StreamCounters::default());
    let incoming = count_streams(incoming, streams.clone());
    let mut swarm = behaviour::build(&config, inbound)?;
    let peer_id = *swarm.local_peer_id();
    let control = swarm.behaviour().stream.new_control();
    for addr in &config.bootstrap {
        match split_p2p(addr) {
            Some((peer, a)) => {
                swarm.behaviour_mut().kad.add_address(&peer, a);
            }
            None => {
                tracing::warn!(%addr, "a bootstrap address must end in /p2p/PEER_ID; ignoring it")
            }
        }
    }
    if !config.bootstrap.is_empty() {
        if let Err(e) = swarm.behaviour_mut().kad.bootstrap() {
            tracing::warn!("DHT bootstrap: {e}");
        }
    }
    let (commands, rx) = mpsc::channel(64);
    tokio::spawn(event_loop::EventLoop::new(swarm, &config, streams).run(rx));
    Ok(Client {
        peer_id,
        commands,
        control,
        incoming: Arc::new(Mutex::new(Some(incoming))),
    })
}

/// Inbound data streams counted by the kind of connection they came on.
#[derive(Default)]
pub(crate) struct StreamCounters {
    direct: AtomicU64,
    relayed: AtomicU64,
}

impl StreamCounters {
    fn snapshot(&self) -> StreamCounts {
        StreamCounts {
            direct: self.direct.load(Ordering::Relaxed),
            relayed: self.relayed.load(Ordering::Relaxed),
        }
    }
}

/// Passes inbound data streams on (through a queue as deep as the first),
/// counting them by connection kind: whether bulk really avoids the relays
/// is then seen, not assumed.
fn count_streams(mut incoming: Incoming, counters: Arc<StreamCounters>) -> Incoming {
    let (tx, rx) = mpsc::channel(crate::net::inbound::QUEUE);
    tokio::spawn(async move {
        while let Some(s) = incoming.recv().await {
            let relayed = crate::net::addr::is_relayed(&s.addr);
            tracing::debug!(peer = %s.peer, addr = %s.addr, relayed, "inbound data stream");
            let c = if relayed {
                &counters.relayed
            } else {
                &counters.direct
            };
            c.fetch_add(1, Ordering::Relaxed);
            if tx.send(s).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Splits `/…/p2p/PEER` into the peer and the address before it.
pub fn split_p2p(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, a)),
        _ => None,
    }
}
