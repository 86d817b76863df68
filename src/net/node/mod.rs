//! The libp2p node: one task owns the `Swarm`; everything else talks to it
//! through a [`Client`].
//!
//! - `behaviour`: the protocols and how the swarm is built.
//! - `event_loop`: the task that owns the swarm.

mod behaviour;
mod event_loop;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{identity, Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::net::inbound::Incoming;
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
    /// Answer DHT queries and store provider records (daemons); otherwise
    /// the node only asks.
    pub dht_server: bool,
    /// DHT bootstrap peers (multiaddrs ending in /p2p/PEER).
    pub bootstrap: Vec<Multiaddr>,
    /// Relay circuits for other peers (relay v2 server).
    pub relay_server: bool,
    /// Bytes one relayed circuit may carry (relay servers only).
    pub relay_max_circuit_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            keypair: None,
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_connections_per_peer: 4,
            mdns: false,
            dht_server: false,
            bootstrap: Vec::new(),
            relay_server: false,
            relay_max_circuit_bytes: 1 << 30,
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
    Providers(Vec<u8>, oneshot::Sender<Vec<PeerId>>),
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

    /// Looks `key` up in the DHT; returns the providers found (already being
    /// dialled, since the DHT only knows their addresses during the query).
    pub async fn providers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, NetError> {
        self.call(|tx| Command::Providers(key, tx)).await
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
    tokio::spawn(event_loop::EventLoop::new(swarm, config.relay_server).run(rx));
    Ok(Client {
        peer_id,
        commands,
        control,
        incoming: Arc::new(Mutex::new(Some(incoming))),
    })
}

/// Splits `/…/p2p/PEER` into the peer and the address before it.
pub fn split_p2p(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, a)),
        _ => None,
    }
}
