//! Share links (pure).
//!
//! ```text
//! peerdrop:1/<manifest id>[/<hints>][?expires=<unix seconds>][#<key>]
//! peerdrop:p1/<manifest id>[/<hints>][?expires=<unix seconds>]#<locked key>
//! ```
//!
//! The second form is a *password link* (`crate::password`): the key is
//! sealed under a password, so the link alone no longer reads the share.
//!
//! Each part is lowercase RFC 4648 base32 without padding. The key sits after
//! `#`, as in Mega's links, so deleting everything from `#` on turns a *read
//! link* into a *pin link*: enough to fetch, verify and host the ciphertext,
//! not to read it. Hints (peer ids and multiaddrs) are kept as opaque bytes
//! here; the network layer parses them and skips the bad ones, since a hint is
//! only ever a suggestion. Every size is capped before anything is decoded,
//! and exactly one spelling of each link is accepted (apart from the case of
//! the scheme, which URI schemes ignore, and surrounding white space).
//!
//! `?expires=` is a copy of the manifest's expiry ([`Expiry`]), so that a
//! link shows it before anything is fetched (`peerdrop inspect`), and a
//! fetcher can refuse an expired share without asking the network. The
//! manifest is what authenticates it: [`Link::check_manifest`] refuses a
//! link whose stated expiry differs from the manifest's. A link that states
//! none leaves the manifest to decide.

use std::fmt;
use std::str::FromStr;

use std::time::SystemTime;

use crate::crypto::{KeyError, ShareKey, KEY_LEN};
use crate::manifest::{Expiry, Manifest, ManifestId};
use crate::password::{LockedKey, Params, PasswordError, LOCKED_LEN};

/// The scheme, with its colon.
pub const SCHEME: &str = "peerdrop:";
/// The only link version this build writes and reads.
pub const VERSION: &str = "1";
/// The version tag of password links (same layout, a locked key after `#`).
pub const PASSWORD_VERSION: &str = "p1";
/// Longest link accepted, in bytes.
pub const MAX_LINK_LEN: usize = 4096;
/// Most peer hints in one link.
pub const MAX_HINTS: usize = 16;
/// Most addresses per hint.
pub const MAX_ADDRS_PER_HINT: usize = 8;
/// Longest peer id, in bytes.
pub const MAX_PEER_ID_LEN: usize = 64;
/// Longest encoded hint (peer id and its addresses), in bytes.
pub const MAX_HINT_LEN: usize = 256;
/// Longest encoded hint section, in bytes.
pub const MAX_HINTS_LEN: usize = 2048;
/// What introduces a link's stated expiry, after the hints.
pub const EXPIRES_PARAM: &str = "?expires=";

/// A suggestion of where to find a share: a peer and some of its addresses,
/// both in their binary multiformats encodings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The peer id's bytes (a multihash).
    pub peer: Vec<u8>,
    /// Multiaddrs in binary form.
    pub addrs: Vec<Vec<u8>>,
}

impl Hint {
    fn encoded_len(&self) -> usize {
        2 + self.peer.len() + self.addrs.iter().map(|a| 1 + a.len()).sum::<usize>()
    }
}

/// A parsed share link. `Debug` never shows the key.
pub struct Link {
    manifest: ManifestId,
    hints: Vec<Hint>,
    key: Option<ShareKey>,
    /// Set only on a password link, whose `key` is then `None`.
    locked: Option<LockedKey>,
    /// The expiry the link states (a copy of the manifest's).
    expires: Option<Expiry>,
}

/// Why a share is not fetched: it expired, or its link and its manifest
/// disagree about when it does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// The share's expiry has passed by this machine's clock.
    #[error("this share expired at {0}; its sharer set it to stop then (ask them for a new link)")]
    Expired(Expiry),
    /// The link states an expiry the manifest does not carry.
    #[error("the link says the share expires at {link} but its manifest says {}; the link was altered, so it is refused", .manifest.map_or("it never does".to_owned(), |m| format!("at {m}")))]
    Mismatch {
        /// What the link states.
        link: Expiry,
        /// What the manifest carries.
        manifest: Option<Expiry>,
    },
}

