//! Opening: verifying and decrypting chunks against a manifest (pure).
//!
//! The order of checks is the security argument. A manifest is accepted only
//! if its bytes hash to the id in the link; the key only if it matches the
//! manifest's commitment; a chunk only if it sits at a position the manifest
//! lists, has exactly the listed length and hashes to the id listed there —
//! all before a single byte is decrypted. Then the AEAD authenticates it
//! against its position, the end-of-stream flag and its length. Plaintext is
//! handed out only after all of that. A failed check is final.

use std::ops::Range;

use crate::chunk::{ChunkId, Stream, NONCE_LEN};
use crate::crypto::{ChunkCipher, ShareKey};
use crate::manifest::Manifest;
use crate::meta::{Metadata, MetadataError};

/// Why a share or one of its chunks cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The key does not match the manifest's key commitment.
    #[error("wrong key: the key in the link does not belong to this share; check that the link was copied whole")]
    WrongKey,
    /// The manifest has no chunk at that position.
    #[error("{stream} chunk {index} does not exist in this share")]
    NoSuchChunk {
        /// Stream asked for.
        stream: Stream,
        /// Index asked for.
        index: u64,
    },
    /// The bytes received do not hash to the listed id.
    #[error("the data received for {stream} chunk {index} does not match its id; the source sent corrupt or wrong data")]
    IdMismatch {
        /// Stream of the chunk.
        stream: Stream,
        /// Index of the chunk.
        index: u64,
    },
    /// The bytes received are not as long as the manifest says.
    #[error("{stream} chunk {index} is {len} bytes, the manifest says {expected}; the source sent wrong data")]
    Length {
        /// Stream of the chunk.
        stream: Stream,
        /// Index of the chunk.
        index: u64,
        /// Length received.
        len: usize,
        /// Length expected.
        expected: usize,
    },
    /// Authentication failed on bytes that do match their id: the share
    /// itself is corrupt (every copy is the same bytes, so retrying elsewhere
    /// cannot help).
    #[error("{stream} chunk {index} failed authentication: the share is corrupt or was forged")]
    Corrupt {
        /// Stream of the chunk.
        stream: Stream,
        /// Index of the chunk.
        index: u64,
    },
    /// The decrypted file list is invalid.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The file list's sizes disagree with the manifest.
    #[error("the file list describes {listed} bytes of content but the manifest declares {declared}; the share is corrupt")]
    ContentLength {
        /// Sum of file sizes in the file list.
        listed: u64,
        /// Content length in the manifest.
        declared: u64,
    },
}

impl OpenError {
    /// Whether the source that delivered the chunk is to blame (and another
    /// source may do better), as opposed to the share itself being bad.
    pub fn blames_source(&self) -> bool {
        matches!(
            self,
            OpenError::IdMismatch { .. } | OpenError::Length { .. }
        )
    }
}

/// Checks what can be checked without the key: that chunk `index` of
/// `stream` exists, has exactly the listed length, and hashes to its id.
pub fn check_chunk(
    manifest: &Manifest,
    stream: Stream,
    index: u64,
    chunk: &[u8],
) -> Result<(), OpenError> {
    let id = manifest
        .chunks(stream)
        .get(index as usize)
        .ok_or(OpenError::NoSuchChunk { stream, index })?;
    let expected = manifest.sealed_len(stream, index);
    if chunk.len() != expected {
        return Err(OpenError::Length {
            stream,
            index,
            len: chunk.len(),
            expected,
        });
    }
    if !id.matches(chunk) {
        return Err(OpenError::IdMismatch { stream, index });
    }
    Ok(())
}

/// A decrypted chunk: the buffer it arrived in, and where its plaintext lies.
#[derive(Debug)]
pub struct Plaintext {
    buf: Vec<u8>,
    range: Range<usize>,
}

impl Plaintext {
    /// The plaintext bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

/// A manifest together with the key that opens it.
pub struct Opener {
    manifest: Manifest,
    id: crate::manifest::ManifestId,
    cipher: ChunkCipher,
}

impl Opener {
    /// Checks `key` against the manifest's commitment.
    pub fn new(manifest: Manifest, key: &ShareKey) -> Result<Opener, OpenError> {
        if key.commitment() != manifest.key_commitment {
            return Err(OpenError::WrongKey);
        }
        Ok(Opener {
            cipher: ChunkCipher::new(key),
            id: manifest.id(),
            manifest,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The id of the manifest (recomputed from its canonical bytes).
    pub fn manifest_id(&self) -> crate::manifest::ManifestId {
        self.id
    }

    /// Verifies and decrypts chunk `index` of `stream`.
    pub fn open_chunk(
        &self,
        stream: Stream,
        index: u64,
        mut chunk: Vec<u8>,
    ) -> Result<Plaintext, OpenError> {
        check_chunk(&self.manifest, stream, index, &chunk)?;
        let len = self
            .cipher
            .open_in_place(self.manifest.position(stream, index), &mut chunk)
            .map_err(|_| OpenError::Corrupt { stream, index })?
            .len();
        Ok(Plaintext {
            buf: chunk,
            range: NONCE_LEN..NONCE_LEN + len,
        })
    }

    /// Decodes the file list from the concatenated plaintext of the metadata
    /// chunks, and checks it against the manifest.
    pub fn metadata(&self, plaintext: &[u8]) -> Result<Metadata, OpenError> {
        let metadata = Metadata::decode(plaintext)?;
        if metadata.content_len() != self.manifest.content_len {
            return Err(OpenError::ContentLength {
                listed: metadata.content_len(),
                declared: self.manifest.content_len,
            });
        }
        Ok(metadata)
    }

    /// Fetches, verifies and decodes the whole file list, using `fetch` to get
    /// each metadata chunk by id.
    pub fn read_metadata<E: From<OpenError>>(
        &self,
        mut fetch: impl FnMut(&ChunkId) -> Result<Vec<u8>, E>,
    ) -> Result<Metadata, E> {
        // Bounded by MAX_METADATA_LEN, checked when the manifest was decoded.
        let mut plain = Vec::with_capacity(self.manifest.metadata_len as usize);
        for (index, id) in self.manifest.metadata_chunks.iter().enumerate() {
            let chunk = fetch(id)?;
            plain.extend_from_slice(
                self.open_chunk(Stream::Metadata, index as u64, chunk)?
                    .as_slice(),
            );
        }
        Ok(self.metadata(&plain)?)
    }
}
