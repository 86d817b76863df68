//! Local files: the only layer below the network that touches the disk.
//!
//! - [`source`] scans the paths being shared and reads them as one content
//!   stream (or a range of it, to re-seal a chunk on demand);
//! - [`output`] writes a share into a destination folder crash-safely:
//!   everything is staged under a temporary name inside the destination and
//!   renamed into place only once complete and verified;
//! - [`handle`] reaches paths below a held folder one name at a time,
//!   never through a link (all output goes through it);
//! - [`flush`] shares one `syncfs` among the outputs finishing at once;
//! - [`chunks`] keeps sealed chunks and manifests in a folder, by id;
//! - [`resume`] finds what an interrupted run left that still verifies
//!   (staged output, stored chunks), so it is not fetched again;
//! - [`unseal`] drives a whole share from a chunk source to an output.

pub mod chunks;
pub mod flush;
pub mod handle;
pub mod output;
pub mod resume;
pub mod share;
pub mod source;
pub mod unseal;

use std::io;
use std::path::{Path, PathBuf};

/// A path as messages show it: as it is, unless it holds a control
/// character (a hostile name in a shared folder could drive the terminal,
/// audit F-16); then escaped and quoted.
pub fn shown(path: &std::path::Path) -> String {
    let s = path.to_string_lossy();
    if s.chars().any(char::is_control) {
        format!("{path:?}")
    } else {
        s.into_owned()
    }
}

/// An I/O error together with the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}{}", shown(path), advice(error))]
pub struct PathIoError {
    /// The file or folder involved.
    pub path: PathBuf,
    /// What the operating system said.
    pub error: io::Error,
}

/// What to do about `error`, where the OS's own words do not say: a full disk
/// mid-transfer is the user's to fix, and nothing verified is lost by it.
fn advice(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "; free some space, then run the same command again: what was already verified is kept"
        }
        _ => "",
    }
}

/// Attaches `path` to an I/O error.
pub(crate) fn at(path: &Path) -> impl FnOnce(io::Error) -> PathIoError + '_ {
    move |error| PathIoError {
        path: path.to_owned(),
        error,
    }
}
