//! The control API: JSON lines over a Unix socket in the data dir.
//!
//! One request per connection: the client writes one JSON object on one
//! line; the daemon answers with one or more lines and closes. The last line
//! has `"ok": true` or `"ok": false` with an `"error"`; lines before it are
//! progress events (`"event": "progress"`). See docs/CONTROL.md.
//!
//! Only the daemon's own user may connect: the socket is 0600 in a 0700
//! directory, and the peer's uid is checked on every connection.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::daemon::state::JobStatus;
use crate::daemon::Daemon;

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

/// Accepts control connections until the task is aborted.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        match conn.peer_cred() {
            Ok(c) if c.uid() == me => {}
            other => {
                tracing::warn!(uid = ?other.map(|c| c.uid()).ok(), "refused a control connection from another user");
                tokio::spawn(async move {
                    // Read (and ignore) the request first, so closing does
                    // not reset the connection before the client reads why.
                    let (rd, mut wr) = conn.into_split();
                    let mut line = String::new();
                    let _ = TokioBufReader::new(rd.take(MAX_REQUEST))
                        .read_line(&mut line)
                        .await;
                    let _ = write_line(
                        &mut wr,
                        &fail("permission denied: this daemon belongs to another user"),
                    )
                    .await;
                });
                continue;
            }
        }
        let daemon = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(conn, daemon).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await
}

fn fail(e: impl ToString) -> Value {
    json!({"ok": false, "error": e.to_string()})
}

async fn handle(conn: UnixStream, daemon: Arc<Daemon>) -> std::io::Result<()> {
    let (rd, mut wr) = conn.into_split();
    let mut line = String::new();
    TokioBufReader::new(rd.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let req: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => return write_line(&mut wr, &fail(format!("bad request: {e}"))).await,
    };
    let reply = match req {
        Request::Share { paths, hints } => daemon.share(paths, hints).await.unwrap_or_else(fail),
        Request::List => daemon.list(),
        Request::Status => daemon.status().await,
        Request::Unshare { id } => daemon.unshare(&id).unwrap_or_else(fail),
        Request::Link { id, pin } => daemon.link(&id, pin).await.unwrap_or_else(fail),
        Request::Fetch {
            link,
            out,
            force,
            peers,
            detach,
        } => match daemon.fetch(&link, out, force, peers) {
            Ok(id) => return follow(&mut wr, &daemon, "fetch", id, detach).await,
            Err(e) => fail(e),
        },
        Request::Pin {
            link,
            peers,
            detach,
        } => match daemon.pin(&link, peers) {
            Ok(id) => return follow(&mut wr, &daemon, "pin", id, detach).await,
            Err(e) => fail(e),
        },
    };
    write_line(&mut wr, &reply).await
}

/// Streams a job's progress until it ends (or answers at once if detached).
/// A client that goes away does not stop the job.
async fn follow(
    wr: &mut (impl AsyncWriteExt + Unpin),
    daemon: &Daemon,
    kind: &'static str,
    id: crate::manifest::ManifestId,
    detach: bool,
) -> std::io::Result<()> {
    let idh = id.to_string();
    let Some(mut rx) = daemon.watch(kind, &id) else {
        return write_line(wr, &fail("the job vanished")).await;
    };
    if detach {
        return write_line(wr, &json!({"ok": true, "id": idh, "detached": true})).await;
    }
    loop {
        let p = rx.borrow_and_update().clone();
        match p.status {
            JobStatus::Running => {
                write_line(
                    wr,
                    &json!({"event": "progress", "id": idh, "bytes": p.bytes, "total": p.total}),
                )
                .await?;
            }
            JobStatus::Done => {
                return write_line(wr, &json!({"ok": true, "id": idh, "bytes": p.total})).await
            }
            JobStatus::Failed { error } => return write_line(wr, &fail(error)).await,
        }
        if rx.changed().await.is_err() {
            return write_line(
                wr,
                &fail("the daemon stopped the job; it resumes when the daemon starts again"),
            )
            .await;
        }
        // Progress lines at most four times a second.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

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
