//! Corruption sweeps: flip every byte of a small sealed share, one at a time,
//! and show each flip is detected — by the chunk id check when a store or
//! peer corrupts data, and by the AEAD when the id check is bypassed (a chunk
//! published that way by its sharer). Likewise every character of the link.

mod common;

use common::*;
use peerdrop::chunk::Stream;
use peerdrop::crypto::ShareKey;
use peerdrop::link::Link;
use peerdrop::manifest::Manifest;
use peerdrop::meta::{Entry, EntryKind, Metadata, RelPath, Timestamp};
use peerdrop::open::{OpenError, Opener};

fn small_share() -> (ShareKey, Share) {
    let key = ShareKey::generate().unwrap();
    let e = |p: &str, kind, size| Entry {
        path: RelPath::new(p).unwrap(),
        kind,
        executable: false,
        mtime: Timestamp::default(),
        size,
    };
    let meta = Metadata::from_entries(vec![
        e("d", EntryKind::Dir, 0),
        e("d/one", EntryKind::File, 700),
        e("d/two", EntryKind::File, 1500),
    ])
    .unwrap();
    let share = seal_mem(&key, &meta, &bytes(11, 2200), 10, 2);
    (key, share)
}

#[test]
fn every_flipped_byte_of_every_chunk_is_caught_by_its_id() {
    let (key, share) = small_share();
    let link = Link::new(share.id, Vec::new(), Some(key))
        .unwrap()
        .to_uri_string();
    let ids: Vec<_> = share.chunks.keys().copied().collect();
    let mut flips = 0;
    for id in ids {
        for at in 0..share.chunks[&id].len() {
            let mut chunks = share.chunks.clone();
            chunks.get_mut(&id).unwrap()[at] ^= 1;
            let dest = tempfile::tempdir().unwrap();
            let err = receive(&link, &share.manifest, &chunks, dest.path(), false).unwrap_err();
            assert!(
                err.contains("does not match its id"),
                "byte {at} of {id}: {err}"
            );
            assert!(final_names_in(dest.path()).is_empty());
            flips += 1;
        }
    }
    assert!(flips > 2200, "swept {flips} bytes");
}

#[test]
fn every_flipped_byte_is_caught_by_authentication_when_the_id_is_forged() {
    let (key, share) = small_share();
    let honest = Manifest::decode(&share.manifest).unwrap();
    for stream in [Stream::Metadata, Stream::Content] {
        for (index, id) in honest.chunks(stream).iter().enumerate() {
            let chunk = &share.chunks[id];
            for at in 0..chunk.len() {
                let mut bad = chunk.clone();
                bad[at] ^= 1;
                // A manifest that names the corrupted bytes, so the id check
                // passes and only the AEAD stands between them and the output.
                let mut m = honest.clone();
                let slot = match stream {
                    Stream::Metadata => &mut m.metadata_chunks[index],
                    Stream::Content => &mut m.content_chunks[index],
                };
                *slot = peerdrop::chunk::ChunkId::of(&bad);
                let opener = Opener::new(m, &key).unwrap();
                let err = opener.open_chunk(stream, index as u64, bad).unwrap_err();
                assert_eq!(
                    err,
                    OpenError::Corrupt {
                        stream,
                        index: index as u64
                    },
                    "byte {at}"
                );
            }
        }
    }
}

#[test]
fn every_flipped_byte_of_the_manifest_is_caught() {
    let (_, share) = small_share();
    for at in 0..share.manifest.len() {
        let mut bad = share.manifest.clone();
        bad[at] ^= 1;
        assert_eq!(
            Manifest::decode_verified(&share.id, &bad).unwrap_err(),
            peerdrop::manifest::ManifestError::IdMismatch
        );
    }
}

#[test]
fn every_altered_character_of_the_link_is_caught() {
    let (key, share) = small_share();
    let link = Link::new(share.id, Vec::new(), Some(key))
        .unwrap()
        .to_uri_string();
    for (i, c) in link.char_indices() {
        for replacement in ['a', 'b', '7', 'Z', '/', '#', '\0'] {
            if replacement == c {
                continue;
            }
            let mut altered = link.clone();
            altered.replace_range(i..i + c.len_utf8(), &replacement.to_string());
            let dest = tempfile::tempdir().unwrap();
            let r = receive(&altered, &share.manifest, &share.chunks, dest.path(), false);
            // Changing the scheme's case is the one alteration that keeps the
            // same link (schemes are case-insensitive).
            if i < "peerdrop".len() && replacement.eq_ignore_ascii_case(&c) {
                assert!(r.is_ok());
                continue;
            }
            assert!(
                r.is_err(),
                "altered link at {i} to {replacement:?} was accepted"
            );
            assert!(final_names_in(dest.path()).is_empty());
        }
    }
}
