//! Which shares are stale (a file changed since the share was made, or it
//! could not be loaded at start), found by a watcher in the background so
//! that `list` answers from memory.
//!
//! Why not check in `list`: it takes a `stat` per file of every share,
//! which with 10,000 shares was 36 ms of every `list` (p50), under the
//! state lock's shadow and growing with every file shared. Serving never
//! depends on this: every chunk is checked against its files when it is
//! read, and a changed one is refused whatever `list` says.
//!
//! The watcher sweeps every share, then pauses [`PACE`] times as long as
//! the sweep took (at least [`MIN_PAUSE`]): it takes at most about 1/`PACE`
//! of one core however many files are shared, and `list` is at most one
//! sweep and one pause behind.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::registry::Served;
use crate::daemon::tasks::Stop;
use crate::daemon::Daemon;
use crate::manifest::ManifestId;

/// The shortest pause between two sweeps.
pub(super) const MIN_PAUSE: Duration = Duration::from_secs(2);
/// A pause is this many times the sweep before it.
const PACE: u32 = 20;

/// The shares the last sweep found stale.
#[derive(Default)]
pub(super) struct StaleShares(Mutex<HashSet<ManifestId>>);

impl StaleShares {
    /// The shares the last sweep found stale, held while a listing reads
    /// them.
    pub(super) fn get(&self) -> std::sync::MutexGuard<'_, HashSet<ManifestId>> {
        self.0.lock().expect("never poisoned")
    }

    fn replace(&self, found: HashSet<ManifestId>) {
        *self.0.lock().expect("never poisoned") = found;
    }
}

impl Daemon {
    /// Sweeps the served shares for changed files until `stop`.
    pub(super) async fn watch_staleness(self: Arc<Self>, mut stop: Stop) {
        while !stop.requested() {
            let started = Instant::now();
            let ids: Vec<ManifestId> = {
                let st = self.state.lock().expect("never poisoned");
                st.shares.iter().map(|s| s.id).collect()
            };
            let (me, sweep_stop) = (self.clone(), stop.clone());
            let sweep = tokio::task::spawn_blocking(move || {
                let mut stale = HashSet::new();
                for id in ids {
                    // A share of many files takes a while: stop between shares.
                    if sweep_stop.requested() {
                        return None;
                    }
                    // Not served at all: it could not be loaded at start.
                    let fresh = me
                        .registry
                        .get(&id)
                        .is_some_and(|s| matches!(&*s, Served::Local(p) if !p.share().is_stale()));
                    if !fresh {
                        stale.insert(id);
                    }
                }
                Some(stale)
            });
            match sweep.await {
                Ok(Some(found)) => self.stale.replace(found),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("the staleness sweep failed: {e}");
                    return;
                }
            }
            let pause = started.elapsed().saturating_mul(PACE).max(MIN_PAUSE);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.wait() => {}
            }
        }
    }
}
