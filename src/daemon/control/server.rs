//! The daemon's side of the control socket: accept, check the peer, answer.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::daemon::control::{Request, MAX_REQUEST};
use crate::daemon::state::JobStatus;
use crate::daemon::{Daemon, RequestError};

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

/// The error line for `e`: the one place a request's error becomes an answer.
fn failure(e: &RequestError) -> Value {
    fail(e)
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
        Err(e) => return write_line(&mut wr, &failure(&RequestError::BadRequest(e))).await,
    };
    let reply = match req {
        Request::Share { paths, hints } => daemon
            .share(paths, hints)
            .await
            .unwrap_or_else(|e| failure(&e)),
        Request::List => daemon.list(),
        Request::Status => daemon.status().await,
        Request::Unshare { id } => daemon.unshare(&id).unwrap_or_else(|e| failure(&e)),
        Request::Link { id, pin } => daemon.link(&id, pin).await.unwrap_or_else(|e| failure(&e)),
        Request::Fetch {
            link,
            out,
            force,
            peers,
            detach,
        } => match daemon.fetch(&link, out, force, peers) {
            Ok(id) => return follow(&mut wr, &daemon, "fetch", id, detach).await,
            Err(e) => failure(&e),
        },
        Request::Pin {
            link,
            peers,
            detach,
        } => match daemon.pin(&link, peers) {
            Ok(id) => return follow(&mut wr, &daemon, "pin", id, detach).await,
            Err(e) => failure(&e),
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
        return write_line(wr, &failure(&RequestError::NoSuchJob)).await;
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
