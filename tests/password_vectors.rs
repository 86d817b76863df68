//! Frozen password-link vectors (tests/vectors/password-links-p1.json):
//! fixed keys, salts and passwords with the links they make, and negative
//! vectors with the exact refusal expected (docs/FORMAT.md §7.5).
//!
//! As in tests/vectors.rs: every vector read from the file behaves as
//! recorded, and the generator below still produces the file byte for byte.
//! After an intended change, regenerate with
//! `PEERDROP_BLESS=1 cargo test --test password_vectors`.

use std::fs;

use peerdrop::chunk::hex;
use peerdrop::crypto::ShareKey;
use peerdrop::link::{base32, Hint, Link, ParseError};
use peerdrop::manifest::ManifestId;
use peerdrop::password::{LockedKey, Params, MIN_MEMORY_KIB};
use serde_json::{json, Value};

const FILE: &str = "tests/vectors/password-links-p1.json";

/// The cheapest parameters a link may carry, so the vectors run fast.
const FAST: Params = Params {
    memory_kib: MIN_MEMORY_KIB,
    passes: 1,
    lanes: 1,
};

fn read_link(id: u8, key: u8, hints: bool) -> Link {
    let hints = if hints {
        vec![Hint {
            peer: vec![0, 36, 8, 1, 18, 32, 9, 9],
            addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x1f, 0x90]],
        }]
    } else {
        Vec::new()
    };
    Link::new(
        ManifestId([id; 32]),
        hints,
        Some(ShareKey::from_bytes([key; 32]).unwrap()),
    )
    .unwrap()
}

fn locked(link: &Link, password: &str, params: Params, salt: u8) -> String {
    let key = link.require_key().unwrap();
    let l =
        LockedKey::lock_with_salt(key, link.manifest_id(), password, params, [salt; 16]).unwrap();
    link.with_locked(l).to_uri_string()
}

/// Replaces the locked key's bytes of a password link with `f` of them.
fn tamper(link: &str, f: impl Fn(&mut Vec<u8>)) -> String {
    let (body, frag) = link.split_once('#').unwrap();
    let mut b = base32::decode(frag).unwrap();
    f(&mut b);
    format!("{body}#{}", base32::encode(&b))
}

