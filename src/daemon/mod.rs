//! The node daemon: persistent shares, background fetches and pins,
//! re-seeding, and a local control API.
//!
//! - [`config`] holds `peerdrop.toml`;
//! - [`state`] holds what survives a restart (shares, fetches, pins, ports);
//! - [`registry`] is what the node serves;
//! - [`control`] is the control socket's protocol, server and client.
//!
//! Inside, each file has one job: this one starts and stops the daemon;
//! `data_dir` prepares the data dir (mode, lock, identity, kept ports,
//! socket); `shares` persists and restores served shares; `jobs` runs
//! background fetches and pins; `handlers` answers the control requests;
//! `links` builds links and source lists; `ids` resolves id prefixes;
//! `peers` keeps the peer cache the daemon bootstraps from; `stale` finds
//! served shares whose files changed.
//!
//! The data dir (mode 0700) holds `identity.key`, `peerdrop.toml`,
//! `state.json`, `peers.json` (the peer cache),
//! `shares/<id>/{manifest,metadata}`, the pin chunk store
//! `store/`, the lock `daemon.lock` and the socket `control.sock` (0600).

pub mod config;
pub mod control;
mod data_dir;
mod errors;
mod handlers;
mod ids;
mod jobs;
mod journal;
mod links;
mod peers;
pub mod registry;
mod shares;
mod stale;
pub mod state;
mod tasks;
mod web;

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use crate::manifest::ManifestId;
use crate::net::hint_addrs;
use crate::net::node::{self, Client, NodeConfig};
use crate::net::serve::{serve, ServeConfig};
use crate::store::chunks::ChunkDir;
use config::Config;
use data_dir::{dir_err, identity, ports_of, with_kept_port};
pub use errors::{IdError, KeptShareError, RequestError};
pub use jobs::JobProgress;
use jobs::Jobs;
use journal::{Change, Store, StoreError, Tx};
use registry::Registry;
use state::State;
use tasks::{Stop, Tasks};

/// Most streams the daemon serves to one peer at once. Another daemon runs
/// up to `max_jobs` (16 by default) fetches from it at once, each with a
/// stream open, and a stream lingers here for a moment after the fetcher
/// has moved on to its next; with the one-shot default (8) the extra ones
/// were refused `Busy` and their fetches paused for seconds (measured: 7
/// such pauses of 10 s in 1,000 queued fetches, which took 13.8 s). The
/// node's total and per-address caps and the memory budget still bound
/// what any one peer can take.
const STREAMS_PER_PEER: usize = 32;
/// How long shutdown waits for jobs to stop once told to.
const JOB_DRAIN: Duration = Duration::from_secs(10);
/// How long shutdown waits for control connections to finish their answer.
const CONTROL_DRAIN: Duration = Duration::from_secs(5);
/// How long shutdown waits for the serve loop once the node is down.
const SERVE_DRAIN: Duration = Duration::from_secs(5);
/// Counted downloads waiting to be saved (each is a few bytes; the saver
/// only notes them in the journal, so the queue stays near empty).
const DOWNLOADS_QUEUE: usize = 1024;

