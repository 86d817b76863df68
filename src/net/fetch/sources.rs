//! The sources of one fetch: the peers given and discovered, which of them
//! are still worth asking, what happens to one that failed, and connecting
//! to them until the deadline.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::watch;

use super::session::Fault;
use super::{FetchError, FetchOptions, Progress, ProgressTx};
use crate::manifest::ManifestId;
use crate::net::addr::ip_of;
use crate::net::node::Client;
use crate::net::{is_quic, PeerAddr};

/// The pause before reconnecting to a source whose circuit a relay closed:
/// the session sees its stream fail a moment before the node sees the
/// connection go, and a dial meanwhile would find the dying connection
/// (and cost a strike when the stream on it fails).
const CIRCUIT_REDIAL: Duration = Duration::from_millis(100);

/// Most IP addresses whose strikes one fetch remembers.
const MAX_BLAMED_IPS: usize = 1024;

/// Most candidates learned by peer exchange that one fetch holds at once
/// (not yet dialled, or dialled and in use); further ones are ignored
/// until some are let go.
pub(super) const MAX_CANDIDATES: usize = 64;

/// While no source answers, a fetch says so at least this often (a user
/// must not watch a silent terminal; a script reading `--json` must see
/// that the fetch is alive), even while a dial or a DHT lookup is running.
pub(super) const WAITING_EVERY: Duration = Duration::from_secs(2);

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

/// Everything one fetch knows about its sources, and the rules for blaming
/// them (docs/PROTOCOL.md, "What a peer does decides what happens to it").
pub(super) struct Sources {
    /// The node the fetch runs on.
    pub(super) client: Client,
    /// The share being fetched.
    pub(super) share: ManifestId,
    /// What the caller asked for, including the retry policy.
    pub(super) opts: FetchOptions,
    /// Where the caller hears how it goes.
    pub(super) progress: ProgressTx,
    /// The sources the caller gave (link hints, `--peer`), one per peer.
    given: Vec<PeerAddr>,
    /// Sources not to ask again: they misbehaved or stalled.
    banned: HashSet<PeerId>,
    /// Sources that answered they do not hold the share.
    not_found: HashSet<PeerId>,
    /// Discovered peers that proved they hold the share, so may hear its
    /// manifest id (audit F-04; see `manifest::holders_only`).
    holders: HashSet<PeerId>,
    /// Lost sessions per source since it last delivered a chunk.
    strikes: HashMap<PeerId, u32>,
    /// The IP addresses discovered sources were announced at (peer ids are
    /// free to make, so blame also sticks to the address; audit F-05).
    discovered_ips: HashMap<PeerId, Vec<IpAddr>>,
    /// Strikes per IP address of discovered sources; a source dropped
    /// counts `max_strikes`.
    ip_strikes: HashMap<IpAddr, u32>,
    /// `Busy` answers in a row per source.
    busy: HashMap<PeerId, u32>,
    /// Sources that refused because their files changed. One such answer
    /// does not decide the error (audit F-19): any peer can say it.
    stale: HashSet<PeerId>,
    /// When to stop trying to reach a source.
    deadline: Instant,
    /// Each source's measured rate, carried from one queue to the next.
    pub(super) rates: super::scheduler::Rates,
    /// Peers other sources told of (peer exchange): candidates only, at
    /// most [`MAX_CANDIDATES`].
    candidates: Vec<PeerAddr>,
    /// Where discovered peers and candidates were said to be (at most
    /// [`MAX_BLAMED_IPS`] peers), to pass them on in turn.
    known_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// When to ask the sources for peers next.
    pub(super) exchange: super::pex::Exchange,
    /// Streams to sources kept open for the fetch's next step.
    pub(super) idle: std::sync::Arc<super::streams::IdleStreams>,
}

