//! Served shares that survive a restart: each is a record in the state
//! (with its manifest and file list if small, else those are in
//! `shares/<id>/{manifest,metadata}`), and is served again from its files.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::crypto::ShareKey;
use crate::daemon::control::JobKind;
use crate::daemon::journal::Change;
use crate::daemon::registry::{Pinned, Served};
use crate::daemon::state::{self, Blob, JobStatus, Origin, ShareRecord, StoredKey, INLINE_MAX};
use crate::daemon::tasks::Stop;
use crate::daemon::{Daemon, JobProgress, KeptShareError};
use crate::manifest::{Manifest, ManifestId};
use crate::meta::Metadata;
use crate::store::share::LocalShare;
use crate::store::source::Source;

/// How long an expired share or pin is kept after its expiry (served to
/// nobody, shown `expired` in `list`) before the daemon forgets it as
/// `unshare` would: long enough to see what happened, and as long as the
/// DHT keeps the provider records others already hold of it.
pub(super) const EXPIRED_GRACE: Duration = Duration::from_secs(24 * 3600);

/// How often the daemon looks for shares and pins that expired.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(2);

impl Daemon {
    pub(super) fn share_dir(&self, id: &ManifestId) -> PathBuf {
        self.data_dir.join("shares").join(id.to_string())
    }

    /// Serves the shares and pins in the state, and queues again the jobs
    /// that were queued or running, in their order.
    pub(super) fn restore(self: &Arc<Self>) {
        let mut live: Vec<(i64, JobKind, ManifestId, JobProgress)> = Vec::new();
        {
            // Held throughout, instead of cloning the state (and its keys):
            // nothing here waits for the state lock.
            let state = self.state.lock().expect("never poisoned");
            for rec in &state.shares {
                if let Err(e) = self.serve_record(rec) {
                    tracing::warn!(id = %rec.id, "cannot serve a saved share: {e}");
                }
            }
            let saved = |bytes: u64, status: &JobStatus| JobProgress {
                bytes,
                total: bytes,
                status: status.clone(),
            };
            for pin in &state.pins {
                match pin.status {
                    JobStatus::Done => self.serve_pin(&pin.id),
                    ref s if s.is_live() => {
                        live.push((pin.rank, JobKind::Pin, pin.id, saved(pin.bytes, s)));
                    }
                    _ => {}
                }
            }
            for f in &state.fetches {
                if f.status.is_live() {
                    live.push((f.rank, JobKind::Fetch, f.id, saved(f.bytes, &f.status)));
                }
            }
        }
        // Interrupted ones first (they were running), then by rank.
        live.sort_by_key(|(rank, _, _, p)| (p.status != JobStatus::Running, *rank));
        if !live.is_empty() {
            tracing::info!(
                "queueing {} interrupted or waiting job(s) again",
                live.len()
            );
        }
        for (_, kind, id, progress) in live {
            let rank = self.jobs.lock().expect("never poisoned").back();
            self.enqueue(kind, id, rank, progress);
        }
    }

