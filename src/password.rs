//! Password links: the share key wrapped under a key stretched from a
//! password with Argon2id (FORMAT.md §7.5).
//!
//! A password link carries, instead of the key, a [`LockedKey`]: the
//! Argon2id parameters, a random salt, and the share key sealed with
//! ChaCha20-Poly1305 under `Argon2id(password, salt)`. The manifest id and
//! the parameters are bound in as associated data, so a link whose parts
//! were swapped or altered fails like a wrong password. The parameters are
//! in the link (the receiver needs them) and are bounded before any work is
//! done, so a hostile link cannot make a receiver spend unbounded memory or
//! time. Pure: no I/O; the only outside input is the system's random source
//! for the salt, as for [`ShareKey::generate`].

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::crypto::{ShareKey, KEY_LEN};
use crate::manifest::ManifestId;

/// Bytes of salt, fresh for every lock.
pub const SALT_LEN: usize = 16;
/// Bytes of the sealed share key (key and tag).
pub const SEALED_LEN: usize = KEY_LEN + 16;
/// Bytes of a locked key in its binary form: memory (u32 LE, KiB),
/// passes (u8), lanes (u8), salt, sealed key.
pub const LOCKED_LEN: usize = 4 + 1 + 1 + SALT_LEN + SEALED_LEN;

/// Least memory a link may ask for: 8 MiB. Less makes guessing cheap.
pub const MIN_MEMORY_KIB: u32 = 8 * 1024;
/// Most memory a link may ask a receiver to spend: 1 GiB.
pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// Most passes a link may ask for.
pub const MAX_PASSES: u8 = 16;
/// Most lanes a link may ask for (computed one after another here).
pub const MAX_LANES: u8 = 4;
/// Most work a link may ask for, in KiB × passes (4 GiB·passes: a few
/// seconds on a laptop), so memory and passes cannot both be at their caps.
pub const MAX_WORK: u64 = 4 * 1024 * 1024;
/// Longest password accepted, in bytes (after NFC normalisation).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The domain of the associated data: a sealed key from another protocol or
/// version never opens as one of these.
const AD_DOMAIN: &[u8] = b"peerdrop password link p1";

/// Argon2id cost parameters, as they travel in a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u8,
    /// Lanes.
    pub lanes: u8,
}

impl Params {
    /// What `send --password` uses: 64 MiB, 3 passes, 1 lane (above OWASP's
    /// 19 MiB × 2 minimum, since a link can be attacked offline).
    pub const DEFAULT: Params = Params {
        memory_kib: 64 * 1024,
        passes: 3,
        lanes: 1,
    };

    /// Checks the bounds above; every link is checked before any work.
    pub fn check(&self) -> Result<(), PasswordError> {
        let ok = (MIN_MEMORY_KIB..=MAX_MEMORY_KIB).contains(&self.memory_kib)
            && (1..=MAX_PASSES).contains(&self.passes)
            && (1..=MAX_LANES).contains(&self.lanes)
            && u64::from(self.memory_kib) * u64::from(self.passes) <= MAX_WORK;
        if ok {
            Ok(())
        } else {
            Err(PasswordError::BadParams(*self))
        }
    }
}

/// A share key sealed under a password.
#[derive(Clone, PartialEq, Eq)]
pub struct LockedKey {
    params: Params,
    salt: [u8; SALT_LEN],
    sealed: [u8; SEALED_LEN],
}

/// Why a password link could not be made or opened.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// The parameters are outside the bounds this version accepts.
    #[error("the link's password parameters ({} KiB, {} passes, {} lanes) are outside what peerdrop accepts (memory 8 MiB to 1 GiB, 1 to 16 passes, 1 to 4 lanes, at most 4 GiB of work): the link is damaged or hostile", .0.memory_kib, .0.passes, .0.lanes)]
    BadParams(Params),
    /// The password did not open the key (or the link was altered).
    #[error("wrong password (or the link was altered): check the password and try again")]
    Wrong,
    /// An empty password.
    #[error("the password is empty: give one")]
    Empty,
    /// A password over [`MAX_PASSWORD_LEN`] bytes.
    #[error("the password is longer than 1024 bytes")]
    TooLong,
    /// The locked key's bytes are not [`LOCKED_LEN`] long.
    #[error("the locked key is {0} bytes, not 70")]
    BadLength(usize),
    /// The system's random source failed.
    #[error("no randomness for the salt from the operating system")]
    Random,
}

