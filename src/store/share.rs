//! A share served from the original files, with no second copy on disk.
//!
//! Chunks are re-sealed on demand from the files (sealing is deterministic)
//! and checked against the manifest before they are handed out. A file that
//! changed since the share was made makes the affected chunks *stale*: they
//! are refused, never replaced by other bytes under the same id.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::chunk::{ChunkId, Stream, CHUNK_OVERHEAD};
use crate::crypto::ShareKey;
use crate::manifest::{Manifest, ManifestId};
use crate::seal::{seal, Resealer, SealError, SealOptions, Stale};
use crate::store::source::{Source, SourceError};

/// Why a chunk cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Not a chunk of this share.
    #[error("no such chunk in this share")]
    NotFound,
    /// The files changed since the share was made.
    #[error(transparent)]
    Stale(#[from] Stale),
    /// Reading the files failed (a file was removed, for example).
    #[error("reading the shared files failed: {0}")]
    Io(io::Error),
}

/// Why a share could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// Scanning the paths failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A sealed share whose chunks are produced from the original files.
pub struct LocalShare {
    id: ManifestId,
    manifest_bytes: Arc<[u8]>,
    resealer: Resealer,
    metadata_plain: Vec<u8>,
    source: Source,
    /// Where each chunk id sits.
    index: HashMap<ChunkId, (Stream, u64)>,
    /// Set once a stale chunk has been refused.
    stale: AtomicBool,
}

impl LocalShare {
    /// Scans and seals `paths` under `key`, reading every file once to
    /// compute the chunk ids (the chunks themselves are dropped).
    /// `progress` gets the content bytes sealed so far.
    pub fn create(
        paths: &[PathBuf],
        key: &ShareKey,
        opts: &SealOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<LocalShare, ShareError> {
        let source = Source::scan(paths)?;
        let mut done = 0u64;
        let sealed = seal(key, source.metadata(), source.reader(), opts, |c| {
            if c.stream == Stream::Content {
                done += (c.bytes.len() - CHUNK_OVERHEAD) as u64;
                progress(done);
            }
            Ok(())
        })?;
        Ok(LocalShare::from_parts(source, key, sealed.manifest))
    }

    /// A share sealed earlier, served again from `source` (see
    /// [`Source::from_metadata`]); `None` if `key` does not open `manifest`.
    pub fn open(source: Source, key: &ShareKey, manifest: Manifest) -> Option<LocalShare> {
        (key.commitment() == manifest.key_commitment)
            .then(|| LocalShare::from_parts(source, key, manifest))
    }

    fn from_parts(source: Source, key: &ShareKey, manifest: Manifest) -> LocalShare {
        let metadata_plain = source.metadata().encode();
        let manifest_bytes: Arc<[u8]> = manifest.encode().into();
        let id = ManifestId::of(&manifest_bytes);
        let mut index = HashMap::with_capacity(manifest.chunk_count());
        for stream in [Stream::Metadata, Stream::Content] {
            for (i, c) in manifest.chunks(stream).iter().enumerate() {
                index.insert(*c, (stream, i as u64));
            }
        }
        let resealer = Resealer::new(key, manifest).expect("the manifest was sealed with this key");
        LocalShare {
            id,
            manifest_bytes,
            resealer,
            metadata_plain,
            source,
            index,
            stale: AtomicBool::new(false),
        }
    }

    /// The manifest id.
    pub fn id(&self) -> ManifestId {
        self.id
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        self.resealer.manifest()
    }

    /// The manifest's bytes.
    pub fn manifest_bytes(&self) -> Arc<[u8]> {
        self.manifest_bytes.clone()
    }

    /// Where chunk `id` sits among all the share's chunks (metadata first,
    /// then content), from 0 to the manifest's chunk count.
    pub fn position(&self, id: &ChunkId) -> Option<usize> {
        let &(stream, index) = self.index.get(id)?;
        Some(match stream {
            Stream::Metadata => index as usize,
            Stream::Content => self.manifest().metadata_chunks.len() + index as usize,
        })
    }

    /// The scanned files.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Whether the share can no longer be served whole: a chunk was refused
    /// because the files changed, or a file's size or time differs now.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed) || !self.source.unchanged()
    }

    /// Produces chunk `id`: reads its plaintext, seals it, and returns it only
    /// if it matches the manifest. Blocking (file I/O and crypto).
    pub fn chunk(&self, id: &ChunkId) -> Result<Vec<u8>, ServeError> {
        let &(stream, index) = self.index.get(id).ok_or(ServeError::NotFound)?;
        let m = self.manifest();
        let len = m.plaintext_len(stream, index);
        let start = (index * m.chunk_size.bytes()) as usize;
        let result = match stream {
            Stream::Metadata => {
                self.resealer
                    .reseal(stream, index, &self.metadata_plain[start..start + len])
            }
            Stream::Content => {
                let mut buf = vec![0; len];
                match self.source.read_range(start as u64, &mut buf) {
                    Ok(()) => self.resealer.reseal(stream, index, &buf),
                    // A file that shrank is a changed file.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        Err(Stale { stream, index })
                    }
                    Err(e) => return Err(ServeError::Io(e)),
                }
            }
        };
        result.map_err(|s| {
            self.stale.store(true, Ordering::Relaxed);
            ServeError::Stale(s)
        })
    }
}
