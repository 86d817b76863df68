//! Keys, subkeys and chunk encryption (pure).
//!
//! One random 32-byte [`ShareKey`] per share. Every purpose gets its own
//! subkey through `blake3::derive_key` with a distinct context string (no key
//! ever does two jobs). Chunks are sealed with ChaCha20-Poly1305 (ring, the
//! fastest implementation in the tree) under a *synthetic* nonce: a keyed
//! BLAKE3 of the associated data and the plaintext. Sealing the same plaintext
//! at the same position again yields the same bytes, which lets a sharer
//! re-encrypt from the original files on demand and check the result against
//! the manifest; a changed plaintext yields a different nonce, so a (key,
//! nonce) pair never covers two plaintexts. The associated data binds the
//! format version, the stream, the chunk index, the end-of-stream flag and the
//! plaintext length, so chunks cannot be reordered, moved between streams,
//! truncated or extended without failing authentication.

use std::fmt;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::chunk::{Stream, NONCE_LEN, TAG_LEN};

/// Length of a share key in bytes.
pub const KEY_LEN: usize = 32;

/// Context strings for `blake3::derive_key`, one per purpose. Changing any of
/// them changes the format: they are part of FORMAT.md.
pub mod context {
    /// Subkey of the ChaCha20-Poly1305 chunk cipher.
    pub const CHUNK_AEAD: &str = "peerdrop 2026-11-29 v1 chunk aead key";
    /// Subkey of the keyed BLAKE3 that synthesizes chunk nonces.
    pub const CHUNK_NONCE: &str = "peerdrop 2026-11-29 v1 chunk nonce key";
    /// Key commitment stored in the manifest.
    pub const KEY_COMMITMENT: &str = "peerdrop 2026-11-29 v1 key commitment";
    /// Key of the MAC by which a receiver proves it holds the read key when
    /// it reports it has a whole share (`Done`).
    pub const DONE_PROOF: &str = "peerdrop 2026-12-02 v1 done proof key";
    /// Key, derived from the manifest id, of the answer by which a peer
    /// proves it holds a share before a fetcher names the share to it.
    pub const HOLDER_PROOF: &str = "peerdrop 2026-12-02 v1 holder proof key";
}

/// Version byte that leads every chunk's associated data.
pub const CHUNK_AD_VERSION: u8 = 1;

/// The secret of a share. It travels only inside read links.
///
/// Zeroed on drop; `Debug` prints nothing of it; there is no `Clone`, so a
/// copy is always an explicit [`ShareKey::expose_secret`] away.
pub struct ShareKey(Zeroizing<[u8; KEY_LEN]>);

/// Why bytes cannot be a share key.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The all-zero key is refused outright: no honest sealer produces it and
    /// forged all-zero keys were a step of the MEGA integrity attack.
    #[error("the key is all zeros, which peerdrop never generates; the link is damaged or forged")]
    AllZero,
    /// The operating system refused to provide random bytes.
    #[error("the operating system's random number generator failed")]
    Rng,
}

impl ShareKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<ShareKey, KeyError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k[..])
            .map_err(|_| KeyError::Rng)?;
        if k.iter().all(|&b| b == 0) {
            return Err(KeyError::Rng);
        }
        Ok(ShareKey(k))
    }

    /// A key from its bytes (from a link or a test vector).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<ShareKey, KeyError> {
        let k = Zeroizing::new(bytes);
        if k.iter().all(|&b| b == 0) {
            return Err(KeyError::AllZero);
        }
        Ok(ShareKey(k))
    }

    /// The raw key. Every use is a deliberate, greppable call.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Another handle on the same key (explicit, since keys are not `Clone`).
    pub fn duplicate(&self) -> ShareKey {
        ShareKey(Zeroizing::new(*self.0))
    }

    /// The key commitment stored in the manifest: a one-way function of the
    /// key under its own context, so a wrong key is detected before any chunk
    /// is fetched, and one ciphertext cannot be made to open under two keys.
    pub fn commitment(&self) -> [u8; 32] {
        blake3::derive_key(context::KEY_COMMITMENT, &self.0[..])
    }
}

