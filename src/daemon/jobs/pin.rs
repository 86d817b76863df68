//! The pin job: fetch a share's ciphertext into the chunk store, then serve it.

use std::sync::Arc;

use crate::daemon::ids::parse_id;
use crate::daemon::registry::Pinned;
use crate::daemon::state::{JobStatus, PinRecord};
use crate::daemon::Daemon;
use crate::net::fetch::fetch_ciphertext;

impl Daemon {
    pub(in crate::daemon) fn start_pin(self: &Arc<Self>, rec: PinRecord) {
        let Some(id) = parse_id(&rec.id) else { return };
        self.spawn_job(id, "pin", move |me, ptx| async move {
            let sources = Daemon::parse_sources(&rec.sources);
            let r = fetch_ciphertext(
                &me.client,
                id,
                sources,
                &me.store,
                &me.fetch_options(false),
                ptx,
            )
            .await;
            match r {
                Ok(m) => {
                    let bytes = m.sealed_size();
                    me.registry.add_pinned(id, Pinned::new(m, me.store.clone()));
                    me.announce(id);
                    me.update_pin(&rec.id, |p| {
                        p.status = JobStatus::Done;
                        p.bytes = bytes;
                    });
                    JobStatus::Done
                }
                Err(e) => {
                    let error = e.to_string();
                    me.update_pin(&rec.id, |p| {
                        p.status = JobStatus::Failed {
                            error: error.clone(),
                        }
                    });
                    JobStatus::Failed { error }
                }
            }
        });
    }

    pub(in crate::daemon) fn update_pin(&self, id: &str, f: impl FnOnce(&mut PinRecord)) {
        let mut st = self.state.lock().expect("never poisoned");
        if let Some(r) = st.pins.iter_mut().find(|r| r.id == id) {
            f(r);
        }
        self.save(&st);
    }
}
