//! Served shares that survive a restart: each is a record in the state plus
//! `shares/<id>/{manifest,metadata}`, and is served again from its files.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use crate::crypto::ShareKey;
use crate::daemon::registry::Pinned;
use crate::daemon::state::{self, JobStatus, Origin, ShareRecord, StoredKey};
use crate::daemon::{Daemon, KeptShareError};
use crate::manifest::{Manifest, ManifestId};
use crate::meta::Metadata;
use crate::store::share::LocalShare;
use crate::store::source::Source;

impl Daemon {
    pub(super) fn share_dir(&self, id: &ManifestId) -> PathBuf {
        self.data_dir.join("shares").join(id.to_string())
    }

    /// Serves the shares and pins in the state, and resumes interrupted jobs.
    pub(super) fn restore(self: &Arc<Self>) {
        // Held throughout, instead of cloning the state (and its keys):
        // nothing here waits for the state lock.
        let state = self.state.lock().expect("never poisoned");
        for rec in &state.shares {
            if let Err(e) = self.serve_record(rec) {
                tracing::warn!(id = %rec.id, "cannot serve a saved share: {e}");
            }
        }
        for pin in &state.pins {
            match pin.status {
                JobStatus::Done => self.serve_pin(&pin.id),
                JobStatus::Running => self.start_pin(pin.clone()),
                JobStatus::Failed { .. } => {}
            }
        }
        for f in &state.fetches {
            if f.status == JobStatus::Running {
                tracing::info!(id = %f.id, "resuming an interrupted fetch");
                self.start_fetch(f.clone());
            }
        }
    }

    /// Serves a finished pin from the chunk store.
    fn serve_pin(&self, id: &ManifestId) {
        let manifest = match self.store.get_manifest(id) {
            Ok(bytes) => Manifest::decode_verified(id, &bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match manifest {
            Ok(m) => {
                self.registry
                    .add_pinned(*id, Pinned::new(m, self.store.clone()));
                self.announce(*id);
            }
            Err(e) => tracing::warn!(%id, "cannot serve a pin: its manifest in the store: {e}"),
        }
    }

    /// Serves a saved share from its files.
    pub(super) fn serve_record(&self, rec: &ShareRecord) -> Result<(), KeptShareError> {
        let dir = self.share_dir(&rec.id);
        let id = rec.id;
        let key = rec.key.to_key().ok_or(KeptShareError::BadKey)?;
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read(&path).map_err(KeptShareError::io(&path))
        };
        let manifest = Manifest::decode_verified(&id, &read("manifest")?)?;
        let metadata = Metadata::decode(&read("metadata")?)?;
        let roots: HashMap<String, PathBuf> = rec.roots.clone().into_iter().collect();
        let source = Source::from_metadata(metadata, &roots)?;
        let share = LocalShare::open(source, &key, manifest).ok_or(KeptShareError::WrongKey)?;
        self.registry.add_local(share);
        self.announce(id);
        Ok(())
    }

    /// Persists and serves a share (its manifest and file list go to
    /// `shares/<id>/`).
    pub(super) fn keep_share(
        &self,
        key: &ShareKey,
        manifest: &Manifest,
        metadata: &Metadata,
        roots: BTreeMap<String, PathBuf>,
        origin: Origin,
    ) -> Result<ManifestId, KeptShareError> {
        let id = manifest.id();
        let dir = self.share_dir(&id);
        fs::create_dir_all(&dir).map_err(KeptShareError::io(&dir))?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            state::write_private(&path, bytes).map_err(KeptShareError::io(&path))
        };
        write("manifest", &manifest.encode())?;
        write("metadata", &metadata.encode())?;
        let rec = ShareRecord {
            id,
            key: StoredKey::of(key),
            roots,
            origin,
            bytes: metadata.content_len(),
            files: metadata.file_count(),
        };
        self.serve_record(&rec)?;
        self.update_state(|st| st.put_share(rec));
        Ok(id)
    }
}
