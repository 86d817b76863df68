//! The fetch job: fetch a share into a folder, then re-seed it.

use std::sync::Arc;

use crate::daemon::control::JobKind;
use crate::daemon::journal::Change;
use crate::daemon::registry::Registry;
use crate::daemon::state::{JobStatus, Origin, ShareRecord};
use crate::daemon::Daemon;
use crate::link::Link;
use crate::manifest::ManifestId;
use crate::net::fetch::{fetch, FetchOptions, Fetched, Partial, ProgressTx};
use crate::store::output::OutputOptions;

/// A running fetch's (or pin's) partial holder in the registry, taken out
/// when the job ends, or when it is cancelled or the daemon stops (the
/// job's future is dropped where it waits).
pub(super) struct PartialServed {
    registry: Arc<Registry>,
    id: ManifestId,
}

impl PartialServed {
    /// Serves `partial` for `id` from `registry` until dropped.
    pub(super) fn new(registry: &Arc<Registry>, id: ManifestId, partial: Arc<Partial>) -> Self {
        registry.add_partial(id, partial);
        PartialServed {
            registry: registry.clone(),
            id,
        }
    }
}

impl Drop for PartialServed {
    fn drop(&mut self) {
        self.registry.remove_partial(&self.id);
    }
}

impl Daemon {
    /// Runs fetch `id` (its record is in the state) and records how it
    /// ended.
    pub(super) async fn run_fetch(self: Arc<Self>, id: ManifestId, ptx: ProgressTx) -> JobStatus {
        let rec = self.note(|tx| {
            tx.fetch(&id, |f| {
                f.status = JobStatus::Running;
                f.clone()
            })
        });
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
            self.set_status(JobKind::Fetch, &id, status.clone()).await;
            return status;
        };
        let link = Link::new(rec.id, Vec::new(), Some(key)).expect("no hints");
        let sources = Daemon::parse_sources(&rec.sources);
        // Checked when the fetch was asked for; a record edited by hand
        // since could still hold a bad pattern.
        let selection = match rec.selection() {
            Ok(s) => s,
            Err(e) => {
                let status = JobStatus::Failed {
                    error: e.to_string(),
                };
                self.set_status(JobKind::Fetch, &id, status.clone()).await;
                return status;
            }
        };
        // While it runs, the fetch serves what it verified (a partial
        // holder, as one-shot `receive` does), so that other fetchers of
        // the same link draw from it too (docs/PROTOCOL.md 5.4).
        let partial = Arc::new(Partial::new(id));
        let serving = PartialServed::new(&self.registry, id, partial.clone());
        let opts = FetchOptions {
            selection,
            serve_as: Some(partial),
            ..self.fetch_options(OutputOptions {
                force: rec.force,
                merge: rec.merge,
            })
        };
        let r = fetch(&self.client, &link, sources, &rec.out, &opts, ptx).await;
        let (status, reseeded) = match &r {
            Ok(done) => {
                let share = self.config.reseed.then(|| self.reseed(&link, done));
                (JobStatus::Done, share.flatten())
            }
            Err(e) => {
                tracing::warn!(%id, "fetch failed: {e}");
                let error = e.to_string();
                (JobStatus::Failed { error }, None)
            }
        };
        // The re-seeded share and the fetch's end in one journal write. The
        // share goes first, so a crash that keeps only it leaves the fetch
        // to resume, which finds it in place. Not waited for: the files
        // themselves are durable already (the output flushed them before
        // its renames), and a crash that loses this write only makes the
        // restarted daemon run the fetch again, which finds the share in
        // place (checked, nothing written) and re-seeds it; waiting would
        // put an `fdatasync` between every small fetch and its answer.
        self.note(|tx| {
            if let Some(share) = reseeded {
                tx.change(Change::Share(share));
            }
            tx.fetch(&id, |f| {
                f.status = status.clone();
                if let Ok(done) = &r {
                    // The chosen part's bytes, for a part of the share.
                    f.bytes = done.bytes;
                    f.paths = done.paths.clone();
                    // Kept only while needed to resume or retry: a
                    // re-seeded share keeps its own copy, and fetching
                    // again takes the link again.
                    f.key = None;
                }
            })
        });
        // The re-seeded share (if any) answers from now on.
        drop(serving);
        status
    }

    /// Serves what a fetch wrote, from where it wrote it; returns the
    /// share's record, to be committed with the fetch's end.
    fn reseed(&self, link: &Link, done: &Fetched) -> Option<ShareRecord> {
        if !done.whole {
            // Part of a share cannot be served as the share.
            return None;
        }
        let roots = done
            .paths
            .iter()
            .filter_map(|p| Some((p.file_name()?.to_str()?.to_owned(), p.clone())))
            .collect();
        let key = link.key().expect("a read link");
        self.serve_share(
            key,
            &done.manifest,
            &done.metadata,
            roots,
            Origin::Fetched,
            None,
        )
        .inspect_err(|e| tracing::warn!("cannot re-seed {}: {e}", link.manifest_id()))
        .ok()
    }
}