/// What is wrong with a link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing was given.
    #[error("the link is empty")]
    Empty,
    /// Over [`MAX_LINK_LEN`].
    #[error("the link is {len} bytes long, the limit is {MAX_LINK_LEN}; it is not a peerdrop link or it is damaged")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Does not start with `peerdrop:`.
    #[error("not a peerdrop link: it must start with 'peerdrop:'")]
    NotPeerdrop,
    /// A version this build does not know.
    #[error(
        "link version {0} is not supported by this peerdrop (it reads versions 1 and p1); upgrade peerdrop"
    )]
    UnsupportedVersion(String),
    /// The structure is wrong.
    #[error("malformed link: {0}")]
    Malformed(&'static str),
    /// A part is not canonical lowercase base32.
    #[error("the {0} part of the link is not valid base32; was the link cut or retyped?")]
    BadEncoding(&'static str),
    /// A part decodes to the wrong number of bytes.
    #[error("the {part} part of the link has {len} bytes, expected {expected}; was the link cut?")]
    BadLength {
        /// Which part.
        part: &'static str,
        /// Bytes found.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// Peer hints over the caps or badly structured.
    #[error("the link's peer hints are invalid: {0}")]
    BadHints(&'static str),
    /// The key is all zeros.
    #[error("{0}")]
    Key(KeyError),
    /// The `?` part is not exactly `?expires=` and a valid expiry.
    #[error("the link's expiry is invalid: {0}")]
    BadExpiry(&'static str),
    /// A read link was needed but this is a password link not yet unlocked.
    #[error("this link is password-protected: give its password (asked on the terminal, or PEERDROP_PASSWORD, or --password-file)")]
    Locked,
    /// The locked key of a password link is unusable.
    #[error("{0}")]
    Password(PasswordError),
    /// A read link was needed but this is a pin link.
    #[error("this is a pin link (nothing after '#'): it lets a node host the encrypted data but not read it; ask the sender for the full link")]
    MissingKey,
}

impl Link {
    /// A link to `manifest` with `hints` and, for a read link, the key.
    pub fn new(
        manifest: ManifestId,
        hints: Vec<Hint>,
        key: Option<ShareKey>,
    ) -> Result<Link, ParseError> {
        check_hints(&hints)?;
        Ok(Link {
            manifest,
            hints,
            key,
            locked: None,
            expires: None,
        })
    }

    /// This link, stating `expires` (which must be the manifest's: see
    /// [`Link::check_manifest`]).
    pub fn with_expiry(mut self, expires: Option<Expiry>) -> Link {
        self.expires = expires;
        self
    }

    /// The expiry the link states; `None` says nothing (the manifest may
    /// still carry one).
    pub fn expires(&self) -> Option<Expiry> {
        self.expires
    }

    /// Whether `manifest` (verified against this link's id) may be fetched
    /// at `now`: the link's stated expiry, if any, must be the manifest's,
    /// and the manifest's must not have passed.
    pub fn check_manifest(&self, manifest: &Manifest, now: SystemTime) -> Result<(), ExpiryError> {
        if let Some(link) = self.expires {
            if manifest.expires != Some(link) {
                return Err(ExpiryError::Mismatch {
                    link,
                    manifest: manifest.expires,
                });
            }
        }
        match manifest.expires {
            Some(e) if e.passed_at(now) => Err(ExpiryError::Expired(e)),
            _ => Ok(()),
        }
    }

    /// Whether the expiry the link states has passed at `now`: checked
    /// before anything is asked of the network.
    pub fn check_time(&self, now: SystemTime) -> Result<(), ExpiryError> {
        match self.expires {
            Some(e) if e.passed_at(now) => Err(ExpiryError::Expired(e)),
            _ => Ok(()),
        }
    }

    /// The password link for this read link: the key sealed under
    /// `password` with Argon2id `params` (a fresh salt each time).
    pub fn lock(&self, password: &str, params: Params) -> Result<Link, ParseError> {
        let key = self.require_key()?;
        let locked =
            LockedKey::lock(key, &self.manifest, password, params).map_err(ParseError::Password)?;
        Ok(self.with_locked(locked))
    }

    /// This link with `locked` in place of its key (for test vectors, with
    /// a locked key made by `LockedKey::lock_with_salt`).
    pub fn with_locked(&self, locked: LockedKey) -> Link {
        Link {
            manifest: self.manifest,
            hints: self.hints.clone(),
            key: None,
            locked: Some(locked),
            expires: self.expires,
        }
    }

    /// The read link inside a password link; costs one Argon2id run.
    /// A link that is not a password link is returned as it is.
    pub fn unlock(&self, password: &str) -> Result<Link, ParseError> {
        let Some(locked) = &self.locked else {
            return Ok(self.duplicate());
        };
        let key = locked
            .unlock(&self.manifest, password)
            .map_err(ParseError::Password)?;
        Ok(Link {
            manifest: self.manifest,
            hints: self.hints.clone(),
            key: Some(key),
            locked: None,
            expires: self.expires,
        })
    }

    /// The locked key, for a password link.
    pub fn locked(&self) -> Option<&LockedKey> {
        self.locked.as_ref()
    }

    fn duplicate(&self) -> Link {
        Link {
            manifest: self.manifest,
            hints: self.hints.clone(),
            key: self.key.as_ref().map(ShareKey::duplicate),
            locked: self.locked.clone(),
            expires: self.expires,
        }
    }

    /// The manifest this link points at.
    pub fn manifest_id(&self) -> &ManifestId {
        &self.manifest
    }

    /// Where the share may be found.
    pub fn hints(&self) -> &[Hint] {
        &self.hints
    }

    /// The key, for a read link.
    pub fn key(&self) -> Option<&ShareKey> {
        self.key.as_ref()
    }

    /// The key, or [`ParseError::MissingKey`] for a pin link
    /// ([`ParseError::Locked`] for a password link: [`Link::unlock`] first).
    pub fn require_key(&self) -> Result<&ShareKey, ParseError> {
        match (&self.key, &self.locked) {
            (Some(k), _) => Ok(k),
            (None, Some(_)) => Err(ParseError::Locked),
            (None, None) => Err(ParseError::MissingKey),
        }
    }

    /// The same link without the key (a password link's pin link is a
    /// plain version-1 pin link: pinners never need the password). The
    /// stated expiry stays: a pinner sees it too.
    pub fn to_pin_link(&self) -> Link {
        Link {
            manifest: self.manifest,
            hints: self.hints.clone(),
            key: None,
            locked: None,
            expires: self.expires,
        }
    }

    /// The link as text, *including the key* if it has one. This is the one
    /// place a key is turned into text: print it only when the user asked.
    pub fn to_uri_string(&self) -> String {
        let version = match self.locked {
            Some(_) => PASSWORD_VERSION,
            None => VERSION,
        };
        let mut s = format!("{SCHEME}{version}/{}", base32::encode(&self.manifest.0));
        if !self.hints.is_empty() {
            s.push('/');
            s.push_str(&base32::encode(&encode_hints(&self.hints)));
        }
        if let Some(e) = self.expires {
            s.push_str(EXPIRES_PARAM);
            s.push_str(&e.unix().to_string());
        }
        if let Some(k) = &self.key {
            s.push('#');
            s.push_str(&base32::encode(k.expose_secret()));
        } else if let Some(l) = &self.locked {
            s.push('#');
            s.push_str(&base32::encode(&l.to_bytes()));
        }
        s
    }

    /// Parses a link that must carry a key: a read link, or a password
    /// link (which [`Link::unlock`] turns into one).
    pub fn parse_read_link(s: &str) -> Result<Link, ParseError> {
        let link: Link = s.parse()?;
        if link.locked.is_none() {
            link.require_key()?;
        }
        Ok(link)
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("manifest", &self.manifest)
            .field("hints", &self.hints.len())
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("locked", &self.locked.as_ref().map(LockedKey::params))
            .field("expires", &self.expires)
            .finish()
    }
}

impl FromStr for Link {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Link, ParseError> {
        if s.len() > MAX_LINK_LEN {
            return Err(ParseError::TooLong { len: s.len() });
        }
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        let rest = match s.get(..SCHEME.len()) {
            Some(p) if p.eq_ignore_ascii_case(SCHEME) => &s[SCHEME.len()..],
            _ => return Err(ParseError::NotPeerdrop),
        };
        let (body, key) = match rest.split_once('#') {
            Some((b, k)) => (b, Some(k)),
            None => (rest, None),
        };
        let (body, query) = match body.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (body, None),
        };
        let mut parts = body.split('/');
        let version = parts.next().unwrap_or_default();
        let password = version == PASSWORD_VERSION;
        if version != VERSION && !password {
            let shown: String = version.chars().take(16).collect();
            return Err(ParseError::UnsupportedVersion(format!("{shown:?}")));
        }
        let mid = parts
            .next()
            .ok_or(ParseError::Malformed("no manifest id after the version"))?;
        let hints = parts.next();
        if parts.next().is_some() {
            return Err(ParseError::Malformed("too many '/'-separated parts"));
        }
        let manifest = ManifestId(decode_fixed::<32>(mid, "manifest id")?);
        let hints = match hints {
            None => Vec::new(),
            Some(h) => {
                if h.len() > base32::encoded_len(MAX_HINTS_LEN) {
                    return Err(ParseError::BadHints("the hint section is too long"));
                }
                decode_hints(&base32::decode(h).ok_or(ParseError::BadEncoding("hints"))?)?
            }
        };
        let expires = query.map(parse_expiry).transpose()?;
        if password {
            let Some(k) = key else {
                return Err(ParseError::Malformed(
                    "a password link needs its locked key after '#'",
                ));
            };
            let locked = LockedKey::from_bytes(&decode_fixed::<LOCKED_LEN>(k, "locked key")?)
                .map_err(ParseError::Password)?;
            return Ok(Link {
                manifest,
                hints,
                key: None,
                locked: Some(locked),
                expires,
            });
        }
        let key = match key {
            None => None,
            Some(k) => Some(
                ShareKey::from_bytes(decode_fixed::<KEY_LEN>(k, "key")?)
                    .map_err(ParseError::Key)?,
            ),
        };
        Ok(Link {
            manifest,
            hints,
            key,
            locked: None,
            expires,
        })
    }
}

/// The part after `?`: exactly `expires=` and the Unix seconds in decimal,
/// without a sign or leading zeros, from 1 to [`crate::manifest::MAX_EXPIRY`].
fn parse_expiry(q: &str) -> Result<Expiry, ParseError> {
    let digits = q
        .strip_prefix(&EXPIRES_PARAM[1..])
        .ok_or(ParseError::BadExpiry(
            "the only parameter a link has is 'expires='",
        ))?;
    // 12 digits reach past the largest expiry; more are refused unread.
    if digits.is_empty()
        || digits.len() > 12
        || (digits.len() > 1 && digits.starts_with('0'))
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ParseError::BadExpiry(
            "not whole seconds since 1970 in decimal, without leading zeros",
        ));
    }
    let secs: u64 = digits
        .parse()
        .map_err(|_| ParseError::BadExpiry("out of range"))?;
    Expiry::from_unix(secs)
        .map_err(|_| ParseError::BadExpiry("outside 1970-01-01T00:00:01Z to 9999-12-31T23:59:59Z"))
}

fn decode_fixed<const N: usize>(s: &str, part: &'static str) -> Result<[u8; N], ParseError> {
    if s.is_empty() {
        return Err(ParseError::Malformed(if part == "manifest id" {
            "the manifest id is empty"
        } else {
            "'#' is followed by nothing; remove the '#' for a pin link"
        }));
    }
    if s.len() > base32::encoded_len(N) + 8 {
        return Err(ParseError::BadLength {
            part,
            len: s.len() * 5 / 8,
            expected: N,
        });
    }
    let bytes = base32::decode(s).ok_or(ParseError::BadEncoding(part))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| ParseError::BadLength {
            part,
            len: bytes.len(),
            expected: N,
        })
}

