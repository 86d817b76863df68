//! The CLI's side of the control socket: one request, the answer's lines.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;

use serde_json::Value;

use crate::daemon::control::Request;

/// Why the CLI could not talk to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("no peerdrop daemon is running for data dir {0}; start one with `peerdrop daemon --data-dir {0}`")]
    NotRunning(String),
    /// The socket exists but we may not use it.
    #[error("permission denied on {0}: the daemon belongs to another user")]
    Denied(String),
    /// The connection failed.
    #[error("talking to the daemon failed: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered something unreadable.
    #[error("the daemon sent an invalid answer: {0}")]
    Invalid(String),
}

/// Sends one request and calls `on_line` for every line of the answer; the
/// last line is returned.
pub fn request(
    data_dir: &Path,
    req: &Request,
    mut on_line: impl FnMut(&Value),
) -> Result<Value, ClientError> {
    let sock = data_dir.join("control.sock");
    let shown = data_dir.display().to_string();
    let mut s = match StdUnixStream::connect(&sock) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(shown));
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ClientError::Denied(shown))
        }
        Err(e) => return Err(e.into()),
    };
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut last = None;
    for l in BufReader::new(s).lines() {
        let v: Value =
            serde_json::from_str(&l?).map_err(|e| ClientError::Invalid(e.to_string()))?;
        on_line(&v);
        last = Some(v);
    }
    last.ok_or_else(|| ClientError::Invalid("no answer".into()))
}
