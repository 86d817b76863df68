//! The node daemon: persistent shares, background fetches and pins,
//! re-seeding, and a local control API.
//!
//! - [`config`] holds `peerdrop.toml`;
//! - [`state`] holds what survives a restart (shares, fetches, pins, ports);
//! - [`registry`] is what the node serves;
//! - [`control`] is the control socket's protocol, server and client.
//!
//! The data dir (mode 0700) holds `identity.key`, `peerdrop.toml`,
//! `state.json`, `shares/<id>/{manifest,metadata}`, the pin chunk store
//! `store/`, the lock `daemon.lock` and the socket `control.sock` (0600).

pub mod config;
pub mod control;
pub mod registry;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::chunk::{hex, unhex};
use crate::crypto::ShareKey;
use crate::link::Link;
use crate::manifest::{Manifest, ManifestId};
use crate::meta::Metadata;
use crate::net::fetch::{fetch, fetch_ciphertext, FetchOptions, Progress};
use crate::net::node::{self, Client, NodeConfig};
use crate::net::serve::{serve, ServeConfig};
use crate::net::{hint_addrs, PeerAddr};
use crate::seal::SealOptions;
use crate::store::chunks::ChunkDir;
use crate::store::output::OutputOptions;
use crate::store::share::LocalShare;
use crate::store::source::Source;
use config::Config;
use registry::{Pinned, Registry, Served};
use state::{FetchRecord, JobStatus, Origin, PinRecord, ShareRecord, State};

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

/// Where a background job stands, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobProgress {
    /// Bytes done (content for fetches, ciphertext for pins).
    pub bytes: u64,
    /// Bytes in all, once known.
    pub total: u64,
    /// Running, done or failed.
    pub status: JobStatus,
}

struct Job {
    progress: watch::Receiver<JobProgress>,
    started: Instant,
    kind: &'static str,
}

/// The running daemon, shared by the control connections and the jobs.
pub struct Daemon {
    data_dir: PathBuf,
    config: Config,
    client: Client,
    registry: Arc<Registry>,
    state: Mutex<State>,
    /// Running and finished jobs this run, by kind ("fetch" or "pin") and id.
    jobs: Mutex<HashMap<(&'static str, ManifestId), Job>>,
    store: ChunkDir,
}

fn dir_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |error| DaemonError::DataDir {
        path: path.to_owned(),
        error,
    }
}

/// Loads the node identity, creating it (mode 0600) on the first start.
fn identity(data_dir: &Path) -> Result<Keypair, DaemonError> {
    let path = data_dir.join("identity.key");
    match fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| DaemonError::State(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = Keypair::generate_ed25519();
            let bytes = k.to_protobuf_encoding().expect("ed25519 keys encode");
            state::write_private(&path, &bytes).map_err(dir_err(&path))?;
            Ok(k)
        }
        Err(e) => Err(dir_err(&path)(e)),
    }
}

/// Replaces port 0 with the port kept from an earlier start.
fn with_kept_port(addr: &Multiaddr, ports: &state::Ports) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            Protocol::Tcp(0) => Protocol::Tcp(ports.tcp.unwrap_or(0)),
            Protocol::Udp(0) => Protocol::Udp(ports.udp.unwrap_or(0)),
            p => p,
        })
        .collect()
}

fn ports_of(addrs: &[Multiaddr]) -> state::Ports {
    let mut ports = state::Ports::default();
    for a in addrs {
        for p in a.iter() {
            match p {
                Protocol::Tcp(n) => ports.tcp = ports.tcp.or(Some(n)),
                Protocol::Udp(n) => ports.udp = ports.udp.or(Some(n)),
                _ => {}
            }
        }
    }
    ports
}

/// Parses a manifest id given in full or as a unique hex prefix (8+ digits).
fn find_id<'a>(ids: impl Iterator<Item = &'a String>, given: &str) -> Result<String, String> {
    let given = given.to_ascii_lowercase();
    if given.len() < 8 {
        return Err("give at least 8 hex digits of the id (see `peerdrop list`)".into());
    }
    let found: Vec<&String> = ids.filter(|id| id.starts_with(&given)).collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "no share, fetch or pin has an id starting with {given}"
        )),
        _ => Err(format!("{given} matches several ids; give more digits")),
    }
}

fn parse_id(hex_id: &str) -> Option<ManifestId> {
    Some(ManifestId(unhex(hex_id)?.try_into().ok()?))
}

