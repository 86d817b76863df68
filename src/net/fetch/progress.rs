//! The bounded queue a fetch reports its [`Progress`] on.
//!
//! A fetch never waits for whoever watches it: when the queue is full, an
//! event is dropped rather than queued. `Bytes` counts are cumulative, so
//! a dropped one is superseded by the next, and the final figures are in
//! the fetch's result; the other events are rare (a handful per fetch and
//! source), so a consumer that keeps up sees them all. What a hostile
//! source can make a fetch report (drops, waits) therefore costs at most
//! [`PROGRESS_QUEUE`] events of memory.

use tokio::sync::mpsc;

use super::Progress;

/// Events a fetch's progress queue holds before it drops new ones.
pub const PROGRESS_QUEUE: usize = 64;

/// The sending side of a fetch's progress queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct ProgressTx(mpsc::Sender<Progress>);

/// A bounded progress queue: pass the sender to a fetch, read the receiver.
pub fn progress_channel() -> (ProgressTx, mpsc::Receiver<Progress>) {
    let (tx, rx) = mpsc::channel(PROGRESS_QUEUE);
    (ProgressTx(tx), rx)
}

impl ProgressTx {
    /// Queues `event` if there is room; never waits (see the module docs).
    pub fn send(&self, event: Progress) {
        if let Err(mpsc::error::TrySendError::Full(e)) = self.0.try_send(event) {
            if !matches!(e, Progress::Bytes(_)) {
                tracing::debug!(event = ?e, "progress queue full; event dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer that never reads costs a bounded queue, and the sender
    /// never blocks; one that reads again gets the newest events.
    #[test]
    fn a_stalled_consumer_bounds_the_queue_and_never_blocks() {
        let (tx, mut rx) = progress_channel();
        for n in 0..100_000 {
            tx.send(Progress::Bytes(n));
        }
        let mut seen = 0;
        while let Ok(p) = rx.try_recv() {
            assert!(matches!(p, Progress::Bytes(n) if n < PROGRESS_QUEUE as u64));
            seen += 1;
        }
        assert_eq!(seen, PROGRESS_QUEUE);
        tx.send(Progress::Bytes(7));
        assert!(matches!(rx.try_recv(), Ok(Progress::Bytes(7))));
    }
}
