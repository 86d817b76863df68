//! Sealing: a file list and a content stream in, chunks and a manifest out.
//!
//! Pure apart from the `Read` the caller hands in. The two streams are cut
//! into chunks, each sealed (see [`crate::crypto`]) and hashed on a small
//! thread pool, and handed to the caller's sink in order together with its id;
//! the caller decides whether to store the chunks, send them or drop them.
//! Memory stays at a few chunks whatever the size of the share.

use std::io::{self, Read};

use crate::chunk::{ChunkId, ChunkSize, Stream, NONCE_LEN, TAG_LEN};
use crate::crypto::{ChunkCipher, ShareKey};
use crate::manifest::{Manifest, ManifestId, MAX_METADATA_LEN};
use crate::meta::Metadata;
use crate::pipeline;

/// How to seal.
#[derive(Clone, Debug, Default)]
pub struct SealOptions {
    /// Plaintext chunk size; `None` picks 1 MiB, more for shares over 256 GiB.
    pub chunk_size: Option<ChunkSize>,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// When the share expires, if it does: written into the manifest
    /// (which is then version 2), so every honest server of the share
    /// stops serving it then.
    pub expires: Option<crate::manifest::Expiry>,
}

/// One sealed chunk, as handed to the sink.
#[derive(Debug)]
pub struct SealedChunk<'a> {
    /// Its stream.
    pub stream: Stream,
    /// Its index within the stream.
    pub index: u64,
    /// BLAKE3 of `bytes`.
    pub id: ChunkId,
    /// Nonce, ciphertext and tag.
    pub bytes: &'a [u8],
}

/// The result of sealing.
#[derive(Clone, Debug)]
pub struct Sealed {
    /// The manifest.
    pub manifest: Manifest,
    /// Its canonical bytes.
    pub manifest_bytes: Vec<u8>,
    /// Its id, which the link names.
    pub id: ManifestId,
}

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The content could not be read (a file vanished, shrank or failed).
    #[error("reading the files to share failed: {0}")]
    Read(io::Error),
    /// The sink refused a chunk.
    #[error("storing a sealed chunk failed: {0}")]
    Sink(io::Error),
    /// More than 16 TiB of content.
    #[error("the share is {0} bytes; peerdrop shares hold at most 16 TiB")]
    TooLarge(u64),
    /// A file list over the metadata limit.
    #[error("the file list is {0} bytes encoded, over the {MAX_METADATA_LEN}-byte limit; share fewer files at once")]
    MetadataTooLarge(u64),
    /// A chunk size too small for this share.
    #[error("chunk size {0} bytes is too small for a share this large")]
    ChunkSizeTooSmall(u64),
}