impl fmt::Debug for ShareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareKey(<redacted>)")
    }
}

/// Where a chunk sits: everything bound into its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPosition {
    /// Which stream the chunk belongs to.
    pub stream: Stream,
    /// Index of the chunk within its stream.
    pub index: u64,
    /// Whether this is the final chunk of its stream.
    pub is_last: bool,
}

/// Length of the associated data: version, stream, is_last, index, length.
pub const AD_LEN: usize = 1 + 1 + 1 + 8 + 8;

/// The associated data of a chunk (FORMAT.md, "Chunks").
pub fn associated_data(pos: ChunkPosition, plaintext_len: u64) -> [u8; AD_LEN] {
    let mut ad = [0u8; AD_LEN];
    ad[0] = CHUNK_AD_VERSION;
    ad[1] = pos.stream.tag();
    ad[2] = pos.is_last as u8;
    ad[3..11].copy_from_slice(&pos.index.to_le_bytes());
    ad[11..19].copy_from_slice(&plaintext_len.to_le_bytes());
    ad
}

/// The per-share chunk cipher: both chunk subkeys, derived once.
pub struct ChunkCipher {
    aead: LessSafeKey,
    nonce_key: Zeroizing<[u8; 32]>,
}

/// A chunk failed authentication: wrong key, or bytes that were not sealed at
/// this position. Deliberately carries no detail (no error oracle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

impl ChunkCipher {
    /// Derives the chunk subkeys of `key`.
    pub fn new(key: &ShareKey) -> ChunkCipher {
        let aead_key = Zeroizing::new(blake3::derive_key(context::CHUNK_AEAD, key.expose_secret()));
        let nonce_key = Zeroizing::new(blake3::derive_key(
            context::CHUNK_NONCE,
            key.expose_secret(),
        ));
        let unbound = UnboundKey::new(&aead::CHACHA20_POLY1305, &aead_key[..])
            .expect("a 32-byte key is valid for ChaCha20-Poly1305");
        ChunkCipher {
            aead: LessSafeKey::new(unbound),
            nonce_key,
        }
    }

    /// The synthetic nonce of `plaintext` at `pos`.
    fn nonce(&self, ad: &[u8; AD_LEN], plaintext: &[u8]) -> [u8; NONCE_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.nonce_key);
        h.update(ad);
        h.update(plaintext);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&h.finalize().as_bytes()[..NONCE_LEN]);
        n
    }

    /// Seals in place. `buf` holds `NONCE_LEN` bytes of room followed by the
    /// plaintext; on return it holds the whole chunk: nonce, ciphertext, tag.
    pub fn seal_in_place(&self, pos: ChunkPosition, buf: &mut Vec<u8>) {
        debug_assert!(buf.len() >= NONCE_LEN);
        let ad = associated_data(pos, (buf.len() - NONCE_LEN) as u64);
        let nonce = self.nonce(&ad, &buf[NONCE_LEN..]);
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ad),
                &mut buf[NONCE_LEN..],
            )
            .expect("chunk lengths are far below the ChaCha20 limit");
        buf.extend_from_slice(tag.as_ref());
    }

    /// Seals `plaintext` into a new chunk.
    pub fn seal(&self, pos: ChunkPosition, plaintext: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        buf.resize(NONCE_LEN, 0);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(pos, &mut buf);
        buf
    }

    /// Authenticates and decrypts a whole chunk in place and returns the
    /// plaintext, which lies at `chunk[NONCE_LEN..NONCE_LEN + len]`. The
    /// caller has already checked the chunk's length; nothing is returned
    /// unless every byte authenticates.
    pub fn open_in_place<'a>(
        &self,
        pos: ChunkPosition,
        chunk: &'a mut [u8],
    ) -> Result<&'a mut [u8], AuthError> {
        if chunk.len() < NONCE_LEN + TAG_LEN {
            return Err(AuthError);
        }
        let ad = associated_data(pos, (chunk.len() - NONCE_LEN - TAG_LEN) as u64);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&chunk[..NONCE_LEN]);
        self.aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ad),
                &mut chunk[NONCE_LEN..],
            )
            .map_err(|_| AuthError)
    }
}

