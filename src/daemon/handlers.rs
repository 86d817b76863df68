//! What the daemon does for each control request: one method per command,
//! taking the command's request type and returning its reply type (see
//! `control::proto`). `fetch` and `pin` return the job's id; the control
//! server then follows the job.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use libp2p::multiaddr::Protocol;

use crate::crypto::ShareKey;
use tokio::sync::watch;

use crate::daemon::control::{
    CancelRequest, Connection, FetchRequest, FetchRow, IdPrefix, JobKind, JobStateReply, LinkReply,
    LinkRequest, ListReply, PinRequest, PinRow, PriorityRequest, Reachability, Relay, RelayState,
    RetryRequest, ShareReply, ShareRequest, ShareRow, ShareState, StatusReply, Transfer,
    UnshareReply,
};
use crate::daemon::ids::find_id;
use crate::daemon::journal::Change;
use crate::daemon::registry::Served;
use crate::daemon::state::{FetchRecord, JobStatus, Origin, PinRecord, State, StoredKey};
use crate::daemon::{Daemon, IdError, JobProgress, KeptShareError, RequestError};
use crate::link::Link;
use crate::manifest::ManifestId;
use crate::net::status as net;
use crate::seal::SealOptions;
use crate::select::Selection;
use crate::store::share::LocalShare;