/// Seals `metadata` and the `content` it describes under `key`, passing every
/// chunk to `sink` in order, and returns the manifest. `content` must yield
/// exactly `metadata.content_len()` bytes.
pub fn seal(
    key: &ShareKey,
    metadata: &Metadata,
    content: impl Read + Send,
    opts: &SealOptions,
    mut sink: impl FnMut(SealedChunk<'_>) -> io::Result<()>,
) -> Result<Sealed, SealError> {
    let meta_bytes = metadata.encode();
    let content_len = metadata.content_len();
    if meta_bytes.len() as u64 > MAX_METADATA_LEN {
        return Err(SealError::MetadataTooLarge(meta_bytes.len() as u64));
    }
    let chunk_size = match opts.chunk_size {
        Some(s) => s,
        None => ChunkSize::for_len(content_len).ok_or(SealError::TooLarge(content_len))?,
    };
    if chunk_size.chunk_count(content_len) > crate::chunk::MAX_CHUNKS_PER_STREAM {
        return Err(SealError::ChunkSizeTooSmall(chunk_size.bytes()));
    }
    let threads = match opts.threads {
        0 => pipeline::default_threads(),
        n => n,
    };
    let cipher = ChunkCipher::new(key);
    let metadata_chunks = seal_stream(
        &cipher,
        Stream::Metadata,
        chunk_size,
        meta_bytes.len() as u64,
        &meta_bytes[..],
        threads,
        &mut sink,
    )?;
    let content_chunks = seal_stream(
        &cipher,
        Stream::Content,
        chunk_size,
        content_len,
        content,
        threads,
        &mut sink,
    )?;
    let manifest = Manifest {
        chunk_size,
        key_commitment: key.commitment(),
        metadata_len: meta_bytes.len() as u64,
        content_len,
        metadata_chunks,
        content_chunks,
        expires: opts.expires,
    };
    let manifest_bytes = manifest.encode();
    Ok(Sealed {
        id: ManifestId::of(&manifest_bytes),
        manifest,
        manifest_bytes,
    })
}

enum Failure {
    Read(io::Error),
    Sink(io::Error),
}

fn seal_stream(
    cipher: &ChunkCipher,
    stream: Stream,
    chunk_size: ChunkSize,
    len: u64,
    mut reader: impl Read + Send,
    threads: usize,
    sink: &mut impl FnMut(SealedChunk<'_>) -> io::Result<()>,
) -> Result<Vec<ChunkId>, SealError> {
    let count = chunk_size.chunk_count(len);
    let mut ids = Vec::with_capacity(count as usize);
    let mut next = 0u64;
    let produce = || {
        if next == count {
            return Ok(None);
        }
        let index = next;
        next += 1;
        let n = chunk_size.chunk_len(len, index);
        let mut buf = Vec::with_capacity(NONCE_LEN + n + TAG_LEN);
        buf.resize(NONCE_LEN + n, 0);
        reader
            .read_exact(&mut buf[NONCE_LEN..])
            .map_err(Failure::Read)?;
        Ok(Some((index, buf)))
    };
    let work = |(index, mut buf): (u64, Vec<u8>)| {
        let pos = crate::crypto::ChunkPosition {
            stream,
            index,
            is_last: index + 1 == count,
        };
        cipher.seal_in_place(pos, &mut buf);
        Ok((index, ChunkId::of(&buf), buf))
    };
    let consume = |(index, id, buf): (u64, ChunkId, Vec<u8>)| {
        sink(SealedChunk {
            stream,
            index,
            id,
            bytes: &buf,
        })
        .map_err(Failure::Sink)?;
        ids.push(id);
        Ok(())
    };
    pipeline::ordered(threads, produce, work, consume).map_err(|f| match f {
        Failure::Read(e) => SealError::Read(e),
        Failure::Sink(e) => SealError::Sink(e),
    })?;
    Ok(ids)
}

/// Re-seals single chunks of a known share from their plaintext, for a sharer
/// that serves from the original files instead of a second copy.
pub struct Resealer {
    cipher: ChunkCipher,
    manifest: Manifest,
}

/// The plaintext no longer seals to the chunk the manifest names: the source
/// file changed since the share was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{stream} chunk {index} no longer matches the share: the shared files changed since sealing"
)]
pub struct Stale {
    /// Stream of the chunk.
    pub stream: Stream,
    /// Index of the chunk.
    pub index: u64,
}

impl Resealer {
    /// A resealer for `manifest`; `None` if `key` is not the share's key.
    pub fn new(key: &ShareKey, manifest: Manifest) -> Option<Resealer> {
        (key.commitment() == manifest.key_commitment).then(|| Resealer {
            cipher: ChunkCipher::new(key),
            manifest,
        })
    }

    /// The manifest being served.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Seals `plaintext` as chunk `index` of `stream` and returns the chunk
    /// only if it is byte for byte the one the manifest names. Never returns
    /// different bytes under an id.
    pub fn reseal(&self, stream: Stream, index: u64, plaintext: &[u8]) -> Result<Vec<u8>, Stale> {
        let ids = self.manifest.chunks(stream);
        let stale = Stale { stream, index };
        if index >= ids.len() as u64
            || plaintext.len() != self.manifest.plaintext_len(stream, index)
        {
            return Err(stale);
        }
        let chunk = self
            .cipher
            .seal(self.manifest.position(stream, index), plaintext);
        if ids[index as usize].matches(&chunk) {
            Ok(chunk)
        } else {
            Err(stale)
        }
    }
}
