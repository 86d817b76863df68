//! A fetch that serves what it has verified so far: the [`Provider`] of a
//! node that is still fetching a share (issue 11, "partial holders serve").
//!
//! The fetch tells its [`Partial`] what it learns: the verified manifest,
//! then the file list, then each content chunk once it is written (or kept
//! from an interrupted run). Others asking `Have` get a bitmap of exactly
//! those chunks, and a chunk asked for is produced again from where the
//! fetch keeps it — re-sealed from the staged plaintext (a reader holds the
//! key; sealing is deterministic), or read from the chunk folder (a pin) —
//! and leaves only if it matches its id, as for any provider. Nothing is
//! copied or held in memory for serving beyond the bitmap (one bit per
//! chunk, at most 64 KiB) and the file list's plaintext.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::chunk::{ChunkId, Stream};
use crate::crypto::DoneKey;
use crate::manifest::{Manifest, ManifestId};
use crate::net::serve::{DoneClaim, Provider, Refusal};
use crate::net::PeerAddr;
use crate::seal::Resealer;
use crate::store::chunks::ChunkDir;
use crate::store::output::Output;
use crate::store::share::{LocalShare, ServeError};
use crate::wire::Have;

/// The staged output of a fetch, shared between its sessions (which write
/// under the write lock) and serving (which reads under the read lock);
/// `None` once the fetch has taken it back to finish.
pub(super) type SharedOutput = Arc<RwLock<Option<Output>>>;

/// Where the verified chunks of a fetch can be produced again from.
enum Backing {
    /// Plaintext in the staging folder, and the file list's plaintext:
    /// re-sealed with the key.
    Staged {
        resealer: Arc<Resealer>,
        metadata_plain: Option<Arc<[u8]>>,
        output: Option<SharedOutput>,
    },
    /// Sealed chunks in a chunk folder (a pin).
    Stored(ChunkDir),
    /// The whole share, put in place: served from its final files, as a
    /// re-seeded share is.
    Placed(Box<LocalShare>),
}

/// How long a source the fetch used is passed on in peer exchange after
/// it was last seen answering.
const SOURCE_RECENT: Duration = crate::net::pex::BOOK_RECENT;

/// How long a chunk request waits while the fetch puts its output in
/// place (renames, one per top-level entry, and a sync), before it is
/// refused: the chunk is served again from the placed files right after.
const PLACING_WAIT: Duration = Duration::from_secs(5);

/// Why a chunk could not be produced this time.
enum Missing {
    Refused(Refusal),
    /// The staged output is being put in place: ask again once it is.
    Moving,
}

impl From<Refusal> for Missing {
    fn from(r: Refusal) -> Missing {
        Missing::Refused(r)
    }
}

/// What is known once the manifest is.
struct Held {
    manifest: Arc<Manifest>,
    bytes: Arc<[u8]>,
    /// Where each chunk id sits.
    index: HashMap<ChunkId, (Stream, u64)>,
    /// Bit `i` (manifest order) for each chunk verified and in place.
    have: Vec<u8>,
    /// Bits set.
    count: usize,
    backing: Backing,
    /// Checks the `Done` proofs of those it served (a reader's fetch only),
    /// so that they are not logged as forged; they count for nothing here.
    done_key: Option<DoneKey>,
}

impl Held {
    fn new(manifest: Manifest, backing: Backing) -> Held {
        let mut index = HashMap::with_capacity(manifest.chunk_count());
        for stream in [Stream::Metadata, Stream::Content] {
            for (i, c) in manifest.chunks(stream).iter().enumerate() {
                index.insert(*c, (stream, i as u64));
            }
        }
        Held {
            bytes: manifest.encode().into(),
            have: vec![0; manifest.chunk_count().div_ceil(8)],
            count: 0,
            index,
            manifest: Arc::new(manifest),
            backing,
            done_key: None,
        }
    }

    fn position(&self, stream: Stream, index: u64) -> usize {
        match stream {
            Stream::Metadata => index as usize,
            Stream::Content => self.manifest.metadata_chunks.len() + index as usize,
        }
    }

