//! The DHT's record store: bounded against a flood, and never crowding out
//! this node's own announcements (audit F-02).
//!
//! libp2p's `MemoryStore` keeps one table for every provider record. Any
//! peer may send `ADD_PROVIDER` for any key, so a flood fills that table:
//! with the limits peerdrop used to set (100 000 keys × 20 providers, each
//! with the addresses the sender chose) a remote peer could take gigabytes,
//! and once the table was full the node could not announce its own shares.
//! Here:
//!
//! - **this node's records** (the shares it announces) live apart, bounded
//!   only by [`StoreLimits::max_own`], and are never refused for room taken by
//!   others;
//! - **other peers' records** are bounded by keys, providers per key,
//!   addresses per provider (and bytes per address), and by an estimate of
//!   the bytes they take in all ([`StoreLimits::max_bytes`]); when full,
//!   expired records are pruned first, then a new key is refused (existing
//!   keys are kept: evicting them would let a flood push out real records);
//! - **value records** are refused: peerdrop stores none.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Instant;

use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};

/// Limits of the store; see the module docs for how each is applied.
#[derive(Clone, Debug)]
pub struct StoreLimits {
    /// Most keys this node announces itself.
    pub max_own: usize,
    /// Most keys with records from other peers.
    pub max_keys: usize,
    /// Most other peers' records per key.
    pub max_providers_per_key: usize,
    /// Most addresses kept per record (the rest are dropped).
    pub max_addrs: usize,
    /// Longest address kept, in bytes.
    pub max_addr_len: usize,
    /// Most bytes (estimated, see [`record_cost`]) of other peers' records.
    pub max_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_own: 1 << 20,
            max_keys: 20_000,
            max_providers_per_key: 20,
            max_addrs: 8,
            max_addr_len: 128,
            max_bytes: 32 << 20,
        }
    }
}

/// What a stored record of others is counted as: its key, its provider and
/// its addresses' bytes, plus the fixed overhead of the structures holding
/// them. An estimate that errs on the high side, so the real use stays
/// within [`StoreLimits::max_bytes`].
pub fn record_cost(r: &ProviderRecord) -> usize {
    // The record in its key's vector (with room to grow), the key's heap
    // bytes and its map entry; per address, its shared buffer and pointer.
    const FIXED: usize = 384;
    const PER_ADDR: usize = 112;
    FIXED
        + r.key.as_ref().len()
        + r.addresses
            .iter()
            .map(|a| a.as_ref().len() + PER_ADDR)
            .sum::<usize>()
}

/// peerdrop's Kademlia store.
pub struct Store {
    me: PeerId,
    limits: StoreLimits,
    own: HashMap<RecordKey, ProviderRecord>,
    others: HashMap<RecordKey, Vec<ProviderRecord>>,
    bytes: usize,
    /// The earliest expiry among other peers' records: pruning before then
    /// would free nothing (and would cost a pass over the whole store).
    next_expiry: Option<Instant>,
}

impl Store {
    /// An empty store for node `me`.
    pub fn new(me: PeerId, limits: StoreLimits) -> Store {
        Store {
            me,
            limits,
            own: HashMap::new(),
            others: HashMap::new(),
            bytes: 0,
            next_expiry: None,
        }
    }

    /// Estimated bytes held by other peers' records.
    pub fn others_bytes(&self) -> usize {
        self.bytes
    }

    /// Other peers' records held.
    pub fn others_count(&self) -> usize {
        self.others.values().map(Vec::len).sum()
    }

    /// Drops other peers' expired records.
    fn prune(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|t| t > now) {
            return;
        }
        let mut freed = 0;
        let mut next: Option<Instant> = None;
        self.others.retain(|_, v| {
            v.retain(|r| {
                let keep = !r.is_expired(now);
                if keep {
                    if let Some(t) = r.expires {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                } else {
                    freed += record_cost(r);
                }
                keep
            });
            !v.is_empty()
        });
        self.bytes -= freed;
        self.next_expiry = next;
    }

    /// Keeps at most `max_addrs` addresses of at most `max_addr_len` bytes.
    fn trim(&self, mut r: ProviderRecord) -> ProviderRecord {
        let max_len = self.limits.max_addr_len;
        r.addresses
            .retain(|a: &Multiaddr| a.as_ref().len() <= max_len);
        r.addresses.truncate(self.limits.max_addrs);
        r.addresses.shrink_to_fit();
        r
    }

    fn add_other(&mut self, r: ProviderRecord) -> Result<()> {
        let r = self.trim(r);
        let cost = record_cost(&r);
        let l = &self.limits;
        // An update of a record already held replaces it in place.
        if let Some(v) = self.others.get_mut(&r.key) {
            if let Some(old) = v.iter_mut().find(|o| o.provider == r.provider) {
                let old_cost = record_cost(old);
                if self.bytes - old_cost + cost > l.max_bytes {
                    return Err(Error::MaxProvidedKeys);
                }
                self.bytes = self.bytes - old_cost + cost;
                *old = r;
                return Ok(());
            }
        }
        let new_key = !self.others.contains_key(&r.key);
        let full = |s: &Store| {
            s.bytes + cost > s.limits.max_bytes || (new_key && s.others.len() >= s.limits.max_keys)
        };
        if full(self) {
            self.prune(Instant::now());
            if full(self) {
                return Err(Error::MaxProvidedKeys);
            }
        }
        let max_per_key = self.limits.max_providers_per_key;
        let v = self.others.entry(r.key.clone()).or_default();
        // A full key ignores newcomers (as libp2p's store does): a flood of
        // identities cannot push out the providers already known.
        if v.len() >= max_per_key {
            return Ok(());
        }
        if let Some(t) = r.expires {
            self.next_expiry = Some(self.next_expiry.map_or(t, |n| n.min(t)));
        }
        v.push(r);
        self.bytes += cost;
        Ok(())
    }
}

