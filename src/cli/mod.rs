//! The command line: argument parsing, output and exit codes.
//!
//! The only part of peerdrop that prints, reads environment variables or
//! decides paths. Stdout carries data (a link, or JSON lines with `--json`);
//! everything for people goes to stderr.

pub mod cat;
pub mod expiry;
pub mod harden;
pub mod inspect;
pub mod local;
pub mod ls;
pub mod offer;
pub mod output;
pub mod password;
pub mod receive;
pub mod relays;
pub mod remote;
pub mod send;
pub mod ui;
pub mod web;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use peerdrop::link::{Link, MAX_LINK_LEN};

/// Peer-to-peer, end-to-end encrypted file exchange.
///
/// Files are sealed into encrypted chunks addressed by their BLAKE3 hash; the
/// key travels only inside the share link.
#[derive(Parser, Debug)]
#[command(name = "peerdrop", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show what a link holds (manifest id, peer hints, whether it has a key) without printing the key.
    Inspect(InspectArgs),
    /// Seal files and folders into a folder of encrypted chunks, and print the link.
    Seal(SealArgs),
    /// Verify, decrypt and write out a share from a folder of encrypted chunks.
    Unseal(UnsealArgs),
    /// Share files and folders directly from this machine: print a link, serve until Ctrl-C.
    Send(SendArgs),
    /// Fetch, verify and write out a share from a link (or part of it, with --only/--exclude).
    Receive(ReceiveArgs),
    /// List what a link holds (paths, sizes, times), fetching only its file list, no content.
    Ls(LsArgs),
    /// Write one file of a share to stdout in order as its chunks verify (for `| mpv -`); nothing touches the disk.
    Cat(CatArgs),
    /// Run the node daemon in the foreground (shares stay online, fetches run in the background).
    Daemon(DaemonArgs),
    /// Share files and folders through the daemon; prints the read link.
    Share(ShareArgs),
    /// Have the daemon fetch a share (or part of it, with --only/--exclude); shows progress until done.
    Fetch(FetchArgs),
    /// Have the daemon host a share's ciphertext (it never gets the key).
    Pin(PinArgs),
    /// List the daemon's shares, pins and fetches.
    List(JsonArgs),
    /// Stop serving a share or pin.
    Unshare(IdArgs),
    /// Print a share's read link again (or its pin link).
    Link(LinkArgs),
    /// Show the daemon's peer id, addresses, peers and transfers.
    Status(JsonArgs),
    /// Stop a queued or running fetch or pin (a fetch's partial data is removed unless --keep).
    Cancel(CancelArgs),
    /// Queue a failed or cancelled fetch or pin again.
    Retry(JobArgs),
    /// Run a queued fetch or pin next, before the rest of the queue.
    Priority(JobArgs),
    /// Print the link of the daemon's local web UI (http://127.0.0.1:PORT/?token=…).
    Ui(UiArgs),
}

/// Where the daemon keeps its data (and its control socket).
#[derive(Args, Debug, Clone)]
pub struct DataDir {
    /// Data dir [default: ~/.local/share/peerdrop].
    #[arg(long, env = "PEERDROP_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

impl DataDir {
    /// The data dir: the flag, else the environment, else the OS convention.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.data_dir {
            return Ok(std::path::absolute(p)?);
        }
        directories::ProjectDirs::from("", "", "peerdrop")
            .map(|d| d.data_dir().to_owned())
            .context("cannot find a home directory for the data dir; pass --data-dir")
    }
}

/// `peerdrop daemon`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Address to listen on (repeatable); overrides the configuration.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<libp2p::Multiaddr>,
    /// Do not serve what this node fetches.
    #[arg(long)]
    pub no_reseed: bool,
    #[command(flatten)]
    pub discovery: Discovery,
    /// Relay circuits for other peers (for peers behind NAT).
    #[arg(long)]
    pub relay_server: bool,
    /// Also be reachable through this relay (multiaddr ending in /p2p/RELAY_ID; repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub relay: Vec<libp2p::Multiaddr>,
    /// More log output (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `peerdrop share`.
