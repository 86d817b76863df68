//! The peers mDNS announced on the LAN, in a table with hard bounds
//! (audit F-05).
//!
//! mDNS answers are unauthenticated: anyone on the LAN can announce any
//! number of peer ids, each with any number of addresses. They are only
//! hints (Noise authenticates whoever answers a dial), but without bounds
//! they cost memory and dials. The table keeps the peers it saw first and
//! refuses new ones when full, rather than evicting: an attacker who floods
//! the LAN after the honest peers announced themselves cannot push them out.
//! Peers announced from one IP address are capped too, since peer ids are
//! free to make.

use std::net::IpAddr;

use libp2p::{Multiaddr, PeerId};

use crate::net::addr::ip_of;

/// Most LAN peers kept.
pub(super) const MAX_PEERS: usize = 256;
/// Most addresses kept per peer.
pub(super) const MAX_ADDRS: usize = 8;
/// Most peers kept whose addresses name one IP address.
pub(super) const MAX_PEERS_PER_IP: usize = 8;
/// When libp2p's own mDNS list (which has no bound) holds more records than
/// this, the mDNS behaviour is replaced by a fresh one (see the event loop).
pub(super) const MAX_BEHAVIOUR_RECORDS: usize = 2048;

/// The bounded table of LAN peers, in the order they were first seen.
#[derive(Debug, Default)]
pub(super) struct LanPeers {
    peers: Vec<(PeerId, Vec<Multiaddr>)>,
}

impl LanPeers {
    /// Peers kept whose addresses include `ip`.
    fn peers_at(&self, ip: IpAddr) -> usize {
        self.peers
            .iter()
            .filter(|(_, addrs)| addrs.iter().any(|a| ip_of(a) == Some(ip)))
            .count()
    }

    /// Records that `peer` was announced at `addr`; false when a bound
    /// refused it.
    pub(super) fn add(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        let ip = ip_of(&addr);
        let crowded = |t: &Self| ip.is_some_and(|ip| t.peers_at(ip) >= MAX_PEERS_PER_IP);
        match self.peers.iter().position(|(p, _)| *p == peer) {
            Some(i) => {
                if self.peers[i].1.contains(&addr) {
                    return true;
                }
                let new_ip =
                    ip.is_some_and(|ip| !self.peers[i].1.iter().any(|a| ip_of(a) == Some(ip)));
                if self.peers[i].1.len() >= MAX_ADDRS || (new_ip && crowded(self)) {
                    return false;
                }
                self.peers[i].1.push(addr);
                true
            }
            None => {
                if self.peers.len() >= MAX_PEERS || crowded(self) {
                    return false;
                }
                self.peers.push((peer, vec![addr]));
                true
            }
        }
    }

    /// mDNS says `peer` is no longer at `addr`.
    pub(super) fn expire(&mut self, peer: &PeerId, addr: &Multiaddr) {
        if let Some(i) = self.peers.iter().position(|(p, _)| p == peer) {
            self.peers[i].1.retain(|a| a != addr);
            if self.peers[i].1.is_empty() {
                self.peers.remove(i);
            }
        }
    }

    /// The peers, first seen first.
    pub(super) fn list(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.peers.clone()
    }

    /// How many peers are kept.
    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: [u8; 4], port: u16) -> Multiaddr {
        format!("/ip4/{}.{}.{}.{}/tcp/{port}", ip[0], ip[1], ip[2], ip[3])
            .parse()
            .unwrap()
    }

    #[test]
    fn peers_and_addresses_are_bounded_and_the_first_seen_stay() {
        let mut t = LanPeers::default();
        let first = PeerId::random();
        assert!(t.add(first, addr([10, 0, 0, 1], 1)));
        for i in 0..10_000u32 {
            let b = i.to_be_bytes();
            t.add(PeerId::random(), addr([10, b[1], b[2], b[3]], 1));
        }
        assert_eq!(t.len(), MAX_PEERS);
        assert_eq!(t.list()[0].0, first, "the first peer seen was pushed out");
        for port in 2..100 {
            t.add(first, addr([10, 0, 0, 1], port));
        }
        assert_eq!(t.list()[0].1.len(), MAX_ADDRS);
    }

    #[test]
    fn one_ip_announcing_many_peer_ids_is_capped() {
        let mut t = LanPeers::default();
        let mut kept = 0;
        for port in 0..100 {
            kept += usize::from(t.add(PeerId::random(), addr([192, 168, 1, 9], port)));
        }
        assert_eq!(kept, MAX_PEERS_PER_IP);
        // Another machine is still heard.
        assert!(t.add(PeerId::random(), addr([192, 168, 1, 10], 1)));
        // A kept peer cannot add the crowded IP as a second address either.
        let other = t.list().last().unwrap().0;
        assert!(!t.add(other, addr([192, 168, 1, 9], 4001)));
    }

    #[test]
    fn expired_addresses_and_peers_go() {
        let mut t = LanPeers::default();
        let p = PeerId::random();
        let (a, b) = (addr([10, 0, 0, 1], 1), addr([10, 0, 0, 1], 2));
        t.add(p, a.clone());
        t.add(p, b.clone());
        t.expire(&p, &a);
        assert_eq!(t.list(), vec![(p, vec![b.clone()])]);
        t.expire(&p, &b);
        assert_eq!(t.len(), 0);
    }
}
