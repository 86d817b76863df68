//! The task that owns the swarm: it runs commands from [`super::Client`]s
//! and reacts to swarm events.

use std::collections::HashMap;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{identify, kad, mdns, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::{Command, NetError, KAD};

/// A dial waiting for its connection: the peer, the addresses not yet
/// tried, and who to tell.
type PendingDial = (
    PeerId,
    Vec<Vec<Multiaddr>>,
    oneshot::Sender<Result<(), NetError>>,
);

/// State of the swarm task. Owned by that task alone.
pub(super) struct EventLoop {
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
    pub(super) fn new(swarm: Swarm<Behaviour>, relay_server: bool) -> EventLoop {
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

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
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
