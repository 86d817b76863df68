//! What the swarm task keeps about reachability: connections per peer
//! (direct or relayed), peers met and what they offer, AutoNAT's verdict,
//! hole punching outcomes, and the callers waiting for a direct connection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::swarm::ConnectionId;
use libp2p::{identify, relay, Multiaddr, PeerId};
use tokio::sync::oneshot;

use super::{NetError, KAD};
use crate::net::addr::{is_relayed, relay_dial_order};
use crate::net::autorelay::AutoRelay;
use crate::net::status::{KnownPeer, PeerConnections, PunchStats, Reachability};

/// Most peers remembered from identify.
const MAX_KNOWN: usize = 1024;
/// Most addresses remembered per known peer.
const MAX_KNOWN_ADDRS: usize = 8;
/// How long after hole punching to a peer gave up a new relayed connection
/// to it is answered at once, instead of waiting for another punch: NATs
/// do not change their ways that fast, and a transfer that outlives a
/// relay's limits goes through one new circuit after another.
const UNPUNCHABLE_FOR: Duration = Duration::from_secs(600);
/// Most peers remembered as not to be punched through to.
const MAX_UNPUNCHABLE: usize = 1024;

/// A caller waiting for a direct connection to a peer.
enum Waiter {
    /// A dial that ended on a relayed connection: answered `Ok` when the
    /// connection turns direct, hole punching fails, or the deadline passes.
    Dial(Instant, oneshot::Sender<Result<(), NetError>>),
    /// [`super::Client::wait_direct`]: true once direct, false at the
    /// deadline.
    Direct(Instant, oneshot::Sender<bool>),
}

/// The reachability state of the swarm task.
#[derive(Default)]
pub(super) struct Reach {
    /// Live connections per peer, with their remote addresses.
    pub(super) conns: HashMap<PeerId, HashMap<ConnectionId, Multiaddr>>,
    /// Peers met, with when they were last heard of.
    known: HashMap<PeerId, (KnownPeer, Instant)>,
    /// AutoNAT's verdict.
    pub(super) reachability: Reachability,
    /// Whether the last reachability test failed.
    autonat_failed: bool,
    /// Relay choice, when AutoRelay is on.
    pub(super) autorelay: Option<AutoRelay>,
    /// Circuit listeners, by relay.
    pub(super) relay_listeners: HashMap<ListenerId, PeerId>,
    /// Callers waiting for a direct connection, per peer.
    waiters: HashMap<PeerId, Vec<Waiter>>,
    /// Hole punching outcomes.
    pub(super) punches: PunchStats,
    /// Peers hole punching to gave up on lately (failed, or not done by a
    /// waiting dial's deadline), with when.
    unpunchable: HashMap<PeerId, Instant>,
}

impl Reach {
    /// No connections yet; relays chosen by `autorelay`.
    pub(super) fn new(autorelay: AutoRelay) -> Reach {
        Reach {
            autorelay: Some(autorelay),
            ..Reach::default()
        }
    }

    /// Records a new connection. If it is direct, returns the peer's
    /// relayed connections, to be closed: streams open on any connection to
    /// a peer, and bulk must not go through a relay once a direct path
    /// exists.
    pub(super) fn connected(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        addr: &Multiaddr,
    ) -> Vec<ConnectionId> {
        let conns = self.conns.entry(peer).or_default();
        conns.insert(id, addr.clone());
        if is_relayed(addr) {
            return Vec::new();
        }
        let relayed: Vec<ConnectionId> = conns
            .iter()
            .filter(|(_, a)| is_relayed(a))
            .map(|(c, _)| *c)
            .collect();
        self.unpunchable.remove(&peer);
        // libp2p-stream opens a stream on a connection picked at random
        // among the peer's, and the relayed ones only go once their close
        // is processed: waiters are answered when the last of them has
        // closed, so no bulk stream lands on a relayed connection that is
        // going away (it would be waited out to the request timeout).
        if relayed.is_empty() {
            self.answer_direct(peer);
        }
        relayed
    }

