//! Why a control request was not carried out, and why a kept share cannot
//! be served. The control server turns a [`RequestError`] into the answer's
//! error line in one place (`control::server`).

use std::path::PathBuf;

use crate::crypto::KeyError;
use crate::link::ParseError;
use crate::manifest::ManifestError;
use crate::meta::MetadataError;
use crate::store::share::ShareError;
use crate::store::source::SourceError;

/// Why a control request failed. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request line is not a valid request.
    #[error("bad request: {0}")]
    BadRequest(#[source] serde_json::Error),
    /// The request speaks a protocol version this daemon does not.
    #[error("this daemon speaks control protocol version {}, but the request is version {got}: use the peerdrop binary that matches the running daemon, or restart the daemon with the new one", crate::daemon::control::VERSION)]
    UnsupportedVersion {
        /// The request's version.
        got: u32,
    },
    /// A relative path: the daemon's working directory is not the client's.
    #[error("{} is not an absolute path", .0.display())]
    NotAbsolute(PathBuf),
    /// The link does not parse, or is the wrong kind for the command.
    #[error(transparent)]
    Link(#[from] ParseError),
    /// `pin` was given a read link; the key must never reach a pinning node.
    #[error("refusing a read link for a pin: send the pin link (without the part after '#')")]
    ReadLinkForPin,
    /// The path holds this daemon's data dir, or lies inside it.
    #[error("refusing to share {}: it holds or lies inside this daemon's data dir {}, which keeps its keys; share the files beside it instead", path.display(), data_dir.display())]
    HoldsDataDir {
        /// The path given.
        path: PathBuf,
        /// The data dir.
        data_dir: PathBuf,
    },
    /// A `peers` entry that is not a multiaddr ending in `/p2p/PEER`.
    #[error("{0:?} is not a peer address: give a multiaddr ending in /p2p/PEER_ID")]
    BadPeer(String),
    /// The share is already being fetched, into another folder.
    #[error("this share is already being fetched into {}; wait for that fetch (see `peerdrop list`)", .0.display())]
    FetchingElsewhere(PathBuf),
    /// The share is already being fetched into the same folder, but with
    /// other `only`/`exclude` patterns.
    #[error("this share is already being fetched into {} with other --only/--exclude patterns; wait for that fetch (see `peerdrop list`), or cancel it", .0.display())]
    FetchingOtherPart(PathBuf),
    /// The `only`/`exclude` patterns are malformed.
    #[error(transparent)]
    Select(#[from] crate::select::SelectError),
    /// The id prefix matches nothing, or several ids.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A read link was asked for a share this node only pins.
    #[error("this node only pins that share and has no key for it: only its pin link exists here (use --pin)")]
    OnlyPinned,
    /// No share key could be drawn.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The paths cannot be shared.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// The share was made but cannot be kept or served.
    #[error(transparent)]
    Kept(#[from] KeptShareError),
    /// The sealing task stopped without an answer (a bug).
    #[error("sealing stopped unexpectedly: {0}")]
    SealTask(#[from] tokio::task::JoinError),
    /// The client is not the daemon's user.
    #[error("permission denied: this daemon belongs to another user")]
    OtherUser,
    /// No request line arrived in time.
    #[error("no request within {0:?}: send the request line right after connecting")]
    Timeout(std::time::Duration),
    /// The followed job failed (its progress is kept).
    #[error("{0}")]
    JobFailed(String),
    /// The followed job was cancelled.
    #[error("the job was cancelled; `peerdrop retry ID` queues it again")]
    JobCancelled,
    /// No fetch or pin has that id.
    #[error("no fetch or pin has an id starting with {0} (see `peerdrop list`)")]
    NoSuchJobId(String),
    /// The id names both a fetch and a pin.
    #[error("{0} is both a fetch and a pin here: say which with --pin or --fetch")]
    WhichJob(String),
    /// The job is not in a state the request applies to.
    #[error("the {kind:?} job {id} is {state}: {what}")]
    JobState {
        /// Its kind.
        kind: crate::daemon::control::JobKind,
        /// Its id.
        id: crate::manifest::ManifestId,
        /// Where it stands.
        state: &'static str,
        /// What can be done instead.
        what: &'static str,
    },
    /// A change could not be saved.
    #[error(transparent)]
    Store(#[from] crate::daemon::journal::StoreError),
    /// The daemon stopped while the job was followed.
    #[error("the daemon stopped the job; it resumes when the daemon starts again")]
    JobStopped,
}

/// Why an id given to `unshare` or `link` names no single share or pin.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Fewer than 8 hex digits.
    #[error("give at least 8 hex digits of the id (see `peerdrop list`)")]
    TooShort,
    /// Not hex digits, or more than 64 of them.
    #[error("{0:?} is not an id: an id is up to 64 hex digits (see `peerdrop list`)")]
    NotHex(String),
    /// No id starts with it.
    #[error("no share, fetch or pin has an id starting with {0}")]
    NoMatch(String),
    /// Several ids start with it.
    #[error("{0} matches several ids; give more digits")]
    Ambiguous(String),
}

/// Why a share kept in the data dir cannot be saved or served again.
#[derive(Debug, thiserror::Error)]
pub enum KeptShareError {
    /// Reading or writing `shares/<id>/` failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        #[source]
        error: std::io::Error,
    },
    /// The record could not be saved.
    #[error(transparent)]
    Store(#[from] crate::daemon::journal::StoreError),
    /// The saved key is not a key (state.json was edited).
    #[error("the saved key is unreadable")]
    BadKey,
    /// The saved manifest is damaged.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The saved file list is damaged.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The shared files no longer match the saved file list.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The saved key does not open the saved manifest.
    #[error("the saved key does not open the saved manifest")]
    WrongKey,
}

impl KeptShareError {
    /// An I/O error on `path`.
    pub(super) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> KeptShareError + '_ {
        move |error| KeptShareError::Io {
            path: path.to_owned(),
            error,
        }
    }
}
