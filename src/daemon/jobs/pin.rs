//! The pin job: fetch a share's ciphertext into the chunk store, then serve it.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::daemon::control::JobKind;
use crate::daemon::registry::Pinned;
use crate::daemon::state::{JobStatus, PinRecord};
use crate::daemon::Daemon;
use crate::net::fetch::{fetch_ciphertext, Progress};

impl Daemon {
    /// Starts the pin job of `rec` (a record already in the state).
    pub(in crate::daemon) fn start_pin(self: &Arc<Self>, rec: PinRecord) {
        self.spawn_job(JobKind::Pin, rec.id, move |me, ptx| me.run_pin(rec, ptx));
    }

    async fn run_pin(
        self: Arc<Self>,
        rec: PinRecord,
        ptx: mpsc::UnboundedSender<Progress>,
    ) -> JobStatus {
        let id = rec.id;
        let sources = Daemon::parse_sources(&rec.sources);
        let opts = self.fetch_options(false);
        let r = fetch_ciphertext(&self.client, id, sources, &self.store, &opts, ptx).await;
        let (status, bytes) = match r {
            Ok(m) => {
                let bytes = m.sealed_size();
                self.registry
                    .add_pinned(id, Pinned::new(m, self.store.clone()));
                self.announce(id);
                (JobStatus::Done, Some(bytes))
            }
            Err(e) => {
                tracing::warn!(%id, "pin failed: {e}");
                (
                    JobStatus::Failed {
                        error: e.to_string(),
                    },
                    None,
                )
            }
        };
        self.update_state(|st| {
            if let Some(p) = st.pin_mut(&id) {
                p.status = status.clone();
                p.bytes = bytes.unwrap_or(p.bytes);
            }
        });
        status
    }
}
