//! Helpers for in-process network tests: a sender node serving a share, and a
//! receiver fetching it, on loopback only (no mDNS anywhere).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use peerdrop::crypto::ShareKey;
use peerdrop::link::Link;
use peerdrop::manifest::ManifestId;
use peerdrop::net::fetch::{fetch, FetchError, FetchOptions, Fetched, Progress};
use peerdrop::net::node::{self, Client, NodeConfig};
use peerdrop::net::serve::{serve, LocalProvider, Provider, ServeConfig};
use peerdrop::net::{Multiaddr, PeerAddr};
use peerdrop::seal::SealOptions;
use peerdrop::store::share::LocalShare;

/// A node serving something, and the link hint that reaches it.
pub struct Server {
    pub client: Client,
    pub addr: PeerAddr,
}

/// Starts a node listening on `listen` that serves `provider`.
pub async fn start_server(listen: &str, provider: Arc<dyn Provider>) -> Server {
    start_server_with(listen, provider, ServeConfig::default()).await
}

/// [`start_server`] with the serving limits of `config` (its identity is
/// the new node's).
pub async fn start_server_with(
    listen: &str,
    provider: Arc<dyn Provider>,
    config: ServeConfig,
) -> Server {
    let client = node::spawn(NodeConfig::default()).unwrap();
    let mut addr: Multiaddr = client.listen(listen.parse().unwrap()).await.unwrap();
    addr.pop(); // the /p2p part; the hint carries the peer id itself
    let config = ServeConfig {
        identity: Some(client.peer_id()),
        ..config
    };
    tokio::spawn(serve(client.incoming().unwrap(), provider, config));
    Server {
        addr: PeerAddr {
            peer: client.peer_id(),
            addrs: vec![addr],
        },
        client,
    }
}

/// Seals `paths` as a share served from the files.
pub fn local_share(paths: &[PathBuf]) -> (ShareKey, LocalShare) {
    let key = ShareKey::generate().unwrap();
    let share = LocalShare::create(paths, &key, &SealOptions::default(), |_| {}).unwrap();
    (key, share)
}

/// The read link for share `id` with `servers` as hints.
pub fn link_for(key: &ShareKey, id: ManifestId, servers: &[&Server]) -> Link {
    Link::new(
        id,
        servers.iter().map(|s| s.addr.to_hint()).collect(),
        Some(key.duplicate()),
    )
    .unwrap()
}

/// Options for tests that should succeed: deadlines generous enough for a
/// loaded 2-core machine running other tests at the same time.
pub fn quick() -> FetchOptions {
    FetchOptions {
        request_timeout: Duration::from_secs(30),
        wait: Duration::from_secs(10),
        ..FetchOptions::default()
    }
}

/// Options for tests where a source misbehaves: short deadlines, so that a
/// stall is detected quickly.
pub fn impatient() -> FetchOptions {
    FetchOptions {
        request_timeout: Duration::from_secs(2),
        wait: Duration::from_secs(2),
        ..FetchOptions::default()
    }
}

/// Fetches `link` from its hints into `dest` with a fresh node; returns the
/// result and every progress event.
pub async fn fetch_link(
    link: &Link,
    dest: &Path,
    opts: &FetchOptions,
) -> (Result<Fetched, FetchError>, Vec<Progress>) {
    let client = node::spawn(NodeConfig::default()).unwrap();
    let sources = link
        .hints()
        .iter()
        .filter_map(PeerAddr::from_hint)
        .collect();
    let (tx, mut rx) = peerdrop::net::fetch::progress_channel();
    // Read while the fetch runs, as every real consumer does: the queue is
    // bounded and a fetch drops events rather than wait for its reader.
    let reader = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let r = fetch(&client, link, sources, dest, opts, tx).await;
    client.shutdown().await;
    (r, reader.await.unwrap())
}

/// Serves one local share.
pub fn provider(share: LocalShare) -> Arc<dyn Provider> {
    Arc::new(LocalProvider::new(share, None))
}

/// The sources a fetch dropped, with why, from its progress events.
pub fn dropped(events: &[Progress]) -> Vec<(peerdrop::net::PeerId, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Progress::PeerDropped { peer, reason } => Some((*peer, reason.clone())),
            _ => None,
        })
        .collect()
}
