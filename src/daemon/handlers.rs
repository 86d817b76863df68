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
use crate::daemon::control::{
    Connection, FetchRequest, FetchRow, IdPrefix, JobKind, LinkReply, LinkRequest, ListReply,
    PinRequest, PinRow, Reachability, Relay, RelayState, ShareReply, ShareRequest, ShareRow,
    ShareState, StatusReply, Transfer, UnshareReply,
};
use crate::daemon::ids::find_id;
use crate::daemon::registry::Served;
use crate::daemon::state::{FetchRecord, JobStatus, Origin, PinRecord, State, StoredKey};
use crate::daemon::{Daemon, IdError, JobProgress, KeptShareError, RequestError};
use crate::link::Link;
use crate::manifest::ManifestId;
use crate::net::status as net;
use crate::seal::SealOptions;
use crate::store::share::LocalShare;

impl Daemon {
    /// `share`: seals the paths (reading them once) and serves them.
    pub async fn share(self: &Arc<Self>, req: ShareRequest) -> Result<ShareReply, RequestError> {
        let ShareRequest { paths, hints } = req;
        if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
            return Err(RequestError::NotAbsolute(p.clone()));
        }
        self.check_not_data_dir(&paths)?;
        let key = ShareKey::generate()?;
        let seal_key = key.duplicate();
        let seal_paths = paths.clone();
        let share = tokio::task::spawn_blocking(move || {
            LocalShare::create(&seal_paths, &seal_key, &SealOptions::default(), |_| {})
        })
        .await??;
        let skipped = share
            .source()
            .skipped()
            .iter()
            .map(|s| format!("{}: {}", s.path.display(), s.reason))
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
        let id = self.keep_share(&key, share.manifest(), metadata, roots, Origin::Shared)?;
        let link = if hints {
            self.link_for(id, Some(key)).await
        } else {
            Link::new(id, Vec::new(), Some(key))
                .expect("no hints")
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
        for p in paths {
            // A path that does not resolve is reported by the scan.
            let Ok(real) = fs::canonicalize(p) else {
                continue;
            };
            if own.starts_with(&real) || real.starts_with(&own) {
                return Err(RequestError::HoldsDataDir {
                    path: p.clone(),
                    data_dir: self.data_dir.clone(),
                });
            }
        }
        Ok(())
    }

    /// `fetch`: starts (or joins) a background fetch; returns its id.
    pub fn fetch(self: &Arc<Self>, req: FetchRequest) -> Result<ManifestId, RequestError> {
        let link = Link::parse_read_link(&req.link)?;
        if !req.out.is_absolute() {
            return Err(RequestError::NotAbsolute(req.out));
        }
        Daemon::check_peers(&req.peers)?;
        let id = *link.manifest_id();
        if self.running(JobKind::Fetch, &id) {
            // Join it, but only if it is the same request.
            let st = self.state.lock().expect("never poisoned");
            if let Some(r) = st.fetches.iter().find(|f| f.id == id) {
                if r.out != req.out {
                    return Err(RequestError::FetchingElsewhere(r.out.clone()));
                }
            }
            return Ok(id);
        }
        let rec = FetchRecord {
            id,
            key: Some(StoredKey::of(link.require_key()?)),
            out: req.out,
            sources: Daemon::sources_of(&link, &req.peers),
            force: req.force,
            status: JobStatus::Running,
            bytes: 0,
            paths: Vec::new(),
        };
        self.update_state(|st| st.put_fetch(rec.clone()));
        self.start_fetch(rec);
        Ok(id)
    }

    /// `pin`: starts (or joins) a background pin; refuses read links, so
    /// the key can never be stored here.
    pub fn pin(self: &Arc<Self>, req: PinRequest) -> Result<ManifestId, RequestError> {
        let link: Link = req.link.parse()?;
        if link.key().is_some() {
            return Err(RequestError::ReadLinkForPin);
        }
        Daemon::check_peers(&req.peers)?;
        let id = *link.manifest_id();
        if self.running(JobKind::Pin, &id) {
            return Ok(id);
        }
        let rec = PinRecord {
            id,
            sources: Daemon::sources_of(&link, &req.peers),
            status: JobStatus::Running,
            bytes: 0,
        };
        self.update_state(|st| st.put_pin(rec.clone()));
        self.start_pin(rec);
        Ok(id)
    }

    /// `list`: shares, pins and fetches.
    pub fn list(&self) -> ListReply {
        // Rows are built under the locks: the state (with its keys) is not
        // copied.
        let st = self.state.lock().expect("never poisoned");
        let jobs = self.jobs.lock().expect("never poisoned");
        let progress = |kind: JobKind, id: &ManifestId, saved: u64| {
            let live: Option<JobProgress> =
                jobs.get(&(kind, *id)).map(|j| j.progress.borrow().clone());
            live.map_or((saved, saved), |p| (p.bytes, p.total.max(saved)))
        };
        let shares = st
            .shares
            .iter()
            .map(|s| {
                let stale = self
                    .registry
                    .get(&s.id)
                    .map(|served| matches!(&*served, Served::Local(p) if p.share().is_stale()))
                    .unwrap_or(true);
                ShareRow {
                    id: s.id,
                    origin: s.origin,
                    names: s.roots.keys().cloned().collect(),
                    files: s.files as u64,
                    bytes: s.bytes,
                    state: if stale {
                        ShareState::Stale
                    } else {
                        ShareState::Serving
                    },
                }
            })
            .collect();
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
                }
            })
            .collect();
        ListReply {
            shares,
            fetches,
            pins,
        }
    }

    /// `unshare`: stops serving a share or pin and forgets it (files shared
    /// or fetched stay where they are; a pin's chunks stay in the store).
    pub fn unshare(&self, prefix: &IdPrefix) -> Result<UnshareReply, RequestError> {
        let id = self.update_state(|st| {
            let id = served_id(st, prefix)?;
            st.shares.retain(|s| s.id != id);
            st.pins.retain(|p| p.id != id);
            Ok::<_, IdError>(id)
        })?;
        let _ = fs::remove_dir_all(self.share_dir(&id));
        self.registry.remove(&id);
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
        let transfers = self
            .jobs
            .lock()
            .expect("never poisoned")
            .iter()
            .filter_map(|(&(kind, id), j)| {
                let p = j.progress.borrow().clone();
                let secs = j.started.elapsed().as_secs_f64().max(1e-3);
                (p.status == JobStatus::Running).then(|| Transfer {
                    id,
                    kind,
                    bytes: p.bytes,
                    total: p.total,
                    rate: (p.bytes as f64 / secs) as u64,
                })
            })
            .collect();
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
