//! Chunk geometry and chunk identifiers (pure).
//!
//! A share is two plaintext *streams*, metadata and content. Each stream is
//! cut into chunks of one fixed plaintext size (a power of two chosen by the
//! sealer and recorded in the manifest); only the last chunk of a stream may be
//! shorter, and an empty stream is one empty final chunk, so that even "no
//! bytes" is authenticated. Everything here is arithmetic on sizes: no crypto,
//! no I/O.

use std::fmt;

/// Bytes a sealed chunk adds to its plaintext: 12-byte nonce and 16-byte tag.
pub const CHUNK_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of the synthetic nonce stored at the front of each chunk.
pub const NONCE_LEN: usize = 12;
/// Length of the Poly1305 tag stored at the end of each chunk.
pub const TAG_LEN: usize = 16;

/// Smallest plaintext chunk size a manifest may declare (1 KiB).
pub const MIN_CHUNK_LOG2: u8 = 10;
/// Largest plaintext chunk size a manifest may declare (64 MiB).
pub const MAX_CHUNK_LOG2: u8 = 26;
/// Default plaintext chunk size (1 MiB), used until a share would need more
/// than [`MAX_CHUNKS_PER_STREAM`] chunks.
pub const DEFAULT_CHUNK_LOG2: u8 = 20;
/// Hard cap on chunks per stream. Keeps a manifest at most 16 MiB
/// (2 streams x 2^18 ids x 32 bytes) whatever the share's size.
pub const MAX_CHUNKS_PER_STREAM: u64 = 1 << 18;

/// Which of a share's two plaintext streams a chunk belongs to. The value is
/// bound into every chunk's associated data, so a metadata chunk can never be
/// accepted as content or the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Sealed file list: paths, sizes, modes, times.
    Metadata = 0,
    /// The bytes of every file, concatenated in metadata order.
    Content = 1,
}

impl Stream {
    /// The byte that stands for this stream in associated data.
    pub fn tag(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Metadata => "metadata",
            Stream::Content => "content",
        })
    }
}

/// A plaintext chunk size: a power of two between 1 KiB and 64 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSize(u8);

impl ChunkSize {
    /// The default 1 MiB size.
    pub const DEFAULT: ChunkSize = ChunkSize(DEFAULT_CHUNK_LOG2);

    /// A size from its base-2 logarithm; `None` outside the allowed range.
    pub fn from_log2(log2: u8) -> Option<ChunkSize> {
        (MIN_CHUNK_LOG2..=MAX_CHUNK_LOG2)
            .contains(&log2)
            .then_some(ChunkSize(log2))
    }

    /// The base-2 logarithm, as stored in the manifest.
    pub fn log2(self) -> u8 {
        self.0
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        1u64 << self.0
    }

    /// The smallest size, at least the default, that keeps a stream of `len`
    /// bytes within [`MAX_CHUNKS_PER_STREAM`]; `None` if even 64 MiB chunks
    /// cannot (the share is larger than 16 TiB).
    pub fn for_len(len: u64) -> Option<ChunkSize> {
        (DEFAULT_CHUNK_LOG2..=MAX_CHUNK_LOG2)
            .map(ChunkSize)
            .find(|s| s.chunk_count(len) <= MAX_CHUNKS_PER_STREAM)
    }

    /// Number of chunks a stream of `len` bytes is cut into (at least one).
    pub fn chunk_count(self, len: u64) -> u64 {
        if len == 0 {
            1
        } else {
            len.div_ceil(self.bytes())
        }
    }

    /// Plaintext length of chunk `index` of a stream of `len` bytes.
    /// `index` must be below [`ChunkSize::chunk_count`].
    pub fn chunk_len(self, len: u64, index: u64) -> usize {
        let start = index * self.bytes();
        // The result is at most the chunk size (<= 64 MiB), so it fits usize.
        len.saturating_sub(start).min(self.bytes()) as usize
    }
}

/// BLAKE3 of a sealed chunk's bytes: the address under which any node can
/// store, serve and verify it without the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(bytes).as_bytes())
    }

    /// Whether `bytes` hash to this id (constant-time comparison).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        blake3::hash(bytes) == blake3::Hash::from_bytes(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", hex(&self.0))
    }
}

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses lowercase or uppercase hexadecimal; `None` on any other input.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_at_the_boundaries() {
        let s = ChunkSize::from_log2(10).unwrap();
        assert_eq!(s.chunk_count(0), 1);
        assert_eq!(s.chunk_len(0, 0), 0);
        assert_eq!(s.chunk_count(1023), 1);
        assert_eq!(s.chunk_count(1024), 1);
        assert_eq!(s.chunk_len(1024, 0), 1024);
        assert_eq!(s.chunk_count(1025), 2);
        assert_eq!(s.chunk_len(1025, 1), 1);
        assert!(ChunkSize::from_log2(9).is_none());
        assert!(ChunkSize::from_log2(27).is_none());
    }

    #[test]
    fn chunk_size_grows_for_huge_shares() {
        assert_eq!(ChunkSize::for_len(0), Some(ChunkSize::DEFAULT));
        assert_eq!(ChunkSize::for_len(256 << 30), Some(ChunkSize::DEFAULT));
        assert_eq!(ChunkSize::for_len((256 << 30) + 1).unwrap().log2(), 21);
        assert_eq!(ChunkSize::for_len(16 << 40).unwrap().log2(), 26);
        assert_eq!(ChunkSize::for_len((16 << 40) + 1), None);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abff").unwrap(), vec![0, 0xab, 0xff]);
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }
}