impl RecordStore for Store {
    type RecordsIter<'a> = std::iter::Empty<Cow<'a, Record>>;
    type ProvidedIter<'a> = std::iter::Map<
        std::collections::hash_map::Values<'a, RecordKey, ProviderRecord>,
        fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
    >;

    fn get(&self, _k: &RecordKey) -> Option<Cow<'_, Record>> {
        None
    }

    fn put(&mut self, _r: Record) -> Result<()> {
        Err(Error::MaxRecords)
    }

    fn remove(&mut self, _k: &RecordKey) {}

    fn records(&self) -> Self::RecordsIter<'_> {
        std::iter::empty()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider == self.me {
            if !self.own.contains_key(&record.key) && self.own.len() >= self.limits.max_own {
                return Err(Error::MaxProvidedKeys);
            }
            self.own.insert(record.key.clone(), record);
            return Ok(());
        }
        self.add_other(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut v: Vec<ProviderRecord> = self.own.get(key).cloned().into_iter().collect();
        if let Some(others) = self.others.get(key) {
            v.extend(others.iter().cloned());
        }
        v
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.own.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.me {
            self.own.remove(key);
            return;
        }
        if let Some(v) = self.others.get_mut(key) {
            if let Some(i) = v.iter().position(|r| r.provider == *provider) {
                self.bytes -= record_cost(&v.remove(i));
            }
            if v.is_empty() {
                self.others.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(i: u64) -> RecordKey {
        RecordKey::new(&blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    /// A record with as many, as long addresses as a hostile peer likes.
    fn fat(k: RecordKey, provider: PeerId) -> ProviderRecord {
        let long: Multiaddr = format!("/dns4/{}/tcp/1", "a".repeat(200)).parse().unwrap();
        let ok: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
        let mut addresses = vec![long; 20];
        addresses.extend(std::iter::repeat_n(ok, 20));
        ProviderRecord {
            key: k,
            provider,
            expires: Some(Instant::now() + Duration::from_secs(3600)),
            addresses,
        }
    }

    #[test]
    fn a_flood_of_add_provider_stays_within_the_stated_bound() {
        let me = PeerId::random();
        let limits = StoreLimits::default();
        let before = crate::test_alloc::held_by_this_thread();
        let mut s = Store::new(me, limits.clone());
        // 200 000 records over 100 000 keys, from fresh identities.
        for i in 0..200_000u64 {
            let _ = s.add_provider(fat(key(i / 2), PeerId::random()));
        }
        assert!(s.others_bytes() <= limits.max_bytes, "{}", s.others_bytes());
        // The estimate is on the high side: what this thread holds grew by
        // less than the bound (counted by the test allocator, so tests
        // running beside this one do not count).
        let grown = (crate::test_alloc::held_by_this_thread() - before).max(0) as usize;
        assert!(
            grown <= limits.max_bytes,
            "grew {grown} bytes for a {} byte bound",
            limits.max_bytes
        );
        assert!(s.others.len() <= limits.max_keys);
        assert!(s
            .others
            .values()
            .all(|v| v.len() <= limits.max_providers_per_key));
        // Addresses were cut to the limit, and the over-long ones dropped.
        for v in s.others.values() {
            for r in v {
                assert!(r.addresses.len() <= limits.max_addrs);
                assert!(r
                    .addresses
                    .iter()
                    .all(|a| a.as_ref().len() <= limits.max_addr_len));
            }
        }
        // The node's own announcements are never crowded out.
        for i in 0..1000u64 {
            let k = key(1_000_000 + i);
            s.add_provider(ProviderRecord::new(k.clone(), me, vec![]))
                .expect("own records always fit");
            assert_eq!(s.providers(&k).len(), 1);
        }
        assert_eq!(s.provided().count(), 1000);
    }

    #[test]
    fn expired_records_make_room() {
        let me = PeerId::random();
        let mut s = Store::new(
            me,
            StoreLimits {
                max_keys: 10,
                ..StoreLimits::default()
            },
        );
        for i in 0..10 {
            let mut r = fat(key(i), PeerId::random());
            r.expires = Some(Instant::now() - Duration::from_secs(1));
            s.add_provider(r).unwrap();
        }
        assert!(s.add_provider(fat(key(99), PeerId::random())).is_ok());
        assert_eq!(s.others.len(), 1);
    }

    #[test]
    fn updates_and_removals_keep_the_count_right() {
        let me = PeerId::random();
        let mut s = Store::new(me, StoreLimits::default());
        let p = PeerId::random();
        s.add_provider(fat(key(1), p)).unwrap();
        let once = s.others_bytes();
        s.add_provider(fat(key(1), p)).unwrap();
        assert_eq!(s.others_bytes(), once, "an update replaces, not adds");
        assert_eq!(s.providers(&key(1)).len(), 1);
        s.remove_provider(&key(1), &p);
        assert_eq!(s.others_bytes(), 0);
        assert!(s.providers(&key(1)).is_empty());
        // Values are refused: peerdrop stores none.
        assert!(s.put(Record::new(key(2), vec![1, 2, 3])).is_err());
    }
}