    /// Serves a finished pin from the chunk store.
    fn serve_pin(&self, id: &ManifestId) {
        let manifest = match self.chunks.get_manifest(id) {
            Ok(bytes) => Manifest::decode_verified(id, &bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match manifest {
            Ok(m) => {
                let expired = m.expires.is_some_and(|e| e.passed());
                self.registry
                    .add_pinned(*id, Pinned::new(m, self.chunks.clone()));
                if !expired {
                    self.announce(*id);
                }
            }
            Err(e) => tracing::warn!(%id, "cannot serve a pin: its manifest in the store: {e}"),
        }
    }

    /// Serves a saved share from its files.
    pub(super) fn serve_record(&self, rec: &ShareRecord) -> Result<(), KeptShareError> {
        let dir = self.share_dir(&rec.id);
        let id = rec.id;
        let key = rec.key.to_key().ok_or(KeptShareError::BadKey)?;
        let read = |inline: &Option<Blob>, name: &str| match inline {
            Some(b) => Ok(b.0.clone()),
            None => {
                let path = dir.join(name);
                fs::read(&path).map_err(KeptShareError::io(&path))
            }
        };
        let manifest = Manifest::decode_verified(&id, &read(&rec.manifest, "manifest")?)?;
        let metadata = Metadata::decode(&read(&rec.metadata, "metadata")?)?;
        let roots: HashMap<String, PathBuf> = rec.roots.clone().into_iter().collect();
        let source = Source::from_metadata(metadata, &roots)?;
        let share = LocalShare::open(source, &key, manifest).ok_or(KeptShareError::WrongKey)?;
        let limit = rec
            .max_downloads
            .map(|n| (crate::crypto::DoneKey::new(&key), n));
        // A peer id that does not parse (edited by hand) is not counted.
        let counted = rec.downloaded_by.iter().filter_map(|p| p.parse().ok());
        let expired = share.manifest().expires.is_some_and(|e| e.passed());
        self.registry.add_local(share, limit, counted);
        // An expired share stays listed (as expired) until the grace ends,
        // but is not announced.
        if !expired {
            self.announce(id);
        }
        Ok(())
    }

    /// Serves a share and returns its record, for the caller to commit (a
    /// small share's manifest and file list go into the record, a large
    /// one's are written to `shares/<id>/`).
    pub(super) fn serve_share(
        &self,
        key: &ShareKey,
        manifest: &Manifest,
        metadata: &Metadata,
        roots: BTreeMap<String, PathBuf>,
        origin: Origin,
        max_downloads: Option<u32>,
    ) -> Result<ShareRecord, KeptShareError> {
        let id = manifest.id();
        let (m, meta) = (manifest.encode(), metadata.encode());
        let inline = m.len() + meta.len() <= INLINE_MAX;
        if !inline {
            let dir = self.share_dir(&id);
            fs::create_dir_all(&dir).map_err(KeptShareError::io(&dir))?;
            let write = |name: &str, bytes: &[u8]| {
                let path = dir.join(name);
                state::write_private(&path, bytes).map_err(KeptShareError::io(&path))
            };
            write("manifest", &m)?;
            write("metadata", &meta)?;
        }
        let (manifest, metadata_blob) = if inline {
            (Some(Blob(m)), Some(Blob(meta)))
        } else {
            (None, None)
        };
        let rec = ShareRecord {
            id,
            key: StoredKey::of(key),
            roots,
            origin,
            bytes: metadata.content_len(),
            files: metadata.file_count(),
            manifest,
            metadata: metadata_blob,
            max_downloads,
            downloaded_by: Vec::new(),
        };
        self.serve_record(&rec)?;
        Ok(rec)
    }

    /// Saves each receiver counted against a share's download limit in its
    /// record (see [`crate::daemon::registry::Registry::report_downloads`]), until the daemon stops.
    pub(super) async fn keep_downloads(
        self: Arc<Self>,
        mut counted: mpsc::Receiver<(ManifestId, PeerId)>,
        mut stop: Stop,
    ) {
        loop {
            let (id, peer) = tokio::select! {
                c = counted.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
                () = stop.wait() => {
                    // Those counted just before the stop still go out with
                    // the last journal writes.
                    while let Ok((id, peer)) = counted.try_recv() {
                        self.note_download(&id, &peer).await;
                    }
                    return;
                }
            };
            self.note_download(&id, &peer).await;
        }
    }

    /// Withdraws shares and pins whose expiry passed: they are no longer
    /// announced in the DHT (the server already answers `NotFound` for
    /// them), and once [`EXPIRED_GRACE`] has passed too they are forgotten
    /// as `unshare` forgets them. Runs until the daemon stops.
    pub(super) async fn watch_expiry(self: Arc<Self>, mut stop: Stop) {
        let mut withdrawn: std::collections::HashSet<ManifestId> = Default::default();
        let mut tick = tokio::time::interval(EXPIRY_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.requested() {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.wait() => return,
            }
            let ids: Vec<ManifestId> = {
                let st = self.state.lock().expect("never poisoned");
                let pins = st.pins.iter().filter(|p| p.status == JobStatus::Done);
                st.shares
                    .iter()
                    .map(|s| s.id)
                    .chain(pins.map(|p| p.id))
                    .collect()
            };
            let now = SystemTime::now();
            for id in ids {
                let expires = match self.registry.get(&id).as_deref() {
                    Some(Served::Local(p)) => p.share().manifest().expires,
                    Some(Served::Pinned(p)) => p.manifest().expires,
                    None => None,
                };
                let Some(e) = expires.filter(|e| e.passed_at(now)) else {
                    continue;
                };
                if withdrawn.insert(id) {
                    tracing::info!(%id, "the share expired at {e}; no longer announced");
                    self.client.unprovide(id.locator().to_vec()).await;
                }
                if now >= e.time() + EXPIRED_GRACE {
                    tracing::info!(%id, "the share expired over {EXPIRED_GRACE:?} ago; forgetting it");
                    let prefix = id.to_string().parse().expect("a whole id is a prefix");
                    if let Err(e) = self.unshare(&prefix).await {
                        tracing::warn!(%id, "cannot forget an expired share: {e}");
                    }
                    withdrawn.remove(&id);
                }
            }
        }
    }

    /// Adds `peer` to the receivers counted in share `id`'s record, and
    /// waits until that is durable (the serving side does not wait: it
    /// counts in memory at once).
    async fn note_download(&self, id: &ManifestId, peer: &PeerId) {
        let peer = peer.to_base58();
        self.commit_or_log(|tx| {
            let Some(rec) = tx.state().shares.iter().find(|s| s.id == *id) else {
                return;
            };
            let max = rec.max_downloads.unwrap_or(0) as usize;
            if rec.downloaded_by.len() >= max || rec.downloaded_by.contains(&peer) {
                return;
            }
            let mut rec = rec.clone();
            rec.downloaded_by.push(peer);
            tx.change(Change::Share(rec));
        })
        .await;
    }
}
