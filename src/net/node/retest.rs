//! AutoNAT v2 reachability tests that are repeated.
//!
//! libp2p-autonat 0.16's client tests each external address candidate
//! once: an address whose dial-back failed stays failed, and one confirmed
//! stays confirmed, for the client's life. A daemon whose first test came
//! before it could be reached stayed private; one that stopped being
//! reachable would have stayed public. The client has no call to test an
//! address again, so [`Retest`] keeps its own view of every candidate
//! ([`Schedule`]: back-off after a failure, a periodic re-check once
//! confirmed) and, when one is due, replaces the client with a fresh one
//! that is told only what it must test now. A fresh client needs three
//! things the swarm told the old one only once:
//!
//! - the live connections (replayed as `ConnectionEstablished`: the client
//!   panics on a connection it never saw);
//! - the candidates due (replayed as `NewExternalAddrCandidate`);
//! - which peers are AutoNAT servers, which the client learns only from a
//!   connection's handler when the peer's protocols are first reported.
//!   [`Handler`] wraps the client's handler and, told to, reports the
//!   dial-request protocol removed and added again on its connection; the
//!   swarm passes both changes to every handler of the connection, and the
//!   client's says the peer is a server anew. No other handler acts on that
//!   protocol.
//!
//! A client tests only through a connection it dialled to a server. A quiet
//! daemon may have none left (idle connections close after a minute), so a
//! swap with none dials back one or two of the servers last connected.
//!
//! Handlers outlive a client swap: a test that was running when the client
//! was replaced ends in the fresh client, which ignores a success it did not
//! ask for (the address was replayed to it, so it is tested again) and
//! reports a failure as usual. docs/PROTOCOL.md, section 9.

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::autonat::v2::client;
use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::{
    ConnectionEvent, ConnectionHandlerEvent, ProtocolSupport, ProtocolsChange,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionId, FromSwarm, NetworkBehaviour,
    NewExternalAddrCandidate, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};

use crate::net::addr::is_relayed;

/// The protocol an AutoNAT v2 server takes test requests on.
const DIAL_REQUEST: StreamProtocol = StreamProtocol::new("/libp2p/autonat/2/dial-request");

/// Wait after a candidate's first failed test; doubled at each failure
/// after it, up to [`MAX_BACKOFF`].
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait between two tests of a candidate that keeps failing.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a confirmed address goes before it is tested again: a node
/// that stopped being reachable goes private within about this (plus two
/// failed tests, [`EXPIRE_AFTER`]).
pub(super) const RECHECK: Duration = Duration::from_secs(180);
/// Failed tests in a row that withdraw a confirmed address: one could be
/// the server's fault (the one asked is picked at random).
const EXPIRE_AFTER: u32 = 2;
/// A candidate handed to a client that has given no outcome for this long
/// (no server was connected, or the request broke, which the client retries
/// silently, or the client never took it) is handed to a fresh client.
const STALL: Duration = Duration::from_secs(60);
/// Least time between two client swaps, so tests handed to one have time
/// to end (each is bounded by 10 s on both sides) before the next.
const MIN_GAP: Duration = Duration::from_secs(10);
/// Most candidates followed; the client itself keeps every one it was told
/// of, until it is replaced.
const MAX_CANDIDATES: usize = 16;
/// Most times a candidate is replayed to a fresh client: the client tests
/// the most often reported first, and this keeps their order.
const MAX_REPLAYED_SCORE: u32 = 8;
/// Most AutoNAT servers remembered, to dial when none is connected.
const MAX_SERVERS: usize = 8;
/// Most of them dialled at one swap.
const DIAL_SERVERS: usize = 2;
/// How often the schedule is looked at.
const TICK: Duration = Duration::from_secs(1);

