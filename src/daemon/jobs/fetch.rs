//! The fetch job: fetch a share into a folder, then re-seed it.

use std::sync::Arc;

use crate::daemon::state::{JobStatus, Origin};
use crate::daemon::Daemon;
use crate::link::Link;
use crate::manifest::ManifestId;
use crate::net::fetch::{fetch, Fetched, ProgressTx};
use crate::store::output::OutputOptions;

impl Daemon {
    /// Runs fetch `id` (its record is in the state) and records how it
    /// ended.
    pub(super) async fn run_fetch(self: Arc<Self>, id: ManifestId, ptx: ProgressTx) -> JobStatus {
        let rec = self
            .commit_or_log(|tx| {
                tx.fetch(&id, |f| {
                    f.status = JobStatus::Running;
                    f.clone()
                })
            })
            .await
            .flatten();
        let Some(mut rec) = rec else {
            return JobStatus::Failed {
                error: "the fetch's record is gone; fetch the link again".into(),
            };
        };
        // The link holds the key from here on; this copy is dropped (and
        // zeroed) now rather than kept for the whole fetch.
        let Some(key) = rec.key.take().and_then(|k| k.to_key()) else {
            let status = JobStatus::Failed {
                error: "the saved key is unreadable; fetch the link again".into(),
            };
            self.set_status(crate::daemon::control::JobKind::Fetch, &id, status.clone())
                .await;
            return status;
        };
        let link = Link::new(rec.id, Vec::new(), Some(key)).expect("no hints");
        let sources = Daemon::parse_sources(&rec.sources);
        let opts = self.fetch_options(OutputOptions {
            force: rec.force,
            merge: rec.merge,
        });
        let r = fetch(&self.client, &link, sources, &rec.out, &opts, ptx).await;
        let status = match &r {
            Ok(done) => {
                if self.config.reseed {
                    self.reseed(&link, done).await;
                }
                JobStatus::Done
            }
            Err(e) => {
                tracing::warn!(%id, "fetch failed: {e}");
                JobStatus::Failed {
                    error: e.to_string(),
                }
            }
        };
        self.commit_or_log(|tx| {
            tx.fetch(&id, |f| {
                f.status = status.clone();
                if let Ok(done) = &r {
                    f.bytes = done.metadata.content_len();
                    f.paths = done.paths.clone();
                    // Kept only while needed to resume or retry: a
                    // re-seeded share keeps its own copy, and fetching
                    // again takes the link again.
                    f.key = None;
                }
            })
        })
        .await;
        status
    }

    /// Serves what a fetch wrote, from where it wrote it.
    async fn reseed(&self, link: &Link, done: &Fetched) {
        if !done.whole {
            // Part of a share cannot be served as the share.
            return;
        }
        let roots = done
            .paths
            .iter()
            .filter_map(|p| Some((p.file_name()?.to_str()?.to_owned(), p.clone())))
            .collect();
        let key = link.key().expect("a read link");
        if let Err(e) = self
            .keep_share(key, &done.manifest, &done.metadata, roots, Origin::Fetched)
            .await
        {
            tracing::warn!("cannot re-seed {}: {e}", link.manifest_id());
        }
    }
}
