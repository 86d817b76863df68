//! The fetch job: fetch a share into a folder, then re-seed it.

use std::sync::Arc;

use crate::daemon::ids::{key_from_hex, parse_id};
use crate::daemon::state::{FetchRecord, JobStatus, Origin};
use crate::daemon::Daemon;
use crate::link::Link;
use crate::net::fetch::fetch;

impl Daemon {
    pub(in crate::daemon) fn start_fetch(self: &Arc<Self>, rec: FetchRecord) {
        let Some(id) = parse_id(&rec.id) else { return };
        self.spawn_job(id, "fetch", move |me, ptx| async move {
            let Some(key) = key_from_hex(&rec.key) else {
                return JobStatus::Failed {
                    error: "the saved key is unreadable; fetch the link again".into(),
                };
            };
            let link = Link::new(id, Vec::new(), Some(key)).expect("no hints");
            let sources = Daemon::parse_sources(&rec.sources);
            let r = fetch(
                &me.client,
                &link,
                sources,
                &rec.out,
                &me.fetch_options(rec.force),
                ptx,
            )
            .await;
            match r {
                Ok(done) => {
                    if me.config.reseed {
                        let roots = done
                            .paths
                            .iter()
                            .filter_map(|p| Some((p.file_name()?.to_str()?.to_owned(), p.clone())))
                            .collect();
                        let key = link.key().expect("a read link");
                        if let Err(e) = me.keep_share(
                            key,
                            &done.manifest,
                            &done.metadata,
                            roots,
                            Origin::Fetched,
                        ) {
                            tracing::warn!("cannot re-seed {}: {e}", rec.id);
                        }
                    }
                    me.update_fetch(&rec.id, |f| {
                        f.status = JobStatus::Done;
                        f.bytes = done.bytes;
                        f.paths = done.paths.clone();
                        // Kept only while needed to resume (a re-seeded
                        // share keeps its own copy in its share record).
                        f.key.clear();
                    });
                    JobStatus::Done
                }
                Err(e) => {
                    let error = e.to_string();
                    tracing::warn!(id = %rec.id, "fetch failed: {error}");
                    me.update_fetch(&rec.id, |f| {
                        f.status = JobStatus::Failed {
                            error: error.clone(),
                        };
                        // Fetching again takes the link (and its key) again.
                        f.key.clear();
                    });
                    JobStatus::Failed { error }
                }
            }
        });
    }

    pub(in crate::daemon) fn update_fetch(&self, id: &str, f: impl FnOnce(&mut FetchRecord)) {
        let mut st = self.state.lock().expect("never poisoned");
        if let Some(r) = st.fetches.iter_mut().find(|r| r.id == id) {
            f(r);
        }
        self.save(&st);
    }
}
