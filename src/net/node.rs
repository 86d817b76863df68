//! The libp2p node: one task owns the `Swarm`; everything else talks to it
//! through a [`Client`].

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, identify, identity, noise, ping, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm, SwarmBuilder,
};
use tokio::sync::{mpsc, oneshot};

use crate::wire;

/// The data protocol's name as a libp2p protocol.
pub const XFER: StreamProtocol = StreamProtocol::new(wire::PROTOCOL);

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
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            keypair: None,
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_connections_per_peer: 4,
        }
    }
}

/// The node's protocols. Connection limits come first so they can refuse a
/// connection before the others see it.
#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// A dial waiting for its connection: the peer, the addresses not yet
/// tried, and who to tell.
type PendingDial = (
    PeerId,
    Vec<Multiaddr>,
    oneshot::Sender<Result<(), NetError>>,
);

enum Command {
    Listen(Multiaddr, oneshot::Sender<Result<Multiaddr, NetError>>),
    Dial(
        PeerId,
        Vec<Multiaddr>,
        oneshot::Sender<Result<(), NetError>>,
    ),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Disconnect(PeerId),
    Connected(oneshot::Sender<Vec<(PeerId, Multiaddr)>>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on a running node. Cheap to clone; the node stops when every
/// clone is dropped or [`Client::shutdown`] is called.
#[derive(Clone)]
pub struct Client {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
}

impl Client {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A stream control for opening and accepting data streams; bulk bytes go
    /// through these, not through the swarm task.
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
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
    let keypair = config
        .keypair
        .clone()
        .unwrap_or_else(identity::Keypair::generate_ed25519);
    let start = |e: &dyn std::fmt::Display| NetError::Start(e.to_string());
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(64))
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(config.max_connections_per_peer));
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| start(&e))?
        .with_quic()
        .with_behaviour(|key| Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            identify: identify::Behaviour::new(identify::Config::new(
                "/peerdrop/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
        })
        .map_err(|e| start(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    let peer_id = *swarm.local_peer_id();
    let control = swarm.behaviour().stream.new_control();
    let (commands, rx) = mpsc::channel(64);
    tokio::spawn(EventLoop::new(swarm).run(rx));
    Ok(Client {
        peer_id,
        commands,
        control,
    })
}

/// State of the swarm task. Owned by that task alone.
struct EventLoop {
    swarm: Swarm<Behaviour>,
    /// Every listener added, for shutdown.
    listeners: Vec<libp2p::core::transport::ListenerId>,
    /// Listen requests waiting for their first address.
    pending_listen: HashMap<
        libp2p::core::transport::ListenerId,
        (Multiaddr, oneshot::Sender<Result<Multiaddr, NetError>>),
    >,
    /// Dials waiting for their connection, with the addresses not yet tried.
    pending_dial: HashMap<ConnectionId, PendingDial>,
    /// One remote address per connected peer, for status.
    connected: HashMap<PeerId, Multiaddr>,
    /// Set while shutting down: the reply to send once all connections closed.
    shutdown: Option<oneshot::Sender<()>>,
}

impl EventLoop {
    fn new(swarm: Swarm<Behaviour>) -> EventLoop {
        EventLoop {
            swarm,
            listeners: Vec::new(),
            pending_listen: HashMap::new(),
            pending_dial: HashMap::new(),
            connected: HashMap::new(),
            shutdown: None,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                cmd = commands.recv(), if self.shutdown.is_none() => match cmd {
                    Some(cmd) => {
                        if self.command(cmd) {
                            break;
                        }
                    }
                    None => break,
                },
                event = self.swarm.select_next_some() => {
                    if self.event(event) {
                        break;
                    }
                }
            }
        }
    }

    /// Handles one command; true when the loop should end.
    fn command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Listen(addr, reply) => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.listeners.push(id);
                    self.pending_listen.insert(id, (addr, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(NetError::Listen {
                        addr,
                        reason: e.to_string(),
                    }));
                }
            },
            Command::ListenAddrs(reply) => {
                let me = *self.swarm.local_peer_id();
                let _ = reply.send(
                    self.swarm
                        .listeners()
                        .map(|a| a.clone().with_p2p(me).unwrap_or_else(|a| a))
                        .collect(),
                );
            }
            Command::Dial(peer, mut addrs, reply) => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return false;
                }
                addrs.reverse();
                self.dial_next(peer, addrs, reply, String::from("no address to try"));
            }
            Command::Connected(reply) => {
                let _ = reply.send(
                    self.connected
                        .iter()
                        .map(|(p, a)| (*p, a.clone()))
                        .collect(),
                );
            }
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Shutdown(reply) => {
                for id in std::mem::take(&mut self.listeners) {
                    self.swarm.remove_listener(id);
                }
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for p in peers {
                    let _ = self.swarm.disconnect_peer_id(p);
                }
                if self.swarm.connected_peers().next().is_none() {
                    let _ = reply.send(());
                    return true;
                }
                self.shutdown = Some(reply);
            }
        }
        false
    }

    /// Dials the last address of `rest` (they are stored reversed), one at a
    /// time, so the caller's order (TCP first) is respected.
    fn dial_next(
        &mut self,
        peer: PeerId,
        mut rest: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), NetError>>,
        last_error: String,
    ) {
        loop {
            let Some(addr) = rest.pop() else {
                let _ = reply.send(Err(NetError::Dial {
                    peer,
                    reason: last_error,
                }));
                return;
            };
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(vec![addr])
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.pending_dial.insert(id, (peer, rest, reply));
                    return;
                }
                Err(DialError::DialPeerConditionFalse(_)) => {
                    // Already connected or being dialled: wait for that one.
                    let _ = reply.send(Ok(()));
                    return;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "dial failed at once");
                    continue;
                }
            }
        }
    }

    /// Handles one swarm event; true when the loop should end.
    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) -> bool {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, "listening");
                if let Some((_, reply)) = self.pending_listen.remove(&listener_id) {
                    let me = *self.swarm.local_peer_id();
                    let _ = reply.send(Ok(address.with(Protocol::P2p(me))));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some((addr, reply)) = self.pending_listen.remove(&listener_id) {
                    let _ = reply.send(Err(NetError::Listen {
                        addr,
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some((addr, reply)) = self.pending_listen.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let _ = reply.send(Err(NetError::Listen { addr, reason }));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                self.connected
                    .insert(peer_id, endpoint.get_remote_address().clone());
                if let Some((_, _, reply)) = self.pending_dial.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some((peer, rest, reply)) = self.pending_dial.remove(&connection_id) {
                    self.dial_next(peer, rest, reply, error.to_string());
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                cause,
                num_established,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "connection closed");
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                }
                if self.shutdown.is_some() && self.swarm.connected_peers().next().is_none() {
                    if let Some(reply) = self.shutdown.take() {
                        let _ = reply.send(());
                    }
                    return true;
                }
            }
            _ => {}
        }
        false
    }
}
