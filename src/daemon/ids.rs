//! Ids as the control API takes them: in full or as a unique prefix.

use crate::daemon::control::IdPrefix;
use crate::daemon::IdError;
use crate::manifest::ManifestId;

/// The one id among `ids` that starts with `prefix` (an id may be listed
/// more than once).
pub(super) fn find_id<'a>(
    ids: impl Iterator<Item = &'a ManifestId>,
    prefix: &IdPrefix,
) -> Result<ManifestId, IdError> {
    let mut found: Option<ManifestId> = None;
    for id in ids.filter(|id| prefix.matches(id)) {
        match found {
            Some(f) if f != *id => return Err(IdError::Ambiguous(prefix.to_string())),
            _ => found = Some(*id),
        }
    }
    found.ok_or_else(|| IdError::NoMatch(prefix.to_string()))
}
