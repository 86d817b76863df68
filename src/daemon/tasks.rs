//! Stopping cleanly: one stop signal for every task the daemon starts, and
//! sets of tasks that shutdown waits for (up to a deadline) instead of
//! aborting them.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// Tells tasks to stop. Cheap to clone; every clone sees the same signal.
#[derive(Clone)]
pub(super) struct Stop(watch::Receiver<bool>);

/// Raises the [`Stop`] signal.
pub(super) struct StopHandle(watch::Sender<bool>);

impl Stop {
    /// A signal, and the handle that raises it.
    pub(super) fn new() -> (StopHandle, Stop) {
        let (tx, rx) = watch::channel(false);
        (StopHandle(tx), Stop(rx))
    }

    /// Resolves once stopping was asked for (or the handle is gone).
    pub(super) async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether stopping was asked for.
    pub(super) fn requested(&self) -> bool {
        *self.0.borrow()
    }
}

impl StopHandle {
    /// Asks every task to stop.
    pub(super) fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Tasks that shutdown waits for.
#[derive(Default)]
pub(super) struct Tasks {
    set: Mutex<JoinSet<()>>,
}

impl Tasks {
    /// Runs `task`, to be waited for by [`Tasks::drain`].
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.set.lock().expect("never poisoned");
        // Finished tasks stay in the set until reaped: reap them here, so a
        // daemon that runs for months does not keep one entry per job.
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }

    /// Waits for every task until `within` has passed, then aborts the
    /// rest. Returns how many had to be aborted.
    pub(super) async fn drain(&self, within: Duration) -> usize {
        let mut set = std::mem::take(&mut *self.set.lock().expect("never poisoned"));
        drain(&mut set, within).await
    }
}

/// Waits for every task in `set` until `within` has passed, then aborts the
/// rest. Returns how many had to be aborted.
pub(super) async fn drain(set: &mut JoinSet<()>, within: Duration) -> usize {
    let all = async {
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                if e.is_panic() {
                    tracing::error!("a daemon task panicked: {e}");
                }
            }
        }
    };
    if tokio::time::timeout(within, all).await.is_ok() {
        return 0;
    }
    let left = set.len();
    set.abort_all();
    while set.join_next().await.is_some() {}
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_that_stop_and_aborts_those_that_do_not() {
        let (handle, stop) = Stop::new();
        let tasks = Tasks::default();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(4);
        for _ in 0..2 {
            let mut stop = stop.clone();
            let done = done_tx.clone();
            tasks.spawn(async move {
                stop.wait().await;
                done.send(()).await.unwrap();
            });
        }
        tasks.spawn(std::future::pending());
        assert!(!stop.requested());
        handle.stop();
        assert!(stop.requested());
        let started = std::time::Instant::now();
        assert_eq!(tasks.drain(Duration::from_millis(300)).await, 1);
        assert!(started.elapsed() >= Duration::from_millis(300));
        // The two that listened finished their work before the deadline.
        assert!(done_rx.try_recv().is_ok() && done_rx.try_recv().is_ok());
    }
}