impl LockedKey {
    /// Seals `key` for the share `manifest` under `password` with a fresh
    /// random salt.
    pub fn lock(
        key: &ShareKey,
        manifest: &ManifestId,
        password: &str,
        params: Params,
    ) -> Result<LockedKey, PasswordError> {
        let r = crate::crypto::random_32().map_err(|_| PasswordError::Random)?;
        let mut salt = [0; SALT_LEN];
        salt.copy_from_slice(&r[..SALT_LEN]);
        LockedKey::lock_with_salt(key, manifest, password, params, salt)
    }

    /// [`LockedKey::lock`] with a given salt. Only for frozen test vectors:
    /// a reused salt lets one guess test two links at once.
    #[doc(hidden)]
    pub fn lock_with_salt(
        key: &ShareKey,
        manifest: &ManifestId,
        password: &str,
        params: Params,
        salt: [u8; SALT_LEN],
    ) -> Result<LockedKey, PasswordError> {
        params.check()?;
        let mut locked = LockedKey {
            params,
            salt,
            sealed: [0; SEALED_LEN],
        };
        let aead = locked.wrapping_key(password)?;
        let mut buf = key.expose_secret().to_vec();
        aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            locked.ad(manifest),
            &mut buf,
        )
        .map_err(|_| PasswordError::Wrong)?;
        locked.sealed.copy_from_slice(&buf);
        Ok(locked)
    }

    /// Opens the share key with `password`. Costs one Argon2id run with the
    /// link's (bounded) parameters, right or wrong.
    pub fn unlock(&self, manifest: &ManifestId, password: &str) -> Result<ShareKey, PasswordError> {
        let aead = self.wrapping_key(password)?;
        let mut buf = Zeroizing::new(self.sealed.to_vec());
        let plain = aead
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                self.ad(manifest),
                &mut buf,
            )
            .map_err(|_| PasswordError::Wrong)?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(plain);
        // A sealed all-zero key opens only for whoever sealed it that way.
        ShareKey::from_bytes(*bytes).map_err(|_| PasswordError::Wrong)
    }

    /// The parameters a guess costs.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The binary form (FORMAT.md §7.5).
    pub fn to_bytes(&self) -> [u8; LOCKED_LEN] {
        let mut out = [0; LOCKED_LEN];
        out[..6].copy_from_slice(&self.header());
        out[6..6 + SALT_LEN].copy_from_slice(&self.salt);
        out[6 + SALT_LEN..].copy_from_slice(&self.sealed);
        out
    }

    /// Parses the binary form, checking the parameters' bounds.
    pub fn from_bytes(b: &[u8]) -> Result<LockedKey, PasswordError> {
        if b.len() != LOCKED_LEN {
            return Err(PasswordError::BadLength(b.len()));
        }
        let params = Params {
            memory_kib: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            passes: b[4],
            lanes: b[5],
        };
        params.check()?;
        let mut locked = LockedKey {
            params,
            salt: [0; SALT_LEN],
            sealed: [0; SEALED_LEN],
        };
        locked.salt.copy_from_slice(&b[6..6 + SALT_LEN]);
        locked.sealed.copy_from_slice(&b[6 + SALT_LEN..]);
        Ok(locked)
    }

    fn header(&self) -> [u8; 6] {
        let m = self.params.memory_kib.to_le_bytes();
        [
            m[0],
            m[1],
            m[2],
            m[3],
            self.params.passes,
            self.params.lanes,
        ]
    }

    /// Domain, manifest id, parameters and salt: what the tag vouches for.
    fn ad(&self, manifest: &ManifestId) -> Aad<Vec<u8>> {
        let mut ad = Vec::with_capacity(AD_DOMAIN.len() + 32 + 6 + SALT_LEN);
        ad.extend_from_slice(AD_DOMAIN);
        ad.extend_from_slice(&manifest.0);
        ad.extend_from_slice(&self.header());
        ad.extend_from_slice(&self.salt);
        Aad::from(ad)
    }

    fn wrapping_key(&self, password: &str) -> Result<LessSafeKey, PasswordError> {
        self.params.check()?;
        // NFC: the same password typed on two systems is the same bytes.
        let pw = Zeroizing::new(password.nfc().collect::<String>());
        if pw.is_empty() {
            return Err(PasswordError::Empty);
        }
        if pw.len() > MAX_PASSWORD_LEN {
            return Err(PasswordError::TooLong);
        }
        let p = &self.params;
        let argon_params = argon2::Params::new(
            p.memory_kib,
            u32::from(p.passes),
            u32::from(p.lanes),
            Some(KEY_LEN),
        )
        .map_err(|_| PasswordError::BadParams(*p))?;
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon_params,
        );
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(pw.as_bytes(), &self.salt, &mut k[..])
            .map_err(|_| PasswordError::BadParams(*p))?;
        let unbound = UnboundKey::new(&aead::CHACHA20_POLY1305, &k[..])
            .map_err(|_| PasswordError::BadParams(*p))?;
        Ok(LessSafeKey::new(unbound))
    }
}

