//! AutoRelay: a node that is not publicly reachable picks relays itself
//! among the peers it knows that offer the relay (circuit v2 hop) protocol,
//! holds reservations on [`AutoRelayConfig::want`] of them, and replaces one
//! that is lost or full.
//!
//! This is the decision logic only, driven by what the swarm task sees and
//! answering with [`Action`]s for it to carry out; it does no I/O, so it is
//! tested on its own. The relay client renews accepted reservations by
//! itself; a reservation that fails (refused, full, connection lost) ends
//! its listener, which is reported here as [`AutoRelay::lost`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::net::status::{Reachability, RelayState, RelayStatus};

/// How AutoRelay behaves.
#[derive(Clone, Debug)]
pub struct AutoRelayConfig {
    /// Reservations to hold at once.
    pub want: usize,
    /// Relay candidates remembered (the oldest are forgotten first).
    pub max_candidates: usize,
    /// How long a relay that failed is not asked again.
    pub backoff: Duration,
    /// How long a reservation request may stay unanswered before another
    /// relay is tried instead.
    pub request_timeout: Duration,
}

impl Default for AutoRelayConfig {
    fn default() -> Self {
        AutoRelayConfig {
            want: 2,
            max_candidates: 64,
            backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(20),
        }
    }
}

/// What the swarm task is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Listen on `addr` (`…/p2p/RELAY/p2p-circuit`): ask `relay` for a
    /// reservation.
    Reserve {
        /// The relay.
        relay: PeerId,
        /// The circuit listen address.
        addr: Multiaddr,
    },
    /// Give up the reservation on `relay` (close its circuit listener).
    Release {
        /// The relay.
        relay: PeerId,
    },
}

struct Candidate {
    addrs: Vec<Multiaddr>,
    /// When it was last offered, to forget the stalest first.
    seen: Instant,
    /// Not to be asked before then (it failed).
    backoff_until: Option<Instant>,
}

struct Reservation {
    state: RelayState,
    since: Instant,
    circuit_addrs: Vec<Multiaddr>,
    configured: bool,
}

/// The AutoRelay state machine.
pub struct AutoRelay {
    config: AutoRelayConfig,
    reachability: Reachability,
    candidates: HashMap<PeerId, Candidate>,
    reservations: HashMap<PeerId, Reservation>,
    /// Relays named by configuration: with any, AutoRelay picks none.
    configured: HashSet<PeerId>,
}

/// The circuit listen address for a reservation on `relay` at `addr`.
pub fn circuit_addr(relay: PeerId, addr: &Multiaddr) -> Multiaddr {
    let mut a: Multiaddr = addr
        .iter()
        .take_while(|p| !matches!(p, Protocol::P2p(_) | Protocol::P2pCircuit))
        .collect();
    a.push(Protocol::P2p(relay));
    a.push(Protocol::P2pCircuit);
    a
}

impl AutoRelay {
    /// A state machine with no candidates, reachability unknown.
    pub fn new(config: AutoRelayConfig) -> AutoRelay {
        AutoRelay {
            config,
            reachability: Reachability::Unknown,
            candidates: HashMap::new(),
            reservations: HashMap::new(),
            configured: HashSet::new(),
        }
    }