/// Why the daemon cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon holds the data dir.
    #[error("another peerdrop daemon is already running with data dir {0}")]
    Locked(PathBuf),
    /// The configuration file is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The state file cannot be read or written.
    #[error("daemon state: {0}")]
    State(String),
    /// The data dir cannot be used.
    #[error("data dir {}: {error}", path.display())]
    DataDir {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// An HTTP listener cannot be bound.
    #[error("cannot listen for {what} on {addr}: {error}")]
    Listen {
        /// What it is for.
        what: &'static str,
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The network failed to start.
    #[error(transparent)]
    Net(#[from] crate::net::node::NetError),
}

/// How to start the daemon; the binary decides these.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Listen addresses overriding the configuration.
    pub listen: Vec<Multiaddr>,
    /// Turn re-seeding off whatever the configuration says.
    pub no_reseed: bool,
    /// Turn mDNS off whatever the configuration says.
    pub no_mdns: bool,
    /// Bootstrap peers in addition to the configuration's.
    pub bootstrap: Vec<Multiaddr>,
    /// Be a relay server whatever the configuration says.
    pub relay_server: bool,
    /// Relays to listen through, in addition to the configuration's.
    pub relays: Vec<Multiaddr>,
}

/// The running daemon, shared by the control connections and the jobs.
pub struct Daemon {
    data_dir: PathBuf,
    config: Config,
    client: Client,
    registry: Arc<Registry>,
    state: Mutex<State>,
    /// Makes changes to `state` durable.
    store: Store,
    /// Queued and running jobs, and the queue.
    jobs: Mutex<Jobs>,
    /// The job tasks, waited for on shutdown.
    job_tasks: Tasks,
    /// Raised on shutdown: jobs and control connections stop.
    stop: Stop,
    chunks: ChunkDir,
    /// The peers met, bootstrapped from at the next start.
    peers: peers::PeerBook,
    /// The served shares whose files changed, as last found.
    stale: stale::StaleShares,
    /// The address web links name, when browsers are served (`web`).
    web: Option<std::net::SocketAddr>,
    /// Where the local web UI listens, once it does.
    ui: std::sync::OnceLock<std::net::SocketAddr>,
}

/// Starts the daemon and runs it until `shutdown` resolves.
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let data_dir = opts.data_dir.clone();
    let lock = data_dir::lock(&data_dir)?;
    let mut config = Config::load(&data_dir.join("peerdrop.toml"))?;
    if opts.no_reseed {
        config.reseed = false;
    }
    if opts.no_mdns {
        config.mdns = false;
    }
    if opts.relay_server {
        config.relay_server = config::Setting::On;
    }
    let parse = |list: &[String], what: &str| -> Result<Vec<Multiaddr>, DaemonError> {
        list.iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| DaemonError::Config(format!("{what} {a:?}: {e}")))
            })
            .collect()
    };
    let mut bootstrap = parse(&config.bootstrap, "bootstrap address")?;
    bootstrap.extend(opts.bootstrap.iter().cloned());
    let mut relays = parse(&config.relays, "relay address")?;
    relays.extend(opts.relays.iter().cloned());
    // Peers met in earlier runs join the configured bootstrap peers: one
    // contact, once, is enough.
    let peer_book = peers::PeerBook::load(&data_dir, &bootstrap);
    bootstrap.extend(peer_book.bootstrap_addrs());
    let keypair = identity(&data_dir)?;
    let (store_writer, mut state) = Store::open(&data_dir)?;
    let chunks = ChunkDir::create(&data_dir.join("store")).map_err(dir_err(&data_dir))?;

    let client = node::spawn(NodeConfig {
        keypair: Some(keypair),
        max_connections: config.max_connections,
        mdns: config.mdns,
        dht_server: config.dht_server.into(),
        bootstrap,
        relay_server: config.relay_server.into(),
        relay_limits: config.relay_limits(),
        auto_relay: true,
        ..NodeConfig::default()
    })?;
    let wanted: Vec<Multiaddr> = if opts.listen.is_empty() {
        config
            .listen
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| DaemonError::Config(format!("listen address {a:?}: {e}")))
            })
            .collect::<Result<_, _>>()?
    } else {
        opts.listen.clone()
    };
    for a in &wanted {
        let kept = with_kept_port(a, &state.ports);
        if let Err(e) = client.listen(kept.clone()).await {
            if kept == *a {
                return Err(e.into());
            }
            tracing::warn!("cannot listen on {kept} as before ({e}); picking another port, so older links' addresses no longer work");
            client.listen(a.clone()).await?;
        }
    }
    for r in &relays {
        if let Err(e) = client.listen(r.clone().with(Protocol::P2pCircuit)).await {
            tracing::warn!("cannot reserve a circuit on relay {r}: {e}");
        }
    }
    let listen = hint_addrs(client.listen_addrs().await?);
    let ports = ports_of(&listen);
    if state.ports != ports {
        state.ports = ports.clone();
        store_writer
            .submit(vec![Change::Ports(ports)])
            .await
            .expect("the state writer answers every change")
            .map_err(|e| DaemonError::State(e.to_string()))?;
    }
    tracing::info!(peer = %client.peer_id(), "daemon started");

    let registry = Arc::new(Registry::default());
    let lan_web = web::LanWeb::start(&config, registry.clone(), &listen).await?;
    let (stopper, stop) = Stop::new();
    let daemon = Arc::new(Daemon {
        data_dir: data_dir.clone(),
        config: config.clone(),
        client: client.clone(),
        registry: registry.clone(),
        state: Mutex::new(state),
        store: store_writer,
        jobs: Mutex::new(Jobs::default()),
        job_tasks: Tasks::default(),
        stop: stop.clone(),
        chunks,
        peers: peer_book,
        stale: stale::StaleShares::default(),
        web: lan_web.as_ref().map(|w| w.link_addr),
        ui: std::sync::OnceLock::new(),
    });
    // Before restore: a receiver counted right after its share is served
    // again is saved too.
    let (counted_tx, counted) = tokio::sync::mpsc::channel(DOWNLOADS_QUEUE);
    registry.report_downloads(counted_tx);
    daemon
        .job_tasks
        .spawn(daemon.clone().keep_downloads(counted, stop.clone()));
    daemon.restore();
    daemon
        .job_tasks
        .spawn(daemon.clone().watch_expiry(stop.clone()));
    daemon
        .job_tasks
        .spawn(daemon.clone().keep_peers(stop.clone()));
    daemon
        .job_tasks
        .spawn(daemon.clone().watch_staleness(stop.clone()));
    let serve_task = tokio::spawn(serve(
        client.incoming().expect("the daemon serves once"),
        registry,
        ServeConfig {
            max_rate: config.max_upload_rate,
            identity: Some(client.peer_id()),
            max_streams_per_peer: STREAMS_PER_PEER,
            ..ServeConfig::default()
        },
    ));
    let local_ui = web::LocalUi::start(&config, daemon.clone()).await?;
    let (listener, socket) = data_dir::bind_control(&data_dir)?;
    let control_task = tokio::spawn(control::serve(
        listener,
        daemon.clone(),
        stop,
        CONTROL_DRAIN,
    ));
    shutdown.await;
    tracing::info!("shutting down");
    // New clients find no daemon; jobs stop (their records stay `running`,
    // so they resume on the next start); followers get a last line saying
    // so; then the node goes down.
    let _ = fs::remove_file(&socket);
    if let Some(w) = lan_web {
        w.stop();
    }
    if let Some(u) = local_ui {
        u.stop();
    }
    stopper.stop();
    let aborted = daemon.job_tasks.drain(JOB_DRAIN).await;
    if aborted > 0 {
        tracing::warn!("{aborted} job(s) did not stop within {JOB_DRAIN:?}; aborted");
    }
    daemon.forget_jobs();
    if control_task.await.is_err() {
        tracing::error!("the control server panicked");
    }
    // Every job has stopped: what they changed goes out before the end.
    daemon.store.close();
    client.shutdown().await;
    // The serve loop ends when the node's streams do.
    // The serve loop ends once the node is down and its inbound queue with
    // it; the deadline only guards against a bug there.
    let serve_abort = serve_task.abort_handle();
    if tokio::time::timeout(SERVE_DRAIN, serve_task).await.is_err() {
        tracing::warn!("the serve task did not end within {SERVE_DRAIN:?}; aborted");
        serve_abort.abort();
    }
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

