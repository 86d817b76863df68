//! The peer cache in the daemon (`peers.json`, [`crate::net::peer_cache`]):
//! loaded at start and bootstrapped from, next to the configured bootstrap
//! peers; its best peers dialled; kept up to date with the contacts the
//! user named (bootstrap peers, the sources of fetches and pins, which are
//! a link's hints and `--peer`s) while they are connected; written at most
//! once a [`SAVE_INTERVAL`] and at shutdown. So a daemon that was once
//! given one bootstrap peer, or once fetched a link, finds the network
//! again after a restart with nothing configured.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

use super::state::write_private;
use super::tasks::Stop;
use super::Daemon;
use crate::net::node::{split_p2p, Client};
use crate::net::peer_cache::{now, PeerCache, Services, SAVE_INTERVAL};

/// The cache file in the data dir.
pub(super) const FILE: &str = "peers.json";
/// Most cached peers bootstrapped from and dialled at start.
const AT_START: usize = 16;
/// How long one of those dials may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the connected contacts are noted.
const OBSERVE_EVERY: Duration = Duration::from_secs(10);
/// Most contact addresses looked at per observation.
const MAX_CONTACT_ADDRS: usize = 1024;

/// The daemon's peer cache and where it lives.
pub(super) struct PeerBook {
    path: PathBuf,
    cache: Mutex<PeerCache>,
    /// The bootstrap peers the user named (configuration and flags).
    named: Vec<Multiaddr>,
    /// Contacts connected at the last observation: a connection is counted
    /// once, not once per observation.
    noted: Mutex<HashSet<PeerId>>,
}

impl PeerBook {
    /// Loads `peers.json` from `data_dir` (an unusable file means an empty
    /// cache and a warning). `named`: the configured bootstrap peers.
    pub(super) fn load(data_dir: &Path, named: &[Multiaddr]) -> PeerBook {
        let path = data_dir.join(FILE);
        let (cache, warning) = PeerCache::load(&path);
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        if !cache.is_empty() {
            tracing::info!(peers = cache.len(), "bootstrapping from the peer cache too");
        }
        PeerBook {
            path,
            cache: Mutex::new(cache),
            named: named.to_vec(),
            noted: Mutex::new(HashSet::new()),
        }
    }

    /// How many peers are cached.
    pub(super) fn len(&self) -> usize {
        self.cache.lock().expect("never poisoned").len()
    }

    /// The best cached peers' addresses, as bootstrap addresses.
    pub(super) fn bootstrap_addrs(&self) -> Vec<Multiaddr> {
        self.cache
            .lock()
            .expect("never poisoned")
            .bootstrap(AT_START)
    }

    /// Dials the best cached peers at once, noting which answered (a
    /// contact from then on) and which did not.
    async fn dial_cached(&self, client: &Client) {
        let targets: Vec<(PeerId, Vec<Multiaddr>)> = {
            let c = self.cache.lock().expect("never poisoned");
            c.best()
                .into_iter()
                .take(AT_START)
                .map(|p| (p.peer, p.addrs.clone()))
                .collect()
        };
        let dials = targets.into_iter().map(|(peer, addrs)| async move {
            let r = tokio::time::timeout(DIAL_TIMEOUT, client.dial(peer, addrs)).await;
            (peer, matches!(r, Ok(Ok(()))))
        });
        let results = futures::future::join_all(dials).await;
        let t = now();
        let mut c = self.cache.lock().expect("never poisoned");
        for (peer, ok) in results {
            if ok {
                c.met(peer, [], None, true, t);
            } else {
                tracing::debug!(%peer, "a cached peer did not answer");
                c.failed(&peer, t);
            }
        }
    }

