//! Ids as the control API takes them: in full or as a unique prefix.

use crate::chunk::unhex;
use crate::crypto::ShareKey;
use crate::daemon::IdError;
use crate::manifest::ManifestId;

/// Parses a manifest id given in full or as a unique hex prefix (8+ digits).
pub(super) fn find_id<'a>(
    ids: impl Iterator<Item = &'a String>,
    given: &str,
) -> Result<String, IdError> {
    let given = given.to_ascii_lowercase();
    if given.len() < 8 {
        return Err(IdError::TooShort);
    }
    let found: Vec<&String> = ids.filter(|id| id.starts_with(&given)).collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(IdError::NoMatch(given)),
        _ => Err(IdError::Ambiguous(given)),
    }
}

pub(super) fn parse_id(hex_id: &str) -> Option<ManifestId> {
    Some(ManifestId(unhex(hex_id)?.try_into().ok()?))
}

pub(super) fn key_from_hex(h: &str) -> Option<ShareKey> {
    ShareKey::from_bytes(unhex(h)?.try_into().ok()?).ok()
}
