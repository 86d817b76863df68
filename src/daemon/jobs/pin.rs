//! The pin job: fetch a share's ciphertext into the chunk store, then serve
//! it. It checks up front that the store's file system has room (bytes and
//! inodes, one file per chunk) and fails at once if not, instead of filling
//! the disk (audit F-12); a write that fails anyway (the disk filled up
//! meanwhile) fails the job the same way.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::fetch::PartialServed;
use crate::daemon::registry::Pinned;
use crate::daemon::state::JobStatus;
use crate::daemon::{Daemon, JobProgress};
use crate::manifest::{Manifest, ManifestId};
use crate::net::fetch::{fetch_ciphertext, FetchOptions, Partial, ProgressTx};
use crate::store::output::OutputOptions;

/// Bytes kept free beyond what a pin needs.
const SPARE_BYTES: u64 = 16 << 20;
/// Inodes kept free beyond one per chunk (and the store's fan-out folders).
const SPARE_INODES: u64 = 1024;

impl Daemon {
    /// Runs pin `id` (its record is in the state) and records how it ended.
    pub(super) async fn run_pin(
        self: Arc<Self>,
        id: ManifestId,
        ptx: ProgressTx,
        progress: watch::Receiver<JobProgress>,
    ) -> JobStatus {
        let rec = self.note(|tx| {
            tx.pin(&id, |p| {
                p.status = JobStatus::Running;
                p.clone()
            })
        });
        let Some(rec) = rec else {
            return JobStatus::Failed {
                error: "the pin's record is gone; pin the link again".into(),
            };
        };
        let sources = Daemon::parse_sources(&rec.sources);
        // While it runs, the pin serves the chunks it has stored (a
        // partial holder), as a fetch does.
        let partial = Arc::new(Partial::new(id));
        let serving = PartialServed::new(&self.registry, id, partial.clone());
        let opts = FetchOptions {
            serve_as: Some(partial),
            ..self.fetch_options(OutputOptions::default())
        };
        let r = tokio::select! {
            r = fetch_ciphertext(&self.client, id, sources, &self.chunks, &opts, ptx) => {
                r.map_err(|e| e.to_string())
            }
            e = self.no_room(id, progress) => Err(e),
        };
        let (status, bytes) = match r {
            Ok(m) => {
                let bytes = m.sealed_size();
                self.registry
                    .add_pinned(id, Pinned::new(m, self.chunks.clone()));
                self.announce(id);
                (JobStatus::Done, Some(bytes))
            }
            Err(error) => {
                tracing::warn!(%id, "pin failed: {error}");
                (JobStatus::Failed { error }, None)
            }
        };
        self.commit_or_log(|tx| {
            tx.pin(&id, |p| {
                p.status = status.clone();
                p.bytes = bytes.unwrap_or(p.bytes);
            })
        })
        .await;
        // The pinned share (if any) answers from now on.
        drop(serving);
        status
    }

    /// Resolves with an error once the pin's size is known and the store
    /// has no room for what is still to come; never resolves otherwise.
    async fn no_room(&self, id: ManifestId, mut progress: watch::Receiver<JobProgress>) -> String {
        let Ok(p) = progress.wait_for(|p| p.total > 0).await.map(|p| p.clone()) else {
            return std::future::pending().await;
        };
        let root = self.data_dir.join("store");
        // The manifest is in the store before the size is reported.
        let chunks = self
            .chunks
            .get_manifest(&id)
            .ok()
            .and_then(|b| Manifest::decode_verified(&id, &b).ok())
            .map_or(p.total / 1024, |m| m.chunk_count() as u64);
        let needed = p.total.saturating_sub(p.bytes);
        match room(&root, needed, chunks) {
            Ok(()) => std::future::pending().await,
            Err(e) => e,
        }
    }
}

/// Whether the file system of `dir` has room for `bytes` more in `files`
/// new files, with a margin; the error says what is short.
fn room(dir: &Path, bytes: u64, files: u64) -> Result<(), String> {
    let s = match rustix::fs::statvfs(dir) {
        Ok(s) => s,
        // Not knowing is no reason to refuse: a full disk still fails the
        // write, and so the job.
        Err(_) => return Ok(()),
    };
    let free = s.f_bavail.saturating_mul(s.f_frsize);
    if free < bytes.saturating_add(SPARE_BYTES) {
        return Err(format!(
            "not enough free space in {}: the pin needs {bytes} more bytes (and {SPARE_BYTES} spare), {free} are available; free some space or pin elsewhere",
            dir.display()
        ));
    }
    // Some file systems have no inode count (they report 0 of 0).
    if s.f_files > 0 && s.f_favail < files.saturating_add(SPARE_INODES) {
        return Err(format!(
            "not enough free inodes in {}: the pin needs {files} files, {} are available; free some files or pin elsewhere",
            dir.display(),
            s.f_favail
        ));
    }
    Ok(())
}