#[derive(Args, Debug)]
pub struct ShareArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Files and folders to share.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Make a link without peer hints (found on the LAN or in the DHT instead).
    #[arg(long)]
    pub no_hints: bool,
    #[command(flatten)]
    pub lock: password::PasswordLock,
    /// Also print the web link, for a browser on the LAN (needs `web = true` in the daemon's peerdrop.toml; docs/WEB.md).
    #[arg(long, conflicts_with_all = ["password", "password_file"])]
    pub web: bool,
    /// Also draw the link as a QR code on stderr (the web link, with --web).
    #[arg(long)]
    pub qr: bool,
    #[command(flatten)]
    pub limits: Limits,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What to fetch and where: shared by `receive` and `fetch`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The read link; `-` or nothing reads it from stdin (or PEERDROP_LINK).
    pub link: Option<String>,
    /// Destination folder.
    #[arg(long, short = 'o', default_value = ".")]
    pub out: PathBuf,
    /// Another source, as a multiaddr ending in /p2p/PEER_ID (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Vec<libp2p::Multiaddr>,
    /// Replace existing files (folders are never replaced).
    #[arg(long)]
    pub force: bool,
    /// Write into folders of the share's top level that already exist in
    /// the destination (without it, an existing top-level name is refused).
    #[arg(long)]
    pub merge: bool,
    /// Take only the entries matching this glob (repeatable; a folder takes what is inside it).
    /// `*` and `?` stay within a name, `**` spans folders; without `/` it matches names at any depth.
    #[arg(long, value_name = "GLOB")]
    pub only: Vec<String>,
    /// Leave out the entries matching this glob (repeatable; wins over --only).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    #[command(flatten)]
    pub password: password::PasswordSource,
}

/// `peerdrop fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub get: GetArgs,
    /// Return at once; the daemon fetches in the background (see `peerdrop list`).
    #[arg(long)]
    pub detach: bool,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop pin`.
#[derive(Args, Debug)]
pub struct PinArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// A pin link, or a read link (its key is removed here, before anything reaches the daemon).
    pub link: Option<String>,
    /// Another source, as a multiaddr ending in /p2p/PEER_ID (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Vec<libp2p::Multiaddr>,
    /// Return at once.
    #[arg(long)]
    pub detach: bool,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop ui`.
#[derive(Args, Debug)]
pub struct UiArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Also open it in the browser (with xdg-open).
    #[arg(long)]
    pub open: bool,
}