impl Sources {
    pub(super) fn new(
        client: &Client,
        share: ManifestId,
        given: Vec<PeerAddr>,
        opts: &FetchOptions,
        progress: ProgressTx,
    ) -> Sources {
        Sources {
            client: client.clone(),
            share,
            opts: opts.clone(),
            progress,
            given: merge(given),
            banned: HashSet::new(),
            not_found: HashSet::new(),
            holders: HashSet::new(),
            strikes: HashMap::new(),
            discovered_ips: HashMap::new(),
            ip_strikes: HashMap::new(),
            busy: HashMap::new(),
            stale: HashSet::new(),
            deadline: Instant::now() + opts.wait,
            rates: Default::default(),
            candidates: Vec::new(),
            known_addrs: HashMap::new(),
            exchange: Default::default(),
            idle: Default::default(),
        }
    }

    /// Takes in what a source said in peer exchange: each peer not known
    /// yet (not given, not this node, not dropped, not at an address that
    /// earned too many strikes) becomes a candidate, up to
    /// [`MAX_CANDIDATES`]. Returns how many are new.
    pub(super) fn offer(&mut self, peers: Vec<PeerAddr>) -> usize {
        let mut fresh = 0;
        for p in peers {
            if self.candidates.len() >= MAX_CANDIDATES {
                break;
            }
            let known = self.candidates.iter().any(|c| c.peer == p.peer)
                || self.given.iter().any(|g| g.peer == p.peer);
            if known
                || p.peer == self.client.peer_id()
                || !self.usable(&p.peer)
                || self.ip_barred(&p)
            {
                continue;
            }
            self.learned(&p);
            self.candidates.push(p);
            fresh += 1;
        }
        fresh
    }

    /// Remembers where a peer that was not given was said to be: its IP
    /// addresses take its blame, its addresses are passed on if it serves.
    fn learned(&mut self, p: &PeerAddr) {
        if self.discovered_ips.len() < MAX_BLAMED_IPS {
            let ips = p.addrs.iter().filter_map(ip_of).collect();
            self.discovered_ips.entry(p.peer).or_insert(ips);
        }
        if self.known_addrs.len() < MAX_BLAMED_IPS || self.known_addrs.contains_key(&p.peer) {
            self.known_addrs.insert(p.peer, p.addrs.clone());
        }
    }