    /// Answers every caller waiting for `peer` to be direct.
    fn answer_direct(&mut self, peer: PeerId) {
        for w in self.waiters.remove(&peer).unwrap_or_default() {
            match w {
                Waiter::Dial(_, r) => {
                    let _ = r.send(Ok(()));
                }
                Waiter::Direct(_, r) => {
                    let _ = r.send(true);
                }
            }
        }
    }

    /// Forgets a closed connection; true if it was relayed.
    pub(super) fn closed(&mut self, peer: PeerId, id: ConnectionId) -> bool {
        let Some(c) = self.conns.get_mut(&peer) else {
            return false;
        };
        let relayed = c.remove(&id).is_some_and(|a| is_relayed(&a));
        if c.is_empty() {
            self.conns.remove(&peer);
        }
        if relayed && self.settled_direct(&peer) {
            self.answer_direct(peer);
        }
        relayed
    }

    /// Whether `peer` has a direct connection and no relayed one left.
    fn settled_direct(&self, peer: &PeerId) -> bool {
        self.conns
            .get(peer)
            .is_some_and(|c| c.values().any(|a| !is_relayed(a)) && !c.values().any(is_relayed))
    }

    /// Whether some connection to `peer` is direct.
    #[cfg(test)]
    pub(super) fn is_direct(&self, peer: &PeerId) -> bool {
        has_direct(self.conns.get(peer))
    }

    /// Whether `peer` is connected, and through relays only.
    pub(super) fn only_relayed(&self, peer: &PeerId) -> bool {
        self.conns
            .get(peer)
            .is_some_and(|c| !c.is_empty() && c.values().all(is_relayed))
    }

    /// One remote address per connected peer, a direct one if any.
    pub(super) fn one_addr_each(&self) -> Vec<(PeerId, Multiaddr)> {
        self.conns
            .iter()
            .filter_map(|(p, c)| {
                let best = c
                    .values()
                    .find(|a| !is_relayed(a))
                    .or_else(|| c.values().next())?;
                Some((*p, best.clone()))
            })
            .collect()
    }

    /// Every peer's connections, sorted by peer.
    pub(super) fn connections(&self) -> Vec<PeerConnections> {
        let mut v: Vec<PeerConnections> = self
            .conns
            .iter()
            .map(|(p, c)| {
                let (relayed, direct): (Vec<Multiaddr>, Vec<Multiaddr>) =
                    c.values().cloned().partition(is_relayed);
                PeerConnections {
                    peer: *p,
                    direct,
                    relayed,
                }
            })
            .collect();
        v.sort_by_key(|c| c.peer.to_bytes());
        v
    }

    /// Parks a dial answer until the connection to `peer` turns direct.
    pub(super) fn await_punch(
        &mut self,
        peer: PeerId,
        deadline: Instant,
        reply: oneshot::Sender<Result<(), NetError>>,
    ) {
        self.waiters
            .entry(peer)
            .or_default()
            .push(Waiter::Dial(deadline, reply));
    }

    /// Answers `reply` once `peer` has a direct connection, false at
    /// `deadline`.
    pub(super) fn await_direct(
        &mut self,
        peer: PeerId,
        deadline: Instant,
        reply: oneshot::Sender<bool>,
    ) {
        if self.settled_direct(&peer) {
            let _ = reply.send(true);
            return;
        }
        self.waiters
            .entry(peer)
            .or_default()
            .push(Waiter::Direct(deadline, reply));
    }

    /// Whether hole punching to `peer` gave up lately, so that a dial
    /// ending on a relayed connection to it need not wait for a punch.
    pub(super) fn unpunchable(&self, peer: &PeerId, now: Instant) -> bool {
        self.unpunchable
            .get(peer)
            .is_some_and(|t| now.duration_since(*t) < UNPUNCHABLE_FOR)
    }

    /// Remembers that hole punching to `peer` gave up at `now`.
    fn gave_up_punching(&mut self, peer: PeerId, now: Instant) {
        if !self.unpunchable.contains_key(&peer) && self.unpunchable.len() >= MAX_UNPUNCHABLE {
            self.unpunchable
                .retain(|_, t| now.duration_since(*t) < UNPUNCHABLE_FOR);
            if self.unpunchable.len() >= MAX_UNPUNCHABLE {
                let oldest = self.unpunchable.iter().min_by_key(|(_, t)| **t);
                if let Some(p) = oldest.map(|(p, _)| *p) {
                    self.unpunchable.remove(&p);
                }
            }
        }
        self.unpunchable.insert(peer, now);
    }