fn check_hints(hints: &[Hint]) -> Result<(), ParseError> {
    if hints.len() > MAX_HINTS {
        return Err(ParseError::BadHints("more than 16 peers"));
    }
    if 1 + hints.iter().map(Hint::encoded_len).sum::<usize>() > MAX_HINTS_LEN {
        return Err(ParseError::BadHints("the hints take more than 2048 bytes"));
    }
    for h in hints {
        if h.peer.is_empty() || h.peer.len() > MAX_PEER_ID_LEN {
            return Err(ParseError::BadHints(
                "a peer id is empty or longer than 64 bytes",
            ));
        }
        if h.addrs.len() > MAX_ADDRS_PER_HINT {
            return Err(ParseError::BadHints("a peer has more than 8 addresses"));
        }
        if h.addrs.iter().any(|a| a.is_empty() || a.len() > 255) {
            return Err(ParseError::BadHints("an address is empty or too long"));
        }
        if h.encoded_len() > MAX_HINT_LEN {
            return Err(ParseError::BadHints(
                "a peer's hint is longer than 256 bytes",
            ));
        }
    }
    Ok(())
}

fn encode_hints(hints: &[Hint]) -> Vec<u8> {
    let mut out = vec![hints.len() as u8];
    for h in hints {
        out.push(h.peer.len() as u8);
        out.extend_from_slice(&h.peer);
        out.push(h.addrs.len() as u8);
        for a in &h.addrs {
            out.push(a.len() as u8);
            out.extend_from_slice(a);
        }
    }
    out
}

