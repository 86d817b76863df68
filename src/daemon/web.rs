//! The daemon's HTTP side: with `web = true` its shares are served to
//! browsers on the LAN (`crate::web`), from the same [`Registry`] the
//! libp2p side serves and bounded like it (docs/WEB.md).

use std::net::SocketAddr;
use std::sync::Arc;

use libp2p::Multiaddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::daemon::config::Config;
use crate::daemon::registry::Registry;
use crate::daemon::DaemonError;
use crate::web::{self, WebConfig};

/// The running web server for browsers on the LAN.
pub(super) struct LanWeb {
    /// The address web links name (a LAN address when bound to all).
    pub link_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl LanWeb {
    /// Starts serving `registry` to browsers if the configuration says so;
    /// `listen` are the node's listen addresses, best first.
    pub async fn start(
        config: &Config,
        registry: Arc<Registry>,
        listen: &[Multiaddr],
    ) -> Result<Option<LanWeb>, DaemonError> {
        if !config.web {
            return Ok(None);
        }
        let listener = TcpListener::bind(config.web_listen)
            .await
            .map_err(|error| DaemonError::Listen {
                what: "browsers (web_listen)",
                addr: config.web_listen,
                error,
            })?;
        let bound = listener.local_addr().map_err(|error| DaemonError::Listen {
            what: "browsers (web_listen)",
            addr: config.web_listen,
            error,
        })?;
        let web_config = WebConfig {
            // Its own budget of the same rate, as for `send --web`.
            max_rate: config.max_upload_rate,
            ..WebConfig::default()
        };
        let task = tokio::spawn(web::serve(listener, registry, web_config));
        let link_addr = web::link_addr(bound, listen);
        tracing::info!(%bound, "serving browsers at http://{link_addr}/");
        Ok(Some(LanWeb { link_addr, task }))
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}
