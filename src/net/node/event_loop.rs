//! The task that owns the swarm: it runs commands from [`super::Client`]s
//! and reacts to swarm events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::NewListenAddr;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, FromSwarm, NetworkBehaviour, SwarmEvent};
use libp2p::{autonat, dcutr, identify, kad, mdns, relay, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::lan::{LanPeers, MAX_BEHAVIOUR_RECORDS};
use super::reach::Reach;
use super::{Command, NetError, NodeConfig, Role, StreamCounters, KAD};
use crate::net::addr::{is_relayed, relay_of, remote_addr};
use crate::net::autorelay::{Action, AutoRelay, AutoRelayConfig};
use crate::net::status::{ReachStatus, Reachability};

/// How often deadlines and the relay choice are looked at.
const TICK: Duration = Duration::from_millis(250);
/// Least time between two DHT bootstraps started by new DHT servers.
const REBOOTSTRAP: Duration = Duration::from_secs(5);
/// A DHT lookup for providers answers this long after its first provider
/// (or when the query ends): a Sybil that answers first must not hide the
/// real providers (audit F-05).
const PROVIDER_GRACE: Duration = Duration::from_secs(2);
/// Most providers one lookup collects.
const MAX_PROVIDERS: usize = 64;

/// A DHT lookup for a share's providers in progress.
struct ProviderLookup {
    /// Who to tell.
    reply: oneshot::Sender<Vec<PeerId>>,
    /// The providers found so far, first found first.
    found: Vec<PeerId>,
    /// When the first provider was found.
    first_at: Option<Instant>,
}

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
    /// Whether this node relays for others whatever AutoNAT says (it then
    /// declares its listen addresses as external).
    relay_forced: bool,
    /// Whether the node offers a relay service at all.
    relay_service: bool,
    /// The node's DHT role.
    dht_role: Role,
    /// How long a relayed dial waits for hole punching.
    punch_wait: Duration,
    /// Connections, peers met, reachability, relays.
    reach: Reach,
    /// Inbound data streams counted by connection kind.
    streams: Arc<StreamCounters>,
    /// When a DHT bootstrap was last started for a new DHT server.
    last_bootstrap: Option<Instant>,
    /// Every listener added, for shutdown.
    listeners: Vec<libp2p::core::transport::ListenerId>,
    /// Listen requests waiting for their first address.
    pending_listen: HashMap<
        libp2p::core::transport::ListenerId,
        (Multiaddr, oneshot::Sender<Result<Multiaddr, NetError>>),
    >,
    /// Dials waiting for their connection, with the addresses not yet tried.
    pending_dial: HashMap<ConnectionId, PendingDial>,
    /// Dials that found another of these dials to the same peer under way,
    /// waiting for its outcome.
    dial_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NetError>>>>,
    /// Peers on the LAN, from mDNS (hints only: Noise authenticates them).
    discovered: LanPeers,
    /// The node's listen addresses, to tell a replaced mDNS behaviour.
    listen_addrs: Vec<(ListenerId, Multiaddr)>,
    /// DHT provider lookups in progress.
    pending_providers: HashMap<kad::QueryId, ProviderLookup>,
    /// Set while shutting down: the reply to send once all connections closed.
    shutdown: Option<oneshot::Sender<()>>,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        config: &NodeConfig,
        streams: Arc<StreamCounters>,
    ) -> EventLoop {
        // Always there, to track configured relays; it picks relays itself
        // only with `auto_relay`.
        let reach = Reach::new(AutoRelay::new(AutoRelayConfig {
            want: if config.auto_relay { 2 } else { 0 },
            ..AutoRelayConfig::default()
        }));
        EventLoop {
            swarm,
            relay_forced: config.relay_server == Role::On,
            relay_service: config.relay_server != Role::Off,
            dht_role: config.dht_server,
            punch_wait: config.punch_wait,
            reach,
            streams,
            last_bootstrap: None,
            listeners: Vec::new(),
            pending_listen: HashMap::new(),
            pending_dial: HashMap::new(),
            dial_waiters: HashMap::new(),
            discovered: LanPeers::default(),
            listen_addrs: Vec::new(),
            pending_providers: HashMap::new(),
            shutdown: None,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.housekeeping(),
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
                    if let Some(relay) = relay_of(&addr) {
                        self.reach.relay_listeners.insert(id, relay);
                        if let Some(ar) = &mut self.reach.autorelay {
                            ar.configured(relay, Instant::now());
                        }
                    }
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
                if self.pending_dial.values().any(|(p, ..)| *p == peer) {
                    self.wait_for(peer, reply);
                    return false;
                }
                // Dials other behaviours started are not waited for: a
                // hole punch's dial to addresses a NAT filters takes the
                // transport's whole timeout (10 s) to fail, and one starts
                // on every new relayed connection.
                if addrs.is_empty() {
                    // Let the behaviours (mDNS, the DHT) supply addresses.
                    let opts = DialOpts::peer_id(peer)
                        .condition(PeerCondition::Disconnected)
                        .build();
                    let id = opts.connection_id();
                    match self.swarm.dial(opts) {
                        Ok(()) => {
                            self.pending_dial.insert(id, (peer, Vec::new(), reply));
                        }
                        Err(DialError::DialPeerConditionFalse(_)) => {
                            let _ = reply.send(Ok(()));
                        }
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
                let _ = reply.send(self.discovered.list());
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
            Command::Unprovide(key) => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&kad::RecordKey::new(&key));
            }
            Command::Providers(key, reply) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&key));
                self.pending_providers.insert(
                    id,
                    ProviderLookup {
                        reply,
                        found: Vec::new(),
                        first_at: None,
                    },
                );
            }
            Command::Connected(reply) => {
                let _ = reply.send(self.reach.one_addr_each());
            }
            Command::ReachStatus(reply) => {
                let _ = reply.send(self.reach_status());
            }
            Command::KnownPeers(reply) => {
                let _ = reply.send(self.reach.known_peers());
            }
            Command::WaitDirect(peer, timeout, reply) => {
                self.reach
                    .await_direct(peer, Instant::now() + timeout, reply);
            }
            Command::OnlyRelayed(peer, reply) => {
                let _ = reply.send(self.reach.only_relayed(&peer));
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

    /// Answers `reply` when this loop's dial already under way to `peer`
    /// ends (or at once if connected).
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
                // Another dial (a hole punch, an inbound connection) may
                // have connected meanwhile.
                let connected = self.swarm.is_connected(&peer);
                let waiters = self.dial_waiters.remove(&peer).unwrap_or_default();
                for r in waiters.into_iter().chain([reply]) {
                    let _ = r.send(if connected {
                        Ok(())
                    } else {
                        Err(NetError::Dial {
                            peer,
                            reason: last_error.clone(),
                        })
                    });
                }
                return;
            };
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::Disconnected)
                .addresses(round)
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.pending_dial.insert(id, (peer, rest, reply));
                    return;
                }
                Err(DialError::DialPeerConditionFalse(_)) => {
                    // Connected already.
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

    /// Periodic work: deadlines of waiting callers, and the relay choice.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.reach.expire(now);
        self.answer_provider_lookups(now);
        let actions = match &mut self.reach.autorelay {
            Some(ar) => ar.poll(now),
            None => return,
        };
        for a in actions {
            match a {
                Action::Reserve { relay, addr } => match self.swarm.listen_on(addr.clone()) {
                    Ok(id) => {
                        tracing::info!(%relay, %addr, "asking a relay for a reservation");
                        self.listeners.push(id);
                        self.reach.relay_listeners.insert(id, relay);
                    }
                    Err(e) => {
                        tracing::debug!(%relay, "cannot reserve on relay: {e}");
                        if let Some(ar) = &mut self.reach.autorelay {
                            ar.lost(relay, now);
                        }
                    }
                },
                Action::Release { relay } => {
                    let ids: Vec<_> = self
                        .reach
                        .relay_listeners
                        .iter()
                        .filter(|(_, r)| **r == relay)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        self.reach.relay_listeners.remove(&id);
                        self.listeners.retain(|l| *l != id);
                        self.swarm.remove_listener(id);
                    }
                }
            }
        }
    }

    /// The node's confirmed external addresses, relayed ones left out.
    fn direct_external(&self) -> Vec<Multiaddr> {
        self.swarm
            .external_addresses()
            .filter(|a| !is_relayed(a))
            .cloned()
            .collect()
    }

    /// Re-reads the reachability verdict and sets the roles that follow
    /// from it.
    fn update_roles(&mut self) {
        let confirmed = self.direct_external();
        let Some(v) = self.reach.update_verdict(&confirmed) else {
            return;
        };
        tracing::info!(reachability = ?v, "reachability changed");
        if self.dht_role == Role::Auto {
            let mode = if v == Reachability::Public {
                kad::Mode::Server
            } else {
                kad::Mode::Client
            };
            self.swarm.behaviour_mut().kad.set_mode(Some(mode));
        }
    }

    /// What identify told about `peer`: DHT servers join the routing
    /// table with the addresses they listen on (inbound peers would not be
    /// added otherwise), relays become AutoRelay candidates.
    fn identified(&mut self, peer: PeerId, info: identify::Info) {
        let now = Instant::now();
        let new_server = info.protocols.contains(&KAD) && !self.reach.known_dht_server(&peer);
        let relay_addrs = self.reach.identified(peer, &info, now);
        if let Some(ar) = &mut self.reach.autorelay {
            match relay_addrs {
                Some(addrs) => ar.offer(peer, addrs, now),
                None => ar.withdraw(&peer),
            }
        }
        if info.protocols.contains(&KAD) {
            for a in info.listen_addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer, a);
            }
        }
        // A peer that just became a DHT server (public daemons do once
        // AutoNAT confirms them) can introduce the rest of the network,
        // and with it more relays: look again, but not too often.
        if new_server
            && self
                .last_bootstrap
                .is_none_or(|t| now.duration_since(t) >= REBOOTSTRAP)
        {
            self.last_bootstrap = Some(now);
            if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
                tracing::debug!("DHT bootstrap: {e}");
            }
        }
    }

    /// The snapshot for [`super::Client::reach_status`].
    fn reach_status(&self) -> ReachStatus {
        let public = self.reach.reachability == Reachability::Public;
        ReachStatus {
            reachability: self.reach.reachability,
            external_addrs: self.direct_external(),
            relay_service: self.relay_service && public,
            dht_server: self.dht_role == Role::On || (self.dht_role == Role::Auto && public),
            relays: self
                .reach
                .autorelay
                .as_ref()
                .map(|a| a.status())
                .unwrap_or_default(),
            connections: self.reach.connections(),
            punches: self.reach.punches,
            data_streams: self.streams.snapshot(),
            lan_peers: self.discovered.len(),
        }
    }

    /// Answers the provider lookups whose grace after their first provider
    /// is over; the DHT queries themselves are stopped.
    fn answer_provider_lookups(&mut self, now: Instant) {
        let due: Vec<kad::QueryId> = self
            .pending_providers
            .iter()
            .filter(|(_, l)| l.first_at.is_some_and(|t| now >= t + PROVIDER_GRACE))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(l) = self.pending_providers.remove(&id) {
                let _ = l.reply.send(l.found);
            }
            if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                q.finish();
            }
        }
    }

    /// libp2p's mDNS behaviour keeps every (peer, address) announced until
    /// its TTL runs out, with no bound (audit F-05); when that list grows
    /// past [`MAX_BEHAVIOUR_RECORDS`] the behaviour is replaced by a fresh
    /// one, told the node's listen addresses. The node's own bounded table
    /// keeps the peers seen first.
    fn check_mdns_flood(&mut self) {
        let me = *self.swarm.local_peer_id();
        let Some(mdns) = self.swarm.behaviour_mut().mdns.as_mut() else {
            return;
        };
        if mdns.discovered_nodes().len() <= MAX_BEHAVIOUR_RECORDS {
            return;
        }
        tracing::warn!(
            records = mdns.discovered_nodes().len(),
            "flood of LAN announcements: restarting mDNS"
        );
        match super::behaviour::mdns_behaviour(me) {
            Ok(mut fresh) => {
                for (listener_id, addr) in &self.listen_addrs {
                    fresh.on_swarm_event(FromSwarm::NewListenAddr(NewListenAddr {
                        listener_id: *listener_id,
                        addr,
                    }));
                }
                *mdns = fresh;
            }
            Err(e) => tracing::warn!("cannot restart mDNS: {e}"),
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
                self.listen_addrs.push((listener_id, address.clone()));
                // A relay must announce where it can be reached, or it turns
                // reservations down; a relay server is assumed reachable on
                // its non-loopback listen addresses.
                if self.relay_forced && !crate::net::is_loopback(&address) && !is_relayed(&address)
                {
                    self.swarm.add_external_address(address.clone());
                }
                if let Some(relay) = self.reach.relay_listeners.get(&listener_id) {
                    if let Some(ar) = &mut self.reach.autorelay {
                        ar.circuit_addr_added(*relay, address.clone());
                    }
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
            SwarmEvent::ExpiredListenAddr {
                listener_id,
                address,
            } => {
                self.listen_addrs
                    .retain(|(l, a)| !(*l == listener_id && *a == address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                self.listen_addrs.retain(|(l, _)| *l != listener_id);
                if let Some(relay) = self.reach.relay_listeners.remove(&listener_id) {
                    tracing::info!(%relay, ?reason, "relay reservation ended");
                    if let Some(ar) = &mut self.reach.autorelay {
                        ar.lost(relay, Instant::now());
                    }
                }
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
                // An accepted circuit counts as relayed, not direct.
                let addr = &remote_addr(&endpoint);
                if is_relayed(addr) {
                    // At info: a transfer that outlives a relay's limits
                    // goes on through one circuit after another.
                    tracing::info!(peer = %peer_id, %addr, "connected through a relay");
                } else {
                    tracing::debug!(peer = %peer_id, %addr, "connected");
                }
                for relayed in self.reach.connected(peer_id, connection_id, addr) {
                    tracing::info!(peer = %peer_id, %addr, "direct connection; closing the relayed one");
                    self.swarm.close_connection(relayed);
                }
                let mut replies: Vec<_> = self.dial_waiters.remove(&peer_id).unwrap_or_default();
                if let Some((_, _, reply)) = self.pending_dial.remove(&connection_id) {
                    replies.push(reply);
                }
                let punch = is_relayed(addr)
                    && !self.punch_wait.is_zero()
                    && !self.reach.unpunchable(&peer_id, Instant::now());
                for reply in replies {
                    if punch {
                        // Hole punching starts on this connection: give it
                        // a moment, so bulk streams go on the direct one.
                        let deadline = Instant::now() + self.punch_wait;
                        self.reach.await_punch(peer_id, deadline, reply);
                    } else {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                // Waiters are answered when this loop's own dial to the
                // peer gives up (in `dial_next`), not when any dial fails.
                if let Some((peer, rest, reply)) = self.pending_dial.remove(&connection_id) {
                    self.dial_next(peer, rest, reply, error.to_string());
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if self.discovered.add(peer, addr.clone()) {
                        tracing::debug!(%peer, %addr, "found on the LAN");
                    } else {
                        tracing::trace!(%peer, %addr, "LAN announcement over a bound; ignored");
                    }
                }
                self.check_mdns_flood();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    self.discovered.expire(&peer, &addr);
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
                            if let Some(l) = self.pending_providers.get_mut(&id) {
                                if !l.found.contains(&p) && l.found.len() < MAX_PROVIDERS {
                                    l.found.push(p);
                                    l.first_at.get_or_insert_with(Instant::now);
                                }
                            }
                        }
                        // Not finished at the first answer: the lookup goes
                        // on for PROVIDER_GRACE (housekeeping answers), so
                        // providers found by other paths are heard too.
                        if self
                            .pending_providers
                            .get(&id)
                            .is_some_and(|l| l.found.len() >= MAX_PROVIDERS)
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
                    if let Some(l) = self.pending_providers.remove(&id) {
                        let _ = l.reply.send(l.found);
                    }
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => tracing::debug!(?e, "dht"),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "hole punching succeeded");
                    self.reach.punches.succeeded += 1;
                }
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, "hole punching failed: {e}");
                    self.reach.punch_failed(remote_peer_id);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => {
                tracing::info!(?e, "relay");
                if let relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } = e {
                    if let Some(ar) = &mut self.reach.autorelay {
                        ar.accepted(relay_peer_id);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::v2::client::Event {
                tested_addr,
                result,
                ..
            })) => {
                tracing::debug!(%tested_addr, ok = result.is_ok(), "reachability test");
                self.reach.autonat_result(result.is_ok());
                self.update_roles();
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.update_roles();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!(%address, "external address expired");
                self.update_roles();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                if self.reach.closed(peer_id, connection_id) {
                    tracing::info!(peer = %peer_id, ?cause, "relayed connection closed");
                } else {
                    tracing::debug!(peer = %peer_id, ?cause, "connection closed");
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
