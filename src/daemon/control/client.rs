//! The CLI's side of the control socket: one request, the answer's lines,
//! the final line read as the command's reply type.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;

use serde::Deserialize;

use crate::daemon::control::{request_line, Command, ErrorCode, Event, Failure, VERSION};

/// Why the CLI could not get an answer from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("no peerdrop daemon is running for data dir {0}; start one with `peerdrop daemon --data-dir {0}`")]
    NotRunning(String),
    /// The socket exists but we may not use it.
    #[error("permission denied on {0}: the daemon belongs to another user")]
    Denied(String),
    /// The data dir is another user's: its socket may be anyone's.
    #[error("permission denied on data dir {dir}: it belongs to another user (uid {owner}; you are uid {me}), so its socket is not yours to use; nothing was sent")]
    NotOurDir {
        /// The data dir.
        dir: String,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// Others may write into the data dir, so anyone could have put the
    /// socket there.
    #[error("refusing data dir {dir}: its mode is {mode:o}, so another user could have planted its socket; nothing was sent. If the dir is yours, run `chmod 700 {dir}` (the daemon does so each time it starts)")]
    LooseDir {
        /// The data dir.
        dir: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The process at the other end of the socket is another user's.
    #[error(
        "refusing {sock}: it is served by uid {peer}, not by you (uid {me}); nothing was sent"
    )]
    NotOurDaemon {
        /// The socket.
        sock: String,
        /// The serving process's uid.
        peer: u32,
        /// Our effective uid.
        me: u32,
    },
    /// The connection failed.
    #[error("talking to the daemon failed: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered something unreadable.
    #[error("the daemon sent an invalid answer: {0}")]
    Invalid(String),
    /// The daemon refused or failed the request.
    #[error("{}", .0.error)]
    Failed(Failure),
    /// A daemon from before protocol versions refused the request.
    #[error("{0} (the running daemon is older than this peerdrop; restart it with this binary)")]
    OldDaemon(String),
    /// The daemon answers in another protocol version.
    #[error("the daemon speaks control protocol version {daemon}, this peerdrop speaks version {VERSION}: use the peerdrop binary that matches the running daemon, or restart the daemon with this one")]
    Version {
        /// The daemon's version.
        daemon: u32,
    },
    /// The connection closed before the final line.
    #[error("the daemon closed the connection without an answer (was it stopped?); a fetch or pin resumes when the daemon starts again")]
    NoAnswer,
}

impl ClientError {
    /// The daemon's error code, if the daemon answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Failed(f) => Some(f.code),
            _ => None,
        }
    }
}

/// What tells the lines of an answer apart.
#[derive(Deserialize)]
struct LineHead {
    ok: Option<bool>,
    version: Option<u32>,
}

impl LineHead {
    /// What `line` is. A final line that starts the way this build's daemon
    /// writes one (`version`, then `ok`) is known from its first bytes: a
    /// `list` of 10,000 shares is then read in one pass, not two (the
    /// second was a third of its answer time). Any other order is read in
    /// full.
    fn of(line: &str) -> Result<LineHead, ClientError> {
        let ok = format!(r#"{{"version":{VERSION},"ok":true,"#);
        if line.starts_with(&ok) {
            return Ok(LineHead {
                ok: Some(true),
                version: Some(VERSION),
            });
        }
        serde_json::from_str(line).map_err(invalid)
    }
}

fn invalid(e: serde_json::Error) -> ClientError {
    ClientError::Invalid(e.to_string())
}

/// Sends `cmd` and reads the answer. `on_line` gets every line as it came
/// (for `--json`), with the progress event in it if it is one this build
/// knows; the final line is returned as the command's reply.
pub fn call<C: Command>(
    data_dir: &Path,
    cmd: C,
    mut on_line: impl FnMut(&str, Option<&Event>),
) -> Result<C::Reply, ClientError> {
    let mut s = connect(data_dir)?;
    let mut line = request_line(&cmd.into());
    line.push('\n');
    s.write_all(line.as_bytes())?;
    // A large answer (a long `list`) is read in fewer calls.
    for l in BufReader::with_capacity(64 << 10, s).lines() {
        let l = l?;
        let head = LineHead::of(&l)?;
        match head.ok {
            None => {
                // A newer daemon may send events this build does not know.
                let event = serde_json::from_str::<Event>(&l).ok();
                on_line(&l, event.as_ref());
            }
            Some(false) => {
                on_line(&l, None);
                let f: Failure = serde_json::from_str(&l).map_err(invalid)?;
                return Err(match f.version {
                    None => ClientError::OldDaemon(f.error),
                    Some(_) => ClientError::Failed(f),
                });
            }
            Some(true) => {
                on_line(&l, None);
                if head.version != Some(VERSION) {
                    return Err(ClientError::Version {
                        daemon: head.version.unwrap_or(0),
                    });
                }
                return serde_json::from_str(&l).map_err(invalid);
            }
        }
    }
    Err(ClientError::NoAnswer)
}

/// Connects to the daemon of `data_dir`, and makes sure it is ours before
/// anything (a read link, say) is sent: the data dir is ours and private,
/// and the process that listens runs as us.
fn connect(data_dir: &Path) -> Result<StdUnixStream, ClientError> {
    let s = open(data_dir)?;
    let me = rustix::process::geteuid().as_raw();
    let dir = std::fs::metadata(data_dir)?;
    let shown = || data_dir.display().to_string();
    if dir.uid() != me {
        return Err(ClientError::NotOurDir {
            dir: shown(),
            owner: dir.uid(),
            me,
        });
    }
    if dir.mode() & 0o077 != 0 {
        return Err(ClientError::LooseDir {
            dir: shown(),
            mode: dir.mode() & 0o7777,
        });
    }
    let peer = rustix::net::sockopt::socket_peercred(&s)
        .map_err(std::io::Error::from)?
        .uid
        .as_raw();
    if peer != me {
        return Err(ClientError::NotOurDaemon {
            sock: data_dir.join("control.sock").display().to_string(),
            peer,
            me,
        });
    }
    Ok(s)
}

fn open(data_dir: &Path) -> Result<StdUnixStream, ClientError> {
    let sock = data_dir.join("control.sock");
    let shown = data_dir.display().to_string();
    match StdUnixStream::connect(&sock) {
        Ok(s) => Ok(s),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Err(ClientError::NotRunning(shown))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(ClientError::Denied(shown))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_head_is_the_same_read_fast_or_in_full() {
        let lines = [
            format!(r#"{{"version":{VERSION},"ok":true,"id":"00"}}"#),
            format!(r#"{{"ok":true,"version":{VERSION},"id":"00"}}"#),
            r#"{"version":7,"ok":true,"id":"00"}"#.to_owned(),
            format!(r#"{{"version":{VERSION},"ok":false,"error":"e","code":"invalid"}}"#),
            r#"{"event":"progress","id":"00","bytes":1,"total":2}"#.to_owned(),
        ];
        let want = [
            (Some(true), Some(VERSION)),
            (Some(true), Some(VERSION)),
            (Some(true), Some(7)),
            (Some(false), Some(VERSION)),
            (None, None),
        ];
        for (line, want) in lines.iter().zip(want) {
            let h = LineHead::of(line).unwrap();
            assert_eq!((h.ok, h.version), want, "{line}");
        }
        assert!(LineHead::of("{not json").is_err());
    }
}
