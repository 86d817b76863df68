//! Background jobs (fetches and pins): a table of what runs, a task per
//! job, and progress that control connections can watch.

mod fetch;
mod pin;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::daemon::control::JobKind;
use crate::daemon::state::JobStatus;
use crate::daemon::Daemon;
use crate::manifest::ManifestId;
use crate::net::fetch::{FetchOptions, Progress};
use crate::store::output::OutputOptions;

/// Where a background job stands, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobProgress {
    /// Bytes done (content for fetches, ciphertext for pins).
    pub bytes: u64,
    /// Bytes in all, once known.
    pub total: u64,
    /// Running, done or failed.
    pub status: JobStatus,
}

/// A job as the daemon's table holds it (its kind and id are the key).
pub(in crate::daemon) struct Job {
    pub(in crate::daemon) progress: watch::Receiver<JobProgress>,
    pub(in crate::daemon) started: Instant,
}

/// The fetch API reports on an unbounded sender (`net::fetch`, not ours to
/// change here). This is the one place the daemon makes such a channel: its
/// receiver is drained at once into a `watch` (one value, so what watchers
/// see is bounded), and the fetcher sends one small event per chunk, so the
/// queue holds only what arrived since the forwarder last ran.
fn progress_bridge(
    tx: watch::Sender<JobProgress>,
) -> (
    mpsc::UnboundedSender<Progress>,
    tokio::task::JoinHandle<watch::Sender<JobProgress>>,
) {
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let forward = tokio::spawn(async move {
        while let Some(p) = prx.recv().await {
            tx.send_modify(|j| match p {
                Progress::Started { total, .. } => j.total = total,
                Progress::Resumed { bytes } | Progress::Bytes(bytes) => j.bytes = bytes,
                _ => {}
            });
        }
        tx
    });
    (ptx, forward)
}

impl Daemon {
    pub(in crate::daemon) fn fetch_options(&self, force: bool) -> FetchOptions {
        FetchOptions {
            request_timeout: Duration::from_secs(self.config.request_timeout_secs.max(1)),
            wait: Duration::from_secs(self.config.fetch_wait_secs),
            output: OutputOptions { force },
            discover: true,
            ..FetchOptions::default()
        }
    }

    /// Registers job (`kind`, `id`) and runs `work` on a task of its own.
    /// `work` gets the daemon and a sender for its progress, and returns the
    /// job's final status, which is published after every progress event.
    pub(in crate::daemon) fn spawn_job<F, Fut>(
        self: &Arc<Self>,
        kind: JobKind,
        id: ManifestId,
        work: F,
    ) where
        F: FnOnce(Arc<Self>, mpsc::UnboundedSender<Progress>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = JobStatus> + Send + 'static,
    {
        if self.stop.requested() {
            // Shutting down: the record stays `running` for the next start.
            return;
        }
        let (tx, rx) = watch::channel(JobProgress {
            bytes: 0,
            total: 0,
            status: JobStatus::Running,
        });
        self.jobs.lock().expect("never poisoned").insert(
            (kind, id),
            Job {
                progress: rx,
                started: Instant::now(),
            },
        );
        let me = self.clone();
        let mut stop = self.stop.clone();
        self.job_tasks.spawn(async move {
            let (ptx, forward) = progress_bridge(tx);
            // Stopping drops `work` where it waits, which is how a fetch is
            // told to stop (the fetch API takes no stop signal). Its record
            // stays `running`, so it resumes on the next start; watchers
            // see the sender go away without a final status.
            let status = tokio::select! {
                status = work(me, ptx) => Some(status),
                () = stop.wait() => None,
            };
            let tx = forward.await.expect("the forwarder does not panic");
            if let Some(status) = status {
                tx.send_modify(|j| j.status = status);
            }
        });
    }

    /// Whether job (`kind`, `id`) is running.
    pub(in crate::daemon) fn running(&self, kind: JobKind, id: &ManifestId) -> bool {
        self.jobs
            .lock()
            .expect("never poisoned")
            .get(&(kind, *id))
            .is_some_and(|j| j.progress.borrow().status == JobStatus::Running)
    }

    /// A watcher on a job's progress.
    pub fn watch(&self, kind: JobKind, id: &ManifestId) -> Option<watch::Receiver<JobProgress>> {
        self.jobs
            .lock()
            .expect("never poisoned")
            .get(&(kind, *id))
            .map(|j| j.progress.clone())
    }
}
