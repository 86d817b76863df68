//! Links this node hands out, and the source lists jobs keep.

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use crate::crypto::ShareKey;
use crate::daemon::{Daemon, RequestError};
use crate::link::Link;
use crate::manifest::ManifestId;
use crate::net::{hint_addrs, PeerAddr};

impl Daemon {
    /// The read link (with the key) or pin link of a share, with this node
    /// as the hint.
    pub(super) async fn link_for(&self, id: ManifestId, key: Option<ShareKey>) -> String {
        let hint = PeerAddr {
            peer: self.client.peer_id(),
            addrs: self.listen_addrs().await,
        }
        .to_hint();
        // The link states the manifest's expiry, as `share` printed it.
        let expires = crate::net::serve::Provider::expires(&*self.registry, &id);
        Link::new(id, vec![hint], key)
            .expect("one hint is within the caps")
            .with_expiry(expires)
            .to_uri_string()
    }

    /// Where this node listens now, in hint order (read each time: interface
    /// addresses can appear after start-up).
    pub(super) async fn listen_addrs(&self) -> Vec<Multiaddr> {
        hint_addrs(self.client.listen_addrs().await.unwrap_or_default())
    }

    pub(super) fn sources_of(link: &Link, extra: &[String]) -> Vec<String> {
        let mut v: Vec<String> = link
            .hints()
            .iter()
            .filter_map(PeerAddr::from_hint)
            .flat_map(|p| {
                let peer = p.peer;
                let addrs = if p.addrs.is_empty() {
                    vec![Multiaddr::empty()]
                } else {
                    p.addrs
                };
                addrs
                    .into_iter()
                    .map(move |a| a.with(Protocol::P2p(peer)).to_string())
            })
            .collect();
        v.extend(extra.iter().cloned());
        v
    }

    /// Refuses a `peers` entry that is not a multiaddr ending in /p2p/PEER
    /// (it would be stored and never used).
    pub(super) fn check_peers(peers: &[String]) -> Result<(), RequestError> {
        match peers
            .iter()
            .find(|p| p.parse().ok().and_then(PeerAddr::from_multiaddr).is_none())
        {
            Some(bad) => Err(RequestError::BadPeer(bad.clone())),
            None => Ok(()),
        }
    }

    pub(super) fn parse_sources(sources: &[String]) -> Vec<PeerAddr> {
        let mut out: Vec<PeerAddr> = Vec::new();
        for s in sources {
            let Some(p) = s.parse().ok().and_then(PeerAddr::from_multiaddr) else {
                continue;
            };
            match out.iter_mut().find(|o| o.peer == p.peer) {
                Some(o) => o.addrs.extend(p.addrs),
                None => out.push(p),
            }
        }
        out
    }
}