/// What is known of one external address candidate.
#[derive(Clone, Debug)]
struct Candidate {
    /// How often it was reported (identify's observed addresses).
    score: u32,
    /// When it was last reported or tested.
    seen: Instant,
    /// Whether the swarm holds it as a confirmed external address.
    confirmed: bool,
    /// Failed tests in a row.
    failures: u32,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The current client holds it and tests it on its own, since then.
    Testing(Instant),
    /// Not to be tested before then: a back-off after a failure, or the
    /// next check of a confirmed address.
    Waiting(Instant),
}

/// When each candidate is to be tested again (pure: time is passed in).
#[derive(Default)]
pub(super) struct Schedule {
    candidates: HashMap<Multiaddr, Candidate>,
    last_swap: Option<Instant>,
}

impl Schedule {
    /// `addr` was reported as a candidate; true if the current client is to
    /// hear of it (a new candidate, or one it is testing). One waiting is
    /// kept from it: the client would test it at once if it did not know
    /// it, or ignore it if it did.
    pub(super) fn reported(&mut self, addr: &Multiaddr, now: Instant) -> bool {
        if let Some(c) = self.candidates.get_mut(addr) {
            c.score = c.score.saturating_add(1);
            c.seen = now;
            return matches!(c.state, State::Testing(_));
        }
        self.insert(addr, State::Testing(now), now)
    }

    /// A test of `addr` ended; true if the address is to be withdrawn from
    /// the swarm's confirmed external addresses.
    pub(super) fn tested(&mut self, addr: &Multiaddr, ok: bool, now: Instant) -> bool {
        if !self.candidates.contains_key(addr) && !self.insert(addr, State::Testing(now), now) {
            return false;
        }
        let c = self.candidates.get_mut(addr).expect("just inserted");
        c.seen = now;
        if ok {
            c.confirmed = true;
            c.failures = 0;
            c.state = State::Waiting(now + RECHECK);
            return false;
        }
        c.failures = c.failures.saturating_add(1);
        c.state = State::Waiting(now + backoff(c.failures));
        if c.confirmed && c.failures >= EXPIRE_AFTER {
            c.confirmed = false;
            return true;
        }
        false
    }

    /// If a fresh client is due now, the candidates to tell it of, with
    /// their scores: those whose wait is over, and those the current client
    /// was still to test. Empty if none is due.
    pub(super) fn due(&mut self, now: Instant) -> Vec<(Multiaddr, u32)> {
        if self
            .last_swap
            .is_some_and(|t| now.duration_since(t) < MIN_GAP)
        {
            return Vec::new();
        }
        let is_due = |c: &Candidate| match c.state {
            State::Waiting(t) => t <= now,
            State::Testing(since) => now.duration_since(since) >= STALL,
        };
        if !self.candidates.values().any(is_due) {
            return Vec::new();
        }
        self.last_swap = Some(now);
        let mut v = Vec::new();
        for (a, c) in &mut self.candidates {
            if is_due(c) || matches!(c.state, State::Testing(_)) {
                c.state = State::Testing(now);
                v.push((a.clone(), c.score));
            }
        }
        v
    }

    /// Adds `addr`, making room if full by dropping the least reported
    /// unconfirmed candidate (the oldest of those); false if there is none.
    fn insert(&mut self, addr: &Multiaddr, state: State, now: Instant) -> bool {
        if self.candidates.len() >= MAX_CANDIDATES {
            let Some(victim) = self
                .candidates
                .iter()
                .filter(|(_, c)| !c.confirmed)
                .min_by_key(|(_, c)| (c.score, c.seen))
                .map(|(a, _)| a.clone())
            else {
                return false;
            };
            self.candidates.remove(&victim);
        }
        self.candidates.insert(
            addr.clone(),
            Candidate {
                score: 1,
                seen: now,
                confirmed: false,
                failures: 0,
                state,
            },
        );
        true
    }
}

