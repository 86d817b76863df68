//! The libp2p node: one task owns the `Swarm`; everything else talks to it
//! through a [`Client`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, connection_limits, dcutr, identify, identity, kad, mdns, noise, ping, relay, tcp,
    yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};
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

/// The node's protocols. Connection limits come first so they can refuse a
/// connection before the others see it.
#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    inbound: crate::net::inbound::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
    autonat: autonat::v2::client::Behaviour,
    autonat_server: Toggle<autonat::v2::server::Behaviour>,
}

/// A dial waiting for its connection: the peer, the addresses not yet
/// tried, and who to tell.
type PendingDial = (
    PeerId,
    Vec<Vec<Multiaddr>>,
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
    let keypair = config
        .keypair
        .clone()
        .unwrap_or_else(identity::Keypair::generate_ed25519);
    let start = |e: &dyn std::fmt::Display| NetError::Start(e.to_string());
    let (inbound, incoming) = crate::net::inbound::Behaviour::new(XFER);
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
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| start(&e))?
        .with_behaviour(
            |key, relay_client| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let me = key.public().to_peer_id();
                let mdns = if config.mdns {
                    // Re-query every minute (default: 5), so a machine that
                    // joins the LAN later is found soon.
                    let c = mdns::Config {
                        query_interval: Duration::from_secs(60),
                        ..Default::default()
                    };
                    Some(mdns::tokio::Behaviour::new(c, me)?)
                } else {
                    None
                };
                let mut kad_config = kad::Config::new(KAD);
                kad_config.disjoint_query_paths(true);
                kad_config.set_query_timeout(Duration::from_secs(30));
                // Provider records are re-published hourly and expire after a day
                // without one, so a node that went away drops out.
                kad_config.set_provider_publication_interval(Some(Duration::from_secs(3600)));
                kad_config.set_provider_record_ttl(Some(Duration::from_secs(24 * 3600)));
                let store = kad::store::MemoryStore::with_config(
                    me,
                    kad::store::MemoryStoreConfig {
                        max_provided_keys: 100_000,
                        ..Default::default()
                    },
                );
                let mut kad = kad::Behaviour::with_config(me, store, kad_config);
                kad.set_mode(config.dht_server.then_some(kad::Mode::Server));
                let relay = config.relay_server.then(|| {
                    relay::Behaviour::new(
                        me,
                        relay::Config {
                            max_circuit_bytes: config.relay_max_circuit_bytes,
                            max_circuit_duration: Duration::from_secs(3600),
                            ..Default::default()
                        },
                    )
                });
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(limits),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/peerdrop/1.0.0".into(), key.public())
                            .with_push_listen_addr_updates(true),
                    ),
                    ping: ping::Behaviour::default(),
                    stream: libp2p_stream::Behaviour::new(),
                    inbound,
                    mdns: mdns.into(),
                    kad,
                    relay_client,
                    relay: relay.into(),
                    dcutr: dcutr::Behaviour::new(me),
                    autonat: autonat::v2::client::Behaviour::default(),
                    autonat_server: config
                        .dht_server
                        .then(autonat::v2::server::Behaviour::default)
                        .into(),
                })
            },
        )
        .map_err(|e| start(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    let mut swarm = swarm;
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
    tokio::spawn(EventLoop::new(swarm, config.relay_server).run(rx));
    Ok(Client {
        peer_id,
        commands,
        control,
        incoming: Arc::new(Mutex::new(Some(incoming))),
    })
}

/// State of the swarm task. Owned by that task alone.
struct EventLoop {
    swarm: Swarm<Behaviour>,
    /// Whether this node relays for others (it then declares its listen
    /// addresses as external).
    relay_server: bool,
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
    /// Dials that found another dial to the same peer under way, waiting
    /// for its outcome.
    dial_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NetError>>>>,
    /// Peers on the LAN, from mDNS (hints only: Noise authenticates them).
    discovered: HashMap<PeerId, Vec<Multiaddr>>,
    /// DHT provider lookups in progress: who to tell, and what was found.
    pending_providers: HashMap<kad::QueryId, (oneshot::Sender<Vec<PeerId>>, Vec<PeerId>)>,
    /// Set while shutting down: the reply to send once all connections closed.
    shutdown: Option<oneshot::Sender<()>>,
}

impl EventLoop {
    fn new(swarm: Swarm<Behaviour>, relay_server: bool) -> EventLoop {
        EventLoop {
            swarm,
            relay_server,
            listeners: Vec::new(),
            pending_listen: HashMap::new(),
            pending_dial: HashMap::new(),
            connected: HashMap::new(),
            dial_waiters: HashMap::new(),
            discovered: HashMap::new(),
            pending_providers: HashMap::new(),
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
            Command::Dial(peer, addrs, reply) => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return false;
                }
                if addrs.is_empty() {
                    // Let the behaviours (mDNS, the DHT) supply addresses.
                    let opts = DialOpts::peer_id(peer)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let id = opts.connection_id();
                    match self.swarm.dial(opts) {
                        Ok(()) => {
                            self.pending_dial.insert(id, (peer, Vec::new(), reply));
                        }
                        Err(DialError::DialPeerConditionFalse(_)) => self.wait_for(peer, reply),
                        Err(e) => {
                            let _ = reply.send(Err(NetError::Dial {
                                peer,
                                reason: e.to_string(),
                            }));
                        }
                    }
                    return false;
                }
                // Two rounds: TCP-like addresses (including relay circuits)
                // together, then QUIC, which rust-libp2p runs at about half
                // the speed for bulk. Within a round every address is tried
                // at once, so an unreachable private address cannot hold up
                // a working one.
                let (tcp, quic): (Vec<_>, Vec<_>) =
                    addrs.into_iter().partition(|a| !crate::net::is_quic(a));
                let rounds = [quic, tcp].into_iter().filter(|g| !g.is_empty()).collect();
                self.dial_next(peer, rounds, reply, String::from("no address to try"));
            }
            Command::Discovered(reply) => {
                let _ = reply.send(
                    self.discovered
                        .iter()
                        .map(|(p, a)| (*p, a.clone()))
                        .collect(),
                );
            }
            Command::Provide(key) => {
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(kad::RecordKey::new(&key))
                {
                    Ok(_) => tracing::debug!("announcing a share in the DHT"),
                    Err(e) => tracing::warn!("cannot announce a share in the DHT: {e}"),
                }
            }
            Command::Providers(key, reply) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&key));
                self.pending_providers.insert(id, (reply, Vec::new()));
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

    /// Answers `reply` when the dial already under way to `peer` ends (or at
    /// once if connected).
    fn wait_for(&mut self, peer: PeerId, reply: oneshot::Sender<Result<(), NetError>>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
        } else {
            self.dial_waiters.entry(peer).or_default().push(reply);
        }
    }

    /// Dials the last round of addresses in `rest` (stored reversed), moving
    /// to the next round when it fails.
    fn dial_next(
        &mut self,
        peer: PeerId,
        mut rest: Vec<Vec<Multiaddr>>,
        reply: oneshot::Sender<Result<(), NetError>>,
        last_error: String,
    ) {
        loop {
            let Some(round) = rest.pop() else {
                let _ = reply.send(Err(NetError::Dial {
                    peer,
                    reason: last_error,
                }));
                return;
            };
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(round)
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.pending_dial.insert(id, (peer, rest, reply));
                    return;
                }
                Err(DialError::DialPeerConditionFalse(_)) => {
                    // Already connected or being dialled: wait for that one.
                    self.wait_for(peer, reply);
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
                // A relay must announce where it can be reached, or it turns
                // reservations down; a relay server is assumed reachable on
                // its non-loopback listen addresses.
                if self.relay_server
                    && !crate::net::is_loopback(&address)
                    && !address.iter().any(|p| p == Protocol::P2pCircuit)
                {
                    self.swarm.add_external_address(address.clone());
                }
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
                for w in self.dial_waiters.remove(&peer_id).unwrap_or_default() {
                    let _ = w.send(Ok(()));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let Some(waiters) = peer_id.and_then(|p| self.dial_waiters.remove(&p)) {
                    for w in waiters {
                        let _ = w.send(Err(NetError::Dial {
                            peer: peer_id.expect("checked above"),
                            reason: error.to_string(),
                        }));
                    }
                }
                if let Some((peer, rest, reply)) = self.pending_dial.remove(&connection_id) {
                    self.dial_next(peer, rest, reply, error.to_string());
                }
            }
            // Peers that speak our DHT protocol join the routing table with
            // the addresses they listen on (inbound peers would not be added
            // otherwise).
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&KAD) => {
                for a in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    tracing::debug!(%peer, %addr, "found on the LAN");
                    let addrs = self.discovered.entry(peer).or_default();
                    // Bounded: spoofed announcements cannot grow this forever.
                    if addrs.len() < 16 && !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
                if self.discovered.len() > 1024 {
                    let extra: Vec<PeerId> = self.discovered.keys().skip(1024).copied().collect();
                    for p in extra {
                        self.discovered.remove(&p);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    if let Some(a) = self.discovered.get_mut(&peer) {
                        a.retain(|x| *x != addr);
                        if a.is_empty() {
                            self.discovered.remove(&peer);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(r),
                step,
                ..
            })) => {
                let me = *self.swarm.local_peer_id();
                let mut finished = step.last;
                match r {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                        for p in providers.into_iter().filter(|p| *p != me) {
                            // Dial now, while the query still knows the
                            // provider's addresses.
                            let _ = self.swarm.dial(
                                DialOpts::peer_id(p)
                                    .condition(PeerCondition::DisconnectedAndNotDialing)
                                    .build(),
                            );
                            if let Some((_, found)) = self.pending_providers.get_mut(&id) {
                                if !found.contains(&p) {
                                    found.push(p);
                                }
                            }
                        }
                        // The first answer is enough to start fetching; the
                        // query goes on and more providers are dialled.
                        if self
                            .pending_providers
                            .get(&id)
                            .is_some_and(|(_, f)| !f.is_empty())
                        {
                            finished = true;
                        }
                    }
                    Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => {
                        finished = true
                    }
                    Err(e) => {
                        tracing::debug!("DHT lookup: {e}");
                        finished = true;
                    }
                }
                if finished {
                    if let Some((reply, found)) = self.pending_providers.remove(&id) {
                        let _ = reply.send(found);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => tracing::debug!(?e, "dht"),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => tracing::info!(?e, "hole punching"),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => tracing::info!(?e, "relay"),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => {
                tracing::debug!(?e, "reachability test")
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

/// Splits `/…/p2p/PEER` into the peer and the address before it.
pub fn split_p2p(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, a)),
        _ => None,
    }
}
