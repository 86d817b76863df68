//! Helpers for swarm tests (tests/swarm.rs, tests/crowd.rs): a provider
//! that counts what it serves, a capped sharer, and a share of one file.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use peerdrop::chunk::ChunkId;
use peerdrop::crypto::ShareKey;
use peerdrop::manifest::ManifestId;
use peerdrop::net::serve::{DoneClaim, LocalProvider, Provider, Refusal, ServeConfig};
use peerdrop::net::{PeerAddr, PeerId};
use peerdrop::seal::SealOptions;
use peerdrop::store::share::LocalShare;
use peerdrop::wire::Have;

use super::net::{start_server_with, Server};

/// Serves what `inner` serves, counting the chunks it produces and their
/// bytes.
pub struct Counting<P = Arc<LocalProvider>> {
    pub inner: P,
    /// Chunks produced.
    pub chunks: AtomicUsize,
    /// Their bytes.
    pub bytes: AtomicUsize,
}

impl<P> Counting<P> {
    pub fn new(inner: P) -> Counting<P> {
        Counting {
            inner,
            chunks: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        }
    }
}

impl<P, T> Provider for Counting<P>
where
    P: std::ops::Deref<Target = T> + Send + Sync + 'static,
    T: Provider + ?Sized,
{
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.inner.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.inner.have(share)
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        self.chunks.fetch_add(1, Ordering::SeqCst);
        let c = self.inner.chunk(share, chunk)?;
        self.bytes.fetch_add(c.len(), Ordering::SeqCst);
        Ok(c)
    }
    fn chunk_len(&self, share: &ManifestId, chunk: &ChunkId) -> Option<usize> {
        self.inner.chunk_len(share, chunk)
    }
    fn holds(&self, locator: &[u8; 32]) -> Option<ManifestId> {
        self.inner.holds(locator)
    }
    fn verify_done(&self, share: &ManifestId, claim: &DoneClaim) -> bool {
        self.inner.verify_done(share, claim)
    }
    fn done(&self, share: &ManifestId, peer: PeerId) {
        self.inner.done(share, peer)
    }
    fn sources(&self, share: &ManifestId) -> Vec<PeerAddr> {
        self.inner.sources(share)
    }
}

/// Serves what its provider serves but passes on no source in peer
/// exchange.
pub struct Unlisted<P>(pub P);

impl<P, T> Provider for Unlisted<P>
where
    P: std::ops::Deref<Target = T> + Send + Sync + 'static,
    T: Provider + ?Sized,
{
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.0.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.0.have(share)
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        self.0.chunk(share, chunk)
    }
    fn chunk_len(&self, share: &ManifestId, chunk: &ChunkId) -> Option<usize> {
        self.0.chunk_len(share, chunk)
    }
    fn holds(&self, locator: &[u8; 32]) -> Option<ManifestId> {
        self.0.holds(locator)
    }
    fn verify_done(&self, share: &ManifestId, claim: &DoneClaim) -> bool {
        self.0.verify_done(share, claim)
    }
}

/// A share of `file` under `key`, served with an upload cap, counting what
/// it serves.
pub async fn capped(key: &ShareKey, file: &Path, rate: u64) -> (Server, Arc<Counting>) {
    let counting = Arc::new(Counting::new(Arc::new(LocalProvider::new(
        share_of_file(key, file),
        None,
    ))));
    let config = ServeConfig {
        max_rate: Some(rate),
        ..ServeConfig::default()
    };
    let server = start_server_with("/ip4/127.0.0.1/tcp/0", counting.clone(), config).await;
    (server, counting)
}

/// `file` shared under `key` (sealing is deterministic: the same share
/// each time).
pub fn share_of_file(key: &ShareKey, file: &Path) -> LocalShare {
    LocalShare::create(&[file.to_path_buf()], key, &SealOptions::default(), |_| {}).unwrap()
}
