//! Background jobs (fetches and pins): a queue, at most `max_jobs` of them
//! running, a task per running job, and progress that control connections
//! can watch.
//!
//! A job's record in the state says where it stands (queued, running, done,
//! failed, cancelled) and its `rank` its place in the queue, so the queue
//! survives a restart. A job's deadlines (`fetch_wait_secs`, the request
//! timeout) start when it runs, never while it waits: a queue of any length
//! does not fail a job whose source stays reachable.

mod fetch;
mod pin;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::daemon::control::JobKind;
use crate::daemon::state::JobStatus;
use crate::daemon::Daemon;
use crate::manifest::ManifestId;
use crate::net::fetch::{progress_channel, FetchOptions, Progress, ProgressTx};
use crate::store::output::OutputOptions;

/// Where a background job stands, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobProgress {
    /// Bytes done (content for fetches, ciphertext for pins).
    pub bytes: u64,
    /// Bytes in all, once known.
    pub total: u64,
    /// Queued, running, done, failed or cancelled.
    pub status: JobStatus,
}

/// A job the daemon's table holds while it is queued or running.
pub(in crate::daemon) struct Job {
    pub(in crate::daemon) progress: Arc<watch::Sender<JobProgress>>,
    /// When it started running.
    pub(in crate::daemon) started: Option<Instant>,
    /// Set to `Some(keep)` by `cancel`.
    cancel: watch::Sender<Option<bool>>,
}

/// The job table and the queue.
#[derive(Default)]
pub(in crate::daemon) struct Jobs {
    pub(in crate::daemon) table: HashMap<(JobKind, ManifestId), Job>,
    /// Queued jobs by rank (lower runs first).
    queue: BTreeMap<i64, (JobKind, ManifestId)>,
    running: usize,
    /// The rank the next job queued at the back gets.
    next_rank: i64,
}

impl Jobs {
    /// A rank behind every job queued so far.
    pub(in crate::daemon) fn back(&mut self) -> i64 {
        self.next_rank += 1;
        self.next_rank
    }

    /// A rank ahead of every queued job.
    fn front(&self) -> i64 {
        self.queue
            .keys()
            .next()
            .map_or(self.next_rank, |r| r.saturating_sub(1))
    }

    /// Makes room for ranks up to `rank` (ranks read back from the state).
    pub(in crate::daemon) fn seen_rank(&mut self, rank: i64) {
        self.next_rank = self.next_rank.max(rank);
    }

    /// Jobs waiting for a slot.
    pub(in crate::daemon) fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// How a job's run ended.
enum End {
    /// It finished, with this status.
    Finished(JobStatus),
    /// `cancel` stopped it; keep its partial data or not.
    Cancelled { keep: bool },
    /// The daemon is stopping: the record stays as it is, to resume.
    Stopped,
}

/// Forwards a fetch's bounded progress queue into the job's `watch` (one
/// value, so what watchers see is bounded too).
fn progress_bridge(
    tx: Arc<watch::Sender<JobProgress>>,
) -> (ProgressTx, tokio::task::JoinHandle<()>) {
    let (ptx, mut prx) = progress_channel();
    let forward = tokio::spawn(async move {
        while let Some(p) = prx.recv().await {
            tx.send_modify(|j| match p {
                Progress::Started { total, .. } => j.total = total,
                Progress::Resumed { bytes } | Progress::Bytes(bytes) => j.bytes = bytes,
                _ => {}
            });
        }
    });
    (ptx, forward)
}

impl Daemon {
    pub(in crate::daemon) fn fetch_options(&self, output: OutputOptions) -> FetchOptions {
        FetchOptions {
            request_timeout: Duration::from_secs(self.config.request_timeout_secs.max(1)),
            wait: Duration::from_secs(self.config.fetch_wait_secs),
            output,
            discover: true,
            ..FetchOptions::default()
        }
    }

