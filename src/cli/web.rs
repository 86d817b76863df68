//! `--web`: serve a share to browsers alongside the libp2p node.

use std::sync::Arc;

use anyhow::Context;
use libp2p::Multiaddr;
use peerdrop::crypto::ShareKey;
use peerdrop::manifest::ManifestId;
use peerdrop::net::serve::Provider;
use peerdrop::web::{self, WebConfig};

use crate::cli::SendArgs;

/// Starts the web server for `peerdrop send --web`; returns the web link.
/// `lan` are the node's listen addresses, best first: the link names the
/// first LAN address among them when the server listens on all interfaces.
pub async fn start(
    args: &SendArgs,
    provider: Arc<dyn Provider>,
    lan: &[Multiaddr],
    id: &ManifestId,
    key: &ShareKey,
) -> anyhow::Result<String> {
    let config = WebConfig {
        max_rate: args.max_rate,
        ..WebConfig::default()
    };
    let bound = web::spawn(args.web_listen, provider, config)
        .await
        .with_context(|| format!("listening for browsers on {}", args.web_listen))?;
    Ok(web::web_link(web::link_addr(bound, lan), id, key))
}
