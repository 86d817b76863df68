//! The daemon's HTTP side: with `web = true` its shares are served to
//! browsers on the LAN (`crate::web`), from the same [`Registry`] the
//! libp2p side serves and bounded like it; with `ui = true` (the default)
//! the local web UI (`crate::web::ui`) answers control requests on
//! loopback (docs/WEB.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libp2p::Multiaddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::daemon::config::Config;
use crate::daemon::data_dir::dir_err;
use crate::daemon::registry::Registry;
use crate::daemon::{control, state, Daemon, DaemonError};
use crate::web::ui::{self, UiConfig, UiToken};
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

/// The running local web UI.
pub(super) struct LocalUi {
    task: JoinHandle<()>,
}

impl LocalUi {
    /// Starts the UI if the configuration says so. A `ui_listen` that is
    /// not loopback is refused; one that cannot be bound (a namespace whose
    /// loopback is down, a port in use) is logged and the daemon runs
    /// without its UI.
    pub async fn start(
        config: &Config,
        daemon: Arc<Daemon>,
    ) -> Result<Option<LocalUi>, DaemonError> {
        if !config.ui {
            return Ok(None);
        }
        if !config.ui_listen.ip().is_loopback() {
            return Err(DaemonError::Config(format!(
                "ui_listen {} is not a loopback address: the UI is for this machine only",
                config.ui_listen
            )));
        }
        let token = token(&daemon.data_dir)?;
        let listener = match TcpListener::bind(config.ui_listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "cannot listen for the web UI on {}: {e}; running without it",
                    config.ui_listen
                );
                return Ok(None);
            }
        };
        let addr = listener.local_addr().map_err(|error| DaemonError::Listen {
            what: "the web UI (ui_listen)",
            addr: config.ui_listen,
            error,
        })?;
        let _ = daemon.ui.set(addr);
        let ui_config = UiConfig {
            token,
            upload_dir: daemon.data_dir.join(ui::UPLOAD_DIR),
            max_upload: config.ui_max_upload,
            max_request: control::MAX_REQUEST as usize,
            limits: WebConfig::default(),
        };
        let task = tokio::spawn(ui::serve(listener, Arc::new(UiControl(daemon)), ui_config));
        tracing::info!("web UI on http://{addr}/ (`peerdrop ui` prints its link)");
        Ok(Some(LocalUi { task }))
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// The UI's token, made (0600) on the first start and kept, so that its
/// link stays valid across restarts.
fn token(data_dir: &Path) -> Result<UiToken, DaemonError> {
    let path = data_dir.join(ui::TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match UiToken::from_hex(&text) {
            Ok(t) => return Ok(t),
            Err(e) => tracing::warn!("{}: {e}; making a new token", path.display()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(dir_err(&path)(e)),
    }
    let t = UiToken::generate().map_err(|e| DaemonError::State(e.to_string()))?;
    state::write_private(&path, t.to_hex().as_bytes()).map_err(dir_err(&path))?;
    Ok(t)
}

/// The daemon as the UI's [`ui::Control`]: a request line is answered as
/// the control socket answers it, jobs detached.
struct UiControl(Arc<Daemon>);

impl ui::Control for UiControl {
    fn answer(&self, line: String) -> ui::AnswerLine<'_> {
        Box::pin(async move { control::run_detached(&self.0, &line).await })
    }

    fn share(&self, path: PathBuf) -> ui::AnswerLine<'_> {
        let line = control::request_line(&control::Request::Share(control::ShareRequest {
            paths: vec![path],
            hints: true,
            expires: None,
            max_downloads: None,
        }));
        self.answer(line)
    }
}
