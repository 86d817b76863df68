//! The manifest: the public description of a sealed share (pure).
//!
//! A manifest lists, in order, the ids of every chunk of the metadata stream
//! and of the content stream, the plaintext length of each stream, the chunk
//! size, and a commitment to the key. It is readable by anyone holding a pin
//! link: it reveals sizes, never names or content. Its id is the BLAKE3 of its
//! exact bytes, which is what a link names. The encoding is fixed-width and
//! canonical, so there is exactly one byte string per manifest and decoding
//! never needs to re-encode (see FORMAT.md for the byte layout).
//!
//! Version 2 is version 1 plus an expiry time ([`Expiry`]): the manifest is
//! the one thing every holder of the share authenticates (by its id),
//! pinners included, so an expiry there reaches every honest server. A
//! share without an expiry is always written as version 1, so builds that
//! know only version 1 still read it.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::chunk::{hex, ChunkId, ChunkSize, Stream, CHUNK_OVERHEAD, MAX_CHUNKS_PER_STREAM};
use crate::crypto::ChunkPosition;

/// First four bytes of every manifest.
pub const MAGIC: [u8; 4] = *b"PDMF";
/// The version of a manifest without an expiry.
pub const VERSION: u8 = 1;
/// The version of a manifest with an expiry ([`Expiry`]).
pub const VERSION_EXPIRY: u8 = 2;
/// Bytes before the first chunk id in a version-1 manifest.
pub const HEADER_LEN: usize = 56;
/// Bytes before the first chunk id in a version-2 manifest: the expiry
/// follows the version-1 header.
pub const HEADER_LEN_EXPIRY: usize = HEADER_LEN + 8;
/// Largest metadata stream a manifest may declare (64 MiB of file list).
pub const MAX_METADATA_LEN: u64 = 64 << 20;
/// Largest manifest in bytes: the longer header and 2^18 ids per stream.
pub const MAX_MANIFEST_LEN: usize = HEADER_LEN_EXPIRY + 2 * (MAX_CHUNKS_PER_STREAM as usize) * 32;
/// The latest expiry a manifest may carry: 9999-12-31T23:59:59Z, so that
/// every expiry has a four-digit year when shown.
pub const MAX_EXPIRY: u64 = 253_402_300_799;

/// When a share stops being served: whole seconds since 1970-01-01T00:00:00Z,
/// from 1 to [`MAX_EXPIRY`]. Advisory: honest nodes stop serving and
/// fetching the share then, but anyone who already has the link and the data
/// can keep them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Expiry(u64);

/// An expiry outside 1..=[`MAX_EXPIRY`], or a time that cannot be one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an expiry must be between 1970-01-01T00:00:01Z and 9999-12-31T23:59:59Z")]
pub struct BadExpiry;

