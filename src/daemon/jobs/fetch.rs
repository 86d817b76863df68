//! The fetch job: fetch a share into a folder, then re-seed it.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::daemon::control::JobKind;
use crate::daemon::state::{FetchRecord, JobStatus, Origin};
use crate::daemon::Daemon;
use crate::link::Link;
use crate::net::fetch::{fetch, Fetched, Progress};

impl Daemon {
    /// Starts the fetch job of `rec` (a record already in the state).
    pub(in crate::daemon) fn start_fetch(self: &Arc<Self>, rec: FetchRecord) {
        self.spawn_job(JobKind::Fetch, rec.id, move |me, ptx| {
            me.run_fetch(rec, ptx)
        });
    }

    async fn run_fetch(
        self: Arc<Self>,
        mut rec: FetchRecord,
        ptx: mpsc::UnboundedSender<Progress>,
    ) -> JobStatus {
        // The link holds the key from here on; this copy is dropped (and
        // zeroed) now rather than kept for the whole fetch.
        let Some(key) = rec.key.take().and_then(|k| k.to_key()) else {
            return JobStatus::Failed {
                error: "the saved key is unreadable; fetch the link again".into(),
            };
        };
        let link = Link::new(rec.id, Vec::new(), Some(key)).expect("no hints");
        let sources = Daemon::parse_sources(&rec.sources);
        let opts = self.fetch_options(rec.force);
        let r = fetch(&self.client, &link, sources, &rec.out, &opts, ptx).await;
        let status = match &r {
            Ok(done) => {
                if self.config.reseed {
                    self.reseed(&link, done);
                }
                JobStatus::Done
            }
            Err(e) => {
                tracing::warn!(id = %rec.id, "fetch failed: {e}");
                JobStatus::Failed {
                    error: e.to_string(),
                }
            }
        };
        self.update_state(|st| {
            if let Some(f) = st.fetch_mut(&rec.id) {
                f.status = status.clone();
                if let Ok(done) = &r {
                    f.bytes = done.metadata.content_len();
                    f.paths = done.paths.clone();
                }
                // Kept only while needed to resume: a re-seeded share keeps
                // its own copy, and fetching again takes the link again.
                f.key = None;
            }
        });
        status
    }

    /// Serves what a fetch wrote, from where it wrote it.
    fn reseed(&self, link: &Link, done: &Fetched) {
        let roots = done
            .paths
            .iter()
            .filter_map(|p| Some((p.file_name()?.to_str()?.to_owned(), p.clone())))
            .collect();
        let key = link.key().expect("a read link");
        if let Err(e) = self.keep_share(key, &done.manifest, &done.metadata, roots, Origin::Fetched)
        {
            tracing::warn!("cannot re-seed {}: {e}", link.manifest_id());
        }
    }
}