/// Commands that take only `--json`.
#[derive(Args, Debug)]
pub struct JsonArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop unshare`.
#[derive(Args, Debug)]
pub struct IdArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Share or pin id (or a unique prefix of 8+ hex digits).
    pub id: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which job: `peerdrop retry` and `peerdrop priority`.
#[derive(Args, Debug)]
pub struct JobArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Fetch or pin id (or a unique prefix of 8+ hex digits).
    pub id: String,
    /// The pin, when a fetch and a pin have this id.
    #[arg(long, conflicts_with = "fetch")]
    pub pin: bool,
    /// The fetch, when a fetch and a pin have this id.
    #[arg(long)]
    pub fetch: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Keep a fetch's partial data (a later fetch of the link resumes from it).
    #[arg(long)]
    pub keep: bool,
}

/// `peerdrop link`.
#[derive(Args, Debug)]
pub struct LinkArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Share id (or a unique prefix of 8+ hex digits).
    pub id: String,
    /// Print the pin link (no key) instead of the read link.
    #[arg(long)]
    pub pin: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// Files and folders to share.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Address to listen on (repeatable). Default: every interface, random TCP and QUIC ports.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<libp2p::Multiaddr>,
    /// Exit 0 as soon as the first receiver has everything.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub limits: Limits,
    /// Make a link without peer hints (receivers find this node on the LAN or in the DHT).
    #[arg(long)]
    pub no_hints: bool,
    #[command(flatten)]
    pub discovery: Discovery,
    /// Also be reachable through this relay (multiaddr ending in /p2p/RELAY_ID; repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub relay: Vec<libp2p::Multiaddr>,
    /// Also draw the link as a QR code on stderr (the web link, with --web).
    #[arg(long)]
    pub qr: bool,
    /// Upload limit, bytes per second (suffixes K, M, G: powers of 1024).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_rate: Option<u64>,
    /// Also serve the share to browsers on the LAN over HTTP; prints a web link (docs/WEB.md).
    #[arg(long, conflicts_with_all = ["password", "password_file"])]
    pub web: bool,
    #[command(flatten)]
    pub lock: password::PasswordLock,
    /// Address for --web to listen on.
    #[arg(
        long,
        value_name = "IP:PORT",
        default_value = "0.0.0.0:0",
        requires = "web"
    )]
    pub web_listen: std::net::SocketAddr,
    /// Print JSON lines (link, web_link, listening, peer_done, error) on stdout instead of the bare link.
    #[arg(long)]
    pub json: bool,
    /// More log output on stderr (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How long a share is served, and to how many: `send` and `share`.
#[derive(Args, Debug, Clone, Default)]
pub struct Limits {
    /// Stop serving after this long (30m, 2h, 7d; units s m h d w). The expiry goes into the link and
    /// the share's manifest, so honest re-seeders, pinners and receivers stop at that time too.
    /// Advisory: anyone who already has the link and the data can keep and re-share them (as with
    /// Mega or ffsend).
    #[arg(long, value_name = "DURATION", value_parser = expiry::parse_duration)]
    pub expire: Option<std::time::Duration>,
    /// Stop serving once N distinct receivers have proved they hold the whole share (only this node
    /// counts; a re-seeder or pinner does not). Advisory, like --expire.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=expiry::MAX_DOWNLOADS as i64))]
    pub max_downloads: Option<u32>,
}

/// `peerdrop receive`.
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    #[command(flatten)]
    pub get: GetArgs,
    #[command(flatten)]
    pub one_shot: OneShot,
    /// Do not ask before writing. Without it, when stdin and stderr are a terminal, receive shows what
    /// the share holds (files, size, top-level entries, hidden and executable ones) and asks y/N;
    /// without a terminal it proceeds.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print JSON lines (offer, progress, done, error) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where a one-shot command that only looks at a share finds it: `ls` and `cat`.
#[derive(Args, Debug)]
pub struct LookArgs {
    /// Another source, as a multiaddr ending in /p2p/PEER_ID (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Vec<libp2p::Multiaddr>,
    #[command(flatten)]
    pub one_shot: OneShot,
    #[command(flatten)]
    pub password: password::PasswordSource,
}

/// How a one-shot fetch (`receive`, `ls`, `cat`) runs its own node: how
/// long it waits, how it finds peers, how much it logs.
#[derive(Args, Debug)]
pub struct OneShot {
    /// Seconds to keep trying to reach a source before giving up (progress is kept).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait: u64,
    /// Seconds a source may take to answer one request before it is dropped.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    #[command(flatten)]
    pub discovery: Discovery,
    /// More log output on stderr (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `peerdrop ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// The read link; `-` or nothing reads it from stdin (or PEERDROP_LINK).
    pub link: Option<String>,
    #[command(flatten)]
    pub look: LookArgs,
    /// Also show modification times and the executable bit.
    #[arg(long, short = 'l')]
    pub long: bool,
    /// Print one JSON object (manifest_id, files, bytes, entries) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop cat`.
#[derive(Args, Debug)]
pub struct CatArgs {
    /// The read link; `-` reads it from stdin, `env` from PEERDROP_LINK.
    pub link: String,
    /// The file's path in the share, as `peerdrop ls` prints it.
    pub path: String,
    #[command(flatten)]
    pub look: LookArgs,
}