impl Daemon {
    /// Changes the state under its lock and returns once the changes are
    /// durable (journalled and flushed, together with any other changes
    /// made meanwhile).
    async fn commit<T>(&self, change: impl FnOnce(&mut Tx) -> T) -> Result<T, StoreError> {
        let (out, durable) = self.commit_soon(change);
        durable.wait().await?;
        Ok(out)
    }

    /// Changes the state under its lock and queues the changes for the
    /// journal; returns at once, with what tells when they are durable. For
    /// a caller that can start work which does not depend on them (a job
    /// whose record is being flushed) before it answers.
    fn commit_soon<T>(&self, change: impl FnOnce(&mut Tx) -> T) -> (T, Durable) {
        let mut st = self.state.lock().expect("never poisoned");
        let mut tx = Tx::new(&mut st);
        let out = change(&mut tx);
        let changes = tx.into_changes();
        // Submitted under the lock: the journal's order is the state's.
        let durable = (!changes.is_empty()).then(|| self.store.submit(changes));
        (out, Durable(durable))
    }

    /// Changes the state under its lock and queues the changes for the
    /// journal without waiting for them: for a job's bookkeeping that a
    /// restart may lose (a job marked running resumes from queued just the
    /// same), where waiting would only add an `fdatasync` to every job. The
    /// next [`Daemon::commit`] makes it durable with its own changes (the
    /// journal keeps their order); a failed write is logged by the writer.
    fn note<T>(&self, change: impl FnOnce(&mut Tx) -> T) -> T {
        let mut st = self.state.lock().expect("never poisoned");
        let mut tx = Tx::new(&mut st);
        let out = change(&mut tx);
        let changes = tx.into_changes();
        if !changes.is_empty() {
            // The answer is not awaited: see above.
            drop(self.store.submit(changes));
        }
        out
    }

    /// [`Daemon::commit`] for a job's own bookkeeping, where a failure can
    /// only be logged (the job's outcome stands in memory until a restart).
    async fn commit_or_log<T>(&self, change: impl FnOnce(&mut Tx) -> T) -> Option<T> {
        match self.commit(change).await {
            Ok(out) => Some(out),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        }
    }

    /// Announces in the DHT that this node serves `id` (under its locator).
    fn announce(&self, id: ManifestId) {
        let client = self.client.clone();
        tokio::spawn(async move { client.provide(id.locator().to_vec()).await });
    }
}

/// Resolves once changes given to the journal are durable (at once if
/// there were none).
#[must_use = "the changes may not be durable yet"]
struct Durable(Option<tokio::sync::oneshot::Receiver<Result<(), StoreError>>>);

impl Durable {
    async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            // The writer answers every change it takes, and refuses new
            // ones once closed: a dropped answer is a writer that panicked.
            Some(d) => d.await.map_err(|_| StoreError::writer_gone())?,
            None => Ok(()),
        }
    }
}
