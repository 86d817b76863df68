//! The control API: JSON lines over a Unix socket in the data dir.
//!
//! One request per connection: the client writes one JSON object on one
//! line; the daemon answers with one or more lines and closes. The last line
//! has `"ok": true` or `"ok": false` with an `"error"`; lines before it are
//! progress events (`"event": "progress"`). See docs/CONTROL.md.
//!
//! Only the daemon's own user may connect: the socket is 0600 in a 0700
//! directory, and the peer's uid is checked on every connection.

mod client;
mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{request, ClientError};
pub use server::serve;

/// Longest request line accepted.
pub const MAX_REQUEST: u64 = 64 * 1024;

/// A request to the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Share files and folders (absolute paths).
    Share {
        /// What to share.
        paths: Vec<PathBuf>,
        /// Put this node's addresses in the link (default true).
        #[serde(default = "yes")]
        hints: bool,
    },
    /// Fetch a share into a folder.
    Fetch {
        /// The read link.
        link: String,
        /// Absolute destination folder.
        out: PathBuf,
        /// Replace existing files.
        #[serde(default)]
        force: bool,
        /// Extra sources: multiaddrs ending in /p2p/PEER.
        #[serde(default)]
        peers: Vec<String>,
        /// Answer at once instead of streaming progress until done.
        #[serde(default)]
        detach: bool,
    },
    /// Pin a share's ciphertext.
    Pin {
        /// The pin link (never a read link).
        link: String,
        /// Extra sources.
        #[serde(default)]
        peers: Vec<String>,
        /// Answer at once.
        #[serde(default)]
        detach: bool,
    },
    /// Shares, pins and fetches.
    List,
    /// Stop serving a share or pin.
    Unshare {
        /// Its id or a unique prefix.
        id: String,
    },
    /// A share's link again.
    Link {
        /// Its id or a unique prefix.
        id: String,
        /// The pin link instead of the read link.
        #[serde(default)]
        pin: bool,
    },
    /// Node status.
    Status,
}

fn yes() -> bool {
    true
}
