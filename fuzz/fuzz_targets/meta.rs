//! File-list decoding (src/meta.rs): the plaintext of the metadata stream,
//! which an attacker who holds the key controls completely.
//!
//! Invariants: decoding never panics; an accepted list is canonical
//! (re-encoding gives the input back) and passes `from_entries` unchanged;
//! every path is relative, sorted, and has its parent before it; memory is
//! linear in the input, never in the entry count the header claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerdrop::meta::{EntryKind, Metadata, MAX_DEPTH, MAX_PATH_LEN};
use peerdrop_fuzz::{assert_within, measure, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let (decoded, cost) = measure(|| Metadata::decode(data));
    // Per entry of at least 25 input bytes: the entry, its path, and the
    // path's place in two lookup tables.
    assert_within(cost, 24 * data.len() + 4096, "decoding a file list");
    let Ok(m) = decoded else {
        return;
    };
    assert_eq!(m.encode(), data, "an accepted file list is not canonical");
    assert_eq!(
        Metadata::from_entries(m.entries().to_vec()).as_ref(),
        Ok(&m)
    );
    let mut total = 0u64;
    for (i, e) in m.entries().iter().enumerate() {
        let p = e.path.as_str();
        assert!(!p.is_empty() && p.len() <= MAX_PATH_LEN);
        assert!(!p.starts_with('/') && !p.ends_with('/'));
        assert!(e.path.components().count() <= MAX_DEPTH);
        assert!(e
            .path
            .components()
            .all(|c| !c.is_empty() && c != "." && c != ".."));
        if i > 0 {
            assert!(m.entries()[i - 1].path < e.path);
        }
        if let Some(parent) = e.path.parent() {
            assert!(m.entries()[..i]
                .iter()
                .any(|d| d.kind == EntryKind::Dir && d.path.as_str() == parent));
        }
        if e.kind == EntryKind::Dir {
            assert!(e.size == 0 && !e.executable);
        }
        total += e.size;
    }
    assert_eq!(total, m.content_len());
});
