//! Peer exchange (issue 11): a holder tells a fetcher which other peers it
//! knows for the same share, so that a crowd finds itself with no LAN
//! discovery and no DHT (docs/PROTOCOL.md, "Peer exchange").
//!
//! Everything here is bounded and nothing is trusted: an entry is only a
//! candidate, which the fetcher dials (Noise authenticates the peer id) and
//! asks to prove it holds the share before it names the share to it. What a
//! provider passes on was either announced by a peer that asked it for the
//! share, on the IP address that peer connected from, or is a source its
//! own fetch used.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_bytes::ByteBuf;

use crate::manifest::ManifestId;
use crate::net::addr::{ip_of, is_relayed};
use crate::net::PeerAddr;
use crate::wire::{PexPeer, MAX_ADDR_LEN, MAX_ANNOUNCED, MAX_PEX_ADDRS, MAX_PEX_PEERS};

/// Most shares a provider remembers askers for; past this the share heard
/// of least recently is forgotten.
pub const BOOK_SHARES: usize = 128;
/// Most askers remembered per share; past this the one heard of least
/// recently is forgotten.
pub const BOOK_PEERS: usize = 32;
/// How long an asker is passed on after it last asked: a fetcher asks
/// again while it runs, so one that stopped drops out.
pub const BOOK_RECENT: Duration = Duration::from_secs(300);

/// The peers that asked a provider for each share, with where they said
/// they can be reached. At most [`BOOK_SHARES`] × [`BOOK_PEERS`] entries of
/// at most [`MAX_PEX_ADDRS`] addresses each (about 2 MiB at the very most).
#[derive(Default)]
pub struct Book {
    shares: HashMap<ManifestId, HashMap<PeerId, (Vec<Multiaddr>, Instant)>>,
}

impl Book {
    /// `peer` asked for `share` and can be reached at `addrs` (already
    /// filtered by [`announced_addrs`]; an empty list records nothing).
    pub fn met(&mut self, share: ManifestId, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) {
        if addrs.is_empty() {
            return;
        }
        if !self.shares.contains_key(&share) && self.shares.len() >= BOOK_SHARES {
            let stalest = self
                .shares
                .iter()
                .map(|(s, peers)| (*s, peers.values().map(|(_, t)| *t).max()))
                .min_by_key(|(_, t)| *t)
                .map(|(s, _)| s);
            if let Some(s) = stalest {
                self.shares.remove(&s);
            }
        }
        let peers = self.shares.entry(share).or_default();
        if !peers.contains_key(&peer) && peers.len() >= BOOK_PEERS {
            if let Some(oldest) = peers.iter().min_by_key(|(_, (_, t))| *t).map(|(p, _)| *p) {
                peers.remove(&oldest);
            }
        }
        peers.insert(peer, (addrs, now));
    }

    /// The peers heard of for `share` within [`BOOK_RECENT`], most recent
    /// first, without `asker`; at most [`MAX_PEX_PEERS`].
    pub fn list(&self, share: &ManifestId, asker: PeerId, now: Instant) -> Vec<PeerAddr> {
        let Some(peers) = self.shares.get(share) else {
            return Vec::new();
        };
        let mut recent: Vec<(&PeerId, &(Vec<Multiaddr>, Instant))> = peers
            .iter()
            .filter(|(p, (_, t))| **p != asker && now.saturating_duration_since(*t) < BOOK_RECENT)
            .collect();
        recent.sort_by_key(|(_, (_, t))| std::cmp::Reverse(*t));
        recent
            .into_iter()
            .take(MAX_PEX_PEERS)
            .map(|(p, (a, _))| PeerAddr {
                peer: *p,
                addrs: a.clone(),
            })
            .collect()
    }

    /// The peers that announced they serve `share` (any time within the
    /// book's memory): a capped provider counts on them to pass on what it
    /// sent them (super-seeding, [`crate::net::serve`]).
    pub fn announced(&self, share: &ManifestId) -> impl Iterator<Item = &PeerId> {
        self.shares.get(share).into_iter().flat_map(HashMap::keys)
    }

    /// Entries held, over all shares.
    pub fn len(&self) -> usize {
        self.shares.values().map(HashMap::len).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }
}

