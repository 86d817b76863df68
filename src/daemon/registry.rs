//! What the daemon serves: its own and re-seeded shares (re-encrypted from
//! files on demand) and pins (ciphertext from the chunk store).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::chunk::{ChunkId, Stream};
use crate::crypto::DoneKey;
use crate::manifest::{Manifest, ManifestId};
use crate::net::fetch::Partial;
use crate::net::serve::{DoneClaim, LocalProvider, Provider, Refusal};
use crate::net::PeerAddr;
use crate::store::chunks::ChunkDir;
use crate::store::share::LocalShare;
use crate::wire::Have;

/// A pinned share: its manifest, and where its chunks are.
pub struct Pinned {
    manifest: Manifest,
    bytes: Arc<[u8]>,
    index: HashMap<ChunkId, (Stream, u64)>,
    store: ChunkDir,
}

impl Pinned {
    /// A pin whose chunks are all in `store`.
    pub fn new(manifest: Manifest, store: ChunkDir) -> Pinned {
        let mut index = HashMap::with_capacity(manifest.chunk_count());
        for stream in [Stream::Metadata, Stream::Content] {
            for (i, c) in manifest.chunks(stream).iter().enumerate() {
                index.insert(*c, (stream, i as u64));
            }
        }
        Pinned {
            bytes: manifest.encode().into(),
            manifest,
            index,
            store,
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// One served share.
pub enum Served {
    /// Re-encrypted from files.
    Local(Box<LocalProvider>),
    /// Ciphertext from the chunk store.
    Pinned(Pinned),
}

/// Every share the daemon serves, by manifest id, and the shares its
/// running fetches serve as far as they verified them (partial holders).
#[derive(Default)]
pub struct Registry {
    shares: RwLock<HashMap<ManifestId, Arc<Served>>>,
    /// At most one per running fetch (`max_jobs`); a share served whole
    /// answers before its partial holder.
    partials: RwLock<HashMap<ManifestId, Arc<Partial>>>,
    uploaded: AtomicU64,
    /// Hears each receiver newly counted against a share's download limit,
    /// to keep the count across a restart (see [`Registry::report_downloads`]).
    downloads: OnceLock<mpsc::Sender<(ManifestId, PeerId)>>,
}

impl Registry {
    /// Serves `share`; with `limit`, until that many distinct receivers
    /// proved with the done-proof key that they hold it, `counted` (from
    /// before a restart) among them.
    pub fn add_local(
        &self,
        share: LocalShare,
        limit: Option<(DoneKey, u32)>,
        counted: impl IntoIterator<Item = PeerId>,
    ) {
        let id = share.id();
        let mut p = LocalProvider::new(share, None);
        if let Some((key, n)) = limit {
            p = p.with_max_downloads(key, n).with_downloads(counted);
        }
        self.insert(id, Served::Local(Box::new(p)));
    }

    /// From now on, each receiver newly counted against a download limit
    /// is sent to `to` (once; a full queue drops it, with a warning: the
    /// count in memory stands, only its copy on disk misses it).
    pub fn report_downloads(&self, to: mpsc::Sender<(ManifestId, PeerId)>) {
        let _ = self.downloads.set(to);
    }

    /// Serves a pin.
    pub fn add_pinned(&self, id: ManifestId, pinned: Pinned) {
        self.insert(id, Served::Pinned(pinned));
    }

    fn insert(&self, id: ManifestId, s: Served) {
        self.shares
            .write()
            .expect("never poisoned")
            .insert(id, Arc::new(s));
    }

    /// Stops serving `id`.
    pub fn remove(&self, id: &ManifestId) -> bool {
        self.shares
            .write()
            .expect("never poisoned")
            .remove(id)
            .is_some()
    }

    /// The served share `id`.
    pub fn get(&self, id: &ManifestId) -> Option<Arc<Served>> {
        self.shares.read().expect("never poisoned").get(id).cloned()
    }

    /// Serves what a running fetch of `id` has verified, until
    /// [`Registry::remove_partial`].
    pub fn add_partial(&self, id: ManifestId, partial: Arc<Partial>) {
        self.partials
            .write()
            .expect("never poisoned")
            .insert(id, partial);
    }

    /// The fetch of `id` ended: what it fetched is served whole (re-seeded)
    /// or not at all.
    pub fn remove_partial(&self, id: &ManifestId) {
        self.partials.write().expect("never poisoned").remove(id);
    }

    /// The running fetch of `id` serving what it verified, unless `id` is
    /// served whole.
    fn partial(&self, id: &ManifestId) -> Option<Arc<Partial>> {
        if self.get(id).is_some() {
            return None;
        }
        self.partials
            .read()
            .expect("never poisoned")
            .get(id)
            .cloned()
    }

    /// Chunk bytes sent so far.
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }
}

impl Provider for Registry {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        if let Some(p) = self.partial(share) {
            return p.manifest(share);
        }
        match &*self.get(share)? {
            Served::Local(p) => p.manifest(share),
            Served::Pinned(p) => Some(p.bytes.clone()),
        }
    }

    fn have(&self, share: &ManifestId) -> Option<Have> {
        if let Some(p) = self.partial(share) {
            return p.have(share);
        }
        self.get(share).map(|_| Have::All)
    }

    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        if let Some(p) = self.partial(share) {
            // Checked against its id by the partial holder.
            let bytes = p.chunk(share, chunk)?;
            self.uploaded
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            return Ok(bytes);
        }
        let served = self.get(share).ok_or(Refusal::NotFound)?;
        let bytes = match &*served {
            Served::Local(p) => p.chunk(share, chunk)?,
            Served::Pinned(p) => {
                let &(stream, index) = p.index.get(chunk).ok_or(Refusal::NotFound)?;
                let len = p.manifest.sealed_len(stream, index);
                let bytes = p.store.get(chunk, len).map_err(|_| Refusal::NotFound)?;
                // A damaged store must not make us serve wrong bytes.
                if crate::open::check_chunk(&p.manifest, stream, index, &bytes).is_err() {
                    tracing::warn!(%chunk, "a stored chunk is damaged; not serving it");
                    return Err(Refusal::NotFound);
                }
                bytes
            }
        };
        self.uploaded
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// A linear scan: a daemon serves few enough shares, and each stream
    /// asks at most once per request it is admitted for.
    fn holds(&self, locator: &[u8; 32]) -> Option<ManifestId> {
        let shares = self.shares.read().expect("never poisoned");
        if let Some(id) = shares.keys().find(|id| id.locator() == *locator) {
            return Some(*id);
        }
        drop(shares);
        let partials = self.partials.read().expect("never poisoned");
        partials.values().find_map(|p| p.holds(locator))
    }

    fn chunk_len(&self, share: &ManifestId, chunk: &ChunkId) -> Option<usize> {
        self.partial(share)?.chunk_len(share, chunk)
    }

    /// A running fetch's sources, passed on in peer exchange.
    fn sources(&self, share: &ManifestId) -> Vec<PeerAddr> {
        self.partial(share)
            .map_or_else(Vec::new, |p| p.sources(share))
    }

    /// Only a share served with a download limit counts (and so checks)
    /// proofs.
    fn verify_done(&self, share: &ManifestId, claim: &DoneClaim) -> bool {
        match self.get(share).as_deref() {
            Some(Served::Local(p)) => p.verify_done(share, claim),
            _ => false,
        }
    }

    fn done(&self, share: &ManifestId, peer: PeerId) {
        tracing::info!(%peer, share = %share, "a peer completed a fetch");
        if let Some(Served::Local(p)) = self.get(share).as_deref() {
            let before = p.downloads();
            p.done(share, peer);
            if p.downloads() > before {
                if let Some(to) = self.downloads.get() {
                    if to.try_send((*share, peer)).is_err() {
                        tracing::warn!(%peer, share = %share, "a counted download could not be saved; it counts until the daemon restarts");
                    }
                }
            }
        }
    }
}