fn key_from_hex(h: &str) -> Option<ShareKey> {
    ShareKey::from_bytes(unhex(h)?.try_into().ok()?).ok()
}

/// Starts the daemon and runs it until `shutdown` resolves.
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let data_dir = opts.data_dir.clone();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .map_err(dir_err(&data_dir))?;
    // The data dir holds keys and the control socket: owner only.
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
        .map_err(dir_err(&data_dir))?;
    let lock_path = data_dir.join("daemon.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(dir_err(&lock_path))?;
    // SAFETY: flock on a file descriptor we own; held until the process ends.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(DaemonError::Locked(data_dir));
    }
    let mut config = Config::load(&data_dir.join("peerdrop.toml"))?;
    if opts.no_reseed {
        config.reseed = false;
    }
    if opts.no_mdns {
        config.mdns = false;
    }
    config.relay_server |= opts.relay_server;
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
    let keypair = identity(&data_dir)?;
    let mut state = State::load(&data_dir.join("state.json"))?;
    let store = ChunkDir::create(&data_dir.join("store")).map_err(dir_err(&data_dir))?;

    let client = node::spawn(NodeConfig {
        keypair: Some(keypair),
        max_connections: config.max_connections,
        mdns: config.mdns,
        dht_server: config.dht_server,
        bootstrap,
        relay_server: config.relay_server,
        relay_max_circuit_bytes: config.relay_max_circuit_bytes,
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
        state.ports = ports;
        state.save(&data_dir.join("state.json"))?;
    }
    tracing::info!(peer = %client.peer_id(), "daemon started");

    let registry = Arc::new(Registry::default());
    let daemon = Arc::new(Daemon {
        data_dir: data_dir.clone(),
        config: config.clone(),
        client: client.clone(),
        registry: registry.clone(),
        state: Mutex::new(state),
        jobs: Mutex::new(HashMap::new()),
        store,
    });
    daemon.restore();
    let serve_task = tokio::spawn(serve(
        client.incoming().expect("the daemon serves once"),
        registry,
        ServeConfig {
            max_rate: config.max_upload_rate,
            ..ServeConfig::default()
        },
    ));
    let socket = data_dir.join("control.sock");
    // The lock is held, so a socket file left here is a dead daemon's.
    let _ = fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).map_err(dir_err(&socket))?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).map_err(dir_err(&socket))?;
    let control_task = tokio::spawn(control::serve(listener, daemon.clone()));
    shutdown.await;
    tracing::info!("shutting down");
    control_task.abort();
    let _ = fs::remove_file(&socket);
    serve_task.abort();
    client.shutdown().await;
    drop(lock);
    Ok(())
}

impl Daemon {
    fn save(&self, state: &State) {
        if let Err(e) = state.save(&self.data_dir.join("state.json")) {
            tracing::error!("{e}");
        }
    }

    /// Announces in the DHT that this node serves `id` (under its locator).
    fn announce(&self, id: ManifestId) {
        let client = self.client.clone();
        tokio::spawn(async move { client.provide(id.locator().to_vec()).await });
    }

