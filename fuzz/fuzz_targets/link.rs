//! Link parsing (src/link.rs): any string, and the base32 inside it.
//!
//! Invariants: parsing never panics; an accepted link is canonical (printing
//! it gives back the input, up to surrounding whitespace and the scheme's
//! case) and parses again to the same parts; the decoder's base32 is exactly
//! the encoder's; memory stays within a small multiple of the link limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerdrop::link::{base32, Link, MAX_HINTS, MAX_LINK_LEN, SCHEME};
use peerdrop_fuzz::{assert_within, measure, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

/// A link is at most 4 KiB; parsing it may copy it a few times.
const MEMORY: usize = 16 * MAX_LINK_LEN;

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = base32::decode(&String::from_utf8_lossy(data)) {
        assert_eq!(base32::encode(&bytes), String::from_utf8_lossy(data));
    }
    assert_eq!(base32::decode(&base32::encode(data)).as_deref(), Some(data));
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (parsed, cost) = measure(|| s.parse::<Link>());
    assert_within(cost, MEMORY, "parsing a link");
    let Ok(link) = parsed else {
        return;
    };
    assert!(s.len() <= MAX_LINK_LEN);
    assert!(link.hints().len() <= MAX_HINTS);
    let printed = link.to_uri_string();
    let trimmed = s.trim();
    assert_eq!(
        &printed[SCHEME.len()..],
        &trimmed[SCHEME.len()..],
        "an accepted link is not canonical"
    );
    let again: Link = printed.parse().expect("a printed link parses");
    assert_eq!(again.manifest_id(), link.manifest_id());
    assert_eq!(again.hints(), link.hints());
    assert_eq!(
        again.key().map(|k| *k.expose_secret()),
        link.key().map(|k| *k.expose_secret())
    );
    let pin = link.to_pin_link();
    assert!(pin.key().is_none());
    assert!(Link::parse_read_link(&pin.to_uri_string()).is_err());
    assert_eq!(Link::parse_read_link(s).is_ok(), link.key().is_some());
});
