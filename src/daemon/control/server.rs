//! The daemon's side of the control socket: accept, check the peer, answer.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::daemon::control::{
    parse_request, ErrorCode, Event, Failure, Final, JobDetached, JobDone, JobKind, JobReply,
    Request, MAX_REQUEST, VERSION,
};
use crate::daemon::state::JobStatus;
use crate::daemon::tasks::{self, Stop};
use crate::daemon::{Daemon, IdError, RequestError};
use crate::manifest::ManifestId;

/// Accepts control connections until `stop`, then waits up to `drain` for
/// the open ones to finish their answer (followers of a job end when the
/// jobs stop) and aborts the rest.
pub(in crate::daemon) async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    mut stop: Stop,
    drain: Duration,
) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.wait() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        let Ok((conn, _)) = accepted else {
            continue;
        };
        match conn.peer_cred() {
            Ok(c) if c.uid() == me => {}
            other => {
                tracing::warn!(uid = ?other.map(|c| c.uid()).ok(), "refused a control connection from another user");
                conns.spawn(async move {
                    // Read (and ignore) the request first, so closing does
                    // not reset the connection before the client reads why.
                    let (rd, mut wr) = conn.into_split();
                    let mut line = String::new();
                    let _ = TokioBufReader::new(rd.take(MAX_REQUEST))
                        .read_line(&mut line)
                        .await;
                    let _ = write_failure(&mut wr, &RequestError::OtherUser).await;
                });
                continue;
            }
        }
        let daemon = daemon.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            if let Err(e) = handle(conn, daemon, stop).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
    drop(listener);
    let aborted = tasks::drain(&mut conns, drain).await;
    if aborted > 0 {
        tracing::warn!("{aborted} control connection(s) did not finish within {drain:?}; closed");
    }
}

type Writer = tokio::net::unix::OwnedWriteHalf;

async fn write_json(w: &mut Writer, v: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).expect("answers serialize");
    line.push(b'\n');
    w.write_all(&line).await
}

/// Writes the final line of an answer that succeeded.
async fn write_final(w: &mut Writer, reply: &impl Serialize) -> std::io::Result<()> {
    write_json(
        w,
        &Final {
            version: VERSION,
            ok: true,
            reply,
        },
    )
    .await
}

/// Writes the final line of an answer that failed.
async fn write_failure(w: &mut Writer, e: &RequestError) -> std::io::Result<()> {
    write_json(w, &failure(e)).await
}

async fn answer(w: &mut Writer, r: Result<impl Serialize, RequestError>) -> std::io::Result<()> {
    match r {
        Ok(reply) => write_final(w, &reply).await,
        Err(e) => write_failure(w, &e).await,
    }
}

/// The error line for `e`: the one place a request's error becomes an answer.
pub(super) fn failure(e: &RequestError) -> Failure {
    use RequestError as E;
    let code = match e {
        E::BadRequest(_) => ErrorCode::BadRequest,
        E::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        E::NotAbsolute(_)
        | E::Link(_)
        | E::ReadLinkForPin
        | E::BadPeer(_)
        | E::Share(_)
        | E::Id(IdError::TooShort | IdError::NotHex(_) | IdError::Ambiguous(_)) => {
            ErrorCode::Invalid
        }
        E::Id(IdError::NoMatch(_)) => ErrorCode::NotFound,
        E::FetchingElsewhere(_) | E::OnlyPinned => ErrorCode::Conflict,
        E::JobFailed(_) => ErrorCode::JobFailed,
        E::JobStopped => ErrorCode::JobStopped,
        E::OtherUser => ErrorCode::Denied,
        E::Key(_) | E::Kept(_) | E::SealTask(_) | E::NoSuchJob => ErrorCode::Internal,
    };
    Failure {
        version: Some(VERSION),
        ok: false,
        error: e.to_string(),
        code,
    }
}

async fn handle(conn: UnixStream, daemon: Arc<Daemon>, mut stop: Stop) -> std::io::Result<()> {
    let (rd, mut wr) = conn.into_split();
    let mut line = String::new();
    let mut reader = TokioBufReader::new(rd.take(MAX_REQUEST));
    tokio::select! {
        r = reader.read_line(&mut line) => r?,
        // No request yet: nothing to finish.
        () = stop.wait() => return Ok(()),
    };
    let req = match parse_request(line.trim()) {
        Ok(r) => r,
        Err(e) => return write_failure(&mut wr, &e).await,
    };
    let w = &mut wr;
    match req {
        Request::Share(r) => answer(w, daemon.share(r).await).await,
        Request::List(_) => write_final(w, &daemon.list()).await,
        Request::Status(_) => write_final(w, &daemon.status().await).await,
        Request::Unshare(r) => answer(w, daemon.unshare(&r.id)).await,
        Request::Link(r) => answer(w, daemon.link(&r).await).await,
        Request::Fetch(r) => {
            let detach = r.detach;
            match daemon.fetch(r) {
                Ok(id) => follow(w, &daemon, JobKind::Fetch, id, detach).await,
                Err(e) => write_failure(w, &e).await,
            }
        }
        Request::Pin(r) => {
            let detach = r.detach;
            match daemon.pin(r) {
                Ok(id) => follow(w, &daemon, JobKind::Pin, id, detach).await,
                Err(e) => write_failure(w, &e).await,
            }
        }
    }
}

/// Streams a job's progress until it ends (or answers at once if detached).
/// A client that goes away does not stop the job.
async fn follow(
    w: &mut Writer,
    daemon: &Daemon,
    kind: JobKind,
    id: ManifestId,
    detach: bool,
) -> std::io::Result<()> {
    let Some(mut rx) = daemon.watch(kind, &id) else {
        return write_failure(w, &RequestError::NoSuchJob).await;
    };
    if detach {
        let reply = JobReply::Detached(JobDetached { id, detached: true });
        return write_final(w, &reply).await;
    }
    loop {
        let p = rx.borrow_and_update().clone();
        match p.status {
            JobStatus::Running => {
                let event = Event::Progress {
                    id,
                    bytes: p.bytes,
                    total: p.total,
                };
                write_json(w, &event).await?;
            }
            JobStatus::Done => {
                let reply = JobReply::Done(JobDone { id, bytes: p.total });
                return write_final(w, &reply).await;
            }
            JobStatus::Failed { error } => {
                return write_failure(w, &RequestError::JobFailed(error)).await
            }
        }
        if rx.changed().await.is_err() {
            return write_failure(w, &RequestError::JobStopped).await;
        }
        // Progress lines at most four times a second.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