fn decode_hints(mut b: &[u8]) -> Result<Vec<Hint>, ParseError> {
    const TRUNC: ParseError = ParseError::BadHints("truncated");
    let mut take = |n: usize| -> Result<&[u8], ParseError> {
        if b.len() < n {
            return Err(TRUNC);
        }
        let (h, t) = b.split_at(n);
        b = t;
        Ok(h)
    };
    let count = take(1)?[0] as usize;
    if count == 0 {
        return Err(ParseError::BadHints(
            "an empty hint section (omit it instead)",
        ));
    }
    if count > MAX_HINTS {
        return Err(ParseError::BadHints("more than 16 peers"));
    }
    let mut hints = Vec::with_capacity(count);
    for _ in 0..count {
        let n = take(1)?[0] as usize;
        let peer = take(n)?.to_vec();
        let addr_count = take(1)?[0] as usize;
        if addr_count > MAX_ADDRS_PER_HINT {
            return Err(ParseError::BadHints("a peer has more than 8 addresses"));
        }
        let mut addrs = Vec::with_capacity(addr_count);
        for _ in 0..addr_count {
            let n = take(1)?[0] as usize;
            addrs.push(take(n)?.to_vec());
        }
        hints.push(Hint { peer, addrs });
    }
    if !b.is_empty() {
        return Err(ParseError::BadHints("trailing bytes"));
    }
    check_hints(&hints)?;
    Ok(hints)
}

