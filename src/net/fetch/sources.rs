//! The sources of one fetch: the peers given and discovered, which of them
//! are still worth asking, and connecting to them until the deadline.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::mpsc;

use super::{FetchError, FetchOptions, Progress, MAX_STRIKES};
use crate::manifest::ManifestId;
use crate::net::node::Client;
use crate::net::{is_quic, PeerAddr};

/// One entry per peer, with the addresses of all its entries (a hint and a
/// `--peer` for the same node must not become two competing dials).
fn merge(sources: Vec<PeerAddr>) -> Vec<PeerAddr> {
    let mut out: Vec<PeerAddr> = Vec::new();
    for s in sources {
        match out.iter_mut().find(|o| o.peer == s.peer) {
            Some(o) => {
                for a in s.addrs {
                    if !o.addrs.contains(&a) {
                        o.addrs.push(a);
                    }
                }
            }
            None => out.push(s),
        }
    }
    out
}

pub(super) struct Fetcher {
    pub(super) client: Client,
    pub(super) sources: Vec<PeerAddr>,
    pub(super) share: [u8; 32],
    /// Sources not to ask again: they misbehaved or stalled.
    pub(super) banned: HashSet<PeerId>,
    /// Sources that answered they do not hold the share.
    pub(super) not_found: HashSet<PeerId>,
    /// Lost sessions per source.
    pub(super) strikes: HashMap<PeerId, u32>,
    /// Whether a source refused because its files changed.
    pub(super) stale: bool,
    pub(super) progress: mpsc::UnboundedSender<Progress>,
    pub(super) opts: FetchOptions,
    pub(super) deadline: Instant,
}

impl Fetcher {
    pub(super) fn new(
        client: &Client,
        share: ManifestId,
        sources: Vec<PeerAddr>,
        opts: &FetchOptions,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Fetcher {
        Fetcher {
            client: client.clone(),
            sources: merge(sources),
            share: share.0,
            banned: HashSet::new(),
            not_found: HashSet::new(),
            strikes: HashMap::new(),
            stale: false,
            progress,
            opts: opts.clone(),
            deadline: Instant::now() + opts.wait,
        }
    }

    /// Counts a lost session against `peer`; after [`MAX_STRIKES`] it is
    /// dropped. Between strikes it is reconnected, after a short pause.
    pub(super) async fn strike(&mut self, peer: PeerId, reason: String) {
        let n = self.strikes.entry(peer).or_default();
        *n += 1;
        tracing::debug!(%peer, %reason, strikes = *n, "lost a source");
        if *n >= MAX_STRIKES {
            self.drop_peer(peer, reason).await;
        } else {
            tokio::time::sleep(Duration::from_millis(200 << *n)).await;
        }
    }

    /// Stops using `peer` for this fetch and closes its connections.
    pub(super) async fn drop_peer(&mut self, peer: PeerId, reason: String) {
        tracing::info!(%peer, %reason, "dropping source");
        self.banned.insert(peer);
        self.client.disconnect(peer).await;
        let _ = self.progress.send(Progress::PeerDropped { peer, reason });
    }

    /// Sources found beyond the given ones: LAN peers, and with `dht`, DHT
    /// providers.
    async fn discover(&mut self, dht: bool) -> Vec<PeerAddr> {
        if !self.opts.discover {
            return Vec::new();
        }
        let mut found: Vec<PeerAddr> = self
            .client
            .discovered()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(peer, addrs)| PeerAddr { peer, addrs })
            .collect();
        let locator = ManifestId(self.share).locator().to_vec();
        if !dht {
            return found;
        }
        let lookup = tokio::time::timeout(Duration::from_secs(15), self.client.providers(locator));
        if let Ok(Ok(providers)) = lookup.await {
            tracing::debug!(found = providers.len(), "DHT lookup for providers");
            for peer in providers {
                if !found.iter().any(|f| f.peer == peer) {
                    found.push(PeerAddr {
                        peer,
                        addrs: Vec::new(),
                    });
                }
            }
        }
        // LAN announcements are unauthenticated hints: bound how many are tried.
        found.truncate(32);
        found
    }

    /// Connects to every source not dropped (and, with discovery, to peers
    /// found on the LAN or in the DHT), retrying with backoff until at least
    /// one answers or the deadline passes.
    pub(super) async fn connect(&mut self) -> Result<Vec<PeerId>, FetchError> {
        let mut backoff = Duration::from_millis(500);
        // The DHT is asked only when the cheaper sources did not answer.
        let mut dht = false;
        loop {
            let usable = |s: &PeerAddr, f: &Fetcher| {
                !f.banned.contains(&s.peer) && !f.not_found.contains(&s.peer)
            };
            let mut candidates: Vec<PeerAddr> = self
                .sources
                .iter()
                .filter(|s| usable(s, self))
                .cloned()
                .collect();
            tracing::debug!(dht, sources = self.sources.len(), "looking for sources");
            for d in self.discover(dht).await {
                if usable(&d, self)
                    && !candidates.iter().any(|c| c.peer == d.peer)
                    && d.peer != self.client.peer_id()
                {
                    candidates.push(d);
                }
            }
            // Nothing left to try, and the known sources gave definite
            // answers (stale, or not holding it): say so now rather than
            // wait for discovery to turn up another copy.
            let definite = self.stale || !self.not_found.is_empty();
            if candidates.is_empty() && (!self.opts.discover || definite) {
                return Err(if self.sources.is_empty() {
                    FetchError::Unreachable("the link has no peer hints; pass --peer".into())
                } else if self.stale {
                    FetchError::Stale
                } else if !self.not_found.is_empty() {
                    FetchError::NotFound
                } else {
                    FetchError::Unreachable(
                        "every source was dropped for misbehaving or stalling".into(),
                    )
                });
            }
            let attempts = candidates.iter().map(|s| {
                let client = self.client.clone();
                let s = s.clone();
                async move {
                    // TCP first: rust-libp2p's QUIC is about half as fast for bulk.
                    let (tcp, quic): (Vec<_>, Vec<_>) =
                        s.addrs.iter().cloned().partition(|a| !is_quic(a));
                    let addrs = tcp.into_iter().chain(quic).collect();
                    (s.peer, client.dial(s.peer, addrs).await)
                }
            });
            let results = futures::future::join_all(attempts).await;
            let mut connected = Vec::new();
            let mut last_error = String::new();
            for (peer, r) in results {
                match r {
                    Ok(()) => {
                        let _ = self.progress.send(Progress::Connected(peer));
                        connected.push(peer);
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
            if !connected.is_empty() {
                return Ok(connected);
            }
            let now = Instant::now();
            if candidates.is_empty() {
                last_error = "no source found yet on the LAN or in the DHT".into();
            }
            if now >= self.deadline {
                return Err(if self.stale {
                    FetchError::Stale
                } else if !self.not_found.is_empty() && candidates.is_empty() {
                    FetchError::NotFound
                } else {
                    FetchError::Unreachable(format!(
                        "gave up after {}s: {last_error}",
                        self.opts.wait.as_secs()
                    ))
                });
            }
            if !dht && self.opts.discover {
                // Try the DHT straight away, before waiting.
                dht = true;
                continue;
            }
            let _ = self.progress.send(Progress::Waiting {
                reason: last_error,
                secs_left: (self.deadline - now).as_secs(),
            });
            tokio::time::sleep(backoff.min(self.deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