    fn share_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("shares").join(id)
    }

    /// Serves the shares and pins in the state, and resumes interrupted jobs.
    fn restore(self: &Arc<Self>) {
        let state = self.state.lock().expect("never poisoned").clone();
        for rec in &state.shares {
            if let Err(e) = self.serve_record(rec) {
                tracing::warn!(id = %rec.id, "cannot serve a saved share: {e}");
            }
        }
        for pin in &state.pins {
            match pin.status {
                JobStatus::Done => {
                    let r = parse_id(&pin.id)
                        .and_then(|id| Some((id, self.store.get_manifest(&id).ok()?)))
                        .and_then(|(id, b)| Some((id, Manifest::decode_verified(&id, &b).ok()?)));
                    match r {
                        Some((id, m)) => {
                            self.registry
                                .add_pinned(id, Pinned::new(m, self.store.clone()));
                            self.announce(id);
                        }
                        None => {
                            tracing::warn!(id = %pin.id, "a pinned manifest is missing from the store")
                        }
                    }
                }
                JobStatus::Running => self.start_pin(pin.clone()),
                JobStatus::Failed { .. } => {}
            }
        }
        for f in &state.fetches {
            if f.status == JobStatus::Running {
                tracing::info!(id = %f.id, "resuming an interrupted fetch");
                self.start_fetch(f.clone());
            }
        }
    }

    /// Serves a saved share from its files.
    fn serve_record(&self, rec: &ShareRecord) -> Result<(), String> {
        let dir = self.share_dir(&rec.id);
        let id = parse_id(&rec.id).ok_or("bad id")?;
        let key = key_from_hex(&rec.key).ok_or("bad key")?;
        let mbytes = fs::read(dir.join("manifest")).map_err(|e| e.to_string())?;
        let manifest = Manifest::decode_verified(&id, &mbytes).map_err(|e| e.to_string())?;
        let metadata =
            Metadata::decode(&fs::read(dir.join("metadata")).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let roots: HashMap<String, PathBuf> = rec.roots.clone().into_iter().collect();
        let source = Source::from_metadata(metadata, &roots).map_err(|e| e.to_string())?;
        let share =
            LocalShare::open(source, &key, manifest).ok_or("the key does not open the manifest")?;
        self.registry.add_local(share);
        self.announce(id);
        Ok(())
    }

    /// Persists and serves a share (its manifest and file list go to
    /// `shares/<id>/`).
    fn keep_share(
        &self,
        key: &ShareKey,
        manifest: &Manifest,
        metadata: &Metadata,
        roots: BTreeMap<String, PathBuf>,
        origin: Origin,
    ) -> Result<String, String> {
        let id = hex(&manifest.id().0);
        let dir = self.share_dir(&id);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        state::write_private(&dir.join("manifest"), &manifest.encode())
            .map_err(|e| e.to_string())?;
        state::write_private(&dir.join("metadata"), &metadata.encode())
            .map_err(|e| e.to_string())?;
        let rec = ShareRecord {
            id: id.clone(),
            key: hex(key.expose_secret()),
            roots,
            origin,
            bytes: metadata.content_len(),
            files: metadata.file_count(),
        };
        self.serve_record(&rec)?;
        let mut st = self.state.lock().expect("never poisoned");
        st.shares.retain(|s| s.id != id);
        st.shares.push(rec);
        self.save(&st);
        Ok(id)
    }

    /// The read link (with the key) or pin link of a share, with this node
    /// as the hint.
    async fn link_for(&self, id: ManifestId, key: Option<ShareKey>) -> String {
        let hint = PeerAddr {
            peer: self.client.peer_id(),
            addrs: self.listen_addrs().await,
        }
        .to_hint();
        Link::new(id, vec![hint], key)
            .expect("one hint is within the caps")
            .to_uri_string()
    }

    /// Where this node listens now, in hint order (read each time: interface
    /// addresses can appear after start-up).
    async fn listen_addrs(&self) -> Vec<Multiaddr> {
        hint_addrs(self.client.listen_addrs().await.unwrap_or_default())
    }

    fn sources_of(link: &Link, extra: &[String]) -> Vec<String> {
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

    fn parse_sources(sources: &[String]) -> Vec<PeerAddr> {
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

    fn fetch_options(&self, force: bool) -> FetchOptions {
        FetchOptions {
            request_timeout: Duration::from_secs(self.config.request_timeout_secs.max(1)),
            wait: Duration::from_secs(self.config.fetch_wait_secs),
            output: OutputOptions { force },
            discover: true,
            ..FetchOptions::default()
        }
    }

    /// Registers a job and returns the sender its task reports on.
    fn new_job(&self, id: ManifestId, kind: &'static str) -> watch::Sender<JobProgress> {
        let (tx, rx) = watch::channel(JobProgress {
            bytes: 0,
            total: 0,
            status: JobStatus::Running,
        });
        self.jobs.lock().expect("never poisoned").insert(
            (kind, id),
            Job {
                progress: rx,
                started: Instant::now(),
                kind,
            },
        );
        tx
    }

    /// Forwards fetch progress to a job's watchers.
    fn watch_progress(
        tx: watch::Sender<JobProgress>,
    ) -> (
        mpsc::UnboundedSender<Progress>,
        tokio::task::JoinHandle<watch::Sender<JobProgress>>,
    ) {
        let (ptx, mut prx) = mpsc::unbounded_channel();
        let h = tokio::spawn(async move {
            while let Some(p) = prx.recv().await {
                tx.send_modify(|j| match p {
                    Progress::Started { total, .. } => j.total = total,
                    Progress::Resumed { bytes } | Progress::Bytes(bytes) => j.bytes = bytes,
                    _ => {}
                });
            }
            tx
        });
        (ptx, h)
    }

    /// Registers job (`kind`, `id`) and runs `work` on a task of its own.
    /// `work` gets the daemon and a sender for its progress, and returns the
    /// job's final status, which is published after every progress event.
    fn spawn_job<F, Fut>(self: &Arc<Self>, id: ManifestId, kind: &'static str, work: F)
    where
        F: FnOnce(Arc<Self>, mpsc::UnboundedSender<Progress>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = JobStatus> + Send + 'static,
    {
        let tx = self.new_job(id, kind);
        let me = self.clone();
        tokio::spawn(async move {
            let (ptx, forward) = Daemon::watch_progress(tx);
            let status = work(me, ptx).await;
            let tx = forward.await.expect("the forwarder does not panic");
            tx.send_modify(|j| j.status = status);
        });
    }

    fn start_fetch(self: &Arc<Self>, rec: FetchRecord) {
        let Some(id) = parse_id(&rec.id) else { return };
        self.spawn_job(id, "fetch", move |me, ptx| async move {
            let Some(key) = key_from_hex(&rec.key) else {
                return JobStatus::Failed {
                    error: "the saved key is unreadable; fetch the link again".into(),
                };
            };
            let link = Link::new(id, Vec::new(), Some(key)).expect("no hints");
            let sources = Daemon::parse_sources(&rec.sources);
            let r = fetch(
                &me.client,
                &link,
                sources,
                &rec.out,
                &me.fetch_options(rec.force),
                ptx,
            )
            .await;
            match r {
                Ok(done) => {
                    if me.config.reseed {
                        let roots = done
                            .paths
                            .iter()
                            .filter_map(|p| Some((p.file_name()?.to_str()?.to_owned(), p.clone())))
                            .collect();
                        let key = link.key().expect("a read link");
                        if let Err(e) = me.keep_share(
                            key,
                            &done.manifest,
                            &done.metadata,
                            roots,
                            Origin::Fetched,
                        ) {
                            tracing::warn!("cannot re-seed {}: {e}", rec.id);
                        }
                    }
                    me.update_fetch(&rec.id, |f| {
                        f.status = JobStatus::Done;
                        f.bytes = done.bytes;
                        f.paths = done.paths.clone();
                        // Kept only while needed to resume (a re-seeded
                        // share keeps its own copy in its share record).
                        f.key.clear();
                    });
                    JobStatus::Done
                }
                Err(e) => {
                    let error = e.to_string();
                    tracing::warn!(id = %rec.id, "fetch failed: {error}");
                    me.update_fetch(&rec.id, |f| {
                        f.status = JobStatus::Failed {
                            error: error.clone(),
                        };
                        // Fetching again takes the link (and its key) again.
                        f.key.clear();
                    });
                    JobStatus::Failed { error }
                }
            }
        });
    }

    fn update_fetch(&self, id: &str, f: impl FnOnce(&mut FetchRecord)) {
        let mut st = self.state.lock().expect("never poisoned");
        if let Some(r) = st.fetches.iter_mut().find(|r| r.id == id) {
            f(r);
        }
        self.save(&st);
    }

    fn start_pin(self: &Arc<Self>, rec: PinRecord) {
        let Some(id) = parse_id(&rec.id) else { return };
        self.spawn_job(id, "pin", move |me, ptx| async move {
            let sources = Daemon::parse_sources(&rec.sources);
            let r = fetch_ciphertext(
                &me.client,
                id,
                sources,
                &me.store,
                &me.fetch_options(false),
                ptx,
            )
            .await;
            match r {
                Ok(m) => {
                    let bytes = m.sealed_size();
                    me.registry.add_pinned(id, Pinned::new(m, me.store.clone()));
                    me.announce(id);
                    me.update_pin(&rec.id, |p| {
                        p.status = JobStatus::Done;
                        p.bytes = bytes;
                    });
                    JobStatus::Done
                }
                Err(e) => {
                    let error = e.to_string();
                    me.update_pin(&rec.id, |p| {
                        p.status = JobStatus::Failed {
                            error: error.clone(),
                        }
                    });
                    JobStatus::Failed { error }
                }
            }
        });
    }

    fn update_pin(&self, id: &str, f: impl FnOnce(&mut PinRecord)) {
        let mut st = self.state.lock().expect("never poisoned");
        if let Some(r) = st.pins.iter_mut().find(|r| r.id == id) {
            f(r);
        }
        self.save(&st);
    }

    /// `share`: seals the paths (reading them once) and serves them.
    pub async fn share(
        self: &Arc<Self>,
        paths: Vec<PathBuf>,
        hints: bool,
    ) -> Result<Value, String> {
        if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
            return Err(format!("{} is not an absolute path", p.display()));
        }
        let key = ShareKey::generate().map_err(|e| e.to_string())?;
        let k2 = key.duplicate();
        let p2 = paths.clone();
        let share = tokio::task::spawn_blocking(move || {
            LocalShare::create(&p2, &k2, &SealOptions::default(), |_| {})
        })
        .await
        .expect("sealing does not panic")
        .map_err(|e| e.to_string())?;
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
    ) -> Result<ManifestId, String> {
        let link = Link::parse_read_link(link).map_err(|e| e.to_string())?;
        if !out.is_absolute() {
            return Err(format!("{} is not an absolute path", out.display()));
        }
        let id = *link.manifest_id();
        if self.running("fetch", &id) {
            // Join it, but only if it is the same request.
            let st = self.state.lock().expect("never poisoned");
            if let Some(r) = st.fetches.iter().find(|f| f.id == hex(&id.0)) {
                if r.out != out {
                    return Err(format!(
                        "this share is already being fetched into {}; wait for that fetch (see `peerdrop list`)",
                        r.out.display()
                    ));
                }
            }
            return Ok(id);
        }
        let rec = FetchRecord {
            id: hex(&id.0),
            key: hex(link
                .require_key()
                .map_err(|e| e.to_string())?
                .expose_secret()),
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
    pub fn pin(self: &Arc<Self>, link: &str, peers: Vec<String>) -> Result<ManifestId, String> {
        let link: Link = link
            .parse()
            .map_err(|e: crate::link::ParseError| e.to_string())?;
        if link.key().is_some() {
            return Err(
                "refusing a read link for a pin: send the pin link (without the part after '#')"
                    .into(),
            );
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

    fn running(&self, kind: &'static str, id: &ManifestId) -> bool {
        self.jobs
            .lock()
            .expect("never poisoned")
            .get(&(kind, *id))
            .is_some_and(|j| j.progress.borrow().status == JobStatus::Running)
    }

    /// A watcher on a job's progress (`kind` is "fetch" or "pin").
    pub fn watch(
        &self,
        kind: &'static str,
        id: &ManifestId,
    ) -> Option<watch::Receiver<JobProgress>> {
        self.jobs
            .lock()
            .expect("never poisoned")
            .get(&(kind, *id))
            .map(|j| j.progress.clone())
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
    pub fn unshare(&self, given: &str) -> Result<Value, String> {
        let mut st = self.state.lock().expect("never poisoned");
        let mut ids: Vec<String> = st
            .shares
            .iter()
            .map(|s| s.id.clone())
            .chain(st.pins.iter().map(|p| p.id.clone()))
            .collect();
        // A re-seeded share can also be pinned here: one id, listed once.
        ids.sort();
        ids.dedup();
        let id = find_id(ids.iter(), given)?;
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
    pub async fn link(&self, given: &str, pin: bool) -> Result<Value, String> {
        let (mid, id, key) = self.link_parts(given, pin)?;
        Ok(json!({"ok": true, "id": id, "link": self.link_for(mid, key).await}))
    }

    fn link_parts(
        &self,
        given: &str,
        pin: bool,
    ) -> Result<(ManifestId, String, Option<ShareKey>), String> {
        let st = self.state.lock().expect("never poisoned");
        let mut ids: Vec<String> = st
            .shares
            .iter()
            .map(|s| s.id.clone())
            .chain(st.pins.iter().map(|p| p.id.clone()))
            .collect();
        // A re-seeded share can also be pinned here: one id, listed once.
        ids.sort();
        ids.dedup();
        let id = find_id(ids.iter(), given)?;
        let mid = parse_id(&id).ok_or("bad id")?;
        let key = match st.shares.iter().find(|s| s.id == id) {
            Some(s) if !pin => Some(key_from_hex(&s.key).ok_or("bad key in state")?),
            Some(_) => None,
            None if pin => None,
            None => return Err("this node only pins that share and has no key for it: only its pin link exists here (use --pin)".into()),
        };
        Ok((mid, id, key))
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