/// The wait after the `failures`th failed test in a row.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// The AutoNAT v2 client, replaced by a fresh one whenever a candidate is
/// due for another test (see the module's text).
pub(super) struct Retest {
    client: client::Behaviour,
    schedule: Schedule,
    /// Live connections, to tell a fresh client of; as many as the swarm's
    /// connection limit allows.
    conns: HashMap<ConnectionId, (PeerId, ConnectedPoint)>,
    /// Connections we dialled to AutoNAT servers (those a client tests
    /// through).
    servers: HashMap<ConnectionId, PeerId>,
    /// Servers last connected that way, most recent first, with the
    /// address dialled.
    known_servers: VecDeque<(PeerId, Multiaddr)>,
    pending: VecDeque<ToSwarm<client::Event, In>>,
    /// Made at the first poll, inside the runtime.
    tick: Option<tokio::time::Interval>,
}

impl Retest {
    /// A client with no candidates yet.
    pub(super) fn new() -> Retest {
        Retest {
            client: client::Behaviour::default(),
            schedule: Schedule::default(),
            conns: HashMap::new(),
            servers: HashMap::new(),
            known_servers: VecDeque::new(),
            pending: VecDeque::new(),
            tick: None,
        }
    }

    /// Replaces the client with a fresh one told of every live connection,
    /// of the candidates `due`, and (through the handlers) of its servers.
    fn swap(&mut self, due: Vec<(Multiaddr, u32)>) {
        tracing::debug!(candidates = due.len(), "reachability: testing again");
        self.client = client::Behaviour::default();
        for (id, (peer, endpoint)) in &self.conns {
            self.client
                .on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                    peer_id: *peer,
                    connection_id: *id,
                    endpoint,
                    failed_addresses: &[],
                    other_established: 0,
                }));
        }
        for (addr, score) in &due {
            for _ in 0..(*score).clamp(1, MAX_REPLAYED_SCORE) {
                self.client
                    .on_swarm_event(FromSwarm::NewExternalAddrCandidate(
                        NewExternalAddrCandidate { addr },
                    ));
            }
        }
        for (id, (peer, endpoint)) in &self.conns {
            // Only a connection we dialled carries test requests.
            if endpoint.is_dialer() {
                self.pending.push_back(ToSwarm::NotifyHandler {
                    peer_id: *peer,
                    handler: NotifyHandler::One(*id),
                    event: In::Reannounce,
                });
            }
        }
        if self.servers.is_empty() {
            for (peer, addr) in self.known_servers.iter().take(DIAL_SERVERS) {
                tracing::debug!(%peer, "reachability: dialling an AutoNAT server to test through");
                let opts = DialOpts::peer_id(*peer)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::Always)
                    .build();
                self.pending.push_back(ToSwarm::Dial { opts });
            }
        }
    }

    /// The handler of connection `id` to `peer` found whether the peer is a
    /// server.
    fn server_found(&mut self, peer: PeerId, id: ConnectionId, server: bool) {
        if !server {
            self.servers.remove(&id);
            return;
        }
        self.servers.insert(id, peer);
        let Some((_, endpoint)) = self.conns.get(&id) else {
            return;
        };
        let addr = endpoint.get_remote_address();
        if is_relayed(addr) {
            return;
        }
        self.known_servers.retain(|(p, _)| *p != peer);
        self.known_servers.push_front((peer, addr.clone()));
        self.known_servers.truncate(MAX_SERVERS);
    }

    /// Passes an event of the client on, following test outcomes.
    fn client_event(
        &mut self,
        e: ToSwarm<client::Event, THandlerInEvent<client::Behaviour>>,
    ) -> ToSwarm<client::Event, In> {
        if let ToSwarm::GenerateEvent(ev) = &e {
            let ok = ev.result.is_ok();
            if self.schedule.tested(&ev.tested_addr, ok, Instant::now()) {
                tracing::info!(addr = %ev.tested_addr, "reachability: no longer reachable at this address");
                self.pending
                    .push_back(ToSwarm::ExternalAddrExpired(ev.tested_addr.clone()));
            }
        }
        e.map_in(In::Client)
    }
}

