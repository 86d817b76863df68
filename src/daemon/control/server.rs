//! The daemon's side of the control socket: accept, check the peer, answer.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::daemon::control::{
    parse_request, ErrorCode, Event, Failure, Final, JobDetached, JobDone, JobReply, Request,
    MAX_REQUEST, VERSION,
};
use crate::daemon::state::JobStatus;
use crate::daemon::tasks::{self, Stop};
use crate::daemon::{Daemon, IdError, JobProgress, RequestError};
use crate::manifest::ManifestId;

/// Most control connections served at once. More wait in the socket's
/// backlog until one ends; every connection ends (the request line has a
/// deadline), so none waits for ever.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one answer line may take to be taken by the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The first and the longest pause after a failed accept (out of file
/// descriptors, say): retrying at once would spin on the same error.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts control connections until `stop`, then waits up to `drain` for
/// the open ones to finish their answer (followers of a job end when the
/// jobs stop) and aborts the rest.
pub(in crate::daemon) async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    mut stop: Stop,
    drain: Duration,
) {
    let me = rustix::process::geteuid().as_raw();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let accepted = tokio::select! {
            () = stop.wait() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = accept(&listener, &slots) => accepted,
        };
        let (conn, slot) = match accepted {
            Ok(a) => {
                backoff = FIRST_BACKOFF;
                a
            }
            Err(e) => {
                if backoff == FIRST_BACKOFF {
                    tracing::warn!(
                        "accepting a control connection failed: {e}; retrying with back-off"
                    );
                }
                tokio::select! {
                    () = stop.wait() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let peer = conn.peer_cred().map(|c| c.uid());
        if peer.as_ref().ok() != Some(&me) {
            tracing::warn!(uid = ?peer.ok(), "refused a control connection from another user");
            conns.spawn(async move {
                let _slot = slot;
                // Read (and ignore) the request first, so closing does not
                // reset the connection before the client reads why.
                let (rd, mut wr) = conn.into_split();
                let mut line = String::new();
                let mut reader = TokioBufReader::new(rd.take(MAX_REQUEST));
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
                let _ = write_failure(&mut wr, &RequestError::OtherUser).await;
            });
            continue;
        }
        let daemon = daemon.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let _slot = slot;
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

/// Waits for a free slot, then for a connection.
async fn accept(
    listener: &UnixListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(UnixStream, OwnedSemaphorePermit)> {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let (conn, _) = listener.accept().await?;
    Ok((conn, slot))
}

type Writer = tokio::net::unix::OwnedWriteHalf;

/// `v` as one answer line, newline included.
fn line_of(v: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(v).expect("answers serialize");
    line.push(b'\n');
    line
}

async fn write_line(w: &mut Writer, line: &[u8]) -> std::io::Result<()> {
    // A client that stops reading must not hold its slot for ever.
    match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(line)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

async fn write_json(w: &mut Writer, v: &impl Serialize) -> std::io::Result<()> {
    write_line(w, &line_of(v)).await
}

/// The final line of an answer that succeeded.
fn final_line(reply: &impl Serialize) -> Vec<u8> {
    line_of(&Final {
        version: VERSION,
        ok: true,
        reply,
    })
}

/// Writes the final line of an answer that succeeded.
async fn write_final(w: &mut Writer, reply: &impl Serialize) -> std::io::Result<()> {
    write_line(w, &final_line(reply)).await
}

/// Writes the final line of an answer that failed.
async fn write_failure(w: &mut Writer, e: &RequestError) -> std::io::Result<()> {
    write_json(w, &failure(e)).await
}

/// The final line for `r`.
fn answer_line(r: Result<impl Serialize, RequestError>) -> Vec<u8> {
    match r {
        Ok(reply) => final_line(&reply),
        Err(e) => line_of(&failure(&e)),
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
        | E::HoldsDataDir { .. }
        | E::Share(_)
        | E::Select(_)
        | E::Id(IdError::TooShort | IdError::NotHex(_) | IdError::Ambiguous(_)) => {
            ErrorCode::Invalid
        }
        E::Id(IdError::NoMatch(_)) => ErrorCode::NotFound,
        E::FetchingElsewhere(_) | E::FetchingOtherPart(_) | E::OnlyPinned | E::JobState { .. } => {
            ErrorCode::Conflict
        }
        E::NoSuchJobId(_) => ErrorCode::NotFound,
        E::WhichJob(_) => ErrorCode::Invalid,
        E::JobFailed(_) => ErrorCode::JobFailed,
        E::JobCancelled => ErrorCode::Cancelled,
        E::JobStopped => ErrorCode::JobStopped,
        E::OtherUser => ErrorCode::Denied,
        E::Timeout(_) => ErrorCode::Timeout,
        E::Key(_) | E::Kept(_) | E::SealTask(_) | E::Store(_) => ErrorCode::Internal,
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
        r = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)) => match r {
            Ok(r) => r?,
            Err(_) => return write_failure(&mut wr, &RequestError::Timeout(REQUEST_TIMEOUT)).await,
        },
        // No request yet: nothing to finish.
        () = stop.wait() => return Ok(()),
    };
    let req = match parse_request(line.trim()) {
        Ok(r) => r,
        Err(e) => return write_failure(&mut wr, &e).await,
    };
    match run(&daemon, req).await {
        Outcome::Line(line) => write_line(&mut wr, &line).await,
        Outcome::Job { id, rx, detach } => follow(&mut wr, id, rx, detach).await,
    }
}

/// What a request gets: its final line, or a job to follow.
pub(in crate::daemon) enum Outcome {
    /// The final line, newline included.
    Line(Vec<u8>),
    /// A `fetch` or `pin` that was started or joined.
    Job {
        /// Its id.
        id: ManifestId,
        /// Its progress.
        rx: watch::Receiver<JobProgress>,
        /// Whether the client asked not to follow it.
        detach: bool,
    },
}

/// Does what `req` asks.
pub(in crate::daemon) async fn run(daemon: &Arc<Daemon>, req: Request) -> Outcome {
    let line = match req {
        Request::Share(r) => answer_line(daemon.share(r).await),
        Request::List(_) => final_line(&daemon.list()),
        Request::Status(_) => final_line(&daemon.status().await),
        Request::Unshare(r) => answer_line(daemon.unshare(&r.id).await),
        Request::Link(r) => answer_line(daemon.link(&r).await),
        Request::Fetch(r) => {
            let detach = r.detach;
            match daemon.fetch(r).await {
                Ok((id, rx)) => return Outcome::Job { id, rx, detach },
                Err(e) => line_of(&failure(&e)),
            }
        }
        Request::Pin(r) => {
            let detach = r.detach;
            match daemon.pin(r).await {
                Ok((id, rx)) => return Outcome::Job { id, rx, detach },
                Err(e) => line_of(&failure(&e)),
            }
        }
        Request::Cancel(r) => answer_line(daemon.cancel(&r).await),
        Request::Retry(r) => answer_line(daemon.retry(&r).await),
        Request::Priority(r) => answer_line(daemon.priority(&r).await),
    };
    Outcome::Line(line)
}

/// The final line for request line `line` without following a job: a
/// `fetch` or `pin` is answered as detached once started or joined (the
/// local web UI polls `list` for progress instead).
pub(in crate::daemon) async fn run_detached(daemon: &Arc<Daemon>, line: &str) -> Vec<u8> {
    let req = match parse_request(line.trim()) {
        Ok(r) => r,
        Err(e) => return line_of(&failure(&e)),
    };
    match run(daemon, req).await {
        Outcome::Line(line) => line,
        Outcome::Job { id, .. } => {
            final_line(&JobReply::Detached(JobDetached { id, detached: true }))
        }
    }
}

/// Most progress lines a second while a job is followed.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Streams a job's progress until it ends (or answers at once if detached).
/// A client that goes away does not stop the job. Progress lines are paced
/// (at most one per [`PROGRESS_EVERY`]), but the final line goes out as
/// soon as the job ends: pacing never delays an answer.
async fn follow(
    w: &mut Writer,
    id: ManifestId,
    mut rx: watch::Receiver<JobProgress>,
    detach: bool,
) -> std::io::Result<()> {
    if detach {
        let reply = JobReply::Detached(JobDetached { id, detached: true });
        return write_final(w, &reply).await;
    }
    let mut next_line = tokio::time::Instant::now();
    // A progress value not yet written because the last line was too recent.
    let mut pending;
    loop {
        let p = rx.borrow_and_update().clone();
        match p.status {
            JobStatus::Queued | JobStatus::Running => {
                let now = tokio::time::Instant::now();
                pending = now < next_line;
                if !pending {
                    let event = Event::Progress {
                        id,
                        bytes: p.bytes,
                        total: p.total,
                    };
                    write_json(w, &event).await?;
                    next_line = now + PROGRESS_EVERY;
                }
            }
            JobStatus::Done => {
                let reply = JobReply::Done(JobDone { id, bytes: p.total });
                return write_final(w, &reply).await;
            }
            JobStatus::Failed { error } => {
                return write_failure(w, &RequestError::JobFailed(error)).await
            }
            JobStatus::Cancelled => return write_failure(w, &RequestError::JobCancelled).await,
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() {
                return write_failure(w, &RequestError::JobStopped).await;
            },
            () = tokio::time::sleep_until(next_line), if pending => {}
        }
    }
}