    /// Puts job (`kind`, `id`), whose record is in the state as queued or
    /// running, in the queue at `rank`, unless it is there already; returns
    /// a watcher on its progress, taken before it can end.
    pub(in crate::daemon) fn enqueue(
        self: &Arc<Self>,
        kind: JobKind,
        id: ManifestId,
        rank: i64,
        progress: JobProgress,
    ) -> watch::Receiver<JobProgress> {
        let rx = {
            let mut jobs = self.jobs.lock().expect("never poisoned");
            if let Some(j) = jobs.table.get(&(kind, id)) {
                return j.progress.subscribe();
            }
            jobs.seen_rank(rank);
            let (tx, rx) = watch::channel(JobProgress {
                status: JobStatus::Queued,
                ..progress
            });
            let (cancel, _) = watch::channel(None);
            jobs.table.insert(
                (kind, id),
                Job {
                    progress: Arc::new(tx),
                    started: None,
                    cancel,
                },
            );
            jobs.queue.insert(rank, (kind, id));
            rx
        };
        self.pump();
        rx
    }

    /// Starts queued jobs while there are free slots.
    fn pump(self: &Arc<Self>) {
        loop {
            if self.stop.requested() {
                // Shutting down: records stay queued or running for the next start.
                return;
            }
            let (key, progress, cancel) = {
                let mut jobs = self.jobs.lock().expect("never poisoned");
                if jobs.running >= self.config.max_jobs.max(1) {
                    return;
                }
                let Some((_, key)) = jobs.queue.pop_first() else {
                    return;
                };
                jobs.running += 1;
                let job = jobs
                    .table
                    .get_mut(&key)
                    .expect("queued jobs are in the table");
                job.started = Some(Instant::now());
                job.progress.send_modify(|p| p.status = JobStatus::Running);
                (key, job.progress.clone(), job.cancel.subscribe())
            };
            self.launch(key, progress, cancel);
        }
    }

    /// Runs job `key` on a task of its own, then frees its slot.
    fn launch(
        self: &Arc<Self>,
        (kind, id): (JobKind, ManifestId),
        progress: Arc<watch::Sender<JobProgress>>,
        mut cancel: watch::Receiver<Option<bool>>,
    ) {
        let me = self.clone();
        let mut stop = self.stop.clone();
        self.job_tasks.spawn(async move {
            let (ptx, forward) = progress_bridge(progress.clone());
            let end = {
                let watcher = progress.subscribe();
                let work: BoxFuture<'static, JobStatus> = match kind {
                    JobKind::Fetch => Box::pin(me.clone().run_fetch(id, ptx)),
                    JobKind::Pin => Box::pin(me.clone().run_pin(id, ptx, watcher)),
                };
                // Stopping or cancelling drops `work` where it waits, which
                // is how a fetch is told to stop (the fetch API takes no
                // stop signal). `work` is gone when this block ends, before
                // any partial data is removed.
                tokio::select! {
                    status = work => End::Finished(status),
                    keep = cancelled(&mut cancel) => End::Cancelled { keep },
                    () = stop.wait() => End::Stopped,
                }
            };
            if forward.await.is_err() {
                tracing::error!("a progress forwarder panicked");
            }
            let status = match end {
                End::Finished(status) => Some(status),
                End::Cancelled { keep } => {
                    if !keep {
                        me.discard(kind, &id).await;
                    }
                    me.set_status(kind, &id, JobStatus::Cancelled).await;
                    Some(JobStatus::Cancelled)
                }
                End::Stopped => None,
            };
            let mut jobs = me.jobs.lock().expect("never poisoned");
            jobs.running -= 1;
            if let Some(status) = status {
                progress.send_modify(|p| p.status = status);
                // Watchers hold receivers; the table forgets the job.
                jobs.table.remove(&(kind, id));
            }
            drop(jobs);
            me.pump();
        });
    }

    /// Sets the status of a job's record (a fetch's key is kept: a failed
    /// or cancelled fetch may be retried).
    pub(in crate::daemon) async fn set_status(
        &self,
        kind: JobKind,
        id: &ManifestId,
        status: JobStatus,
    ) {
        self.commit_or_log(|tx| match kind {
            JobKind::Fetch => tx.fetch(id, |f| f.status = status).is_some(),
            JobKind::Pin => tx.pin(id, |p| p.status = status).is_some(),
        })
        .await;
    }