    /// Hole punching to `peer` gave up: dials waiting for it are answered
    /// (the relayed connection stands).
    pub(super) fn punch_failed(&mut self, peer: PeerId) {
        self.punches.failed += 1;
        self.gave_up_punching(peer, Instant::now());
        if let Some(ws) = self.waiters.get_mut(&peer) {
            let (dials, rest): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(ws)
                .into_iter()
                .partition(|w| matches!(w, Waiter::Dial(..)));
            *ws = rest;
            for w in dials {
                if let Waiter::Dial(_, r) = w {
                    let _ = r.send(Ok(()));
                }
            }
        }
        self.waiters.retain(|_, ws| !ws.is_empty());
    }

    /// Answers the waiters whose deadline passed.
    pub(super) fn expire(&mut self, now: Instant) {
        let mut gave_up = Vec::new();
        let conns = &self.conns;
        for (peer, ws) in self.waiters.iter_mut() {
            let is_direct = has_direct(conns.get(peer));
            let (due, keep): (Vec<Waiter>, Vec<Waiter>) =
                std::mem::take(ws).into_iter().partition(|w| match w {
                    Waiter::Dial(t, _) | Waiter::Direct(t, _) => *t <= now,
                });
            *ws = keep;
            for w in due {
                match w {
                    Waiter::Dial(_, r) => {
                        // Still relayed at the deadline: the punch did not
                        // work in time (DCUtR's own failure may come later).
                        // Direct but a relayed one not closed yet: punched.
                        if !is_direct {
                            gave_up.push(*peer);
                        }
                        let _ = r.send(Ok(()));
                    }
                    Waiter::Direct(_, r) => {
                        let _ = r.send(is_direct);
                    }
                }
            }
        }
        self.waiters.retain(|_, ws| !ws.is_empty());
        for peer in gave_up {
            self.gave_up_punching(peer, now);
        }
    }

    /// Learns what `peer` said of itself. Returns its addresses ordered
    /// for reserving a circuit, if it offers the relay protocol.
    pub(super) fn identified(
        &mut self,
        peer: PeerId,
        info: &identify::Info,
        now: Instant,
    ) -> Option<Vec<Multiaddr>> {
        let relay = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
        let mut addrs: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .filter(|a| !is_relayed(a))
            .cloned()
            .collect();
        addrs = relay_dial_order(addrs);
        addrs.truncate(MAX_KNOWN_ADDRS);
        if !self.known.contains_key(&peer) && self.known.len() >= MAX_KNOWN {
            if let Some(oldest) = self
                .known
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(p, _)| *p)
            {
                self.known.remove(&oldest);
            }
        }
        let kp = KnownPeer {
            peer,
            addrs: addrs.clone(),
            dht_server: info.protocols.contains(&KAD),
            relay,
        };
        self.known.insert(peer, (kp, now));
        relay.then_some(addrs)
    }

    /// Whether `peer` was last known to answer DHT queries.
    pub(super) fn known_dht_server(&self, peer: &PeerId) -> bool {
        self.known.get(peer).is_some_and(|(k, _)| k.dht_server)
    }

    /// Peers met, most recently heard of first.
    pub(super) fn known_peers(&self) -> Vec<KnownPeer> {
        let mut v: Vec<&(KnownPeer, Instant)> = self.known.values().collect();
        v.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        v.into_iter().map(|(k, _)| k.clone()).collect()
    }

    /// A reachability test ended.
    pub(super) fn autonat_result(&mut self, ok: bool) {
        self.autonat_failed = !ok;
    }

    /// The verdict given the node's confirmed direct external addresses;
    /// `Some` if it changed.
    pub(super) fn update_verdict(&mut self, confirmed: &[Multiaddr]) -> Option<Reachability> {
        let v = if !confirmed.is_empty() {
            Reachability::Public
        } else if self.autonat_failed {
            Reachability::Private
        } else {
            Reachability::Unknown
        };
        if v == self.reachability {
            return None;
        }
        self.reachability = v;
        if let Some(ar) = &mut self.autorelay {
            ar.set_reachability(v);
        }
        Some(v)
    }
}

