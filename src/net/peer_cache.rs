//! The peers a node met, kept across restarts, so that one contact (a
//! bootstrap peer given once, or the sharer named in a fetched link) is
//! enough forever: the next start bootstraps from them.
//!
//! Bounded everywhere: at most [`MAX_PEERS`] peers, [`MAX_ADDRS`] addresses
//! each, [`MAX_ADDR_LEN`] bytes per address, [`MAX_FILE_LEN`] bytes on disk.
//! The file is hostile input like any other: read with a size limit,
//! entries that do not parse are skipped, and a file that does not parse at
//! all means an empty cache and a warning, never a failed start.
//!
//! When the cache is full, the peer evicted is the one least worth keeping
//! ([`CachedPeer::rank`]): peers this node never reached itself go first
//! (anyone can connect inbound and claim anything), then peers that offered
//! no DHT or relay service, then those that failed most in a row, then the
//! ones seen longest ago. A flood of new inbound peers therefore never
//! pushes out a peer this node dialled and that served it.
//!
//! This file holds the cache and its on-disk form; writing the file
//! atomically is the owner's job (the daemon writes it with a temporary
//! file, fsync and rename, at most once a [`SAVE_INTERVAL`] and at
//! shutdown).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Most peers kept.
pub const MAX_PEERS: usize = 256;
/// Most addresses kept per peer (the newest).
pub const MAX_ADDRS: usize = 8;
/// Longest address kept, encoded, in bytes; longer ones are dropped.
pub const MAX_ADDR_LEN: usize = 128;
/// Largest cache file read; a larger one is ignored (with a warning).
pub const MAX_FILE_LEN: u64 = 1 << 20;
/// Failures in a row after which a peer is forgotten, unless it was seen in
/// the last [`FORGET_AFTER`].
pub const MAX_FAILURES: u32 = 16;
/// How long a peer that keeps failing is still kept after it was last seen.
pub const FORGET_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest time between two writes of the cache file.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// The on-disk format's version.
const VERSION: u32 = 1;

/// What a peer offered when it was last identified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    /// It answers DHT queries (Kademlia server mode).
    pub dht: bool,
    /// It offers relay circuits (relay v2 hop).
    pub relay: bool,
}

/// One peer met, as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPeer {
    /// Who.
    pub peer: PeerId,
    /// Where it said it listens (or where it was reached), newest first,
    /// without `/p2p/<peer>`.
    pub addrs: Vec<Multiaddr>,
    /// What it offered.
    pub services: Services,
    /// Whether this node ever reached it by dialling it (not just a peer
    /// that connected in and made claims).
    pub dialed: bool,
    /// When it was last connected, in seconds since the Unix epoch.
    pub last_seen: u64,
    /// Connections to it that worked.
    pub successes: u32,
    /// Dials to it that failed since the last one that worked.
    pub failures: u32,
}

impl CachedPeer {
    /// The eviction order: the smallest rank goes first.
    fn rank(&self) -> (bool, bool, std::cmp::Reverse<u32>, u64) {
        (
            self.dialed,
            self.services.dht || self.services.relay,
            std::cmp::Reverse(self.failures),
            self.last_seen,
        )
    }
}

/// The on-disk form of one peer: strings and numbers only, checked on load.
#[derive(Serialize, Deserialize)]
struct Entry {
    peer: String,
    #[serde(default)]
    addrs: Vec<String>,
    #[serde(default)]
    services: Services,
    #[serde(default)]
    dialed: bool,
    #[serde(default)]
    last_seen: u64,
    #[serde(default)]
    successes: u32,
    #[serde(default)]
    failures: u32,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    peers: Vec<serde_json::Value>,
}

/// Why a cache file was not used (the cache then starts empty).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read the peer cache {path}: {error}; starting with an empty one")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_LEN`].
    #[error("the peer cache {path} is larger than {MAX_FILE_LEN} bytes, so it is not a file peerdrop wrote; ignoring it and starting with an empty one")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// The file is not a peer cache this version reads.
    #[error("the peer cache {path} is damaged or from another version ({reason}); ignoring it and starting with an empty one")]
    Invalid {
        /// The file.
        path: String,
        /// What did not parse.
        reason: String,
    },
}