/// 32 fresh random bytes (nonces and per-run secrets).
pub fn random_32() -> Result<[u8; 32], KeyError> {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| KeyError::Rng)?;
    Ok(b)
}

/// Whether two proofs are equal, in time that does not depend on where they
/// differ.
pub fn proofs_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from_bytes(*a) == blake3::Hash::from_bytes(*b)
}

/// The keyed BLAKE3 of `parts`, each prefixed with its length (8 bytes,
/// little-endian), so that no two lists of parts hash alike.
fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// What a receiver proves with `Done` (FORMAT.md, "Proofs"): that it holds
/// the read key of share `share`, to the sender `sender` that gave it
/// `challenge`, as the peer `receiver` (peer ids in their binary form).
/// Knowing the manifest id is not enough to compute it, and a proof made for
/// one sender, receiver or challenge is worth nothing for another.
pub struct DoneKey(Zeroizing<[u8; 32]>);

impl DoneKey {
    /// The done-proof subkey of `key`.
    pub fn new(key: &ShareKey) -> DoneKey {
        DoneKey(Zeroizing::new(blake3::derive_key(
            context::DONE_PROOF,
            key.expose_secret(),
        )))
    }

    /// The proof: keyed BLAKE3 over the manifest id, the challenge, the
    /// sender's and the receiver's peer ids.
    pub fn prove(
        &self,
        share: &[u8; 32],
        challenge: &[u8; 32],
        sender: &[u8],
        receiver: &[u8],
    ) -> [u8; 32] {
        mac(&self.0, &[share, challenge, sender, receiver])
    }

    /// Whether `proof` is [`DoneKey::prove`] of the same inputs.
    pub fn verify(
        &self,
        share: &[u8; 32],
        challenge: &[u8; 32],
        sender: &[u8],
        receiver: &[u8],
        proof: &[u8; 32],
    ) -> bool {
        proofs_match(&self.prove(share, challenge, sender, receiver), proof)
    }
}

impl fmt::Debug for DoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DoneKey(<redacted>)")
    }
}

/// A per-run secret from which a sender makes each receiver's `Done`
/// challenge, so it chooses them without keeping a table: the challenge for
/// (share, receiver) is a keyed BLAKE3 of both under this secret.
pub struct ChallengeKey(Zeroizing<[u8; 32]>);

impl ChallengeKey {
    /// A fresh secret.
    pub fn generate() -> Result<ChallengeKey, KeyError> {
        random_32().map(|k| ChallengeKey(Zeroizing::new(k)))
    }

    /// The challenge this sender gives `receiver` (binary peer id) for
    /// `share`.
    pub fn challenge(&self, share: &[u8; 32], receiver: &[u8]) -> [u8; 32] {
        mac(&self.0, &[share, receiver])
    }
}

