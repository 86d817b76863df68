//! Super-seeding for a provider with a capped upload (issue 11): it offers
//! each fetcher, in its `Have` answer, only content chunks that no other
//! swarm member already got from it, a few at a time, so that the capped
//! upload sends each chunk about once and the crowd passes it on.
//!
//! Ideas from BitTorrent's super-seeding (a seed offers each peer a piece
//! nobody has, and another only once it saw the first spread); here the
//! provider cannot see what its fetchers hold, so it counts on the ones that
//! announced they serve the share (peer exchange, [`crate::net::pex`]) and
//! are still connected, and offers a chunk again once [`SEED_PATIENCE`] has
//! passed since it last sent it. Nothing changes on the wire: a `Have`
//! bitmap that lists less than the provider holds is a valid answer, and a
//! fetcher asks only for what was listed (a provider never refuses a chunk
//! it listed). Pure: no I/O, the caller passes the time and who is live.
//!
//! Memory: at most [`SEED_SHARES`] shares of at most [`SEED_MAX_CHUNKS`]
//! chunks each, with at most [`SEED_RECIPIENTS`] recipients and one promise
//! per chunk: about 2.5 MiB per share at the very most. A larger share is
//! offered whole, as without super-seeding.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::chunk::ChunkId;
use crate::manifest::{Manifest, ManifestId};
use crate::wire::Have;

/// Most shares whose sends are remembered; past this the one used least
/// recently is forgotten (and served as if nothing had been sent).
pub const SEED_SHARES: usize = 4;
/// Largest share super-seeded, in chunks (8 GiB at the default 1 MiB).
pub const SEED_MAX_CHUNKS: usize = 8192;
/// Most recipients remembered per chunk (the latest ones).
pub const SEED_RECIPIENTS: usize = 2;
/// Chunks nobody has yet offered to one fetcher at a time while others
/// fetch too: enough that its next request never waits on a `Have`, few
/// enough that two fetchers are rarely offered the same chunk.
pub const SEED_OFFER: usize = 2;
/// How long a chunk offered to one fetcher is kept from the others (unless
/// that fetcher asks `Have` again first, which ends its offer). A chunk it
/// asked for stays its own until sent, for at most [`ASKED_HOLD`].
pub const OFFER_HOLD: Duration = Duration::from_secs(3);
/// How long a chunk asked for stays promised to its asker while it waits
/// for its turn (the server's turn patience plus its queue deadline).
pub const ASKED_HOLD: Duration = Duration::from_secs(20);
/// How long after it was last sent a chunk is left to the swarm members it
/// went to: past this it is offered again (a member that lied about
/// serving, or serves too slowly, delays the others at most this long).
pub const SEED_PATIENCE: Duration = Duration::from_secs(10);

/// What one share's chunks were sent to and offered to.
struct SeedShare {
    /// Content chunks' indices, by id.
    index: HashMap<ChunkId, usize>,
    /// Metadata chunks first in a `Have` bitmap: never held back (they are
    /// small and every fetcher needs them first).
    metadata: usize,
    /// Per content chunk: the latest swarm members it was sent to, and when.
    sent: Vec<Vec<(PeerId, Instant)>>,
    /// Per content chunk: the fetcher it is offered to, until when, and
    /// whether it asked for it.
    promised: Vec<Option<(PeerId, Instant, bool)>>,
    /// Fetchers that asked `Have` lately, and when (at most
    /// [`SEED_ASKERS`]): others at work, even before they announce.
    askers: HashMap<PeerId, Instant>,
    /// Per fetcher (at most [`SEED_ASKERS`]): where its next offer starts.
    cursor: HashMap<PeerId, usize>,
    used: Instant,
}

/// Most fetchers remembered per share as having asked `Have` lately.
pub const SEED_ASKERS: usize = 64;

/// The super-seeding state of one capped server.
#[derive(Default)]
pub struct Seeding {
    shares: HashMap<ManifestId, SeedShare>,
}