/// Whether one of a peer's connections (`conns`) is direct.
fn has_direct(conns: Option<&HashMap<ConnectionId, Multiaddr>>) -> bool {
    conns.is_some_and(|c| c.values().any(|a| !is_relayed(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_direct_connection_answers_waiters_and_retires_the_relayed_one() {
        let mut r = Reach::default();
        let peer = PeerId::random();
        let relayed: Multiaddr = format!(
            "/ip4/203.0.113.1/tcp/1/p2p/{}/p2p-circuit",
            PeerId::random()
        )
        .parse()
        .unwrap();
        let direct: Multiaddr = "/ip4/203.0.113.9/udp/2/quic-v1".parse().unwrap();
        let (c1, c2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        assert!(!r.only_relayed(&peer));
        assert!(r.connected(peer, c1, &relayed).is_empty());
        assert!(!r.is_direct(&peer));
        assert!(r.only_relayed(&peer));
        let (tx, rx) = oneshot::channel();
        r.await_punch(
            peer,
            Instant::now() + std::time::Duration::from_secs(60),
            tx,
        );
        let (dtx, mut drx) = oneshot::channel();
        r.await_direct(
            peer,
            Instant::now() + std::time::Duration::from_secs(60),
            dtx,
        );
        let mut rx = rx;
        assert_eq!(r.connected(peer, c2, &direct), vec![c1]);
        assert!(!r.only_relayed(&peer));
        // Not before the relayed connection is gone: a stream opened now
        // could land on it (libp2p-stream picks a connection at random).
        assert!(rx.try_recv().is_err());
        assert!(drx.try_recv().is_err());
        assert_eq!(r.one_addr_each(), vec![(peer, direct.clone())]);
        assert!(r.closed(peer, c1), "the closed connection was relayed");
        assert!(rx.await.unwrap().is_ok());
        assert!(drx.await.unwrap());
        let c = r.connections();
        assert_eq!(c[0].direct, vec![direct]);
        assert!(c[0].relayed.is_empty());
    }

    #[test]
    fn a_peer_punching_gave_up_on_is_not_waited_for_again_until_direct() {
        let mut r = Reach::default();
        let peer = PeerId::random();
        let now = Instant::now();
        assert!(!r.unpunchable(&peer, now));
        r.punch_failed(peer);
        assert!(r.unpunchable(&peer, Instant::now()));
        assert!(!r.unpunchable(&peer, Instant::now() + UNPUNCHABLE_FOR));
        let direct: Multiaddr = "/ip4/203.0.113.9/tcp/2".parse().unwrap();
        r.connected(peer, ConnectionId::new_unchecked(1), &direct);
        assert!(!r.unpunchable(&peer, Instant::now()));
        for _ in 0..2 * MAX_UNPUNCHABLE {
            r.gave_up_punching(PeerId::random(), now);
        }
        assert_eq!(r.unpunchable.len(), MAX_UNPUNCHABLE);
    }

    #[tokio::test]
    async fn waiters_are_answered_at_their_deadline() {
        let mut r = Reach::default();
        let peer = PeerId::random();
        let now = Instant::now();
        let (dtx, drx) = oneshot::channel();
        r.await_direct(peer, now, dtx);
        r.expire(now);
        assert!(!drx.await.unwrap());
        assert!(r.waiters.is_empty());
    }

    #[test]
    fn the_verdict_follows_confirmed_addresses_and_failed_tests() {
        let mut r = Reach::default();
        assert_eq!(r.update_verdict(&[]), None);
        r.autonat_result(false);
        assert_eq!(r.update_verdict(&[]), Some(Reachability::Private));
        let a: Multiaddr = "/ip4/203.0.113.9/tcp/2".parse().unwrap();
        assert_eq!(r.update_verdict(&[a]), Some(Reachability::Public));
    }
}