impl Expiry {
    /// The expiry `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: u64) -> Result<Expiry, BadExpiry> {
        (1..=MAX_EXPIRY)
            .contains(&secs)
            .then_some(Expiry(secs))
            .ok_or(BadExpiry)
    }

    /// `after` from `now`, rounded up to the next whole second (a share
    /// never expires early).
    pub fn after(now: SystemTime, after: Duration) -> Result<Expiry, BadExpiry> {
        let at = now.checked_add(after).ok_or(BadExpiry)?;
        let since = at.duration_since(UNIX_EPOCH).map_err(|_| BadExpiry)?;
        let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
        Expiry::from_unix(secs)
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> u64 {
        self.0
    }

    /// The expiry as a [`SystemTime`].
    pub fn time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0)
    }

    /// Whether the share has expired at `now` (at the expiry second itself
    /// it has).
    pub fn passed_at(self, now: SystemTime) -> bool {
        now >= self.time()
    }

    /// Whether the share has expired by this machine's clock.
    pub fn passed(self) -> bool {
        self.passed_at(SystemTime::now())
    }

    /// How long until it expires by this machine's clock (zero once it has).
    pub fn remaining(self) -> Duration {
        self.time()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

/// RFC 3339 in UTC, to the second: `2026-12-04T20:50:00Z`.
impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In range by construction: `time` represents every year to 9999.
        let t = time::OffsetDateTime::from_unix_timestamp(self.0 as i64)
            .expect("an expiry is at most 9999-12-31");
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

/// Text formats carry an expiry as its Unix seconds, binary ones too.
impl serde::Serialize for Expiry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Expiry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Expiry, D::Error> {
        Expiry::from_unix(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// BLAKE3 of a manifest's bytes: what a link points at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManifestId(pub [u8; 32]);

impl ManifestId {
    /// The id of manifest bytes.
    pub fn of(bytes: &[u8]) -> ManifestId {
        ManifestId(*blake3::hash(bytes).as_bytes())
    }

    /// The DHT key under which providers of this share announce themselves:
    /// derived from the id, so watching the DHT does not hand out manifest
    /// ids, while anyone holding a pin link can still compute it.
    pub fn locator(&self) -> [u8; 32] {
        blake3::derive_key("peerdrop 2026-11-29 v1 dht locator", &self.0)
    }
}

impl fmt::Display for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// Why text is not a manifest id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a manifest id: a manifest id is 64 hex digits (see `peerdrop list`)")]
pub struct BadManifestId;

impl std::str::FromStr for ManifestId {
    type Err = BadManifestId;

    /// 64 hex digits, as [`fmt::Display`] writes them (either case).
    fn from_str(s: &str) -> Result<ManifestId, BadManifestId> {
        let bytes = crate::chunk::unhex(s).ok_or(BadManifestId)?;
        Ok(ManifestId(bytes.try_into().map_err(|_| BadManifestId)?))
    }
}

/// Text formats (the control API's JSON, `state.json`) carry an id as its 64
/// hex digits; binary formats as its 32 bytes, exactly as a `[u8; 32]`.
impl serde::Serialize for ManifestId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for ManifestId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ManifestId, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(ManifestId)
        }
    }
}

impl fmt::Debug for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestId({})", hex(&self.0))
    }
}

/// A decoded, structurally valid manifest. Sizes in it are *claimed* until
/// the chunks they describe authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Plaintext chunk size of both streams.
    pub chunk_size: ChunkSize,
    /// [`crate::crypto::ShareKey::commitment`] of the share's key.
    pub key_commitment: [u8; 32],
    /// Plaintext length of the metadata stream.
    pub metadata_len: u64,
    /// Plaintext length of the content stream (total size of all files).
    pub content_len: u64,
    /// Ids of the metadata chunks, in stream order.
    pub metadata_chunks: Vec<ChunkId>,
    /// Ids of the content chunks, in stream order.
    pub content_chunks: Vec<ChunkId>,
    /// When the share stops being served, if it does (a version-2
    /// manifest; version 1 otherwise).
    pub expires: Option<Expiry>,
}

/// Why bytes are not a valid manifest.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// The bytes do not hash to the id that was asked for.
    #[error("the manifest does not match the id in the link; the peer sent wrong data")]
    IdMismatch,
    /// Shorter than a header.
    #[error("manifest truncated: {len} bytes, a manifest has at least {min}")]
    TooShort {
        /// Length received.
        len: usize,
        /// The header length of its version (56 when even the version
        /// byte is missing).
        min: usize,
    },
    /// Longer than any valid manifest.
    #[error("manifest too large: {len} bytes, the limit is {MAX_MANIFEST_LEN}")]
    TooLarge {
        /// Length received.
        len: usize,
    },
    /// The magic bytes are wrong: this is not a peerdrop manifest.
    #[error("not a peerdrop manifest (bad magic bytes)")]
    BadMagic,
    /// A version this build does not know.
    #[error("manifest version {0} is not supported by this peerdrop (supports {VERSION} and {VERSION_EXPIRY}); upgrade peerdrop")]
    UnsupportedVersion(u8),
    /// Chunk size outside 1 KiB..=64 MiB.
    #[error("manifest declares an invalid chunk size 2^{0}")]
    BadChunkSize(u8),
    /// Reserved header bytes are not zero.
    #[error("manifest has non-zero reserved bytes")]
    Reserved,
    /// A version-2 expiry outside 1..=[`MAX_EXPIRY`].
    #[error("manifest declares an invalid expiry {0} (seconds since 1970)")]
    BadExpiry(u64),
    /// Metadata stream longer than [`MAX_METADATA_LEN`].
    #[error("manifest declares {len} bytes of metadata, the limit is {MAX_METADATA_LEN}")]
    MetadataTooLarge {
        /// Declared length.
        len: u64,
    },
    /// A stream would need more than [`MAX_CHUNKS_PER_STREAM`] chunks.
    #[error("manifest declares {count} {stream} chunks, the limit is {MAX_CHUNKS_PER_STREAM}")]
    TooManyChunks {
        /// Which stream.
        stream: Stream,
        /// Chunks its declared length needs.
        count: u64,
    },
    /// The id list is not exactly as long as the declared lengths require.
    #[error("manifest is {actual} bytes but its declared sizes need {expected}")]
    LengthMismatch {
        /// Length the header implies.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// The same chunk id appears twice, which honest sealing cannot produce.
    #[error("manifest lists {stream} chunk {index} twice")]
    DuplicateChunk {
        /// Stream of the second occurrence.
        stream: Stream,
        /// Index of the second occurrence.
        index: u64,
    },
}