    fn set(&mut self, stream: Stream, index: u64) {
        let pos = self.position(stream, index);
        let (byte, bit) = (pos / 8, 1 << (pos % 8));
        if let Some(b) = self.have.get_mut(byte) {
            if *b & bit == 0 {
                *b |= bit;
                self.count += 1;
            }
        }
    }

    fn clear(&mut self, stream: Stream, index: u64) {
        let pos = self.position(stream, index);
        let (byte, bit) = (pos / 8, 1 << (pos % 8));
        if let Some(b) = self.have.get_mut(byte) {
            if *b & bit != 0 {
                *b &= !bit;
                self.count -= 1;
            }
        }
    }

    fn has(&self, stream: Stream, index: u64) -> bool {
        let pos = self.position(stream, index);
        self.have
            .get(pos / 8)
            .is_some_and(|b| b & (1 << (pos % 8)) != 0)
    }
}

/// The share a fetch is getting, served as far as it is verified. Give one
/// to [`super::FetchOptions::serve_as`] and serve it (with
/// [`crate::net::serve::serve`]) on the fetching node; it answers nothing
/// until the fetch has the verified manifest, and stops serving content
/// when the fetch hands its output over to be put in place.
pub struct Partial {
    share: ManifestId,
    locator: [u8; 32],
    held: RwLock<Option<Held>>,
    /// Sources the fetch used lately, most recent first (at most
    /// [`crate::wire::MAX_PEX_PEERS`]): passed on in peer exchange.
    sources: Mutex<Vec<(PeerAddr, Instant)>>,
    /// Set while the staged output is being put in place.
    placing: Mutex<bool>,
    /// Told when that ends.
    moved: Condvar,
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial")
            .field("share", &self.share)
            .field("verified_chunks", &self.verified())
            .finish()
    }
}

impl Partial {
    /// A holder of nothing yet of `share`.
    pub fn new(share: ManifestId) -> Partial {
        Partial {
            locator: share.locator(),
            share,
            held: RwLock::new(None),
            sources: Mutex::new(Vec::new()),
            placing: Mutex::new(false),
            moved: Condvar::new(),
        }
    }

    /// Chunks verified and served so far.
    pub fn verified(&self) -> usize {
        self.read().as_ref().map_or(0, |h| h.count)
    }

    /// Whether it serves anything yet (the fetch has the verified
    /// manifest): only then does the fetch announce where it can be
    /// reached.
    pub(super) fn serving(&self) -> bool {
        self.read().is_some()
    }

