//! Opening a chunk with hostile bytes (src/open.rs): the first byte picks a
//! position, the rest is the chunk a source sent for it.
//!
//! The manifest is built around the input so that the fuzzer reaches every
//! check: it lists the chunk's true id (or, by choice, a wrong one) at a
//! position whose length may or may not match. Invariants: opening never
//! panics; a wrong length or id is refused before decryption; bytes that
//! authenticate are exactly what the key seals for that plaintext at that
//! position (no forgery, no malleability); a decrypted file list never
//! panics the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerdrop::chunk::{ChunkId, ChunkSize, Stream, CHUNK_OVERHEAD};
use peerdrop::crypto::{ChunkCipher, ShareKey};
use peerdrop::manifest::Manifest;
use peerdrop::open::{OpenError, Opener};
use peerdrop_fuzz::{assert_within, measure, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

/// The key of tests/vectors, so their chunks are valid seeds.
const KEY: [u8; 32] = [0x42; 32];
const LOG2: u8 = 10;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, chunk)) = data.split_first() else {
        return;
    };
    let stream = if sel & 1 == 0 {
        Stream::Content
    } else {
        Stream::Metadata
    };
    let last = sel & 2 == 0;
    let wrong_id = sel & 4 != 0;
    let index = u64::from(sel >> 3) % 4;
    let size = ChunkSize::from_log2(LOG2).unwrap();
    let full = size.bytes();
    let plain = chunk.len().saturating_sub(CHUNK_OVERHEAD) as u64;
    // The stream's length: `index` full chunks, then this one, then (if not
    // last) one byte more.
    let this = if last { plain.min(full) } else { full };
    let len = index * full + this + u64::from(!last);
    let mut id = ChunkId::of(chunk);
    if wrong_id {
        id.0[0] ^= 1;
    }
    let ids = |n: u64, fill: u8| -> Vec<ChunkId> {
        (0..n)
            .map(|i| {
                if i == index {
                    id
                } else {
                    ChunkId([fill ^ i as u8; 32])
                }
            })
            .collect()
    };
    let n = size.chunk_count(len);
    let (meta_len, content_len) = match stream {
        Stream::Metadata => (len, 0),
        Stream::Content => (0, len),
    };
    let (meta_ids, content_ids) = match stream {
        Stream::Metadata => (ids(n, 0xa0), vec![ChunkId([0xee; 32])]),
        Stream::Content => (vec![ChunkId([0xee; 32])], ids(n, 0xa0)),
    };
    let key = ShareKey::from_bytes(KEY).unwrap();
    let manifest = Manifest {
        chunk_size: size,
        key_commitment: key.commitment(),
        metadata_len: meta_len,
        content_len,
        metadata_chunks: meta_ids,
        content_chunks: content_ids,
        expires: None,
    };
    // The manifest is well formed by construction.
    assert_eq!(Manifest::decode(&manifest.encode()).as_ref(), Ok(&manifest));
    let opener = Opener::new(manifest.clone(), &key).unwrap();
    assert!(matches!(
        opener.open_chunk(stream, n, chunk.to_vec()),
        Err(OpenError::NoSuchChunk { .. })
    ));
    // Only an empty stream ends in an empty chunk: a last chunk of nothing
    // after full ones does not exist.
    if index >= n {
        return;
    }
    let expected = manifest.sealed_len(stream, index);
    let position = manifest.position(stream, index);
    let (opened, cost) = measure(|| opener.open_chunk(stream, index, chunk.to_vec()));
    assert_within(cost, chunk.len() + 4096, "opening a chunk");
    match opened {
        Err(OpenError::Length {
            len, expected: e, ..
        }) => {
            assert_eq!((len, e), (chunk.len(), expected));
            assert_ne!(chunk.len(), expected);
        }
        Err(OpenError::IdMismatch { .. }) => {
            assert_eq!(chunk.len(), expected);
            assert!(wrong_id);
        }
        Err(OpenError::Corrupt { .. }) => {
            assert_eq!(chunk.len(), expected);
            assert!(!wrong_id);
        }
        Ok(p) => {
            assert!(!wrong_id && chunk.len() == expected);
            let resealed = ChunkCipher::new(&key).seal(position, p.as_slice());
            assert_eq!(
                resealed, chunk,
                "bytes that are not a sealing authenticated"
            );
            if stream == Stream::Metadata {
                let _ = opener.metadata(p.as_slice());
            }
        }
        Err(e) => panic!("unexpected refusal: {e:?}"),
    }
});