impl NetworkBehaviour for Retest {
    type ConnectionHandler = Handler;
    type ToSwarm = client::Event;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<Handler, ConnectionDenied> {
        let inner = self
            .client
            .handle_established_inbound_connection(id, peer, local, remote)?;
        Ok(Handler::new(inner, false))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<Handler, ConnectionDenied> {
        let inner = self
            .client
            .handle_established_outbound_connection(id, peer, addr, role, port_use)?;
        Ok(Handler::new(inner, true))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.conns
                    .insert(e.connection_id, (e.peer_id, e.endpoint.clone()));
            }
            FromSwarm::ConnectionClosed(e) => {
                self.conns.remove(&e.connection_id);
                self.servers.remove(&e.connection_id);
            }
            FromSwarm::NewExternalAddrCandidate(c)
                if !self.schedule.reported(c.addr, Instant::now()) =>
            {
                return;
            }
            _ => {}
        }
        self.client.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Out::Client(e) => self.client.on_connection_handler_event(peer, id, e),
            Out::Server(server) => self.server_found(peer, id, server),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<client::Event, In>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Poll::Ready(e);
            }
            if let Poll::Ready(e) = self.client.poll(cx) {
                return Poll::Ready(self.client_event(e));
            }
            let tick = self.tick.get_or_insert_with(|| {
                let mut t = tokio::time::interval(TICK);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            if tick.poll_tick(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.schedule.due(Instant::now());
            if !due.is_empty() {
                self.swap(due);
            }
        }
    }
}

type Inner = THandler<client::Behaviour>;

/// What [`Handler`] is told.
#[derive(Debug)]
pub(super) enum In {
    /// For the client's handler.
    Client(THandlerInEvent<client::Behaviour>),
    /// Report the peer's AutoNAT server support again, if it has it.
    Reannounce,
}

/// What [`Handler`] tells.
#[derive(Debug)]
pub(super) enum Out {
    /// From the client's handler.
    Client(THandlerOutEvent<client::Behaviour>),
    /// The peer of a connection we dialled supports test requests (true),
    /// or no longer does.
    Server(bool),
}

/// The client's connection handler, which can have the peer's AutoNAT
/// server support reported again (for a fresh client).
pub(super) struct Handler {
    inner: Inner,
    /// Whether we dialled the connection (the client's requests go only on
    /// those).
    outbound: bool,
    /// Whether the peer supports test requests, as last reported.
    server: bool,
    /// Server support changes to tell the behaviour (on dialled
    /// connections only).
    found: VecDeque<bool>,
    reports: VecDeque<ProtocolSupport>,
}

impl Handler {
    fn new(inner: Inner, outbound: bool) -> Handler {
        Handler {
            inner,
            outbound,
            server: false,
            found: VecDeque::new(),
            reports: VecDeque::new(),
        }
    }