impl Seeding {
    /// What to answer `asker`'s `Have` for `share`, which this node holds
    /// as `held`: `held` itself unless other fetchers are at work (other
    /// `connected` peers that asked `Have` lately, hold an offer, or are
    /// live members); else the metadata, what `asker` was sent or asked
    /// for, and at most [`SEED_OFFER`] other chunks, held back from the
    /// others for [`OFFER_HOLD`] (or until `asker` asks again), taken in
    /// turn from where its last offer ended. A chunk a live member
    /// (`live`: announced it serves the share and is connected) got within
    /// [`SEED_PATIENCE`] is left to the swarm. `manifest` is the share's
    /// manifest, decoded only the first time.
    pub fn offer(
        &mut self,
        share: ManifestId,
        asker: PeerId,
        held: &Have,
        manifest: impl FnOnce() -> Option<Manifest>,
        (live, connected): (&HashSet<PeerId>, &HashSet<PeerId>),
        now: Instant,
    ) -> Have {
        let Some(s) = self.share(share, manifest, now) else {
            return held.clone();
        };
        // Its earlier offer ends with this question; what it asked for
        // stays its own.
        for p in &mut s.promised {
            if matches!(p, Some((q, _, false)) if *q == asker) {
                *p = None;
            }
        }
        s.askers
            .retain(|_, t| now.saturating_duration_since(*t) < OFFER_HOLD);
        if s.askers.len() >= SEED_ASKERS && !s.askers.contains_key(&asker) {
            if let Some(oldest) = s.askers.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p) {
                s.askers.remove(&oldest);
            }
        }
        let other = |p: &PeerId| *p != asker && connected.contains(p);
        let others = s.askers.keys().any(other)
            || live.iter().any(other)
            || s.promised
                .iter()
                .flatten()
                .any(|(q, until, _)| other(q) && *until > now);
        s.askers.insert(asker, now);
        let count = s.metadata + s.sent.len();
        let mut bits = vec![0u8; count.div_ceil(8)];
        let mut set = |pos: usize| bits[pos / 8] |= 1 << (pos % 8);
        let mut listed = 0;
        for pos in (0..s.metadata).filter(|&p| held.has(p)) {
            set(pos);
            listed += 1;
        }
        // Chunks it may be offered (not held back for another, not with a
        // live member), in position order.
        let mut fresh = Vec::new();
        for k in 0..s.sent.len() {
            let pos = s.metadata + k;
            if !held.has(pos) {
                continue;
            }
            match s.promised[k] {
                Some((q, until, _)) if until > now && other(&q) => continue,
                Some((q, until, true)) if until > now && q == asker => {
                    // What it asked for, waiting for its turn.
                    set(pos);
                    listed += 1;
                    continue;
                }
                _ => s.promised[k] = None,
            }
            let sent = &s.sent[k];
            if sent.iter().any(|(p, _)| *p == asker) {
                // It has it; listing it costs nothing.
                set(pos);
                listed += 1;
                continue;
            }
            let spread = sent.iter().any(|(p, t)| {
                live.contains(p) && now.saturating_duration_since(*t) < SEED_PATIENCE
            });
            if !spread {
                fresh.push(k);
            }
        }
        // Alone, it is offered all of them; in a crowd a few, each held
        // back from the others, taken in turn from where its last offer
        // ended: a fetcher that has them already (from a member that left)
        // soon sees the one it lacks.
        let take = if others { SEED_OFFER } else { fresh.len() };
        let from = s.cursor.get(&asker).copied().unwrap_or(0);
        let first = fresh.iter().position(|&k| k >= from).unwrap_or(0);
        let mut last = None;
        for &k in fresh.iter().cycle().skip(first).take(take.min(fresh.len())) {
            set(s.metadata + k);
            listed += 1;
            last = Some(k);
            if others {
                s.promised[k] = Some((asker, now + OFFER_HOLD, false));
            }
        }
        if let (Some(k), true) = (last, others) {
            if s.cursor.len() >= SEED_ASKERS && !s.cursor.contains_key(&asker) {
                let askers = &s.askers;
                s.cursor.retain(|p, _| askers.contains_key(p));
            }
            if s.cursor.len() < SEED_ASKERS || s.cursor.contains_key(&asker) {
                s.cursor.insert(asker, k + 1);
            }
        }
        if listed == count && matches!(held, Have::All) {
            Have::All
        } else {
            Have::Bitmap(bits)
        }
    }

    /// `asker` asked for `chunk` of `share`: it stays promised to it until
    /// sent (for at most [`ASKED_HOLD`]).
    pub fn asked(&mut self, share: &ManifestId, chunk: &ChunkId, asker: PeerId, now: Instant) {
        if let Some(s) = self.shares.get_mut(share) {
            if let Some(&k) = s.index.get(chunk) {
                s.promised[k] = Some((asker, now + ASKED_HOLD, true));
            }
        }
    }

    /// `chunk` of `share` is being sent to `to`.
    pub fn sent(&mut self, share: &ManifestId, chunk: &ChunkId, to: PeerId, now: Instant) {
        let Some(s) = self.shares.get_mut(share) else {
            return;
        };
        let Some(&k) = s.index.get(chunk) else {
            return;
        };
        if matches!(s.promised[k], Some((q, _, _)) if q == to) {
            s.promised[k] = None;
        }
        let r = &mut s.sent[k];
        r.retain(|(p, _)| *p != to);
        r.insert(0, (to, now));
        r.truncate(SEED_RECIPIENTS);
    }

    /// The state of `share`, made on first use from its manifest; `None`
    /// for a share too large to super-seed or whose manifest is unknown.
    fn share(
        &mut self,
        share: ManifestId,
        manifest: impl FnOnce() -> Option<Manifest>,
        now: Instant,
    ) -> Option<&mut SeedShare> {
        if !self.shares.contains_key(&share) {
            let m = manifest()?;
            if m.content_chunks.len() > SEED_MAX_CHUNKS {
                return None;
            }
            if self.shares.len() >= SEED_SHARES {
                let oldest = self
                    .shares
                    .iter()
                    .min_by_key(|(_, s)| s.used)
                    .map(|(id, _)| *id);
                if let Some(id) = oldest {
                    self.shares.remove(&id);
                }
            }
            let n = m.content_chunks.len();
            let s = SeedShare {
                index: m
                    .content_chunks
                    .iter()
                    .enumerate()
                    .map(|(k, c)| (*c, k))
                    .collect(),
                metadata: m.metadata_chunks.len(),
                sent: vec![Vec::new(); n],
                promised: vec![None; n],
                askers: HashMap::new(),
                cursor: HashMap::new(),
                used: now,
            };
            self.shares.insert(share, s);
        }
        let s = self.shares.get_mut(&share)?;
        s.used = now;
        Some(s)
    }

    /// Shares remembered.
    pub fn len(&self) -> usize {
        self.shares.len()
    }

    /// Whether no share is remembered.
    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkSize;

    /// One metadata chunk, then `n` content chunks.
    fn manifest(n: u8) -> Manifest {
        Manifest {
            chunk_size: ChunkSize::from_log2(10).unwrap(),
            key_commitment: [9; 32],
            metadata_len: 10,
            content_len: 1024 * n as u64,
            metadata_chunks: vec![ChunkId([0; 32])],
            content_chunks: (1..=n).map(|i| ChunkId([i; 32])).collect(),
            expires: None,
        }
    }

    const SHARE: ManifestId = ManifestId([7; 32]);

    /// The positions a `Have` lists, out of `count`.
    fn listed(h: &Have, count: usize) -> Vec<usize> {
        (0..count).filter(|&i| h.has(i)).collect()
    }

    /// Content chunk `k`'s id (position `k + 1`).
    fn id(k: u8) -> ChunkId {
        ChunkId([k + 1; 32])
    }

    #[test]
    fn a_fetcher_alone_is_offered_everything() {
        let mut s = Seeding::default();
        let (a, now) = (PeerId::random(), Instant::now());
        let none = HashSet::new();
        let h = s.offer(
            SHARE,
            a,
            &Have::All,
            || Some(manifest(8)),
            (&none, &none),
            now,
        );
        assert_eq!(h, Have::All);
        // Still everything once it was sent some: nobody else is at work.
        s.sent(&SHARE, &id(0), a, now);
        let h = s.offer(SHARE, a, &Have::All, || None, (&none, &none), now);
        assert_eq!(h, Have::All);
    }

    /// With a crowd, each fetcher is offered a few chunks nobody else was
    /// offered or sent; a chunk a live member got is not offered again
    /// until the patience runs out, or at once if that member is gone.
    #[test]
    fn a_crowd_is_offered_each_chunk_about_once() {
        let mut s = Seeding::default();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let now = Instant::now();
        let none = HashSet::new();
        let all: HashSet<PeerId> = [a, b, c].into();
        // a asks first, alone: everything. Then b asks: a is at work.
        let first = s.offer(
            SHARE,
            a,
            &Have::All,
            || Some(manifest(8)),
            (&none, &all),
            now,
        );
        assert_eq!(first, Have::All);
        s.asked(&SHARE, &id(0), a, now);
        let hb = s.offer(SHARE, b, &Have::All, || None, (&none, &all), now);
        // The metadata chunk, and two content chunks other than a's.
        assert_eq!(listed(&hb, 9), [0, 2, 3]);
        // c is offered neither a's nor b's.
        let hc = s.offer(SHARE, c, &Have::All, || None, (&none, &all), now);
        assert_eq!(listed(&hc, 9), [0, 4, 5]);
        // Chunk 0 goes to a, a live member: not offered to b or c.
        s.sent(&SHARE, &id(0), a, now);
        let live: HashSet<PeerId> = [a].into();
        let hb = s.offer(SHARE, b, &Have::All, || None, (&live, &all), now);
        // b's offer moves on, past c's.
        assert_eq!(listed(&hb, 9), [0, 6, 7]);
        // Once a is gone, chunk 0 may go out again: b's next offer, in
        // turn, wraps around to it.
        let gone: HashSet<PeerId> = [b, c].into();
        let hb = s.offer(SHARE, b, &Have::All, || None, (&none, &gone), now);
        assert_eq!(listed(&hb, 9), [0, 1, 8]);
        let later = now + OFFER_HOLD;
        let hb = s.offer(SHARE, b, &Have::All, || None, (&none, &gone), later);
        assert!(hb.has(1), "{hb:?}");
        // With a live, only after the patience.
        let hc = s.offer(SHARE, c, &Have::All, || None, (&live, &all), later);
        assert!(!hc.has(1));
        let hc = s.offer(
            SHARE,
            c,
            &Have::All,
            || None,
            (&live, &all),
            now + SEED_PATIENCE,
        );
        assert!(hc.has(1));
    }

    /// Chunks sent before only to a member since gone are offered again,
    /// to one of a crowd a few at a time, in turn.
    #[test]
    fn chunks_sent_to_members_gone_are_offered_in_turn() {
        let mut s = Seeding::default();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let now = Instant::now();
        let none = HashSet::new();
        s.offer(
            SHARE,
            a,
            &Have::All,
            || Some(manifest(8)),
            (&none, &none),
            now,
        );
        for k in 0..8 {
            s.sent(&SHARE, &id(k), a, now);
        }
        // a is gone; b and c fetch.
        let bc: HashSet<PeerId> = [b, c].into();
        s.offer(SHARE, c, &Have::All, || None, (&none, &bc), now);
        let seen: Vec<Vec<usize>> = (0..3)
            .map(|_| {
                listed(
                    &s.offer(SHARE, b, &Have::All, || None, (&none, &bc), now),
                    9,
                )
            })
            .collect();
        assert_eq!(seen, [vec![0, 1, 2], vec![0, 3, 4], vec![0, 5, 6]]);
        // Alone, b is offered everything.
        let later = now + OFFER_HOLD;
        let alone: HashSet<PeerId> = [b].into();
        let h = s.offer(SHARE, b, &Have::All, || None, (&none, &alone), later);
        assert_eq!(h, Have::All);
    }

    /// What a fetcher asked for stays its own until sent; a fetcher's
    /// unused offer ends when it asks again.
    #[test]
    fn an_asked_chunk_stays_promised_and_an_offer_ends_at_the_next_have() {
        let mut s = Seeding::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        let none = HashSet::new();
        let all: HashSet<PeerId> = [a, b].into();
        s.offer(
            SHARE,
            a,
            &Have::All,
            || Some(manifest(4)),
            (&none, &all),
            now,
        );
        let hb = s.offer(SHARE, b, &Have::All, || None, (&none, &all), now);
        assert_eq!(listed(&hb, 5), [0, 1, 2]);
        s.asked(&SHARE, &id(0), b, now);
        // a is offered neither.
        let ha = s.offer(SHARE, a, &Have::All, || None, (&none, &all), now);
        assert_eq!(listed(&ha, 5), [0, 3, 4]);
        // b asks again: chunk 0 is still its own, chunk 1 (offered, not
        // asked) was let go and is offered to it again as nobody took it.
        let hb = s.offer(SHARE, b, &Have::All, || None, (&none, &all), now);
        assert_eq!(listed(&hb, 5), [0, 1, 2]);
        // Past the asked hold, chunk 0 is free again.
        let ha = s.offer(
            SHARE,
            a,
            &Have::All,
            || None,
            (&none, &all),
            now + ASKED_HOLD,
        );
        assert!(ha.has(1));
    }

    /// A partial holder's bitmap is only narrowed, never widened.
    #[test]
    fn only_what_is_held_is_offered() {
        let mut s = Seeding::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        let none = HashSet::new();
        let all: HashSet<PeerId> = [a, b].into();
        // Holds the metadata chunk and content chunks 2 and 3.
        let held = Have::Bitmap(vec![0b0001_1001]);
        s.offer(SHARE, a, &held, || Some(manifest(6)), (&none, &all), now);
        let hb = s.offer(SHARE, b, &held, || None, (&none, &all), now);
        assert!(listed(&hb, 7).iter().all(|&p| held.has(p)), "{hb:?}");
    }

    #[test]
    fn memory_stays_bounded() {
        let mut s = Seeding::default();
        let now = Instant::now();
        let none = HashSet::new();
        for i in 0..3 * SEED_SHARES as u8 {
            let share = ManifestId([i; 32]);
            s.offer(
                share,
                PeerId::random(),
                &Have::All,
                || Some(manifest(2)),
                (&none, &none),
                now,
            );
        }
        assert_eq!(s.len(), SEED_SHARES);
        // A share too large is offered whole and not remembered.
        let mut big = manifest(1);
        big.content_chunks = vec![ChunkId([1; 32]); SEED_MAX_CHUNKS + 1];
        let mut s = Seeding::default();
        let h = s.offer(
            SHARE,
            PeerId::random(),
            &Have::All,
            || Some(big),
            (&none, &none),
            now,
        );
        assert_eq!(h, Have::All);
        assert!(s.is_empty());
        // Askers per share are bounded too.
        let mut s = Seeding::default();
        for _ in 0..3 * SEED_ASKERS {
            s.offer(
                SHARE,
                PeerId::random(),
                &Have::All,
                || Some(manifest(2)),
                (&none, &none),
                now,
            );
        }
        assert!(s.shares[&SHARE].askers.len() <= SEED_ASKERS);
    }
}