    /// Removes what a job left half done: a fetch's staging folder (nothing
    /// of it has reached its final path). A pin's chunks stay in the store:
    /// they are verified, and a later pin of the same share keeps them.
    pub(in crate::daemon) async fn discard(&self, kind: JobKind, id: &ManifestId) {
        if kind != JobKind::Fetch {
            return;
        }
        let out = {
            let st = self.state.lock().expect("never poisoned");
            st.fetches
                .iter()
                .find(|f| f.id == *id)
                .map(|f| f.out.clone())
        };
        let Some(out) = out else { return };
        let staging = out.join(crate::store::output::staging_name(id));
        let r = tokio::task::spawn_blocking(move || remove_staging(&staging)).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(%id, "removing a cancelled fetch's partial data: {e}");
        }
    }

    /// Stops job (`kind`, `id`): a queued one leaves the queue, a running
    /// one is stopped where it waits. Returns once it has stopped (and its
    /// partial data is gone, unless `keep`), or `false` if it is not queued
    /// or running.
    pub(in crate::daemon) async fn stop_job(
        self: &Arc<Self>,
        kind: JobKind,
        id: &ManifestId,
        keep: bool,
    ) -> bool {
        const CANCEL_LIMIT: Duration = Duration::from_secs(30);
        let found = {
            let mut jobs = self.jobs.lock().expect("never poisoned");
            match jobs.table.get(&(kind, *id)) {
                None => return false,
                Some(job) if job.started.is_some() => {
                    job.cancel.send_replace(Some(keep));
                    Ok(job.progress.subscribe())
                }
                Some(_) => {
                    // Queued: nothing runs, so nothing to wait for.
                    jobs.queue.retain(|_, k| *k != (kind, *id));
                    Err(jobs.table.remove(&(kind, *id)).expect("just found"))
                }
            }
        };
        let mut rx = match found {
            Ok(rx) => rx,
            Err(job) => {
                if !keep {
                    self.discard(kind, id).await;
                }
                self.set_status(kind, id, JobStatus::Cancelled).await;
                job.progress
                    .send_modify(|p| p.status = JobStatus::Cancelled);
                return true;
            }
        };
        let ended = rx.wait_for(|p| !p.status.is_live());
        if tokio::time::timeout(CANCEL_LIMIT, ended).await.is_err() {
            tracing::warn!(%id, "a cancelled job did not stop within {CANCEL_LIMIT:?}");
        }
        true
    }

    /// Moves a queued job to the front of the queue; `false` if it is not
    /// queued.
    pub(in crate::daemon) async fn run_next(&self, kind: JobKind, id: &ManifestId) -> bool {
        let rank = {
            let mut jobs = self.jobs.lock().expect("never poisoned");
            let Some(old) = jobs
                .queue
                .iter()
                .find(|(_, k)| **k == (kind, *id))
                .map(|(r, _)| *r)
            else {
                return false;
            };
            let rank = jobs.front().min(old);
            jobs.queue.remove(&old);
            jobs.queue.insert(rank, (kind, *id));
            rank
        };
        self.commit_or_log(|tx| match kind {
            JobKind::Fetch => tx.fetch(id, |f| f.rank = rank),
            JobKind::Pin => tx.pin(id, |p| p.rank = rank),
        })
        .await;
        true
    }

    /// Whether job (`kind`, `id`) is queued or running.
    pub(in crate::daemon) fn live(&self, kind: JobKind, id: &ManifestId) -> bool {
        self.jobs
            .lock()
            .expect("never poisoned")
            .table
            .contains_key(&(kind, *id))
    }

    /// Forgets every job's progress, so that followers of jobs that will
    /// not end in this run learn that the daemon stopped.
    pub(in crate::daemon) fn forget_jobs(&self) {
        let mut jobs = self.jobs.lock().expect("never poisoned");
        jobs.table.clear();
        jobs.queue.clear();
    }
}

/// Resolves with `keep` once `cancel` asks for the job to stop.
async fn cancelled(cancel: &mut watch::Receiver<Option<bool>>) -> bool {
    let asked = cancel
        .wait_for(Option::is_some)
        .await
        .map(|keep| (*keep).unwrap_or(true));
    match asked {
        Ok(keep) => keep,
        // The job left the table (shutdown): never a cancel.
        Err(_) => std::future::pending().await,
    }
}

/// Removes a fetch's staging folder, if it is a real folder (not a link
/// someone planted there).
fn remove_staging(staging: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(staging) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(staging),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