/// (name, description, link, password)
fn generate() -> Vec<(&'static str, &'static str, String, &'static str)> {
    let plain = read_link(0x11, 0x22, false);
    let hinted = read_link(0x33, 0x44, true);
    let good = locked(&plain, "correct horse battery staple", FAST, 0x55);
    let other_id = read_link(0x12, 0x22, false);
    let swapped = format!(
        "{}#{}",
        other_id
            .to_pin_link()
            .to_uri_string()
            .replacen("peerdrop:1/", "peerdrop:p1/", 1),
        good.split_once('#').unwrap().1
    );
    vec![
        (
            "ok-fast",
            "8 MiB, 1 pass: the cheapest parameters accepted",
            good.clone(),
            "correct horse battery staple",
        ),
        (
            "ok-hints",
            "a password link keeps the read link's hints",
            locked(&hinted, "pw", FAST, 0x66),
            "pw",
        ),
        (
            "ok-default",
            "the parameters `send --password` uses: 64 MiB, 3 passes, 1 lane",
            locked(
                &plain,
                "correct horse battery staple",
                Params::DEFAULT,
                0x77,
            ),
            "correct horse battery staple",
        ),
        (
            "ok-nfc",
            "the password is compared after NFC: locked with U+00E9, opened with e U+0301",
            locked(&plain, "caf\u{e9}", FAST, 0x88),
            "cafe\u{301}",
        ),
        (
            "wrong-password",
            "one character off",
            good.clone(),
            "correct horse battery stapl",
        ),
        (
            "empty-password",
            "an empty password is refused before any work",
            good.clone(),
            "",
        ),
        (
            "tag-altered",
            "the last byte (the tag's) flipped",
            tamper(&good, |b| *b.last_mut().unwrap() ^= 1),
            "correct horse battery staple",
        ),
        (
            "salt-altered",
            "a salt byte flipped: the salt is stretched and bound as associated data",
            tamper(&good, |b| b[6] ^= 1),
            "correct horse battery staple",
        ),
        (
            "other-manifest",
            "the locked key of one share under another share's id",
            swapped,
            "correct horse battery staple",
        ),
        (
            "memory-too-small",
            "4 MiB: under the 8 MiB floor",
            tamper(&good, |b| b[..4].copy_from_slice(&(4096u32).to_le_bytes())),
            "x",
        ),
        (
            "memory-too-large",
            "2 GiB: over the 1 GiB cap, refused before any allocation",
            tamper(&good, |b| {
                b[..4].copy_from_slice(&(2u32 << 20).to_le_bytes())
            }),
            "x",
        ),
        ("passes-zero", "0 passes", tamper(&good, |b| b[4] = 0), "x"),
        (
            "too-much-work",
            "1 GiB with 5 passes: over 4 GiB-passes of work",
            tamper(&good, |b| {
                b[..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
                b[4] = 5
            }),
            "x",
        ),
        (
            "lanes-too-many",
            "5 lanes",
            tamper(&good, |b| b[5] = 5),
            "x",
        ),
        (
            "locked-key-short",
            "69 bytes instead of 70",
            tamper(&good, |b| {
                b.pop();
            }),
            "x",
        ),
        (
            "no-locked-key",
            "a p1 link without its '#' part",
            good.split_once('#').unwrap().0.to_owned(),
            "x",
        ),
    ]
}

fn outcome(link: &str, password: &str) -> Value {
    let r = Link::parse_read_link(link).and_then(|l| l.unlock(password));
    match r {
        Ok(l) => json!({"ok": {"key": hex(l.require_key().unwrap().expose_secret())}}),
        Err(e) => json!({"error": e.to_string(), "kind": kind(&e)}),
    }
}

/// `Type::Variant` of the refusal, for other implementations to match.
fn kind(e: &ParseError) -> String {
    match e {
        ParseError::Password(p) => {
            let d = format!("{p:?}");
            format!("PasswordError::{}", d.split('(').next().unwrap())
        }
        other => {
            let d = format!("{other:?}");
            let name: String = d.chars().take_while(|c| c.is_alphanumeric()).collect();
            format!("ParseError::{name}")
        }
    }
}

fn render() -> String {
    let vectors: Vec<Value> = generate()
        .into_iter()
        .map(|(name, description, link, password)| {
            json!({
                "name": name, "description": description, "link": link,
                "password": password, "expect": outcome(&link, password),
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({
        "about": "peerdrop password links (link version p1) test vectors; see docs/FORMAT.md section 7.5. Each vector: a `link`, the `password` given, and `expect`: `ok` with the share `key` (hex) it opens to, or `error`, peerdrop's message, with `kind`, the refusal as `Type::Variant`.",
        "vectors": vectors,
    }))
    .unwrap()
        + "\n"
}

#[test]
fn password_vectors_behave_as_recorded() {
    let file: Value =
        serde_json::from_str(&fs::read_to_string(FILE).expect("vectors file")).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 10);
    let mut oks = 0;
    for j in vectors {
        let got = outcome(j["link"].as_str().unwrap(), j["password"].as_str().unwrap());
        assert_eq!(got, j["expect"], "vector {}", j["name"]);
        oks += usize::from(got.get("ok").is_some());
    }
    assert!(
        oks >= 3 && oks < vectors.len(),
        "positive and negative vectors"
    );
}

#[test]
fn the_password_link_format_is_frozen() {
    let text = render();
    if std::env::var_os("PEERDROP_BLESS").is_some() {
        fs::write(FILE, &text).unwrap();
    }
    let stored = fs::read_to_string(FILE).expect("vectors file (generate with PEERDROP_BLESS=1)");
    assert!(stored == text, "password links changed: {FILE} no longer matches what this code produces; if intended, bump the link version and re-bless");
}