/// Canonical lowercase RFC 4648 base32 without padding, by `data-encoding`.
pub mod base32 {
    use std::sync::LazyLock;

    use data_encoding::{Encoding, Specification};

    /// Lowercase, no padding, trailing bits checked: each byte string has
    /// exactly one encoding, and nothing else decodes (FORMAT.md §7.2).
    static LOWER: LazyLock<Encoding> = LazyLock::new(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        spec.check_trailing_bits = true;
        spec.encoding()
            .expect("a 32-symbol alphabet without padding is a valid specification")
    });

    /// Characters needed for `n` bytes.
    pub fn encoded_len(n: usize) -> usize {
        LOWER.encode_len(n)
    }

    /// Encodes `data`.
    pub fn encode(data: &[u8]) -> String {
        LOWER.encode(data)
    }

    /// Decodes `s`; `None` unless it is exactly what [`encode`] produces
    /// for some input (lowercase only, no padding, zero trailing bits).
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        LOWER.decode(s.as_bytes()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: bool) -> Link {
        Link::new(
            ManifestId([0x11; 32]),
            vec![Hint {
                peer: vec![0, 36, 8, 1],
                addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x1f, 0x90]],
            }],
            key.then(|| ShareKey::from_bytes([0x22; 32]).unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn password_links_round_trip_unlock_and_pin_as_plain_links() {
        let fast = Params {
            memory_kib: crate::password::MIN_MEMORY_KIB,
            passes: 1,
            lanes: 1,
        };
        let read = sample(true);
        let locked = read.lock("hunter2", fast).unwrap();
        let text = locked.to_uri_string();
        assert!(text.starts_with("peerdrop:p1/"), "{text}");
        assert!(
            !text.contains(&base32::encode(&[0x22; 32])),
            "the key is in the link"
        );
        let parsed = Link::parse_read_link(&text).unwrap();
        assert_eq!(parsed.require_key().unwrap_err(), ParseError::Locked);
        assert_eq!(parsed.hints(), read.hints());
        let opened = parsed.unlock("hunter2").unwrap();
        assert_eq!(opened.to_uri_string(), read.to_uri_string());
        assert!(matches!(
            parsed.unlock("hunter3").unwrap_err(),
            ParseError::Password(PasswordError::Wrong)
        ));
        assert_eq!(
            parsed.to_pin_link().to_uri_string(),
            read.to_pin_link().to_uri_string()
        );
        let no_key = text.split('#').next().unwrap();
        assert!(matches!(
            no_key.parse::<Link>(),
            Err(ParseError::Malformed(_))
        ));
        let short = &text[..text.len() - 8];
        assert!(short.parse::<Link>().is_err());
    }

    #[test]
    fn round_trip_and_pin_link() {
        let link = sample(true);
        let s = link.to_uri_string();
        let back: Link = s.parse().unwrap();
        assert_eq!(back.to_uri_string(), s);
        assert_eq!(back.hints(), link.hints());
        let pin = back.to_pin_link().to_uri_string();
        assert_eq!(pin, s.split('#').next().unwrap());
        assert_eq!(
            Link::parse_read_link(&pin).unwrap_err(),
            ParseError::MissingKey
        );
        assert!(!format!("{back:?}").contains(&base32::encode(&[0x22; 32])));
    }

    #[test]
    fn a_stated_expiry_round_trips_stays_in_the_pin_link_and_must_match() {
        let at = Expiry::from_unix(1_796_409_000).unwrap();
        let link = sample(true).with_expiry(Some(at));
        let text = link.to_uri_string();
        let (body, key) = text.split_once('#').unwrap();
        assert!(body.ends_with("?expires=1796409000"), "{text}");
        assert_eq!(key, base32::encode(&[0x22; 32]));
        let back: Link = text.parse().unwrap();
        assert_eq!(back.expires(), Some(at));
        assert_eq!(back.to_uri_string(), text);
        assert_eq!(back.to_pin_link().to_uri_string(), body);
        assert_eq!(body.parse::<Link>().unwrap().expires(), Some(at));

        let manifest = |expires| Manifest {
            chunk_size: crate::chunk::ChunkSize::from_log2(10).unwrap(),
            key_commitment: [9; 32],
            metadata_len: 0,
            content_len: 0,
            metadata_chunks: vec![crate::chunk::ChunkId([1; 32])],
            content_chunks: vec![crate::chunk::ChunkId([2; 32])],
            expires,
        };
        let before = at.time() - std::time::Duration::from_secs(1);
        assert_eq!(back.check_manifest(&manifest(Some(at)), before), Ok(()));
        assert_eq!(
            back.check_manifest(&manifest(Some(at)), at.time()),
            Err(ExpiryError::Expired(at))
        );
        let other = Expiry::from_unix(1_796_409_001).unwrap();
        assert_eq!(
            back.check_manifest(&manifest(Some(other)), before),
            Err(ExpiryError::Mismatch {
                link: at,
                manifest: Some(other)
            })
        );
        assert!(matches!(
            back.check_manifest(&manifest(None), before),
            Err(ExpiryError::Mismatch { manifest: None, .. })
        ));
        // A link that states nothing leaves it to the manifest.
        let plain = sample(true);
        assert_eq!(plain.check_manifest(&manifest(None), at.time()), Ok(()));
        assert_eq!(
            plain.check_manifest(&manifest(Some(at)), at.time()),
            Err(ExpiryError::Expired(at))
        );
        assert_eq!(back.check_time(at.time()), Err(ExpiryError::Expired(at)));

        let with = |q: &str| body.replace("?expires=1796409000", q);
        for bad in [
            "?expires=",
            "?expires=01796409000",
            "?expires=+1796409000",
            "?expires=0",
            "?expires=253402300800",
            "?expires=1796409000000000000000",
            "?expire=1796409000",
            "?",
        ] {
            assert!(
                matches!(with(bad).parse::<Link>(), Err(ParseError::BadExpiry(_))),
                "{bad}"
            );
        }
        assert!(with("?expires=253402300799").parse::<Link>().is_ok());
        // The version is checked before the expiry.
        assert_eq!(
            text.replacen(":1/", ":2/", 1).parse::<Link>().unwrap_err(),
            ParseError::UnsupportedVersion("\"2\"".into())
        );
    }

    #[test]
    fn base32_is_canonical() {
        for n in 0..40 {
            let data: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            let e = base32::encode(&data);
            assert_eq!(base32::decode(&e).unwrap(), data);
            assert!(
                base32::decode(&e.to_uppercase()).is_none()
                    || e.chars().all(|c| c.is_ascii_digit())
                    || e.is_empty()
            );
        }
        // "ab" has non-zero trailing bits for a 1-byte value; "ae" is canonical.
        assert!(base32::decode("ab").is_none());
        assert!(base32::decode("a").is_none());
    }

    #[test]
    fn malformed_links_say_what_is_wrong() {
        let good = sample(true).to_uri_string();
        let (body, key) = good.split_once('#').unwrap();
        let cases: Vec<(String, ParseError)> = vec![
            ("".into(), ParseError::Empty),
            ("https://example.com".into(), ParseError::NotPeerdrop),
            (
                good.replacen(":1/", ":2/", 1),
                ParseError::UnsupportedVersion("\"2\"".into()),
            ),
            (
                format!("{body}#"),
                ParseError::Malformed("'#' is followed by nothing; remove the '#' for a pin link"),
            ),
            (
                format!("{body}#{}", &key[..40]),
                ParseError::BadLength {
                    part: "key",
                    len: 25,
                    expected: 32,
                },
            ),
            (
                format!("{body}#{}", key.to_uppercase()),
                ParseError::BadEncoding("key"),
            ),
            (
                format!("{body}#{}", base32::encode(&[0; 32])),
                ParseError::Key(KeyError::AllZero),
            ),
            (
                format!("{body}/x#{key}"),
                ParseError::Malformed("too many '/'-separated parts"),
            ),
            ("x".repeat(5000), ParseError::TooLong { len: 5000 }),
            (
                "peerdrop:1".into(),
                ParseError::Malformed("no manifest id after the version"),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<Link>().unwrap_err(), want, "{s}");
        }
    }
}