    /// Notes the peers connected now: the contacts among `sources`
    /// (multiaddrs ending in `/p2p/PEER`) and the named bootstrap peers, at
    /// the addresses the user gave for them; and the peers the node met and
    /// identified, with the addresses they listen on and whether they offer
    /// DHT or relay service (not contacts unless named).
    async fn observe(&self, client: &Client, sources: &[String]) {
        let connected: HashSet<PeerId> = match client.connected().await {
            Ok(c) => c.into_iter().map(|(p, _)| p).collect(),
            Err(_) => return,
        };
        let known = client.known_peers().await.unwrap_or_default();
        let mut contacts: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        let given = sources.iter().filter_map(|s| s.parse::<Multiaddr>().ok());
        for a in self
            .named
            .iter()
            .cloned()
            .chain(given)
            .take(MAX_CONTACT_ADDRS)
        {
            if let Some((peer, addr)) = split_p2p(&a) {
                if connected.contains(&peer) {
                    contacts.entry(peer).or_default().push(addr);
                }
            }
        }
        let t = now();
        let mut noted = self.noted.lock().expect("never poisoned");
        let mut c = self.cache.lock().expect("never poisoned");
        let mut now_connected = HashSet::new();
        for k in known.into_iter().filter(|k| connected.contains(&k.peer)) {
            let named = contacts.remove(&k.peer);
            if noted.contains(&k.peer) {
                c.seen(&k.peer, t);
            } else {
                let services = Services {
                    dht: k.dht_server,
                    relay: k.relay,
                };
                let contact = named.is_some();
                let addrs = named.unwrap_or_default().into_iter().chain(k.addrs);
                c.met(k.peer, addrs, Some(services), contact, t);
            }
            now_connected.insert(k.peer);
        }
        for (peer, addrs) in contacts {
            if noted.contains(&peer) {
                c.seen(&peer, t);
            } else {
                c.met(peer, addrs, None, true, t);
            }
            now_connected.insert(peer);
        }
        *noted = now_connected;
    }

    /// Writes the cache atomically (temporary file, fsync, rename) if it
    /// changed since the last write.
    async fn save(&self) {
        let bytes = {
            let mut c = self.cache.lock().expect("never poisoned");
            if !c.is_dirty() {
                return;
            }
            c.saved();
            c.encode()
        };
        let path = self.path.clone();
        let r = tokio::task::spawn_blocking(move || write_private(&path, &bytes)).await;
        match r {
            Ok(Ok(())) => tracing::debug!("peer cache saved"),
            Ok(Err(e)) => tracing::warn!(
                "cannot write the peer cache {}: {e}; it will be tried again",
                self.path.display()
            ),
            Err(e) => tracing::error!("writing the peer cache panicked: {e}"),
        }
    }
}

impl Daemon {
    /// The fetch and pin sources in the state: the peers named in links'
    /// hints and by `--peer`.
    fn job_sources(&self) -> Vec<String> {
        let st = self.state.lock().expect("never poisoned");
        st.fetches
            .iter()
            .flat_map(|f| f.sources.iter())
            .chain(st.pins.iter().flat_map(|p| p.sources.iter()))
            .take(MAX_CONTACT_ADDRS)
            .cloned()
            .collect()
    }

    /// Keeps the peer cache until `stop`: dials the best cached peers,
    /// notes connected contacts every [`OBSERVE_EVERY`], writes the cache
    /// when due, and a last time on the way out.
    pub(super) async fn keep_peers(self: Arc<Self>, mut stop: Stop) {
        tokio::select! {
            () = self.peers.dial_cached(&self.client) => {}
            () = stop.wait() => {}
        }
        let mut tick = tokio::time::interval(OBSERVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_save = tokio::time::Instant::now();
        while !stop.requested() {
            tokio::select! {
                _ = tick.tick() => {
                    self.peers.observe(&self.client, &self.job_sources()).await;
                    if last_save.elapsed() >= SAVE_INTERVAL {
                        self.peers.save().await;
                        last_save = tokio::time::Instant::now();
                    }
                }
                () = stop.wait() => {}
            }
        }
        self.peers.observe(&self.client, &self.job_sources()).await;
        self.peers.save().await;
    }
}
