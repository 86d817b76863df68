//! What the daemon does for each control request.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use libp2p::multiaddr::Protocol;
use serde_json::{json, Value};

use crate::chunk::hex;
use crate::crypto::ShareKey;
use crate::daemon::ids::{find_id, key_from_hex, parse_id};
use crate::daemon::registry::Served;
use crate::daemon::state::State;
use crate::daemon::state::{FetchRecord, JobStatus, Origin, PinRecord};
use crate::daemon::IdError;
use crate::daemon::{Daemon, KeptShareError, RequestError};
use crate::link::Link;
use crate::manifest::ManifestId;
use crate::seal::SealOptions;
use crate::store::share::LocalShare;

impl Daemon {
    /// `share`: seals the paths (reading them once) and serves them.
    pub async fn share(
        self: &Arc<Self>,
        paths: Vec<PathBuf>,
        hints: bool,
    ) -> Result<Value, RequestError> {
        if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
            return Err(RequestError::NotAbsolute(p.clone()));
        }
        let key = ShareKey::generate()?;
        let k2 = key.duplicate();
        let p2 = paths.clone();
        let share = tokio::task::spawn_blocking(move || {
            LocalShare::create(&p2, &k2, &SealOptions::default(), |_| {})
        })
        .await??;
        let skipped: Vec<String> = share
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
        let metadata = share.source().metadata().clone();
        let manifest = share.manifest().clone();
        let id = self.keep_share(&key, &manifest, &metadata, roots, Origin::Shared)?;
        Ok(json!({
            "ok": true, "id": id, "link": if hints { self.link_for(manifest.id(), Some(key)).await } else {
                Link::new(manifest.id(), Vec::new(), Some(key)).expect("no hints").to_uri_string()
            },
            "files": metadata.file_count(), "bytes": metadata.content_len(), "skipped": skipped,
        }))
    }

    /// `fetch`: starts (or joins) a background fetch; returns its id.
    pub fn fetch(
        self: &Arc<Self>,
        link: &str,
        out: PathBuf,
        force: bool,
        peers: Vec<String>,
    ) -> Result<ManifestId, RequestError> {
        let link = Link::parse_read_link(link)?;
        if !out.is_absolute() {
            return Err(RequestError::NotAbsolute(out));
        }
        let id = *link.manifest_id();
        if self.running("fetch", &id) {
            // Join it, but only if it is the same request.
            let st = self.state.lock().expect("never poisoned");
            if let Some(r) = st.fetches.iter().find(|f| f.id == hex(&id.0)) {
                if r.out != out {
                    return Err(RequestError::FetchingElsewhere(r.out.clone()));
                }
            }
            return Ok(id);
        }
        let rec = FetchRecord {
            id: hex(&id.0),
            key: hex(link.require_key()?.expose_secret()),
            out,
            sources: Daemon::sources_of(&link, &peers),
            force,
            status: JobStatus::Running,
            bytes: 0,
            paths: Vec::new(),
        };
        {
            let mut st = self.state.lock().expect("never poisoned");
            st.fetches.retain(|f| f.id != rec.id);
            st.fetches.push(rec.clone());
            self.save(&st);
        }
        self.start_fetch(rec);
        Ok(id)
    }

    /// `pin`: starts (or joins) a background pin; refuses read links, so
    /// the key can never be stored here.
    pub fn pin(
        self: &Arc<Self>,
        link: &str,
        peers: Vec<String>,
    ) -> Result<ManifestId, RequestError> {
        let link: Link = link.parse()?;
        if link.key().is_some() {
            return Err(RequestError::ReadLinkForPin);
        }
        let id = *link.manifest_id();
        if self.running("pin", &id) {
            return Ok(id);
        }
        let rec = PinRecord {
            id: hex(&id.0),
            sources: Daemon::sources_of(&link, &peers),
            status: JobStatus::Running,
            bytes: 0,
        };
        {
            let mut st = self.state.lock().expect("never poisoned");
            st.pins.retain(|p| p.id != rec.id);
            st.pins.push(rec.clone());
            self.save(&st);
        }
        self.start_pin(rec);
        Ok(id)
    }

    /// `list`: shares, pins and fetches.
    pub fn list(&self) -> Value {
        let st = self.state.lock().expect("never poisoned").clone();
        let jobs = self.jobs.lock().expect("never poisoned");
        let progress = |kind: &'static str, id: &str| {
            parse_id(id)
                .and_then(|i| jobs.get(&(kind, i)))
                .map(|j| j.progress.borrow().clone())
        };
        let shares: Vec<Value> = st
            .shares
            .iter()
            .map(|s| {
                let stale = parse_id(&s.id)
                    .and_then(|i| self.registry.get(&i))
                    .map(|served| matches!(&*served, Served::Local(p) if p.share().is_stale()))
                    .unwrap_or(true);
                json!({
                    "id": s.id, "origin": s.origin, "names": s.roots.keys().collect::<Vec<_>>(),
                    "files": s.files, "bytes": s.bytes, "state": if stale { "stale" } else { "serving" },
                })
            })
            .collect();
        let fetches: Vec<Value> = st
            .fetches
            .iter()
            .map(|f| {
                let p = progress("fetch", &f.id);
                json!({
                    "id": f.id, "out": f.out, "status": f.status,
                    "bytes": p.as_ref().map_or(f.bytes, |p| p.bytes),
                    "total": p.as_ref().map_or(f.bytes, |p| p.total.max(f.bytes)),
                    "sources": f.sources,
                })
            })
            .collect();
        let pins: Vec<Value> = st
            .pins
            .iter()
            .map(|p| {
                let pr = progress("pin", &p.id);
                json!({
                    "id": p.id, "status": p.status,
                    "bytes": pr.as_ref().map_or(p.bytes, |x| x.bytes),
                    "total": pr.as_ref().map_or(p.bytes, |x| x.total.max(p.bytes)),
                    "sources": p.sources,
                })
            })
            .collect();
        json!({"ok": true, "shares": shares, "fetches": fetches, "pins": pins})
    }

    /// `unshare`: stops serving a share or pin and forgets it (files shared
    /// or fetched stay where they are; a pin's chunks stay in the store).
    pub fn unshare(&self, given: &str) -> Result<Value, RequestError> {
        let mut st = self.state.lock().expect("never poisoned");
        let id = Daemon::served_id(&st, given)?;
        st.shares.retain(|s| s.id != id);
        st.pins.retain(|p| p.id != id);
        self.save(&st);
        drop(st);
        let _ = fs::remove_dir_all(self.share_dir(&id));
        if let Some(m) = parse_id(&id) {
            self.registry.remove(&m);
        }
        Ok(json!({"ok": true, "id": id}))
    }

    /// `link`: a share's read link again, or its pin link.
    pub async fn link(&self, given: &str, pin: bool) -> Result<Value, RequestError> {
        let (mid, id, key) = self.link_parts(given, pin)?;
        Ok(json!({"ok": true, "id": id, "link": self.link_for(mid, key).await}))
    }

    pub(super) fn link_parts(
        &self,
        given: &str,
        pin: bool,
    ) -> Result<(ManifestId, String, Option<ShareKey>), RequestError> {
        let st = self.state.lock().expect("never poisoned");
        let id = Daemon::served_id(&st, given)?;
        let mid = parse_id(&id).ok_or(KeptShareError::BadId)?;
        let key = match st.shares.iter().find(|s| s.id == id) {
            Some(s) if !pin => Some(key_from_hex(&s.key).ok_or(KeptShareError::BadKey)?),
            Some(_) => None,
            None if pin => None,
            None => return Err(RequestError::OnlyPinned),
        };
        Ok((mid, id, key))
    }

    /// The one share or pin id that `given` is a prefix of.
    fn served_id(st: &State, given: &str) -> Result<String, IdError> {
        let mut ids: Vec<&String> = st
            .shares
            .iter()
            .map(|s| &s.id)
            .chain(st.pins.iter().map(|p| &p.id))
            .collect();
        // A re-seeded share can also be pinned here: one id, listed once.
        ids.sort();
        ids.dedup();
        find_id(ids.into_iter(), given)
    }

    /// `status`: identity, addresses, peers and transfers.
    pub async fn status(&self) -> Value {
        let connected = self.client.connected().await.unwrap_or_default();
        let transfers: Vec<Value> = self
            .jobs
            .lock()
            .expect("never poisoned")
            .iter()
            .filter(|(_, j)| j.progress.borrow().status == JobStatus::Running)
            .map(|((_, id), j)| {
                let p = j.progress.borrow().clone();
                let secs = j.started.elapsed().as_secs_f64().max(1e-3);
                json!({"id": id.to_string(), "kind": j.kind, "bytes": p.bytes, "total": p.total, "rate": (p.bytes as f64 / secs) as u64})
            })
            .collect();
        json!({
            "ok": true,
            "peer_id": self.client.peer_id().to_base58(),
            "listen": self.listen_addrs().await.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "connected": connected.iter().map(|(p, a)| json!({"peer": p.to_base58(), "addr": a.to_string(), "relayed": a.iter().any(|p| matches!(p, Protocol::P2pCircuit))})).collect::<Vec<_>>(),
            "transfers": transfers,
            "uploaded_bytes": self.registry.uploaded(),
            "reseed": self.config.reseed,
        })
    }
}
