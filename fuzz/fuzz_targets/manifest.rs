//! Manifest decoding (src/manifest.rs).
//!
//! Invariants: decoding never panics; an accepted manifest is canonical
//! (re-encoding gives the input back), `decode_verified` agrees with `decode`
//! under the right id and refuses under any other; its chunk positions add up
//! to its stream lengths; memory is linear in the input, never in the sizes
//! the header claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerdrop::chunk::{Stream, CHUNK_OVERHEAD, MAX_CHUNKS_PER_STREAM};
use peerdrop::manifest::{Manifest, ManifestError, ManifestId, HEADER_LEN, HEADER_LEN_EXPIRY};
use peerdrop_fuzz::{assert_within, measure, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let (decoded, cost) = measure(|| Manifest::decode(data));
    // Two id vectors and a set of seen ids, each sized by the input.
    assert_within(cost, 8 * data.len() + 4096, "decoding a manifest");
    let id = ManifestId::of(data);
    let mut wrong = id;
    wrong.0[0] ^= 1;
    assert_eq!(Manifest::decode_verified(&id, data), decoded);
    assert!(matches!(
        Manifest::decode_verified(&wrong, data),
        Err(ManifestError::IdMismatch | ManifestError::TooLarge { .. })
    ));
    let Ok(m) = decoded else {
        return;
    };
    assert_eq!(m.encode(), data, "an accepted manifest is not canonical");
    assert_eq!(m.id(), id);
    let mut sealed = 0u64;
    for stream in [Stream::Metadata, Stream::Content] {
        let n = m.chunks(stream).len() as u64;
        assert!(n >= 1 && n <= MAX_CHUNKS_PER_STREAM);
        let mut plain = 0u64;
        for i in 0..n {
            let len = m.plaintext_len(stream, i);
            assert!(len as u64 <= m.chunk_size.bytes());
            assert_eq!(m.sealed_len(stream, i), len + CHUNK_OVERHEAD);
            assert_eq!(m.position(stream, i).is_last, i + 1 == n);
            plain += len as u64;
            sealed += (len + CHUNK_OVERHEAD) as u64;
        }
        assert_eq!(plain, m.stream_len(stream));
    }
    assert_eq!(sealed, m.sealed_size());
    // A version-2 manifest's header carries its expiry (8 bytes more).
    let header = match m.expires {
        Some(_) => HEADER_LEN_EXPIRY,
        None => HEADER_LEN,
    };
    assert_eq!(data.len(), header + 32 * m.chunk_count());
});