/// The peers met. Changes mark it dirty; [`PeerCache::encode`] is what to
/// write.
#[derive(Clone, Debug, Default)]
pub struct PeerCache {
    peers: HashMap<PeerId, CachedPeer>,
    dirty: bool,
}

/// `addr` as kept: without a trailing `/p2p/<peer>`, `None` if too long or
/// naming another peer at its end.
fn clean(peer: &PeerId, mut addr: Multiaddr) -> Option<Multiaddr> {
    if let Some(Protocol::P2p(p)) = addr.iter().last() {
        if p != *peer {
            return None;
        }
        addr.pop();
    }
    (!addr.is_empty() && addr.len() <= MAX_ADDR_LEN).then_some(addr)
}

impl PeerCache {
    /// An empty cache.
    pub fn new() -> PeerCache {
        PeerCache::default()
    }

    /// Reads the cache at `path`. A missing file is an empty cache; any
    /// other problem is an empty cache and the error to warn with.
    pub fn load(path: &Path) -> (PeerCache, Option<LoadError>) {
        let name = path.display().to_string();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (PeerCache::new(), None),
            Err(error) => return (PeerCache::new(), Some(LoadError::Io { path: name, error })),
        };
        let mut bytes = Vec::new();
        if let Err(error) = file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes) {
            return (PeerCache::new(), Some(LoadError::Io { path: name, error }));
        }
        if bytes.len() as u64 > MAX_FILE_LEN {
            return (PeerCache::new(), Some(LoadError::TooLarge { path: name }));
        }
        match PeerCache::decode(&bytes, now()) {
            Ok(c) => (c, None),
            Err(reason) => (
                PeerCache::new(),
                Some(LoadError::Invalid { path: name, reason }),
            ),
        }
    }

    /// Parses a cache file, `now` being the current Unix time. Entries that
    /// do not parse are skipped; only a file that is not a cache at all is
    /// an error. Everything is cut to the bounds, and times in the future
    /// are taken as now.
    pub fn decode(bytes: &[u8], now: u64) -> Result<PeerCache, String> {
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(format!("larger than {MAX_FILE_LEN} bytes"));
        }
        let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.version != VERSION {
            return Err(format!(
                "version {}, this peerdrop reads {VERSION}",
                file.version
            ));
        }
        let mut cache = PeerCache::new();
        for v in file.peers {
            let Ok(e) = serde_json::from_value::<Entry>(v) else {
                continue;
            };
            let Ok(peer) = e.peer.parse::<PeerId>() else {
                continue;
            };
            let mut addrs: Vec<Multiaddr> = Vec::new();
            for a in e.addrs.iter().take(MAX_ADDRS * 4) {
                if let Some(a) = a.parse().ok().and_then(|a| clean(&peer, a)) {
                    if !addrs.contains(&a) && addrs.len() < MAX_ADDRS {
                        addrs.push(a);
                    }
                }
            }
            if addrs.is_empty() {
                continue;
            }
            cache.insert(CachedPeer {
                peer,
                addrs,
                services: e.services,
                dialed: e.dialed,
                last_seen: e.last_seen.min(now),
                successes: e.successes,
                failures: e.failures,
            });
        }
        cache.dirty = false;
        Ok(cache)
    }

    /// The file to write, best peers first.
    pub fn encode(&self) -> Vec<u8> {
        let peers = self
            .best()
            .into_iter()
            .map(|p| {
                serde_json::to_value(Entry {
                    peer: p.peer.to_base58(),
                    addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                    services: p.services,
                    dialed: p.dialed,
                    last_seen: p.last_seen,
                    successes: p.successes,
                    failures: p.failures,
                })
                .expect("an entry serializes")
            })
            .collect();
        serde_json::to_vec_pretty(&File {
            version: VERSION,
            peers,
        })
        .expect("the cache serializes")
    }

    /// Adds `p`, or replaces the entry for its peer, evicting the peer
    /// least worth keeping if the cache is full (possibly `p` itself).
    fn insert(&mut self, p: CachedPeer) {
        self.dirty = true;
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&p.peer) {
            let worst = self
                .peers
                .values()
                .min_by_key(|q| q.rank())
                .expect("the cache is full, so not empty");
            if worst.rank() >= p.rank() {
                return;
            }
            let worst = worst.peer;
            self.peers.remove(&worst);
        }
        self.peers.insert(p.peer, p);
    }

    /// Records that `peer` was connected at `now`, with the addresses it
    /// listens on and the services it offered (from identify). `dialed`:
    /// this node dialled it (rather than it connecting in).
    pub fn met(
        &mut self,
        peer: PeerId,
        addrs: impl IntoIterator<Item = Multiaddr>,
        services: Services,
        dialed: bool,
        now: u64,
    ) {
        let mut fresh: Vec<Multiaddr> = Vec::new();
        for a in addrs.into_iter().take(64) {
            if let Some(a) = clean(&peer, a) {
                if !fresh.contains(&a) && fresh.len() < MAX_ADDRS {
                    fresh.push(a);
                }
            }
        }
        let old = self.peers.get(&peer);
        if fresh.is_empty() && old.is_none() {
            // Nowhere to reach it next time: nothing worth keeping.
            return;
        }
        let mut p = old.cloned().unwrap_or(CachedPeer {
            peer,
            addrs: Vec::new(),
            services,
            dialed: false,
            last_seen: now,
            successes: 0,
            failures: 0,
        });
        // The newest addresses first; older ones fill what is left.
        for a in std::mem::take(&mut p.addrs) {
            if !fresh.contains(&a) && fresh.len() < MAX_ADDRS {
                fresh.push(a);
            }
        }
        p.addrs = fresh;
        p.services = services;
        p.dialed |= dialed;
        p.last_seen = p.last_seen.max(now);
        p.successes = p.successes.saturating_add(1);
        p.failures = 0;
        self.insert(p);
    }

    /// Records that dialling `peer` failed at `now`; a peer that kept
    /// failing and was not seen for [`FORGET_AFTER`] is forgotten.
    pub fn failed(&mut self, peer: &PeerId, now: u64) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        p.failures = p.failures.saturating_add(1);
        self.dirty = true;
        if p.failures >= MAX_FAILURES && now.saturating_sub(p.last_seen) > FORGET_AFTER.as_secs() {
            self.peers.remove(peer);
        }
    }

    /// Every peer, best first (the order to bootstrap in).
    pub fn best(&self) -> Vec<&CachedPeer> {
        let mut v: Vec<&CachedPeer> = self.peers.values().collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.rank()));
        v
    }

    /// Up to `n` peers to bootstrap from, best first, each address as a
    /// multiaddr ending in `/p2p/<peer>`.
    pub fn bootstrap(&self, n: usize) -> Vec<Multiaddr> {
        self.best()
            .into_iter()
            .take(n)
            .flat_map(|p| {
                p.addrs
                    .iter()
                    .map(|a| a.clone().with(Protocol::P2p(p.peer)))
            })
            .collect()
    }

    /// The entry for `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&CachedPeer> {
        self.peers.get(peer)
    }

    /// How many peers are kept.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is kept.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether something changed since the last [`PeerCache::saved`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the current content as written.
    pub fn saved(&mut self) {
        self.dirty = false;
    }
}