/// The addresses an asker announced that may be passed on: direct ones
/// (no relay) on the IP address its connection came from (`remote`), so
/// that peer exchange can never point a crowd at a third party; without
/// any `/p2p` part; at most [`MAX_PEX_ADDRS`]. Addresses that do not parse
/// are skipped. A peer reached through a relay is not passed on.
pub fn announced_addrs(listen: &[ByteBuf], remote: &Multiaddr) -> Vec<Multiaddr> {
    let Some(ip) = ip_of(remote).filter(|_| !is_relayed(remote)) else {
        return Vec::new();
    };
    let mut out: Vec<Multiaddr> = Vec::new();
    for a in listen.iter().take(MAX_ANNOUNCED) {
        let Ok(a) = Multiaddr::try_from(a.to_vec()) else {
            continue;
        };
        let a = without_p2p(&a);
        if ip_of(&a) == Some(ip) && !is_relayed(&a) && !out.contains(&a) {
            out.push(a);
        }
        if out.len() == MAX_PEX_ADDRS {
            break;
        }
    }
    out
}

/// What a fetcher announces: its direct listen addresses (no unspecified
/// or relayed ones), at most [`MAX_ANNOUNCED`], within the wire's length
/// limit.
pub fn to_announce(listen: &[Multiaddr]) -> Vec<ByteBuf> {
    listen
        .iter()
        .filter(|a| !is_relayed(a) && ip_of(a).is_some_and(|ip| !ip.is_unspecified()))
        .map(|a| without_p2p(a).to_vec())
        .filter(|b| b.len() <= MAX_ADDR_LEN)
        .take(MAX_ANNOUNCED)
        .map(ByteBuf::from)
        .collect()
}

/// `addr` without its `/p2p/…` parts.
fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// A peer list for the wire: at most [`MAX_PEX_PEERS`] entries of at most
/// [`MAX_PEX_ADDRS`] addresses, entries without an address left out.
pub fn to_wire(peers: &[PeerAddr]) -> Vec<PexPeer> {
    peers
        .iter()
        .filter_map(|p| {
            let addrs: Vec<ByteBuf> = p
                .addrs
                .iter()
                .map(|a| without_p2p(a).to_vec())
                .filter(|b| b.len() <= MAX_ADDR_LEN)
                .take(MAX_PEX_ADDRS)
                .map(ByteBuf::from)
                .collect();
            (!addrs.is_empty()).then(|| PexPeer {
                peer: p.peer.to_bytes(),
                addrs,
            })
        })
        .take(MAX_PEX_PEERS)
        .collect()
}

