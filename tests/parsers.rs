//! Parsers against arbitrary and mutated input: they never panic, and every
//! encoding round-trips exactly (one canonical form).

use peerdrop::crypto::ShareKey;
use peerdrop::link::{base32, Hint, Link};
use peerdrop::manifest::{Manifest, ManifestId};
use peerdrop::meta::Metadata;
use proptest::prelude::*;

fn arb_hint() -> impl Strategy<Value = Hint> {
    (
        prop::collection::vec(any::<u8>(), 1..40),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..4),
    )
        .prop_map(|(peer, addrs)| Hint { peer, addrs })
}

fn arb_link() -> impl Strategy<Value = Link> {
    (
        any::<[u8; 32]>(),
        prop::collection::vec(arb_hint(), 0..4),
        prop::option::of(any::<[u8; 32]>().prop_filter("non-zero", |k| k.iter().any(|&b| b != 0))),
    )
        .prop_map(|(id, hints, key)| {
            Link::new(
                ManifestId(id),
                hints,
                key.map(|k| ShareKey::from_bytes(k).unwrap()),
            )
            .unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn links_round_trip_exactly(link in arb_link()) {
        let s = link.to_uri_string();
        let back: Link = s.parse().unwrap();
        prop_assert_eq!(back.to_uri_string(), s);
        prop_assert_eq!(back.hints(), link.hints());
        prop_assert_eq!(back.manifest_id(), link.manifest_id());
    }

    #[test]
    fn arbitrary_text_never_panics_the_link_parser(s in ".{0,300}") {
        let _ = s.parse::<Link>();
    }

    #[test]
    fn mutated_links_never_panic_and_parse_only_in_canonical_form(
        link in arb_link(), at in any::<prop::sample::Index>(), c in any::<char>()
    ) {
        let s = link.to_uri_string();
        let i = at.index(s.len());
        let mut m = s.clone();
        m.replace_range(i..i + 1, &c.to_string());
        if let Ok(parsed) = m.parse::<Link>() {
            // Whatever parses is in canonical form (the scheme's case aside):
            // no two spellings of one link.
            let again = parsed.to_uri_string();
            prop_assert!(again == m || (i < 8 && again == s), "{} vs {}", again, m);
        }
    }

    #[test]
    fn base32_accepts_only_its_own_output(data in prop::collection::vec(any::<u8>(), 0..64), s in "[a-z2-7A-Z=]{0,40}") {
        prop_assert_eq!(base32::decode(&base32::encode(&data)), Some(data));
        if let Some(d) = base32::decode(&s) {
            prop_assert_eq!(base32::encode(&d), s);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(b in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Manifest::decode(&b);
        let _ = Metadata::decode(&b);
        let mut m = b"PDMF\x01\x0a\x00\x00".to_vec();
        m.extend_from_slice(&b);
        if let Ok(man) = Manifest::decode(&m) {
            prop_assert_eq!(man.encode(), m);
        }
        let mut d = b"PDMD\x01\x00\x00\x00".to_vec();
        d.extend_from_slice(&b);
        if let Ok(meta) = Metadata::decode(&d) {
            prop_assert_eq!(meta.encode(), d);
        }
    }
}