impl Manifest {
    /// The canonical bytes of this manifest.
    pub fn encode(&self) -> Vec<u8> {
        let ids = self.metadata_chunks.len() + self.content_chunks.len();
        let mut out = Vec::with_capacity(HEADER_LEN_EXPIRY + 32 * ids);
        out.extend_from_slice(&MAGIC);
        out.push(match self.expires {
            None => VERSION,
            Some(_) => VERSION_EXPIRY,
        });
        out.push(self.chunk_size.log2());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.key_commitment);
        out.extend_from_slice(&self.metadata_len.to_le_bytes());
        out.extend_from_slice(&self.content_len.to_le_bytes());
        if let Some(e) = self.expires {
            out.extend_from_slice(&e.unix().to_le_bytes());
        }
        for id in self.metadata_chunks.iter().chain(&self.content_chunks) {
            out.extend_from_slice(&id.0);
        }
        out
    }

    /// Checks `bytes` against `id`, then decodes them: verify, then parse.
    pub fn decode_verified(id: &ManifestId, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        if ManifestId::of(bytes) != *id {
            return Err(ManifestError::IdMismatch);
        }
        Manifest::decode(bytes)
    }

    /// Decodes manifest bytes, checking every bound before allocating.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        let short = |min| ManifestError::TooShort {
            len: bytes.len(),
            min,
        };
        if bytes.len() < 5 {
            return Err(short(HEADER_LEN));
        }
        if bytes[..4] != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let header_len = match bytes[4] {
            VERSION => HEADER_LEN,
            VERSION_EXPIRY => HEADER_LEN_EXPIRY,
            v => return Err(ManifestError::UnsupportedVersion(v)),
        };
        if bytes.len() < header_len {
            return Err(short(header_len));
        }
        let chunk_size =
            ChunkSize::from_log2(bytes[5]).ok_or(ManifestError::BadChunkSize(bytes[5]))?;
        if bytes[6..8] != [0, 0] {
            return Err(ManifestError::Reserved);
        }
        let expires = match header_len {
            HEADER_LEN => None,
            _ => {
                let secs = u64::from_le_bytes(bytes[56..64].try_into().expect("8 bytes"));
                Some(Expiry::from_unix(secs).map_err(|_| ManifestError::BadExpiry(secs))?)
            }
        };
        let key_commitment: [u8; 32] = bytes[8..40].try_into().expect("32 bytes");
        let metadata_len = u64::from_le_bytes(bytes[40..48].try_into().expect("8 bytes"));
        let content_len = u64::from_le_bytes(bytes[48..56].try_into().expect("8 bytes"));
        if metadata_len > MAX_METADATA_LEN {
            return Err(ManifestError::MetadataTooLarge { len: metadata_len });
        }
        let mut counts = [0usize; 2];
        for (slot, (stream, len)) in counts.iter_mut().zip([
            (Stream::Metadata, metadata_len),
            (Stream::Content, content_len),
        ]) {
            let count = chunk_size.chunk_count(len);
            if count > MAX_CHUNKS_PER_STREAM {
                return Err(ManifestError::TooManyChunks { stream, count });
            }
            *slot = count as usize;
        }
        let expected = header_len + 32 * (counts[0] + counts[1]);
        if bytes.len() != expected {
            return Err(ManifestError::LengthMismatch {
                expected,
                actual: bytes.len(),
            });
        }
        let mut seen = HashSet::with_capacity(counts[0] + counts[1]);
        let mut ids = bytes[header_len..]
            .chunks_exact(32)
            .map(|c| ChunkId(c.try_into().expect("32 bytes")));
        let mut take = |stream: Stream, n: usize| -> Result<Vec<ChunkId>, ManifestError> {
            let mut v = Vec::with_capacity(n);
            for index in 0..n {
                let id = ids.next().expect("length checked above");
                if !seen.insert(id) {
                    return Err(ManifestError::DuplicateChunk {
                        stream,
                        index: index as u64,
                    });
                }
                v.push(id);
            }
            Ok(v)
        };
        let metadata_chunks = take(Stream::Metadata, counts[0])?;
        let content_chunks = take(Stream::Content, counts[1])?;
        Ok(Manifest {
            chunk_size,
            key_commitment,
            metadata_len,
            content_len,
            metadata_chunks,
            content_chunks,
            expires,
        })
    }

    /// The expiry in manifest bytes, read from the header alone (no id
    /// list is decoded): `None` for a version-1 manifest and for bytes
    /// that are not a manifest's header. For servers, which check it on
    /// every request for bytes they validated when they took the share.
    pub fn expiry_in(bytes: &[u8]) -> Option<Expiry> {
        if bytes.len() < HEADER_LEN_EXPIRY || bytes[..4] != MAGIC || bytes[4] != VERSION_EXPIRY {
            return None;
        }
        Expiry::from_unix(u64::from_le_bytes(bytes[56..64].try_into().ok()?)).ok()
    }

    /// The id of this manifest (BLAKE3 of its encoding).
    pub fn id(&self) -> ManifestId {
        ManifestId::of(&self.encode())
    }

    /// Chunk ids of `stream`, in order.
    pub fn chunks(&self, stream: Stream) -> &[ChunkId] {
        match stream {
            Stream::Metadata => &self.metadata_chunks,
            Stream::Content => &self.content_chunks,
        }
    }

    /// Declared plaintext length of `stream`.
    pub fn stream_len(&self, stream: Stream) -> u64 {
        match stream {
            Stream::Metadata => self.metadata_len,
            Stream::Content => self.content_len,
        }
    }

    /// Position (as bound into associated data) of chunk `index` of `stream`.
    pub fn position(&self, stream: Stream, index: u64) -> ChunkPosition {
        ChunkPosition {
            stream,
            index,
            is_last: index + 1 == self.chunks(stream).len() as u64,
        }
    }

    /// Plaintext length of chunk `index` of `stream`.
    pub fn plaintext_len(&self, stream: Stream, index: u64) -> usize {
        self.chunk_size.chunk_len(self.stream_len(stream), index)
    }

    /// Exact length of sealed chunk `index` of `stream`.
    pub fn sealed_len(&self, stream: Stream, index: u64) -> usize {
        self.plaintext_len(stream, index) + CHUNK_OVERHEAD
    }

    /// Total number of chunks of both streams.
    pub fn chunk_count(&self) -> usize {
        self.metadata_chunks.len() + self.content_chunks.len()
    }

    /// Total ciphertext bytes of the share (what a pinning node stores).
    pub fn sealed_size(&self) -> u64 {
        self.metadata_len + self.content_len + (self.chunk_count() * CHUNK_OVERHEAD) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            chunk_size: ChunkSize::from_log2(10).unwrap(),
            key_commitment: [9; 32],
            metadata_len: 10,
            content_len: 2048,
            metadata_chunks: vec![ChunkId([1; 32])],
            content_chunks: vec![ChunkId([2; 32]), ChunkId([3; 32])],
            expires: None,
        }
    }

    #[test]
    fn round_trip_and_verification() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 3 * 32);
        assert_eq!(Manifest::decode_verified(&m.id(), &bytes).unwrap(), m);
        let mut other = bytes.clone();
        other[60] ^= 1;
        assert_eq!(
            Manifest::decode_verified(&m.id(), &other),
            Err(ManifestError::IdMismatch)
        );
    }

    #[test]
    fn hostile_headers_are_refused_before_allocating() {
        let bytes = sample().encode();
        let with = |at: usize, v: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + v.len()].copy_from_slice(v);
            Manifest::decode(&b)
        };
        assert_eq!(with(0, b"XDMF"), Err(ManifestError::BadMagic));
        assert_eq!(with(4, &[3]), Err(ManifestError::UnsupportedVersion(3)));
        assert_eq!(with(5, &[9]), Err(ManifestError::BadChunkSize(9)));
        assert_eq!(with(6, &[1]), Err(ManifestError::Reserved));
        assert_eq!(
            with(48, &u64::MAX.to_le_bytes()),
            Err(ManifestError::TooManyChunks {
                stream: Stream::Content,
                count: u64::MAX.div_ceil(1024)
            })
        );
        assert_eq!(
            with(40, &(1u64 << 62).to_le_bytes()),
            Err(ManifestError::MetadataTooLarge { len: 1 << 62 })
        );
        assert!(matches!(
            with(48, &4096u64.to_le_bytes()),
            Err(ManifestError::LengthMismatch { .. })
        ));
        assert!(matches!(
            with(HEADER_LEN + 32, &[1; 32]),
            Err(ManifestError::DuplicateChunk {
                stream: Stream::Content,
                index: 0
            })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Manifest::decode(&long),
            Err(ManifestError::LengthMismatch { .. })
        ));
        assert_eq!(
            Manifest::decode(&bytes[..3]),
            Err(ManifestError::TooShort { len: 3, min: 56 })
        );
    }

    #[test]
    fn an_expiry_makes_a_version_2_manifest_that_round_trips() {
        let at = Expiry::from_unix(1_796_409_000).unwrap();
        let m = Manifest {
            expires: Some(at),
            ..sample()
        };
        let bytes = m.encode();
        assert_eq!(bytes[4], VERSION_EXPIRY);
        assert_eq!(bytes.len(), HEADER_LEN_EXPIRY + 3 * 32);
        assert_eq!(&bytes[56..64], &1_796_409_000u64.to_le_bytes());
        assert_eq!(Manifest::decode_verified(&m.id(), &bytes).unwrap(), m);
        assert_eq!(Manifest::expiry_in(&bytes), Some(at));
        assert_eq!(Manifest::expiry_in(&sample().encode()), None);
        // The same share without the expiry is another manifest, version 1.
        assert_ne!(m.id(), sample().id());
        assert_eq!(sample().encode()[4], VERSION);
        assert_eq!(at.to_string(), "2026-12-04T18:30:00Z");

        let with = |at: usize, v: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + v.len()].copy_from_slice(v);
            Manifest::decode(&b)
        };
        assert_eq!(
            with(56, &0u64.to_le_bytes()),
            Err(ManifestError::BadExpiry(0))
        );
        assert_eq!(
            with(56, &(MAX_EXPIRY + 1).to_le_bytes()),
            Err(ManifestError::BadExpiry(MAX_EXPIRY + 1))
        );
        assert_eq!(
            Manifest::decode(&bytes[..60]),
            Err(ManifestError::TooShort { len: 60, min: 64 })
        );
        // A version-1 body under a version-2 byte does not decode.
        let mut v1 = sample().encode();
        v1[4] = VERSION_EXPIRY;
        assert!(Manifest::decode(&v1).is_err());
        assert_eq!(with(4, &[3]), Err(ManifestError::UnsupportedVersion(3)));
    }

    #[test]
    fn expiries_are_bounded_and_round_up() {
        assert_eq!(Expiry::from_unix(0), Err(BadExpiry));
        assert_eq!(
            Expiry::from_unix(MAX_EXPIRY).unwrap().to_string(),
            "9999-12-31T23:59:59Z"
        );
        let now = UNIX_EPOCH + Duration::from_millis(1_000_500);
        let e = Expiry::after(now, Duration::from_secs(60)).unwrap();
        assert_eq!(e.unix(), 1_061);
        assert!(!e.passed_at(now));
        assert!(e.passed_at(UNIX_EPOCH + Duration::from_secs(1_061)));
        assert_eq!(
            Expiry::after(now, Duration::from_secs(MAX_EXPIRY)),
            Err(BadExpiry)
        );
    }
}