impl std::fmt::Debug for LockedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Params = Params {
        memory_kib: MIN_MEMORY_KIB,
        passes: 1,
        lanes: 1,
    };

    fn key() -> ShareKey {
        ShareKey::from_bytes([7; 32]).unwrap()
    }

    #[test]
    fn the_right_password_opens_and_a_wrong_one_does_not() {
        let m = ManifestId([1; 32]);
        let l = LockedKey::lock(&key(), &m, "correct horse", FAST).unwrap();
        let back = LockedKey::from_bytes(&l.to_bytes()).unwrap();
        assert_eq!(
            back.unlock(&m, "correct horse").unwrap().expose_secret(),
            &[7; 32]
        );
        assert_eq!(
            back.unlock(&m, "correct hors").unwrap_err(),
            PasswordError::Wrong
        );
        // Bound to its share: the same locked key under another id fails.
        assert_eq!(
            back.unlock(&ManifestId([2; 32]), "correct horse")
                .unwrap_err(),
            PasswordError::Wrong
        );
        assert_eq!(back.unlock(&m, "").unwrap_err(), PasswordError::Empty);
    }

    #[test]
    fn passwords_are_compared_after_nfc() {
        let m = ManifestId([1; 32]);
        let l = LockedKey::lock(&key(), &m, "caf\u{e9}", FAST).unwrap();
        assert!(l.unlock(&m, "cafe\u{301}").is_ok());
    }

    #[test]
    fn every_altered_byte_is_refused_or_fails_as_wrong() {
        let m = ManifestId([1; 32]);
        let b = LockedKey::lock(&key(), &m, "pw", FAST).unwrap().to_bytes();
        for i in 0..LOCKED_LEN {
            let mut bad = b;
            bad[i] ^= 1;
            match LockedKey::from_bytes(&bad) {
                Err(PasswordError::BadParams(_)) => assert!(i < 6),
                Err(e) => panic!("byte {i}: {e}"),
                Ok(l) => assert_eq!(
                    l.unlock(&m, "pw").unwrap_err(),
                    PasswordError::Wrong,
                    "byte {i}"
                ),
            }
        }
    }

    #[test]
    fn parameters_are_bounded_before_any_work() {
        for p in [
            Params {
                memory_kib: MIN_MEMORY_KIB - 1,
                ..FAST
            },
            Params {
                memory_kib: MAX_MEMORY_KIB + 1,
                ..FAST
            },
            Params { passes: 0, ..FAST },
            Params {
                passes: MAX_PASSES + 1,
                ..FAST
            },
            Params { lanes: 0, ..FAST },
            Params {
                lanes: MAX_LANES + 1,
                ..FAST
            },
            Params {
                memory_kib: MAX_MEMORY_KIB,
                passes: 5,
                lanes: 1,
            },
        ] {
            assert_eq!(p.check(), Err(PasswordError::BadParams(p)));
        }
        Params::DEFAULT.check().unwrap();
        assert_eq!(
            LockedKey::from_bytes(&[0; 3]).unwrap_err(),
            PasswordError::BadLength(3)
        );
    }
}