/// A peer list from the wire (already within [`crate::wire::check_peers`]'s
/// bounds), as candidates: entries whose peer id does not parse are an
/// error (the provider broke the protocol); addresses that do not parse,
/// or go through a relay, are skipped, and so are entries left without one.
pub fn from_wire(list: &[PexPeer]) -> Result<Vec<PeerAddr>, String> {
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        let peer = PeerId::from_bytes(&p.peer)
            .map_err(|e| format!("sent a peer list with an invalid peer id: {e}"))?;
        let addrs: Vec<Multiaddr> = p
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
            .map(|a| without_p2p(&a))
            .filter(|a| !is_relayed(a) && ip_of(a).is_some())
            .collect();
        if !addrs.is_empty() && !out.iter().any(|o: &PeerAddr| o.peer == peer) {
            out.push(PeerAddr { peer, addrs });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn bytes(s: &str) -> ByteBuf {
        ByteBuf::from(addr(s).to_vec())
    }

    #[test]
    fn only_addresses_on_the_askers_own_ip_are_passed_on() {
        let remote = addr("/ip4/192.0.2.7/tcp/50123");
        let listen = [
            bytes("/ip4/192.0.2.7/tcp/4001"),
            bytes("/ip4/198.51.100.1/tcp/4001"), // someone else
            bytes("/ip4/192.0.2.7/udp/4001/quic-v1"),
            bytes(&format!(
                "/ip4/192.0.2.7/tcp/1/p2p/{}/p2p-circuit",
                PeerId::random()
            )),
            ByteBuf::from(vec![0xff, 0xff]), // not an address
        ];
        assert_eq!(
            announced_addrs(&listen, &remote),
            [
                addr("/ip4/192.0.2.7/tcp/4001"),
                addr("/ip4/192.0.2.7/udp/4001/quic-v1")
            ]
        );
        // A relayed asker is passed on by nobody.
        let relayed = addr(&format!(
            "/ip4/192.0.2.7/tcp/1/p2p/{}/p2p-circuit",
            PeerId::random()
        ));
        assert!(announced_addrs(&listen, &relayed).is_empty());
        // At most MAX_PEX_ADDRS, whatever was announced.
        let many: Vec<ByteBuf> = (0..MAX_ANNOUNCED)
            .map(|i| bytes(&format!("/ip4/192.0.2.7/tcp/{}", 4000 + i)))
            .collect();
        assert_eq!(announced_addrs(&many, &remote).len(), MAX_PEX_ADDRS);
    }

    #[test]
    fn the_book_is_bounded_and_forgets() {
        let mut b = Book::default();
        let now = Instant::now();
        let a = vec![addr("/ip4/127.0.0.1/tcp/1")];
        let share = ManifestId([1; 32]);
        // Many askers of one share: the most recent BOOK_PEERS stay.
        let peers: Vec<PeerId> = (0..3 * BOOK_PEERS).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            b.met(share, *p, a.clone(), now + Duration::from_millis(i as u64));
        }
        assert_eq!(b.len(), BOOK_PEERS);
        let later = now + Duration::from_secs(1);
        let listed = b.list(&share, *peers.last().unwrap(), later);
        assert_eq!(listed.len(), MAX_PEX_PEERS);
        // Most recent first, not the asker itself.
        assert_eq!(listed[0].peer, peers[peers.len() - 2]);
        assert!(listed.iter().all(|p| p.peer != *peers.last().unwrap()));
        // Many shares: at most BOOK_SHARES remembered.
        for i in 0..2 * BOOK_SHARES {
            let mut id = [0; 32];
            id[..8].copy_from_slice(&(i as u64 + 2).to_le_bytes());
            b.met(ManifestId(id), PeerId::random(), a.clone(), later);
        }
        assert!(b.shares.len() <= BOOK_SHARES);
        assert!(b.len() <= BOOK_SHARES * BOOK_PEERS);
        // An asker not heard of for BOOK_RECENT is not passed on.
        let mut b = Book::default();
        b.met(share, PeerId::random(), a.clone(), now);
        assert_eq!(b.list(&share, PeerId::random(), now).len(), 1);
        assert!(b
            .list(&share, PeerId::random(), now + BOOK_RECENT)
            .is_empty());
        // Nothing recorded without an address.
        b.met(ManifestId([9; 32]), PeerId::random(), Vec::new(), now);
        assert!(b
            .list(&ManifestId([9; 32]), PeerId::random(), now)
            .is_empty());
    }

    #[test]
    fn wire_lists_round_trip_within_bounds() {
        let peers: Vec<PeerAddr> = (0..2 * MAX_PEX_PEERS)
            .map(|i| PeerAddr {
                peer: PeerId::random(),
                addrs: (0..2 * MAX_PEX_ADDRS)
                    .map(|j| addr(&format!("/ip4/10.0.0.{i}/tcp/{}", 1000 + j)))
                    .collect(),
            })
            .collect();
        let w = to_wire(&peers);
        assert_eq!(crate::wire::check_peers(&w), Ok(()));
        let back = from_wire(&w).unwrap();
        assert_eq!(back.len(), MAX_PEX_PEERS);
        assert_eq!(back[0].peer, peers[0].peer);
        assert_eq!(back[0].addrs, peers[0].addrs[..MAX_PEX_ADDRS]);
        let bad = [PexPeer {
            peer: vec![1, 2, 3],
            addrs: vec![bytes("/ip4/10.0.0.1/tcp/1")],
        }];
        assert!(from_wire(&bad).is_err());
        let announced = to_announce(&[
            addr("/ip4/0.0.0.0/tcp/1"),
            addr("/ip4/127.0.0.1/tcp/1"),
            addr(&format!("/ip4/127.0.0.1/tcp/2/p2p/{}", PeerId::random())),
        ]);
        assert_eq!(
            announced,
            [bytes("/ip4/127.0.0.1/tcp/1"), bytes("/ip4/127.0.0.1/tcp/2")]
        );
    }
}