/// A holder's answer to "do you hold the share with this locator?" (FORMAT.md,
/// "Proofs"): keyed BLAKE3, under a key derived from the manifest id, over the
/// asker's `nonce` and both peer ids (binary form). Only someone who knows
/// the manifest id can compute it; the locator alone (which the DHT
/// publishes) is not enough, and the proof tells its reader nothing it did
/// not know.
pub fn holder_proof(share: &[u8; 32], nonce: &[u8; 32], asker: &[u8], holder: &[u8]) -> [u8; 32] {
    let key = blake3::derive_key(context::HOLDER_PROOF, share);
    mac(&key, &[nonce, asker, holder])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(index: u64, is_last: bool) -> ChunkPosition {
        ChunkPosition {
            stream: Stream::Content,
            index,
            is_last,
        }
    }

    #[test]
    fn sealing_is_deterministic_and_position_bound() {
        let key = ShareKey::from_bytes([7; 32]).unwrap();
        let c = ChunkCipher::new(&key);
        let a = c.seal(pos(0, false), b"hello");
        assert_eq!(a, c.seal(pos(0, false), b"hello"));
        assert_ne!(a[..NONCE_LEN], c.seal(pos(0, false), b"hellp")[..NONCE_LEN]);
        assert_ne!(a, c.seal(pos(1, false), b"hello"));
        assert_ne!(a, c.seal(pos(0, true), b"hello"));

        let mut ok = a.clone();
        assert_eq!(c.open_in_place(pos(0, false), &mut ok).unwrap(), b"hello");
        for wrong in [pos(1, false), pos(0, true)] {
            let mut b = a.clone();
            assert_eq!(c.open_in_place(wrong, &mut b), Err(AuthError));
        }
        let other = ChunkCipher::new(&ShareKey::from_bytes([8; 32]).unwrap());
        let mut b = a.clone();
        assert_eq!(other.open_in_place(pos(0, false), &mut b), Err(AuthError));
    }

    #[test]
    fn keys_are_redacted_and_zero_refused() {
        let key = ShareKey::from_bytes([0xab; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "ShareKey(<redacted>)");
        assert_eq!(
            ShareKey::from_bytes([0; 32]).unwrap_err(),
            KeyError::AllZero
        );
        assert_ne!(
            ShareKey::generate().unwrap().expose_secret(),
            ShareKey::generate().unwrap().expose_secret()
        );
    }

    /// The proofs are frozen (FORMAT.md, "Proofs"): inputs and outputs
    /// spelled out, so that an implementation from the docs can check itself.
    #[test]
    fn proofs_are_bound_to_every_input_and_frozen() {
        let key = ShareKey::from_bytes([7; 32]).unwrap();
        let done = DoneKey::new(&key);
        let (share, challenge) = ([1; 32], [2; 32]);
        let p = done.prove(&share, &challenge, b"sender", b"receiver");
        assert!(done.verify(&share, &challenge, b"sender", b"receiver", &p));
        for (s, c, a, b) in [
            ([9; 32], challenge, &b"sender"[..], &b"receiver"[..]),
            (share, [9; 32], b"sender", b"receiver"),
            (share, challenge, b"receiver", b"sender"),
            (share, challenge, b"sende", b"rreceiver"),
        ] {
            assert!(!done.verify(&s, &c, a, b, &p));
        }
        let other = DoneKey::new(&ShareKey::from_bytes([8; 32]).unwrap());
        assert!(!other.verify(&share, &challenge, b"sender", b"receiver", &p));
        assert_eq!(format!("{done:?}"), "DoneKey(<redacted>)");
        assert_eq!(
            crate::chunk::hex(&p),
            "8e32c66b2f9442d3500a2509b197f9b8fd084c8ec09cbfabc3136887cacc8887"
        );

        let h = holder_proof(&share, &challenge, b"asker", b"holder");
        assert_ne!(h, holder_proof(&[9; 32], &challenge, b"asker", b"holder"));
        assert_ne!(h, holder_proof(&share, &[9; 32], b"asker", b"holder"));
        assert_ne!(h, holder_proof(&share, &challenge, b"holder", b"asker"));
        assert_eq!(
            crate::chunk::hex(&h),
            "0f1933cd4b4c51cfdc2dba7bbfde7f64800927f80242509606092ed3169c6d62"
        );

        let c = ChallengeKey::generate().unwrap();
        assert_eq!(c.challenge(&share, b"a"), c.challenge(&share, b"a"));
        assert_ne!(c.challenge(&share, b"a"), c.challenge(&share, b"b"));
        assert_ne!(
            c.challenge(&share, b"a"),
            ChallengeKey::generate().unwrap().challenge(&share, b"a")
        );
        assert!(proofs_match(&p, &p) && !proofs_match(&p, &h));
    }
}
