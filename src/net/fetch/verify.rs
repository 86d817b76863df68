//! What a session checks each chunk with: decryption for a reader, ids only
//! for a pin.

use crate::chunk::Stream;
use crate::manifest::Manifest;
use crate::open::{OpenError, Opener, Plaintext};

/// How a session checks each chunk it receives: a reader decrypts
/// ([`Opener`]), a pinning node checks ids only ([`IdCheck`]).
pub(crate) trait Verify: Send + Sync + 'static {
    /// What a verified chunk becomes.
    type Out: Send + Sync + 'static;
    /// The manifest the chunks belong to.
    fn manifest(&self) -> &Manifest;
    /// Checks (and opens) chunk `index` of `stream`.
    fn verify(&self, stream: Stream, index: u64, bytes: Vec<u8>) -> Result<Self::Out, OpenError>;
}

impl Verify for Opener {
    type Out = Plaintext;
    fn manifest(&self) -> &Manifest {
        Opener::manifest(self)
    }
    fn verify(&self, stream: Stream, index: u64, bytes: Vec<u8>) -> Result<Plaintext, OpenError> {
        self.open_chunk(stream, index, bytes)
    }
}

/// Checks chunks against the manifest without a key (length and id): what a
/// node that only pins ciphertext can verify.
pub(crate) struct IdCheck(pub(crate) Manifest);

impl Verify for IdCheck {
    type Out = Vec<u8>;
    fn manifest(&self) -> &Manifest {
        &self.0
    }
    fn verify(&self, stream: Stream, index: u64, bytes: Vec<u8>) -> Result<Vec<u8>, OpenError> {
        crate::open::check_chunk(&self.0, stream, index, &bytes)?;
        Ok(bytes)
    }
}