/// How a node finds peers beyond the ones it is told about.
#[derive(Args, Debug, Clone)]
pub struct Discovery {
    /// Do not look for peers on the LAN with mDNS (multicast).
    #[arg(long)]
    pub no_mdns: bool,
    /// A DHT bootstrap peer, as a multiaddr ending in /p2p/PEER_ID (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<libp2p::Multiaddr>,
}

/// Parses "10M", "512K", "1G" or a plain number of bytes.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => n.checked_mul(mult).ok_or_else(|| "rate too large".into()),
        _ => Err(format!("{s:?} is not a rate like 500K, 10M or 1G")),
    }
}

/// The user pressed Ctrl-C: exit 130 after saying what was kept.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; progress is kept: run the same command again to resume")]
pub struct Interrupted;

/// Sends logs to stderr: warnings by default, more with -v, RUST_LOG wins.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,libp2p=warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// A multi-threaded runtime for the network commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `peerdrop inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The link; `-` or nothing reads it from stdin (or PEERDROP_LINK).
    pub link: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop seal`.
#[derive(Args, Debug)]
pub struct SealArgs {
    /// Files and folders to seal.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Folder to write the encrypted chunks and manifest into (created if missing).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Plaintext chunk size in bytes, a power of two from 1 KiB to 64 MiB (default: 1 MiB, more for huge shares).
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    #[command(flatten)]
    pub lock: password::PasswordLock,
    /// Print JSON lines (link, done, error) on stdout instead of the bare link.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop unseal`.
#[derive(Args, Debug)]
pub struct UnsealArgs {
    /// The read link; `-` or nothing reads it from stdin (or PEERDROP_LINK).
    pub link: Option<String>,
    /// Folder of encrypted chunks, as written by `peerdrop seal`.
    #[arg(long)]
    pub from: PathBuf,
    #[command(flatten)]
    pub password: password::PasswordSource,
    /// Destination folder.
    #[arg(long, short = 'o', default_value = ".")]
    pub out: PathBuf,
    /// Replace existing files (folders are never replaced).
    #[arg(long)]
    pub force: bool,
    /// Write into folders of the share's top level that already exist in
    /// the destination (without it, an existing top-level name is refused).
    #[arg(long)]
    pub merge: bool,
    /// Print JSON lines (progress, done, error) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Gets the link text: from the argument, else PEERDROP_LINK, else stdin.
/// Reading from a file or stdin keeps the key out of `ps` and shell history.
pub fn link_text(arg: Option<&str>) -> anyhow::Result<String> {
    if let Some(s) = arg.filter(|s| *s != "-") {
        return Ok(s.to_owned());
    }
    if arg.is_none() {
        if let Ok(s) = std::env::var("PEERDROP_LINK") {
            return Ok(s);
        }
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("no link given: pass it as an argument, pipe it on stdin, or set PEERDROP_LINK");
    }
    let mut buf = Vec::new();
    stdin
        .lock()
        .take(MAX_LINK_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .context("reading the link from stdin")?;
    String::from_utf8(buf).context("the link on stdin is not UTF-8 text")
}

/// [`link_text`] for a command that may run for long (receive, fetch, pin,
/// cat, unseal): a read link given as an argument is readable by every
/// local user in `ps` and `/proc/PID/cmdline` while it runs (audit F-13),
/// so that is said on stderr, with what to do instead.
pub fn link_text_long(arg: Option<&str>) -> anyhow::Result<String> {
    let text = link_text(arg)?;
    let on_argv = arg.is_some_and(|a| a != "-" && a != "env");
    if on_argv
        && text
            .split_once('#')
            .is_some_and(|(_, key)| !key.trim().is_empty())
    {
        eprintln!(
            "warning: the link's key is on the command line, where other users of this machine \
             can read it (ps) while this runs; pass the link on stdin or in PEERDROP_LINK instead"
        );
    }
    Ok(text)
}

/// Parses a link, read or pin.
pub fn parse_link(arg: Option<&str>) -> anyhow::Result<Link> {
    Ok(link_text(arg)?.parse::<Link>()?)
}