/// The current Unix time in seconds (0 if the clock is before 1970).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> Multiaddr {
        format!("/ip4/10.0.{}.{}/tcp/4001", i / 256, i % 256)
            .parse()
            .unwrap()
    }

    fn relay() -> Services {
        Services {
            dht: true,
            relay: true,
        }
    }

    #[test]
    fn a_round_trip_keeps_everything() {
        let mut c = PeerCache::new();
        let a = PeerId::random();
        let b = PeerId::random();
        c.met(a, [addr(1), addr(2)], relay(), true, 1000);
        c.met(b, [addr(3)], Services::default(), false, 2000);
        c.failed(&b, 2001);
        assert!(c.is_dirty());
        let d = PeerCache::decode(&c.encode(), 5000).unwrap();
        assert!(!d.is_dirty());
        assert_eq!(d.get(&a), c.get(&a));
        assert_eq!(d.get(&b), c.get(&b));
        assert_eq!(d.get(&b).unwrap().failures, 1);
        // Best first: the relay this node dialled.
        assert_eq!(d.best()[0].peer, a);
        assert_eq!(
            d.bootstrap(1),
            vec![
                addr(1).with(Protocol::P2p(a)),
                addr(2).with(Protocol::P2p(a))
            ]
        );
    }

    #[test]
    fn addresses_are_bounded_newest_first_and_stripped_of_p2p() {
        let mut c = PeerCache::new();
        let p = PeerId::random();
        let other = PeerId::random();
        let long: Multiaddr = format!("/dns4/{}/tcp/1", "a".repeat(200)).parse().unwrap();
        c.met(
            p,
            [
                addr(0).with(Protocol::P2p(p)),
                addr(0).with(Protocol::P2p(other)),
                long,
            ],
            Services::default(),
            true,
            1,
        );
        assert_eq!(c.get(&p).unwrap().addrs, vec![addr(0)]);
        c.met(p, (1..=20).map(addr), Services::default(), true, 2);
        let kept = &c.get(&p).unwrap().addrs;
        assert_eq!(kept.len(), MAX_ADDRS);
        assert_eq!(kept[0], addr(1));
        // A peer with no usable address is not worth keeping.
        let q = PeerId::random();
        c.met(q, [], relay(), true, 3);
        assert!(c.get(&q).is_none());
    }

    #[test]
    fn a_full_cache_evicts_strangers_before_useful_peers() {
        let mut c = PeerCache::new();
        let useful = PeerId::random();
        c.met(useful, [addr(0)], relay(), true, 1);
        // A flood of inbound peers claiming every service, seen later.
        for i in 0..(MAX_PEERS as u32 * 2) {
            c.met(
                PeerId::random(),
                [addr(i + 1)],
                relay(),
                false,
                100 + i as u64,
            );
        }
        assert_eq!(c.len(), MAX_PEERS);
        assert!(c.get(&useful).is_some(), "a dialled relay was evicted");
        // Among strangers, the newest are kept.
        let oldest_kept = c
            .best()
            .iter()
            .filter(|p| !p.dialed)
            .map(|p| p.last_seen)
            .min()
            .unwrap();
        assert_eq!(
            oldest_kept,
            100 + MAX_PEERS as u64 * 2 - (MAX_PEERS as u64 - 1)
        );
        // A dialled peer that served pushes a stranger out.
        let later = PeerId::random();
        c.met(later, [addr(9999)], Services::default(), true, 5);
        assert!(c.get(&later).is_some());
        assert_eq!(c.len(), MAX_PEERS);
    }

    #[test]
    fn a_peer_that_keeps_failing_is_forgotten_only_when_old() {
        let mut c = PeerCache::new();
        let p = PeerId::random();
        c.met(p, [addr(1)], relay(), true, 1000);
        for _ in 0..MAX_FAILURES * 2 {
            c.failed(&p, 1000 + 60);
        }
        assert!(c.get(&p).is_some(), "forgotten while recently seen");
        c.failed(&p, 1000 + FORGET_AFTER.as_secs() + 1);
        assert!(c.get(&p).is_none());
        // Meeting it again resets the failures.
        c.met(p, [addr(1)], relay(), true, 2000);
        c.failed(&p, 2001);
        c.met(p, [addr(1)], relay(), true, 2002);
        assert_eq!(c.get(&p).unwrap().failures, 0);
        assert_eq!(c.get(&p).unwrap().successes, 2);
    }

    #[test]
    fn hostile_files_give_an_empty_cache_or_skip_entries() {
        for bad in [
            &b""[..],
            b"not json",
            b"{\"version\":2,\"peers\":[]}",
            b"{\"peers\":[]}",
            b"[1,2,3]",
            &[0xff, 0xfe, 0x00],
        ] {
            assert!(PeerCache::decode(bad, 0).is_err(), "{bad:?}");
        }
        let huge = vec![b' '; MAX_FILE_LEN as usize + 1];
        assert!(PeerCache::decode(&huge, 0).is_err());

        let p = PeerId::random();
        let text = format!(
            r#"{{"version":1,"peers":[
                {{"peer":"not a peer id","addrs":["/ip4/1.2.3.4/tcp/1"]}},
                {{"peer":"{p}","addrs":["garbage","/ip4/1.2.3.4/tcp/1",{}],"last_seen":18446744073709551615,"successes":4294967295}},
                {{"peer":"{p}x"}},
                7,
                {{"peer":"{}","addrs":[]}}
            ]}}"#,
            (0..10_000)
                .map(|i| format!("\"/ip4/1.2.3.4/tcp/{i}\""))
                .collect::<Vec<_>>()
                .join(","),
            PeerId::random()
        );
        let c = PeerCache::decode(text.as_bytes(), 500).unwrap();
        assert_eq!(c.len(), 1);
        let e = c.get(&p).unwrap();
        assert_eq!(e.last_seen, 500, "a time in the future is taken as now");
        assert!(e.addrs.len() <= MAX_ADDRS);
        assert_eq!(
            e.addrs[0],
            "/ip4/1.2.3.4/tcp/1".parse::<Multiaddr>().unwrap()
        );
        // Counters saturate instead of overflowing.
        let mut c = c;
        c.met(p, [addr(1)], relay(), true, 600);
        assert_eq!(c.get(&p).unwrap().successes, u32::MAX);
    }

    #[test]
    fn too_many_entries_on_disk_are_cut_to_the_bound() {
        let peers: Vec<String> = (0..MAX_PEERS * 2)
            .map(|i| {
                format!(
                    r#"{{"peer":"{}","addrs":["{}"],"last_seen":{i}}}"#,
                    PeerId::random(),
                    addr(i as u32)
                )
            })
            .collect();
        let text = format!(r#"{{"version":1,"peers":[{}]}}"#, peers.join(","));
        let c = PeerCache::decode(text.as_bytes(), 1 << 40).unwrap();
        assert_eq!(c.len(), MAX_PEERS);
        assert!(c.best().iter().all(|p| p.last_seen >= MAX_PEERS as u64));
    }

    #[test]
    fn load_copes_with_missing_damaged_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let (c, e) = PeerCache::load(&path);
        assert!(c.is_empty() && e.is_none());
        std::fs::write(&path, b"{\"version\":1,\"peers\":[").unwrap();
        let (c, e) = PeerCache::load(&path);
        assert!(c.is_empty());
        assert!(matches!(e, Some(LoadError::Invalid { .. })), "{e:?}");
        std::fs::write(&path, vec![b' '; MAX_FILE_LEN as usize + 10]).unwrap();
        let (_, e) = PeerCache::load(&path);
        assert!(matches!(e, Some(LoadError::TooLarge { .. })), "{e:?}");
        let mut c = PeerCache::new();
        let p = PeerId::random();
        c.met(p, [addr(1)], relay(), true, 1);
        std::fs::write(&path, c.encode()).unwrap();
        let (d, e) = PeerCache::load(&path);
        assert!(e.is_none());
        assert_eq!(d.get(&p), c.get(&p));
        // A directory where the file should be: a warning, not a panic.
        let (_, e) = PeerCache::load(dir.path());
        assert!(e.is_some());
    }
}