    /// Candidates from peer exchange that may still be asked.
    pub(super) fn candidate_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.candidates
            .iter()
            .map(|c| c.peer)
            .filter(|p| self.usable(p))
    }

    /// Where `peer` was reached or said to be: a given source's addresses,
    /// or a discovered peer's or a candidate's.
    pub(super) fn addrs_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        match self.given.iter().find(|g| g.peer == *peer) {
            Some(g) => g.addrs.clone(),
            None => self.known_addrs.get(peer).cloned().unwrap_or_default(),
        }
    }

    /// Tells the caller; a caller that stopped listening does not stop the
    /// fetch.
    pub(super) fn report(&self, event: Progress) {
        self.progress.send(event);
    }

    /// Whether `peer` may still be asked: neither dropped nor known to lack
    /// the share.
    pub(super) fn usable(&self, peer: &PeerId) -> bool {
        !self.banned.contains(peer) && !self.not_found.contains(peer)
    }

    /// The consequence of a failed exchange: a strike if it was lost, a drop
    /// if the peer misbehaved; then the pause before the next try.
    pub(super) async fn blame(&mut self, peer: PeerId, fault: Fault) {
        if let Some(pause) = self.judge(peer, fault).await {
            tokio::time::sleep(pause).await;
        }
    }

    /// As [`Sources::blame`], but returns the pause before `peer` may be
    /// asked again instead of waiting it out (`None`: it was dropped), so
    /// that other sources' sessions go on meanwhile.
    pub(super) async fn judge(&mut self, peer: PeerId, fault: Fault) -> Option<Duration> {
        match fault {
            Fault::Lost(reason) => self.strike(peer, reason).await,
            Fault::Misbehaved(reason) => {
                self.drop_peer(peer, reason).await;
                None
            }
            Fault::Busy(pause) => self.busy(peer, pause).await,
            Fault::CircuitEnded(reason) => {
                tracing::info!(%peer, %reason, "the relayed connection to a source ended after it carried chunks (a relay's limit); going on through a new one");
                Some(CIRCUIT_REDIAL)
            }
        }
    }

    /// `peer` answered `Busy`: pause as it asks (within the policy's
    /// bounds); only a source that keeps saying so counts a strike.
    async fn busy(&mut self, peer: PeerId, pause: Duration) -> Option<Duration> {
        let n = self.busy.entry(peer).or_default();
        *n += 1;
        tracing::debug!(%peer, busy = *n, ?pause, "source is busy");
        if *n >= self.opts.retry.max_busy {
            *n = 0;
            self.strike(peer, "it kept answering busy".into()).await
        } else {
            let r = &self.opts.retry;
            Some(pause.clamp(r.min_busy_pause, r.max_busy_pause))
        }
    }

    /// A session with `peer` went well: its `Busy` answers are forgotten.
    pub(super) fn served(&mut self, peer: PeerId) {
        self.busy.remove(&peer);
    }

    /// A session with `peer` delivered chunks: its lost sessions so far are
    /// forgiven. Strikes count failures in a row, so a path that drops the
    /// connection every few chunks slows a fetch down but does not end it.
    pub(super) fn delivered(&mut self, peer: PeerId) {
        self.strikes.remove(&peer);
    }

    /// Whether the manifest id may be named to `peer`: the caller gave it
    /// (a link hint, `--peer`: the sharer chose it), or it proved it holds
    /// the share.
    pub(super) fn trusted(&self, peer: &PeerId) -> bool {
        self.holders.contains(peer) || self.given.iter().any(|g| g.peer == *peer)
    }

    /// The sources the caller gave (link hints, `--peer`).
    pub(super) fn given_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.given.iter().map(|g| g.peer)
    }

    /// A discovered `peer` proved it holds the share.
    pub(super) fn proved_holder(&mut self, peer: PeerId) {
        self.holders.insert(peer);
    }

    /// `peer` answered that it does not hold the share: not asked again.
    pub(super) fn lacks_share(&mut self, peer: PeerId) {
        self.not_found.insert(peer);
    }

    /// `peer` refused because its files changed: dropped, and remembered so
    /// that the fetch, if it fails, says why.
    pub(super) async fn refused_stale(&mut self, peer: PeerId) {
        self.stale.insert(peer);
        self.drop_peer(peer, "its files changed since the link was made".into())
            .await;
    }

    /// Counts a lost session against `peer`; at `max_strikes` it is dropped.
    /// Between strikes it is reconnected, after the pause returned, which
    /// grows.
    async fn strike(&mut self, peer: PeerId, reason: String) -> Option<Duration> {
        self.blame_ips(peer, 1);
        let n = self.strikes.entry(peer).or_default();
        *n += 1;
        let n = *n;
        tracing::debug!(%peer, %reason, strikes = n, "lost a source");
        if n >= self.opts.retry.max_strikes {
            self.drop_peer(peer, reason).await;
            None
        } else {
            Some(self.opts.retry.pause(n))
        }
    }

    /// Adds `n` strikes to each IP address the discovered `peer` was
    /// announced at.
    fn blame_ips(&mut self, peer: PeerId, n: u32) {
        for ip in self.discovered_ips.get(&peer).into_iter().flatten() {
            if self.ip_strikes.len() < MAX_BLAMED_IPS || self.ip_strikes.contains_key(ip) {
                *self.ip_strikes.entry(*ip).or_default() += n;
            }
        }
    }

    /// Whether a discovered source was announced at an IP address that
    /// already earned twice `max_strikes`: its other peer ids are not tried.
    fn ip_barred(&self, s: &PeerAddr) -> bool {
        let limit = 2 * self.opts.retry.max_strikes;
        s.addrs
            .iter()
            .filter_map(ip_of)
            .any(|ip| self.ip_strikes.get(&ip).is_some_and(|n| *n >= limit))
    }

    /// Stops using `peer` for this fetch and closes its connections.
    async fn drop_peer(&mut self, peer: PeerId, reason: String) {
        tracing::info!(%peer, %reason, "dropping source");
        self.blame_ips(peer, self.opts.retry.max_strikes);
        self.banned.insert(peer);
        self.client.disconnect(peer).await;
        self.report(Progress::PeerDropped { peer, reason });
    }

    /// Why the fetch fails when no source is left to try: `Stale` only
    /// when every source the caller gave refused because its files changed
    /// (or, with none given, every answer was that); then not holding the
    /// share (unless untried `candidates_left`); otherwise `Unreachable`
    /// with `why`, which names the sources that said their files changed.
    fn verdict(&self, candidates_left: bool, why: String) -> FetchError {
        let given_all_stale =
            !self.given.is_empty() && self.given.iter().all(|g| self.stale.contains(&g.peer));
        let only_stale =
            self.given.is_empty() && !self.stale.is_empty() && self.not_found.is_empty();
        if given_all_stale || only_stale {
            FetchError::Stale
        } else if !self.not_found.is_empty() && !candidates_left {
            FetchError::NotFound
        } else if !self.stale.is_empty() {
            FetchError::Unreachable(format!(
                "{why}; {} source(s) said their files changed since the link was made",
                self.stale.len()
            ))
        } else {
            FetchError::Unreachable(why)
        }
    }

    /// Sources found beyond the given ones: LAN peers, and with `dht`, DHT
    /// providers; at most `max_discovered`, LAN peers and providers taken
    /// in turn so that a flood of either cannot crowd out the other
    /// (announcements and provider records are unauthenticated hints).
    async fn discover(&mut self, dht: bool) -> Vec<PeerAddr> {
        if !self.opts.discover {
            return Vec::new();
        }
        let lan: Vec<PeerAddr> = self
            .client
            .discovered()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(peer, addrs)| PeerAddr { peer, addrs })
            .collect();
        let mut providers = Vec::new();
        if dht {
            let locator = self.share.locator().to_vec();
            let lookup =
                tokio::time::timeout(self.opts.retry.dht_timeout, self.client.providers(locator));
            if let Ok(Ok(found)) = lookup.await {
                tracing::debug!(found = found.len(), "DHT lookup for providers");
                providers = found;
            }
        }
        let max = self.opts.retry.max_discovered;
        let mut lan = lan.into_iter();
        let mut providers = providers.into_iter().map(|peer| PeerAddr {
            peer,
            addrs: Vec::new(),
        });
        let mut found: Vec<PeerAddr> = Vec::new();
        while found.len() < max {
            let (l, p) = (lan.next(), providers.next());
            if l.is_none() && p.is_none() {
                break;
            }
            for s in l.into_iter().chain(p) {
                if found.len() < max && !found.iter().any(|f| f.peer == s.peer) {
                    found.push(s);
                }
            }
        }
        found
    }

    /// Connects to every source not dropped (and, with discovery, to peers
    /// found on the LAN or in the DHT), retrying with backoff until at least
    /// one answers or the deadline passes. Meanwhile `Waiting` is reported
    /// at least every [`WAITING_EVERY`].
    pub(super) async fn connect(&mut self) -> Result<Vec<PeerId>, FetchError> {
        // The last reason reported and when; the heartbeat repeats it when
        // the rounds below are quiet for too long (a slow dial, a DHT
        // lookup, a long backoff).
        let (said, heard) = watch::channel((
            String::from("looking for a source"),
            tokio::time::Instant::now(),
        ));
        let progress = self.progress.clone();
        let deadline = self.deadline;
        let heartbeat = async move {
            let mut last = tokio::time::Instant::now();
            loop {
                let due = last.max(heard.borrow().1) + WAITING_EVERY;
                tokio::time::sleep_until(due).await;
                if heard.borrow().1 + WAITING_EVERY > tokio::time::Instant::now() {
                    continue;
                }
                last = tokio::time::Instant::now();
                let reason = heard.borrow().0.clone();
                progress.send(Progress::Waiting {
                    reason,
                    secs_left: deadline.saturating_duration_since(Instant::now()).as_secs(),
                });
            }
        };
        tokio::select! {
            r = self.connect_rounds(&said) => r,
            () = heartbeat => unreachable!("the heartbeat never ends"),
        }
    }

    /// [`Sources::connect`]'s rounds; every `Waiting` reported also goes to
    /// `said`.
    async fn connect_rounds(
        &mut self,
        said: &watch::Sender<(String, tokio::time::Instant)>,
    ) -> Result<Vec<PeerId>, FetchError> {
        let mut backoff = self.opts.retry.connect_backoff;
        // The DHT is asked only when the cheaper sources did not answer.
        let mut dht = false;
        loop {
            let mut candidates: Vec<PeerAddr> = self
                .given
                .iter()
                .filter(|s| self.usable(&s.peer))
                .cloned()
                .collect();
            tracing::debug!(dht, sources = self.given.len(), "looking for sources");
            if dht {
                said.send_modify(|s| s.0 = "asking the DHT who has the share".into());
            }
            // Peers other sources told of: only candidates, dialled and
            // asked to prove they hold the share like discovered ones.
            for c in &self.candidates {
                if self.usable(&c.peer) && !candidates.iter().any(|k| k.peer == c.peer) {
                    candidates.push(c.clone());
                }
            }
            for d in self.discover(dht).await {
                if self.usable(&d.peer)
                    && !candidates.iter().any(|c| c.peer == d.peer)
                    && d.peer != self.client.peer_id()
                    && !self.ip_barred(&d)
                {
                    self.learned(&d);
                    candidates.push(d);
                }
            }
            // Nothing left to try, and the known sources gave definite
            // answers (stale, or not holding it): say so now rather than
            // wait for discovery to turn up another copy.
            let definite = !self.stale.is_empty() || !self.not_found.is_empty();
            if candidates.is_empty() && (!self.opts.discover || definite) {
                return Err(if self.given.is_empty() {
                    FetchError::Unreachable("the link has no peer hints; pass --peer".into())
                } else {
                    self.verdict(
                        false,
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
                        self.report(Progress::Connected(peer));
                        connected.push(peer);
                    }
                    Err(e) => {
                        // A candidate that cannot be dialled is let go (with
                        // a strike on its addresses); another source may
                        // tell of it again.
                        if let Some(k) = self.candidates.iter().position(|c| c.peer == peer) {
                            tracing::debug!(%peer, error = %e, "a peer-exchange candidate cannot be reached");
                            self.candidates.remove(k);
                            self.blame_ips(peer, 1);
                            continue;
                        }
                        last_error = e.to_string();
                    }
                }
            }
            // Discovered peers hear the manifest id only once they proved
            // they hold the share.
            let connected = super::manifest::holders_only(self, connected).await;
            if !connected.is_empty() {
                return Ok(connected);
            }
            let now = Instant::now();
            if candidates.is_empty() {
                last_error = "no source found yet on the LAN or in the DHT".into();
            }
            if now >= self.deadline {
                let why = format!("gave up after {}s: {last_error}", self.opts.wait.as_secs());
                return Err(self.verdict(!candidates.is_empty(), why));
            }
            if !dht && self.opts.discover {
                // Try the DHT straight away, before waiting.
                dht = true;
                continue;
            }
            said.send_replace((last_error.clone(), tokio::time::Instant::now()));
            self.report(Progress::Waiting {
                reason: last_error,
                secs_left: (self.deadline - now).as_secs(),
            });
            tokio::time::sleep(backoff.min(self.deadline - now)).await;
            backoff = (backoff * 2).min(self.opts.retry.max_connect_backoff);
        }
    }
}