    fn set_server(&mut self, server: bool) {
        if server != self.server && self.outbound {
            self.found.push_back(server);
        }
        self.server = server;
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = In;
    type ToBehaviour = Out;
    type InboundProtocol = <Inner as ConnectionHandler>::InboundProtocol;
    type OutboundProtocol = <Inner as ConnectionHandler>::OutboundProtocol;
    type InboundOpenInfo = <Inner as ConnectionHandler>::InboundOpenInfo;
    type OutboundOpenInfo = <Inner as ConnectionHandler>::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if let Some(r) = self.reports.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::ReportRemoteProtocols(r));
        }
        if let Some(server) = self.found.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(Out::Server(server)));
        }
        self.inner.poll(cx).map(|e| e.map_custom(Out::Client))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx).map(|e| e.map(Out::Client))
    }

    fn on_behaviour_event(&mut self, event: In) {
        match event {
            In::Client(e) => self.inner.on_behaviour_event(e),
            In::Reannounce if self.server => {
                let p = HashSet::from([DIAL_REQUEST]);
                self.reports.push_back(ProtocolSupport::Removed(p.clone()));
                self.reports.push_back(ProtocolSupport::Added(p));
            }
            In::Reannounce => {}
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        if let ConnectionEvent::RemoteProtocolsChange(change) = &event {
            match change {
                ProtocolsChange::Added(a) if a.clone().any(|p| *p == DIAL_REQUEST) => {
                    self.set_server(true)
                }
                ProtocolsChange::Removed(r) if r.clone().any(|p| *p == DIAL_REQUEST) => {
                    self.set_server(false)
                }
                _ => {}
            }
        }
        self.inner.on_connection_event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/203.0.113.4/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn a_failed_candidate_is_tested_again_after_a_doubling_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let a = addr(4001);
        assert!(s.reported(&a, t0), "a new candidate goes to the client");
        assert!(s.due(t0).is_empty(), "nothing failed yet");
        let mut now = t0 + Duration::from_secs(1);
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(!s.tested(&a, false, now));
            assert!(
                !s.reported(&a, now),
                "a candidate backing off is kept from the client"
            );
            let failed = now;
            // The first tick at which it is handed to a fresh client.
            while s.due(now).is_empty() {
                now += TICK;
                assert!(now - failed <= MAX_BACKOFF + MIN_GAP, "never tested again");
            }
            waits.push((now - failed).as_secs());
            now += Duration::from_secs(2);
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_confirmed_address_is_rechecked_and_withdrawn_after_two_failures() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let a = addr(4001);
        s.reported(&a, t0);
        assert!(!s.tested(&a, true, t0));
        assert!(s.due(t0 + RECHECK - TICK).is_empty(), "rechecked too soon");
        let t1 = t0 + RECHECK;
        assert_eq!(s.due(t1), vec![(a.clone(), 1)]);
        assert!(
            !s.tested(&a, false, t1),
            "one failure could be the server's"
        );
        let t2 = t1 + FIRST_BACKOFF;
        assert_eq!(
            s.due(t2 + MIN_GAP).len(),
            1,
            "a failed recheck is retried soon"
        );
        assert!(
            s.tested(&a, false, t2 + MIN_GAP),
            "two failures withdraw it"
        );
        assert!(
            !s.tested(&a, false, t2 + MIN_GAP),
            "withdrawn once, not at every failure"
        );
        // It comes back at the next success.
        assert!(!s.tested(&a, true, t2 + 2 * MIN_GAP));
        assert!(s.candidates[&a].confirmed);
    }

    #[test]
    fn a_fresh_client_gets_the_due_and_the_untested_but_not_the_waiting() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let (failed, untested, confirmed) = (addr(1), addr(2), addr(3));
        for a in [&failed, &untested, &confirmed] {
            s.reported(a, t0);
        }
        s.reported(&untested, t0);
        s.tested(&failed, false, t0);
        s.tested(&confirmed, true, t0);
        let mut due = s.due(t0 + MIN_GAP);
        due.sort();
        let mut want = vec![(failed, 1), (untested, 2)];
        want.sort();
        assert_eq!(due, want);
        assert!(
            s.due(t0 + MIN_GAP + TICK).is_empty(),
            "two swaps at least MIN_GAP apart"
        );
    }

    #[test]
    fn a_candidate_without_an_outcome_is_handed_on_after_a_stall() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.reported(&addr(1), t0);
        assert!(s.due(t0 + STALL - TICK).is_empty());
        assert_eq!(s.due(t0 + STALL).len(), 1);
    }

    #[test]
    fn candidates_are_bounded_and_confirmed_ones_are_kept() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let kept = addr(1);
        s.reported(&kept, t0);
        s.tested(&kept, true, t0);
        for p in 2..200 {
            s.reported(&addr(p), t0 + Duration::from_millis(p.into()));
        }
        assert_eq!(s.candidates.len(), MAX_CANDIDATES);
        assert!(s.candidates.contains_key(&kept));
        assert!(s.candidates.contains_key(&addr(199)), "the newest is kept");
    }
}