impl Daemon {
    /// `share`: seals the paths (reading them once) and serves them.
    pub async fn share(self: &Arc<Self>, req: ShareRequest) -> Result<ShareReply, RequestError> {
        let ShareRequest {
            paths,
            hints,
            expires,
            max_downloads,
        } = req;
        if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
            return Err(RequestError::NotAbsolute(p.clone()));
        }
        self.check_not_data_dir(&paths)?;
        let key = ShareKey::generate()?;
        let seal_key = key.duplicate();
        let seal_paths = paths.clone();
        let share = tokio::task::spawn_blocking(move || {
            let opts = SealOptions {
                expires,
                ..SealOptions::default()
            };
            LocalShare::create(&seal_paths, &seal_key, &opts, |_| {})
        })
        .await??;
        let skipped = share
            .source()
            .skipped()
            .iter()
            // Escaped: a hostile name in the shared folder must not
            // drive the terminal that prints this list (audit F-16).
            .map(|s| format!("{}: {}", crate::store::shown(&s.path), s.reason))
            .collect();
        let roots: BTreeMap<String, PathBuf> = share
            .source()
            .metadata()
            .entries()
            .iter()
            .filter(|e| e.path.parent().is_none())
            .filter_map(|e| {
                let p = paths
                    .iter()
                    .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(e.path.as_str()))?;
                Some((e.path.as_str().to_owned(), p.clone()))
            })
            .collect();
        let metadata = share.source().metadata();
        let rec = self.serve_share(
            &key,
            share.manifest(),
            metadata,
            roots,
            Origin::Shared,
            max_downloads,
        )?;
        let id = rec.id;
        self.commit(|tx| tx.change(Change::Share(rec))).await?;
        let link = if hints {
            self.link_for(id, Some(key)).await
        } else {
            Link::new(id, Vec::new(), Some(key))
                .expect("no hints")
                .with_expiry(expires)
                .to_uri_string()
        };
        Ok(ShareReply {
            id,
            link,
            files: metadata.file_count() as u64,
            bytes: metadata.content_len(),
            skipped,
        })
    }

    /// Refuses a path that holds the data dir or lies inside it: sharing it
    /// would hand out `state.json`'s keys and the node identity. (Symbolic
    /// links inside a shared tree are never followed.)
    fn check_not_data_dir(&self, paths: &[PathBuf]) -> Result<(), RequestError> {
        let Ok(own) = fs::canonicalize(&self.data_dir) else {
            return Ok(());
        };
        // What the local UI stored there holds no key and no identity.
        let uploads = own.join(crate::web::ui::UPLOAD_DIR);
        for p in paths {
            // A path that does not resolve is reported by the scan.
            let Ok(real) = fs::canonicalize(p) else {
                continue;
            };
            if real.starts_with(&uploads) && real != uploads {
                continue;
            }
            if own.starts_with(&real) || real.starts_with(&own) {
                return Err(RequestError::HoldsDataDir {
                    path: p.clone(),
                    data_dir: self.data_dir.clone(),
                });
            }
        }
        Ok(())
    }

    /// `fetch`: queues (or joins) a background fetch; returns its id and a
    /// watcher on its progress.
    pub async fn fetch(
        self: &Arc<Self>,
        req: FetchRequest,
    ) -> Result<(ManifestId, watch::Receiver<JobProgress>), RequestError> {
        let link = Link::parse_read_link(&req.link)?;
        if !req.out.is_absolute() {
            return Err(RequestError::NotAbsolute(req.out));
        }
        Daemon::check_peers(&req.peers)?;
        // Checked here so that a bad pattern starts no job.
        Selection::new(&req.only, &req.exclude)?;
        let id = *link.manifest_id();
        let key = StoredKey::of(link.require_key()?);
        let sources = Daemon::sources_of(&link, &req.peers);
        let rank = self.jobs.lock().expect("never poisoned").back();
        // Checked and recorded under the state lock, so two requests for
        // the same share cannot both start it.
        let (joined, durable) = self.commit_soon(|tx| {
            if self.live(JobKind::Fetch, &id) {
                // Join it, but only if it is the same request.
                return match tx.state().fetches.iter().find(|f| f.id == id) {
                    Some(r) if r.out != req.out => {
                        Err(RequestError::FetchingElsewhere(r.out.clone()))
                    }
                    Some(r) if (&r.only, &r.exclude) != (&req.only, &req.exclude) => {
                        Err(RequestError::FetchingOtherPart(r.out.clone()))
                    }
                    _ => Ok(()),
                };
            }
            tx.change(Change::Fetch(FetchRecord {
                id,
                key: Some(key),
                out: req.out,
                sources,
                force: req.force,
                merge: req.merge,
                status: JobStatus::Queued,
                bytes: 0,
                paths: Vec::new(),
                rank,
                only: req.only,
                exclude: req.exclude,
            }));
            Ok(())
        });
        joined?;
        let progress = JobProgress {
            bytes: 0,
            total: 0,
            status: JobStatus::Queued,
        };
        let rx = self.enqueue(JobKind::Fetch, id, rank, progress);
        // The job starts while its record is flushed (a crash before that
        // loses a request nobody was answered yet): the answer waits.
        durable.wait().await?;
        Ok((id, rx))
    }

    /// `pin`: queues (or joins) a background pin; refuses read links, so
    /// the key can never be stored here.
    pub async fn pin(
        self: &Arc<Self>,
        req: PinRequest,
    ) -> Result<(ManifestId, watch::Receiver<JobProgress>), RequestError> {
        let link: Link = req.link.parse()?;
        if link.key().is_some() {
            return Err(RequestError::ReadLinkForPin);
        }
        Daemon::check_peers(&req.peers)?;
        let id = *link.manifest_id();
        let sources = Daemon::sources_of(&link, &req.peers);
        let rank = self.jobs.lock().expect("never poisoned").back();
        self.commit(|tx| {
            if !self.live(JobKind::Pin, &id) {
                tx.change(Change::Pin(PinRecord {
                    id,
                    sources,
                    status: JobStatus::Queued,
                    bytes: 0,
                    rank,
                }));
            }
        })
        .await?;
        let progress = JobProgress {
            bytes: 0,
            total: 0,
            status: JobStatus::Queued,
        };
        Ok((id, self.enqueue(JobKind::Pin, id, rank, progress)))
    }

    /// The one fetch or pin that `prefix` (and `kind`, if given) names.
    fn find_job(
        &self,
        prefix: &IdPrefix,
        kind: Option<JobKind>,
    ) -> Result<(JobKind, ManifestId, JobStatus), RequestError> {
        let st = self.state.lock().expect("never poisoned");
        let fetches = st.fetches.iter().map(|f| (JobKind::Fetch, f.id, &f.status));
        let pins = st.pins.iter().map(|p| (JobKind::Pin, p.id, &p.status));
        let mut found = fetches
            .chain(pins)
            .filter(|(k, id, _)| kind.is_none_or(|want| want == *k) && prefix.matches(id));
        let Some((k, id, status)) = found.next() else {
            return Err(RequestError::NoSuchJobId(prefix.to_string()));
        };
        if let Some((k2, id2, _)) = found.next() {
            return Err(if id2 == id && k2 != k {
                RequestError::WhichJob(prefix.to_string())
            } else {
                IdError::Ambiguous(prefix.to_string()).into()
            });
        }
        Ok((k, id, status.clone()))
    }

    /// The status in the record of job (`kind`, `id`).
    fn job_status(&self, kind: JobKind, id: &ManifestId) -> JobStatus {
        let st = self.state.lock().expect("never poisoned");
        let status = match kind {
            JobKind::Fetch => st.fetches.iter().find(|f| f.id == *id).map(|f| &f.status),
            JobKind::Pin => st.pins.iter().find(|p| p.id == *id).map(|p| &p.status),
        };
        status.cloned().unwrap_or(JobStatus::Cancelled)
    }

    /// `cancel`: stops a queued or running job; a failed job's partial data
    /// is removed too (unless `keep`).
    pub async fn cancel(
        self: &Arc<Self>,
        req: &CancelRequest,
    ) -> Result<JobStateReply, RequestError> {
        let (kind, id, status) = self.find_job(&req.id, req.kind)?;
        match status {
            JobStatus::Done => {
                return Err(RequestError::JobState {
                    kind,
                    id,
                    state: "done",
                    what: "nothing to cancel (unshare stops serving it)",
                })
            }
            JobStatus::Queued | JobStatus::Running => {
                self.stop_job(kind, &id, req.keep).await;
            }
            JobStatus::Failed { .. } | JobStatus::Cancelled => {
                if !req.keep {
                    self.discard(kind, &id).await;
                }
                self.set_status(kind, &id, JobStatus::Cancelled).await;
            }
        }
        Ok(JobStateReply {
            id,
            kind,
            status: self.job_status(kind, &id),
        })
    }

    /// `retry`: queues a failed or cancelled job again, at the back.
    pub async fn retry(
        self: &Arc<Self>,
        req: &RetryRequest,
    ) -> Result<JobStateReply, RequestError> {
        let (kind, id, status) = self.find_job(&req.id, req.kind)?;
        let state = match status {
            JobStatus::Failed { .. } | JobStatus::Cancelled => None,
            JobStatus::Queued => Some("queued"),
            JobStatus::Running => Some("running"),
            JobStatus::Done => Some("done"),
        };
        if let Some(state) = state {
            return Err(RequestError::JobState {
                kind,
                id,
                state,
                what: "only a failed or cancelled job can be retried",
            });
        }
        let rank = self.jobs.lock().expect("never poisoned").back();
        let bytes = self
            .commit(|tx| match kind {
                JobKind::Fetch => tx
                    .fetch(&id, |f| {
                        if f.key.is_none() {
                            return Err(RequestError::JobState {
                                kind,
                                id,
                                state: "without its key",
                                what: "fetch the link again",
                            });
                        }
                        f.status = JobStatus::Queued;
                        f.rank = rank;
                        Ok(f.bytes)
                    })
                    .unwrap_or(Ok(0)),
                JobKind::Pin => Ok(tx
                    .pin(&id, |p| {
                        p.status = JobStatus::Queued;
                        p.rank = rank;
                        p.bytes
                    })
                    .unwrap_or(0)),
            })
            .await??;
        let progress = JobProgress {
            bytes,
            total: bytes,
            status: JobStatus::Queued,
        };
        self.enqueue(kind, id, rank, progress);
        Ok(JobStateReply {
            id,
            kind,
            status: self.job_status(kind, &id),
        })
    }

    /// `priority`: runs a queued job next.
    pub async fn priority(&self, req: &PriorityRequest) -> Result<JobStateReply, RequestError> {
        let (kind, id, status) = self.find_job(&req.id, req.kind)?;
        if !self.run_next(kind, &id).await {
            let state = match status {
                JobStatus::Running => "running already",
                JobStatus::Done => "done",
                JobStatus::Failed { .. } => "failed",
                JobStatus::Cancelled => "cancelled",
                JobStatus::Queued => "not in the queue",
            };
            return Err(RequestError::JobState {
                kind,
                id,
                state,
                what: "only a queued job can be moved to the front (retry queues a failed one)",
            });
        }
        Ok(JobStateReply {
            id,
            kind,
            status: self.job_status(kind, &id),
        })
    }

    /// `list`: shares, pins and fetches.
    pub fn list(&self) -> ListReply {
        // Rows are built under the locks: the state (with its keys) is not
        // copied.
        let st = self.state.lock().expect("never poisoned");
        let jobs = self.jobs.lock().expect("never poisoned");
        let progress = |kind: JobKind, id: &ManifestId, saved: u64| {
            let live: Option<JobProgress> = jobs
                .table
                .get(&(kind, *id))
                .map(|j| j.progress.borrow().clone());
            live.map_or((saved, saved), |p| (p.bytes, p.total.max(saved)))
        };
        // Stale as the watcher last found it (see `stale`).
        let stale = self.stale.get();
        let shares = st
            .shares
            .iter()
            .map(|s| ShareRow {
                id: s.id,
                origin: s.origin,
                names: s.roots.keys().cloned().collect(),
                files: s.files as u64,
                bytes: s.bytes,
                state: match self.registry.get(&s.id).as_deref() {
                    Some(Served::Local(p)) if p.expired() => ShareState::Expired,
                    Some(Served::Local(p)) if p.used_up() => ShareState::UsedUp,
                    _ if !stale.is_empty() && stale.contains(&s.id) => ShareState::Stale,
                    _ => ShareState::Serving,
                },
                max_downloads: s.max_downloads,
                downloads: match self.registry.get(&s.id).as_deref() {
                    Some(Served::Local(p)) if s.max_downloads.is_some() => {
                        Some(p.downloads() as u64)
                    }
                    _ => None,
                },
            })
            .collect();
        drop(stale);
        let fetches = st
            .fetches
            .iter()
            .map(|f| {
                let (bytes, total) = progress(JobKind::Fetch, &f.id, f.bytes);
                FetchRow {
                    id: f.id,
                    out: f.out.clone(),
                    status: f.status.clone(),
                    bytes,
                    total,
                    sources: f.sources.clone(),
                }
            })
            .collect();
        let pins = st
            .pins
            .iter()
            .map(|p| {
                let (bytes, total) = progress(JobKind::Pin, &p.id, p.bytes);
                PinRow {
                    id: p.id,
                    status: p.status.clone(),
                    bytes,
                    total,
                    sources: p.sources.clone(),
                    expired: crate::net::serve::Provider::expires(&*self.registry, &p.id)
                        .is_some_and(|e| e.passed()),
                }
            })
            .collect();
        drop(jobs);
        drop(st);
        ListReply {
            shares,
            fetches,
            pins,
        }
    }

    /// `unshare`: stops serving a share or pin and forgets it (files shared
    /// or fetched stay where they are; a pin's chunks stay in the store).
    /// A running or queued pin is stopped first.
    pub async fn unshare(
        self: &Arc<Self>,
        prefix: &IdPrefix,
    ) -> Result<UnshareReply, RequestError> {
        let id = served_id(&self.state.lock().expect("never poisoned"), prefix)?;
        // Its chunks stay, as the unshare of a finished pin leaves them.
        self.stop_job(JobKind::Pin, &id, true).await;
        let uploads = self.data_dir.join(crate::web::ui::UPLOAD_DIR);
        let dropped = self
            .commit(|tx| {
                let st = tx.state();
                // Folders the local UI stored a dropped file in for this
                // share alone: copies the daemon made, removed with it.
                let dropped: Vec<PathBuf> = st
                    .shares
                    .iter()
                    .filter(|s| s.id == id)
                    .flat_map(|s| s.roots.values())
                    .filter_map(|r| r.parent())
                    .filter(|f| f.parent() == Some(uploads.as_path()))
                    .filter(|f| {
                        !st.shares
                            .iter()
                            .any(|o| o.id != id && o.roots.values().any(|r| r.starts_with(f)))
                    })
                    .map(PathBuf::from)
                    .collect();
                if st.shares.iter().any(|s| s.id == id) {
                    tx.change(Change::Unshare { id });
                }
                if tx.state().pins.iter().any(|p| p.id == id) {
                    tx.change(Change::Unpin { id });
                }
                dropped
            })
            .await?;
        let _ = fs::remove_dir_all(self.share_dir(&id));
        self.registry.remove(&id);
        // Not announced any more (records other DHT nodes hold of it expire
        // on their own).
        self.client.unprovide(id.locator().to_vec()).await;
        for f in dropped {
            let _ = fs::remove_dir_all(f);
        }
        Ok(UnshareReply { id })
    }

    /// `link`: a share's read link again, or its pin link.
    pub async fn link(&self, req: &LinkRequest) -> Result<LinkReply, RequestError> {
        let (id, key) = {
            let st = self.state.lock().expect("never poisoned");
            let id = served_id(&st, &req.id)?;
            let key = match st.shares.iter().find(|s| s.id == id) {
                Some(s) if !req.pin => Some(s.key.to_key().ok_or(KeptShareError::BadKey)?),
                Some(_) => None,
                None if req.pin => None,
                None => return Err(RequestError::OnlyPinned),
            };
            (id, key)
        };
        Ok(LinkReply {
            id,
            link: self.link_for(id, key).await,
        })
    }

    /// `status`: identity, addresses, peers and transfers.
    pub async fn status(&self) -> StatusReply {
        let connected = self.client.connected().await.unwrap_or_default();
        let reach = self.client.reach_status().await.unwrap_or_default();
        let (transfers, queued) = {
            let jobs = self.jobs.lock().expect("never poisoned");
            let transfers = jobs
                .table
                .iter()
                .filter_map(|(&(kind, id), j)| {
                    let p = j.progress.borrow().clone();
                    let secs = j.started?.elapsed().as_secs_f64().max(1e-3);
                    (p.status == JobStatus::Running).then(|| Transfer {
                        id,
                        kind,
                        bytes: p.bytes,
                        total: p.total,
                        rate: (p.bytes as f64 / secs) as u64,
                    })
                })
                .collect();
            (transfers, jobs.queued() as u64)
        };
        StatusReply {
            peer_id: self.client.peer_id().to_base58(),
            listen: self
                .listen_addrs()
                .await
                .iter()
                .map(|a| a.to_string())
                .collect(),
            connected: connected
                .iter()
                .map(|(peer, addr)| Connection {
                    peer: peer.to_base58(),
                    addr: addr.to_string(),
                    // Relayed unless some connection to it is direct.
                    relayed: reach.connection(peer).map_or_else(
                        || addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)),
                        |c| !c.is_direct(),
                    ),
                })
                .collect(),
            transfers,
            queued,
            uploaded_bytes: self.registry.uploaded(),
            reseed: self.config.reseed,
            reachability: match reach.reachability {
                net::Reachability::Unknown => Reachability::Unknown,
                net::Reachability::Public => Reachability::Public,
                net::Reachability::Private => Reachability::Private,
            },
            external_addrs: reach.external_addrs.iter().map(|a| a.to_string()).collect(),
            relays: reach
                .relays
                .iter()
                .map(|r| Relay {
                    peer: r.peer.to_base58(),
                    circuit_addrs: r.circuit_addrs.iter().map(|a| a.to_string()).collect(),
                    state: match r.state {
                        net::RelayState::Requesting => RelayState::Requesting,
                        net::RelayState::Reserved => RelayState::Reserved,
                    },
                    configured: r.configured,
                })
                .collect(),
            cached_peers: self.peers.len() as u64,
            lan_peers: reach.lan_peers as u64,
            web: self.web,
            ui: self.ui.get().copied(),
        }
    }
}

/// The one share or pin id that `prefix` names (a re-seeded share can also
/// be pinned here: one id, two records).
fn served_id(st: &State, prefix: &IdPrefix) -> Result<ManifestId, IdError> {
    find_id(
        st.shares
            .iter()
            .map(|s| &s.id)
            .chain(st.pins.iter().map(|p| &p.id)),
        prefix,
    )
}