    /// `peer` offers the relay protocol, reachable at `addrs` (best first).
    pub fn offer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) {
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .filter(|a| !a.iter().any(|p| p == Protocol::P2pCircuit))
            .collect();
        if addrs.is_empty() {
            return;
        }
        match self.candidates.get_mut(&peer) {
            Some(c) => {
                c.addrs = addrs;
                c.seen = now;
            }
            None => {
                if self.candidates.len() >= self.config.max_candidates {
                    self.forget_stalest();
                }
                self.candidates.insert(
                    peer,
                    Candidate {
                        addrs,
                        seen: now,
                        backoff_until: None,
                    },
                );
            }
        }
    }

    fn forget_stalest(&mut self) {
        let stalest = self
            .candidates
            .iter()
            .filter(|(p, _)| !self.reservations.contains_key(p))
            .min_by_key(|(_, c)| c.seen)
            .map(|(p, _)| *p);
        if let Some(p) = stalest {
            self.candidates.remove(&p);
        }
    }

    /// `peer` no longer offers the relay protocol.
    pub fn withdraw(&mut self, peer: &PeerId) {
        self.candidates.remove(peer);
    }

    /// A reservation on `relay` was asked for by configuration (`--relay`,
    /// `relays = [...]`): from now on AutoRelay leaves the choice to it.
    pub fn configured(&mut self, relay: PeerId, now: Instant) {
        self.configured.insert(relay);
        self.reservations.insert(
            relay,
            Reservation {
                state: RelayState::Requesting,
                since: now,
                circuit_addrs: Vec::new(),
                configured: true,
            },
        );
    }

    /// AutoNAT's verdict changed.
    pub fn set_reachability(&mut self, r: Reachability) {
        self.reachability = r;
    }

    /// `relay` accepted (or renewed) the reservation.
    pub fn accepted(&mut self, relay: PeerId) {
        if let Some(r) = self.reservations.get_mut(&relay) {
            r.state = RelayState::Reserved;
        }
    }

    /// The circuit listener on `relay` reported address `addr`.
    pub fn circuit_addr_added(&mut self, relay: PeerId, addr: Multiaddr) {
        if let Some(r) = self.reservations.get_mut(&relay) {
            if !r.circuit_addrs.contains(&addr) && r.circuit_addrs.len() < 8 {
                r.circuit_addrs.push(addr);
            }
        }
    }

    /// The reservation on `relay` ended (refused, full, expired, or its
    /// connection closed): it is replaced at the next [`AutoRelay::poll`],
    /// and `relay` is not asked again for a while.
    pub fn lost(&mut self, relay: PeerId, now: Instant) {
        let configured = self
            .reservations
            .remove(&relay)
            .is_some_and(|r| r.configured);
        if configured {
            self.configured.remove(&relay);
        }
        if let Some(c) = self.candidates.get_mut(&relay) {
            c.backoff_until = Some(now + self.config.backoff);
        }
    }

    /// Whether the node should hold relay reservations now.
    fn wanted(&self) -> bool {
        self.reachability != Reachability::Public && self.configured.is_empty()
    }

    /// What to do now: reserve on new relays while fewer than
    /// [`AutoRelayConfig::want`] are held, give up ones that do not answer,
    /// and release all once the node is public.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.configured.is_empty() {
            return actions;
        }
        if !self.wanted() {
            for relay in self.reservations.keys() {
                actions.push(Action::Release { relay: *relay });
            }
            self.reservations.clear();
            return actions;
        }
        let stuck: Vec<PeerId> = self
            .reservations
            .iter()
            .filter(|(_, r)| {
                r.state == RelayState::Requesting
                    && now.duration_since(r.since) >= self.config.request_timeout
            })
            .map(|(p, _)| *p)
            .collect();
        for relay in stuck {
            self.lost(relay, now);
            actions.push(Action::Release { relay });
        }
        while self.reservations.len() < self.config.want {
            let Some((peer, addr)) = self.pick(now) else {
                break;
            };
            self.reservations.insert(
                peer,
                Reservation {
                    state: RelayState::Requesting,
                    since: now,
                    circuit_addrs: Vec::new(),
                    configured: false,
                },
            );
            actions.push(Action::Reserve {
                relay: peer,
                addr: circuit_addr(peer, &addr),
            });
        }
        actions
    }

    /// The most recently seen candidate not in use nor backing off.
    fn pick(&self, now: Instant) -> Option<(PeerId, Multiaddr)> {
        self.candidates
            .iter()
            .filter(|(p, c)| {
                !self.reservations.contains_key(p) && c.backoff_until.is_none_or(|t| t <= now)
            })
            .max_by_key(|(_, c)| c.seen)
            .map(|(p, c)| (*p, c.addrs[0].clone()))
    }

    /// The relays held or asked for, for `status`.
    pub fn status(&self) -> Vec<RelayStatus> {
        let mut v: Vec<RelayStatus> = self
            .reservations
            .iter()
            .map(|(peer, r)| RelayStatus {
                peer: *peer,
                circuit_addrs: r.circuit_addrs.clone(),
                state: r.state,
                configured: r.configured,
            })
            .collect();
        v.sort_by_key(|r| r.peer.to_bytes());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> Multiaddr {
        format!("/ip4/203.0.113.{n}/tcp/4001").parse().unwrap()
    }

    fn reserved(actions: &[Action]) -> Vec<PeerId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reserve { relay, .. } => Some(*relay),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reserves_two_relays_and_replaces_a_lost_one() {
        let now = Instant::now();
        let mut ar = AutoRelay::new(AutoRelayConfig::default());
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            ar.offer(
                *p,
                vec![addr(i as u8 + 1)],
                now + Duration::from_secs(i as u64),
            );
        }
        ar.set_reachability(Reachability::Private);
        let first = reserved(&ar.poll(now));
        assert_eq!(first.len(), 2);
        assert!(ar.poll(now).is_empty(), "two are enough");
        let spare = *peers.iter().find(|p| !first.contains(p)).unwrap();
        ar.accepted(first[0]);
        ar.lost(first[1], now);
        assert_eq!(reserved(&ar.poll(now)), vec![spare]);
        // The lost relay is not asked again while it backs off…
        ar.lost(spare, now);
        assert!(reserved(&ar.poll(now)).is_empty());
        // …but is afterwards.
        let later = now + AutoRelayConfig::default().backoff;
        assert_eq!(reserved(&ar.poll(later)).len(), 1);
    }

    #[test]
    fn the_circuit_address_names_the_relay() {
        let p = PeerId::random();
        let a = circuit_addr(p, &addr(1).with(Protocol::P2p(p)));
        assert_eq!(
            a.to_string(),
            format!("/ip4/203.0.113.1/tcp/4001/p2p/{p}/p2p-circuit")
        );
    }

    #[test]
    fn a_public_node_holds_no_reservations() {
        let now = Instant::now();
        let mut ar = AutoRelay::new(AutoRelayConfig::default());
        let p = PeerId::random();
        ar.offer(p, vec![addr(1)], now);
        ar.set_reachability(Reachability::Public);
        assert!(ar.poll(now).is_empty());
        ar.set_reachability(Reachability::Unknown);
        assert_eq!(reserved(&ar.poll(now)), vec![p]);
        ar.set_reachability(Reachability::Public);
        assert_eq!(ar.poll(now), vec![Action::Release { relay: p }]);
        assert!(ar.status().is_empty());
    }

    #[test]
    fn an_unanswered_request_is_given_up() {
        let now = Instant::now();
        let mut ar = AutoRelay::new(AutoRelayConfig {
            want: 1,
            ..Default::default()
        });
        let (a, b) = (PeerId::random(), PeerId::random());
        ar.offer(a, vec![addr(1)], now + Duration::from_secs(1));
        ar.offer(b, vec![addr(2)], now);
        assert_eq!(reserved(&ar.poll(now)), vec![a]);
        let late = now + AutoRelayConfig::default().request_timeout;
        let acts = ar.poll(late);
        assert!(acts.contains(&Action::Release { relay: a }));
        assert_eq!(reserved(&acts), vec![b]);
    }

    #[test]
    fn configured_relays_override_the_choice() {
        let now = Instant::now();
        let mut ar = AutoRelay::new(AutoRelayConfig::default());
        ar.offer(PeerId::random(), vec![addr(1)], now);
        let mine = PeerId::random();
        ar.configured(mine, now);
        assert!(ar.poll(now).is_empty());
        let st = ar.status();
        assert_eq!(st.len(), 1);
        assert!(st[0].configured);
    }

    #[test]
    fn candidates_are_bounded() {
        let now = Instant::now();
        let mut ar = AutoRelay::new(AutoRelayConfig {
            max_candidates: 4,
            ..Default::default()
        });
        for i in 0..100 {
            ar.offer(
                PeerId::random(),
                vec![addr(1)],
                now + Duration::from_secs(i),
            );
        }
        assert_eq!(ar.candidates.len(), 4);
    }
}