    /// The fetch is drawing from `source` (it answered for the share): it
    /// is passed on in peer exchange for [`SOURCE_RECENT`].
    pub(super) fn used_source(&self, source: PeerAddr) {
        if source.addrs.is_empty() {
            return;
        }
        let mut s = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|(p, _)| p.peer != source.peer);
        s.insert(0, (source, Instant::now()));
        s.truncate(crate::wire::MAX_PEX_PEERS);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Held>> {
        self.held.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<Held>> {
        self.held.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The fetch (with the key) has the verified manifest.
    pub(super) fn keyed(&self, resealer: Arc<Resealer>, done_key: DoneKey) {
        let manifest = resealer.manifest().clone();
        let backing = Backing::Staged {
            resealer,
            metadata_plain: None,
            output: None,
        };
        let mut held = Held::new(manifest, backing);
        held.done_key = Some(done_key);
        *self.write() = Some(held);
    }

    /// The fetch (a pin) has the verified manifest; its chunks go to
    /// `store`.
    pub(super) fn stored(&self, manifest: Manifest, store: ChunkDir) {
        *self.write() = Some(Held::new(manifest, Backing::Stored(store)));
    }

    /// The file list is verified: its plaintext, all of it.
    pub(super) fn file_list(&self, plain: Arc<[u8]>) {
        let mut g = self.write();
        let Some(h) = g.as_mut() else { return };
        if let Backing::Staged { metadata_plain, .. } = &mut h.backing {
            *metadata_plain = Some(plain);
        }
        for i in 0..h.manifest.metadata_chunks.len() as u64 {
            h.set(Stream::Metadata, i);
        }
    }

    /// Content is staged in `output` (only for a fetch of the whole share:
    /// a part leaves the other files' bytes out).
    pub(super) fn staging(&self, output: SharedOutput) {
        let mut g = self.write();
        if let Some(Held {
            backing: Backing::Staged { output: o, .. },
            ..
        }) = g.as_mut()
        {
            *o = Some(output);
        }
    }

    /// Chunk `index` of `stream` is verified and in place.
    pub(super) fn verified_chunk(&self, stream: Stream, index: u64) {
        if let Some(h) = self.write().as_mut() {
            h.set(stream, index);
        }
    }

    /// The staged output is being put in place: content requests wait for
    /// it ([`PLACING_WAIT`]), then are served from the placed files.
    pub(super) fn unstaged(&self) {
        *self.placing.lock().unwrap_or_else(|p| p.into_inner()) = true;
        let mut g = self.write();
        if let Some(Held {
            backing: Backing::Staged { output, .. },
            ..
        }) = g.as_mut()
        {
            *output = None;
        }
    }

    /// The output could not be put in place (or served from there): its
    /// content is no longer offered.
    pub(super) fn abandoned(&self) {
        if let Some(h) = self.write().as_mut() {
            if !matches!(h.backing, Backing::Placed(_)) {
                for i in 0..h.manifest.content_chunks.len() as u64 {
                    h.clear(Stream::Content, i);
                }
            }
        }
        self.moved_on();
    }

    fn moved_on(&self) {
        *self.placing.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.moved.notify_all();
    }

    /// The whole share is in place, in `share` (made with the fetch's key
    /// from the verified file list): served from there from now on, all of
    /// it, for as long as this is served.
    pub(super) fn placed(&self, share: LocalShare) {
        let mut g = self.write();
        let Some(h) = g.as_mut() else { return };
        h.backing = Backing::Placed(Box::new(share));
        for stream in [Stream::Metadata, Stream::Content] {
            for i in 0..h.manifest.chunks(stream).len() as u64 {
                h.set(stream, i);
            }
        }
        drop(g);
        self.moved_on();
    }

    /// Produces chunk `index` of `stream` again, checked against its id;
    /// a request that comes while the output is being put in place waits
    /// for that (bounded), so that it is not refused in passing.
    fn produce(&self, stream: Stream, index: u64) -> Result<Vec<u8>, Refusal> {
        match self.produce_once(stream, index) {
            Err(Missing::Moving) => {
                let placing = self.placing.lock().unwrap_or_else(|p| p.into_inner());
                let (placing, _) = self
                    .moved
                    .wait_timeout_while(placing, PLACING_WAIT, |p| *p)
                    .unwrap_or_else(|p| p.into_inner());
                drop(placing);
                self.produce_once(stream, index).map_err(|m| match m {
                    Missing::Moving => Refusal::NotFound,
                    Missing::Refused(r) => r,
                })
            }
            Err(Missing::Refused(r)) => Err(r),
            Ok(bytes) => Ok(bytes),
        }
    }

    fn produce_once(&self, stream: Stream, index: u64) -> Result<Vec<u8>, Missing> {
        // What is needed is taken under the lock; the reading and sealing
        // are done outside it, so the fetch never waits on serving.
        let work = {
            let g = self.read();
            let h = g.as_ref().ok_or(Refusal::NotFound)?;
            if !h.has(stream, index) {
                return Err(Refusal::NotFound.into());
            }
            let m = &h.manifest;
            let (start, len) = (index * m.chunk_size.bytes(), m.plaintext_len(stream, index));
            match (&h.backing, stream) {
                (
                    Backing::Staged {
                        resealer,
                        metadata_plain: Some(plain),
                        ..
                    },
                    Stream::Metadata,
                ) => {
                    let plain = plain
                        .get(start as usize..start as usize + len)
                        .ok_or(Refusal::NotFound)?;
                    Work::Reseal(resealer.clone(), plain.to_vec())
                }
                (
                    Backing::Staged {
                        resealer,
                        output: Some(output),
                        ..
                    },
                    Stream::Content,
                ) => Work::Staged(resealer.clone(), output.clone(), start, len),
                (Backing::Placed(share), _) => {
                    let id = m.chunks(stream)[index as usize];
                    // Re-sealed from the files and checked by the share.
                    return share.chunk(&id).map_err(|e| match e {
                        ServeError::NotFound => Refusal::NotFound.into(),
                        e => {
                            tracing::warn!("not serving a fetched chunk: {e}");
                            Refusal::Stale.into()
                        }
                    });
                }
                (Backing::Stored(dir), _) => Work::Stored(
                    m.clone(),
                    dir.clone(),
                    m.chunks(stream)[index as usize],
                    m.sealed_len(stream, index),
                ),
                (Backing::Staged { output: None, .. }, Stream::Content) => {
                    return Err(Missing::Moving)
                }
                _ => return Err(Refusal::NotFound.into()),
            }
        };
        let sealed = match work {
            Work::Reseal(resealer, plain) => resealer.reseal(stream, index, &plain).ok(),
            Work::Staged(resealer, output, start, len) => {
                let mut plain = vec![0; len];
                let read = {
                    let out = output.read().unwrap_or_else(|p| p.into_inner());
                    let out = out.as_ref().ok_or(Missing::Moving)?;
                    out.read_content(start, &mut plain)
                };
                read.ok()
                    .and_then(|()| resealer.reseal(stream, index, &plain).ok())
            }
            Work::Stored(m, dir, id, len) => dir
                .get(&id, len)
                .ok()
                .filter(|b| crate::open::check_chunk(&m, stream, index, b).is_ok()),
        };
        sealed.ok_or_else(|| {
            // What was verified no longer is (a staged file was changed,
            // the store damaged): not advertised any more.
            tracing::warn!(
                ?stream,
                index,
                "a verified chunk no longer matches its id; not serving it"
            );
            if let Some(h) = self.write().as_mut() {
                h.clear(stream, index);
            }
            Refusal::NotFound.into()
        })
    }
}

/// How a chunk is produced again, taken from [`Held`] under its lock.
enum Work {
    /// Seal this plaintext (the file list's).
    Reseal(Arc<Resealer>, Vec<u8>),
    /// Read `len` bytes of staged content at this offset, then seal them.
    Staged(Arc<Resealer>, SharedOutput, u64, usize),
    /// Read this sealed chunk from the store and check it.
    Stored(Arc<Manifest>, ChunkDir, ChunkId, usize),
}

impl Provider for Partial {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        (*share == self.share)
            .then(|| self.read().as_ref().map(|h| h.bytes.clone()))
            .flatten()
    }

    fn have(&self, share: &ManifestId) -> Option<Have> {
        if *share != self.share {
            return None;
        }
        let g = self.read();
        let h = g.as_ref()?;
        Some(if h.count == h.manifest.chunk_count() {
            Have::All
        } else {
            Have::Bitmap(h.have.clone())
        })
    }

    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        if *share != self.share {
            return Err(Refusal::NotFound);
        }
        let (stream, index) = {
            let g = self.read();
            let h = g.as_ref().ok_or(Refusal::NotFound)?;
            *h.index.get(chunk).ok_or(Refusal::NotFound)?
        };
        self.produce(stream, index)
    }

    fn chunk_len(&self, share: &ManifestId, chunk: &ChunkId) -> Option<usize> {
        if *share != self.share {
            return None;
        }
        let g = self.read();
        let h = g.as_ref()?;
        let &(stream, index) = h.index.get(chunk)?;
        Some(h.manifest.sealed_len(stream, index))
    }

    fn holds(&self, locator: &[u8; 32]) -> Option<ManifestId> {
        (*locator == self.locator && self.read().is_some()).then_some(self.share)
    }

    fn verify_done(&self, share: &ManifestId, claim: &DoneClaim) -> bool {
        *share == self.share
            && self
                .read()
                .as_ref()
                .and_then(|h| h.done_key.as_ref())
                .is_some_and(|k| claim.verify(share, k))
    }

    fn done(&self, _share: &ManifestId, peer: PeerId) {
        tracing::debug!(%peer, "a peer we served holds the whole share now");
    }

    fn sources(&self, share: &ManifestId) -> Vec<PeerAddr> {
        if *share != self.share {
            return Vec::new();
        }
        let s = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        s.iter()
            .filter(|(_, t)| t.elapsed() < SOURCE_RECENT)
            .map(|(p, _)| p.clone())
            .collect()
    }
}
