//! One `peerdrop daemon` serving one large file to many concurrent
//! `peerdrop receive` processes at once: aggregate throughput, the daemon's
//! peak memory against its stated bound, the fetchers' peak memory, and the
//! CPU time of every process, next to a single fetch of the same share and
//! this machine's own limits measured in the same run (a plain TCP copy over
//! 127.0.0.1, single-core ChaCha20-Poly1305 + BLAKE3, writing a fresh file,
//! and as many threads as fetchers writing fresh files at once), each with
//! its CPU seconds per GiB, so the fetchers' own cost per byte can be read
//! against them.
//! On a small shared machine absolute numbers swing from run to run; ratios
//! to references taken moments earlier swing far less.
//!
//! Run with `cargo bench --bench daemon`. Knobs (environment):
//! - `PEERDROP_BENCH_BYTES`: size of the shared file (default 256 MiB);
//! - `PEERDROP_BENCH_FETCHERS`: concurrent fetchers (default 20).
//!
//! The phases:
//! 1. a daemon starts on a fresh data dir (ready = `peerdrop status` exits
//!    0), shares the file (`peerdrop share --json`), serves one `receive`,
//!    and is stopped with SIGTERM;
//! 2. a fresh daemon process starts on the same data dir (it serves the
//!    saved share again; the link is asked for anew with `peerdrop link`),
//!    so its lifetime peak is the many-fetcher phase's own; the fetchers all
//!    start at once; when the last one has exited the daemon is stopped with
//!    SIGTERM and its `ru_maxrss` comes from wait4 (its VmHWM, read just
//!    before, is printed as a check).
//!
//! Every output is checked against the input by BLAKE3. All traffic stays
//! on 127.0.0.1: the daemon listens only on `/ip4/127.0.0.1/tcp/0` (flag and
//! configuration file both), every address in the links is checked to be
//! 127.0.0.1 before any fetcher starts, and a fetcher dials only those.
//! Discovery is off: `--no-mdns` for the daemon and every fetcher (when the
//! binary has it), and any daemon option beyond the known ones (mDNS, DHT,
//! relays) set to `false` or `[]` in the data dir's `peerdrop.toml`.
//! The table is printed even when a fetch fails; the exit status is then 1.
//! Child processes are killed (by their own PID) and the temp dir removed
//! however the run ends. Throughput is in MB/s = 10^6 bytes of content per
//! second; sizes and memory are in MiB = 2^20 bytes. The table goes to
//! stdout, progress to stderr.

mod common;
#[path = "daemon/rates.rs"]
mod rates;

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use peerdrop::daemon::control::{LinkReply, ShareReply, StatusReply};
use peerdrop::link::Link;
use peerdrop::manifest::Manifest;
use peerdrop::net::serve::ServeConfig;
use serde::de::DeserializeOwned;

use common::proc::{clock_ticks, Proc, Snapshot, Usage};
use common::{
    aead_blake3, built_at, env_u64, fresh_write, gib, hash_file, kib_mib, loadavg, mib,
    pseudo_random, self_cpu, sync_fs, tcp_copy, write_pseudo_random, BoxResult, Drift, Measure,
    BIN, MIB,
};

/// The only address the daemon ever listens on.
const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

const DEFAULT_SHARE_BYTES: u64 = 256 << 20;
const DEFAULT_FETCHERS: u64 = 20;
/// The plain TCP copy reference.
const TCP_REF_BYTES: u64 = 1 << 30;
/// The AEAD+BLAKE3 and file-write references (kept short).
const REF_BYTES: u64 = 512 << 20;
/// What each of the concurrent writers writes.
const CONCURRENT_WRITE_BYTES: u64 = 64 << 20;
/// Name of the shared file (and of each output).
const SHARE_NAME: &str = "shared.bin";

/// The targets.
const TARGET_DAEMON_RSS_MIB: f64 = 128.0;

/// How long the daemon may take to answer `status`, a CLI call to finish,
/// `share` to seal, the fetches to finish and the daemon to exit on SIGTERM.
const READY_LIMIT: Duration = Duration::from_secs(60);
const CLI_LIMIT: Duration = Duration::from_secs(60);
const SHARE_LIMIT: Duration = Duration::from_secs(15 * 60);
const FETCH_LIMIT: Duration = Duration::from_secs(30 * 60);
const STOP_LIMIT: Duration = Duration::from_secs(60);

fn main() {
    let code = match run() {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!("daemon benchmark: some fetches failed or were wrong (see above)");
            1
        }
        Err(e) => {
            eprintln!("daemon benchmark failed: {e}");
            1
        }
    };
    // Everything (children, temp dir) was dropped inside run().
    std::process::exit(code);
}

/// Runs everything; `Ok(false)` if the report was printed but some fetch
/// failed or produced wrong bytes.
fn run() -> BoxResult<bool> {
    if std::env::args().any(|a| a == "rates") {
        return run_rates();
    }
    let run_start = Instant::now();
    let share_bytes = env_u64("PEERDROP_BENCH_BYTES", DEFAULT_SHARE_BYTES)?;
    let n_fetchers = env_u64("PEERDROP_BENCH_FETCHERS", DEFAULT_FETCHERS)? as usize;
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = loadavg();

    // Created first, so it is dropped (removed) after every child process.
    let tmp = tempfile::Builder::new()
        .prefix("peerdrop-bench-daemon-")
        .tempdir()?;
    eprintln!("temp dir {}", tmp.path().display());
    // Others may rebuild the binary while this runs; a private copy keeps
    // every phase on the same one. Copied before any thread exists, so no
    // fork can inherit the write descriptor (ETXTBSY).
    let mut ctx = Ctx::private(tmp.path())?;
    let bin_built = built_at(Path::new(BIN));
    ctx.daemon_flags = no_discovery_flags(&ctx, "daemon")?;
    ctx.receive_flags = no_discovery_flags(&ctx, "receive")?;

    eprintln!(
        "limits: plain TCP copy over 127.0.0.1, {} MiB",
        mib(TCP_REF_BYTES)
    );
    let tcp = tcp_copy(TCP_REF_BYTES)?;
    eprintln!("limits: single-core AEAD+BLAKE3, {} MiB", mib(REF_BYTES));
    let aead = aead_blake3(REF_BYTES)?;
    eprintln!("limits: writing a new {} MiB file", mib(REF_BYTES));
    let (write, write_sync) = fresh_write(tmp.path(), REF_BYTES)?;
    eprintln!(
        "limits: {n_fetchers} threads each writing a new {} MiB file at once",
        mib(CONCURRENT_WRITE_BYTES)
    );
    let write_many = concurrent_write(tmp.path(), n_fetchers, CONCURRENT_WRITE_BYTES)?;
    let limits = Limits {
        tcp,
        aead,
        write,
        write_sync,
        write_many,
    };

    eprintln!("input: {:.0} MiB file", mib(share_bytes));
    let input_dir = tmp.path().join("input");
    fs::create_dir(&input_dir)?;
    let input = input_dir.join(SHARE_NAME);
    write_pseudo_random(&input, share_bytes, 0x5eed_da37)?;
    // Reading it once fills the page cache (the daemon serves from memory,
    // not the disk) and gives the hash every output must match.
    let want = hash_file(&input)?;

    let data_dir = tmp.path().join("daemon");
    fs::create_dir(&data_dir)?;
    // Loopback only, even if the flag were ever ignored.
    let (config, turned_off) = loopback_config()?;
    fs::write(data_dir.join("peerdrop.toml"), config)?;

    // Phase 1: share, then one fetcher.
    eprintln!("phase 1: daemon start, share, one fetcher");
    let mut d1 = Daemon::start(&ctx, &data_dir, "daemon-1")?;
    let share_start = Instant::now();
    let shared: ShareReply =
        d1.cli_json(&ctx, &["share", path_str(&input)?, "--json"], SHARE_LIMIT)?;
    let share_secs = share_start.elapsed().as_secs_f64();
    let after_share = d1.proc.snapshot();
    let id = shared.id.to_string();
    let link = shared.link;
    let hint_addrs = check_loopback(&link)?;
    let manifest = read_manifest(&data_dir, &id, &link)?;
    eprintln!(
        "    sealed and shared in {share_secs:.2}s; link hints: {}",
        hint_addrs.join(", ")
    );

    sync_fs(tmp.path())?;
    let single = fetch_phase(&ctx, tmp.path(), &link, 1, "single", &want)?;
    let d1_after = d1.proc.snapshot();
    let d1_exit = d1.stop()?;
    eprintln!(
        "    one fetcher: {:.2}s ({:.0} MB/s)",
        single.wall,
        share_bytes as f64 / single.wall / 1e6
    );
    if single.correct() != 1 {
        return Err(format!("the single fetch failed: {}", single.failures().join("; ")).into());
    }

    // Phase 2: a fresh daemon process, then all fetchers at once.
    eprintln!("phase 2: fresh daemon on the same data dir, {n_fetchers} fetchers at once");
    let mut d2 = Daemon::start(&ctx, &data_dir, "daemon-2")?;
    let relinked: LinkReply = d2.cli_json(&ctx, &["link", &id, "--json"], CLI_LIMIT)?;
    let link2 = relinked.link;
    check_loopback(&link2)?;
    sync_fs(tmp.path())?;
    let many = fetch_phase(&ctx, tmp.path(), &link2, n_fetchers, "many", &want)?;
    let d2_after = d2.proc.snapshot();
    let status: StatusReply = d2.cli_json(&ctx, &["status", "--json"], CLI_LIMIT)?;
    let uploaded = Some(status.uploaded_bytes);
    let d2_exit = d2.stop()?;
    eprintln!(
        "    {n_fetchers} fetchers: {:.2}s ({:.0} MB/s aggregate), {}/{n_fetchers} correct",
        many.wall,
        (share_bytes * n_fetchers as u64) as f64 / many.wall / 1e6,
        many.correct()
    );

    eprintln!("end of run: references again (drift check)");
    let drift = Drift {
        tcp: tcp_copy(TCP_REF_BYTES)?,
        aead: aead_blake3(REF_BYTES)?,
    };

    let all_ok = many.correct() == n_fetchers;
    let temp_path = tmp.path().to_owned();
    tmp.close()?;
    print_report(&Report {
        limits,
        drift,
        cores,
        share_bytes,
        n_fetchers,
        chunk_bytes: manifest.chunk_size.bytes(),
        sealed_bytes: manifest.sealed_size(),
        serve: ServeConfig::default(),
        share_secs,
        d1: DaemonRun {
            ready: d1.ready,
            ready_secs: d1.ready_secs,
            mid: after_share,
            end: d1_after,
            exit: d1_exit,
        },
        d2: DaemonRun {
            ready: d2.ready,
            ready_secs: d2.ready_secs,
            mid: d2.ready,
            end: d2_after,
            exit: d2_exit,
        },
        single,
        many,
        uploaded,
        hint_addrs,
        turned_off,
        flags: [ctx.daemon_flags.join(" "), ctx.receive_flags.join(" ")],
        load: [load_before, loadavg()],
        temp_path,
        bin_built,
        total_secs: run_start.elapsed().as_secs_f64(),
    });
    Ok(all_ok)
}

/// `-- rates`: many small shares and fetches (benches/daemon/rates.rs).
fn run_rates() -> BoxResult<bool> {
    let tmp = tempfile::Builder::new()
        .prefix("peerdrop-bench-rates-")
        .tempdir()?;
    eprintln!("temp dir {}", tmp.path().display());
    let mut ctx = Ctx::private(tmp.path())?;
    let r = rates::run(&mut ctx, tmp.path());
    if ctx.daemon_log.is_some() {
        // The temp dir goes; its logs were asked for.
        let kept = tmp.path().with_extension("logs");
        fs::rename(&ctx.logs, &kept)?;
        eprintln!("daemon logs kept in {}", kept.display());
    }
    r
}

fn path_str(p: &Path) -> BoxResult<&str> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()).into())
}

// ---------------------------------------------------------------------------
// The machine's limits (as in benches/transfer.rs).

struct Limits {
    tcp: Measure,
    aead: Measure,
    write: Measure,
    write_sync: Measure,
    /// As many writers as fetchers, each its own new file, no sync.
    write_many: Measure,
}

impl Limits {
    /// What one transfer is judged against.
    fn network_crypto(&self) -> f64 {
        self.tcp.mbps().min(self.aead.mbps())
    }
}

/// `n` threads each writing a new file of `bytes` in 1 MiB writes, all at
/// once, no sync: whether the kernel's page-cache write path costs more per
/// byte with as many writers as there are fetchers.
fn concurrent_write(dir: &Path, n: usize, bytes: u64) -> BoxResult<Measure> {
    sync_fs(dir)?;
    let buf = pseudo_random(MIB, 8);
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| dir.join(format!("plain-write-{i:02}.bin")))
        .collect();
    let cpu0 = self_cpu();
    let start = Instant::now();
    let results: Vec<io::Result<()>> = thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .map(|p| {
                let buf = &buf;
                s.spawn(move || -> io::Result<()> {
                    let mut file = File::create(p)?;
                    let mut left = bytes;
                    while left > 0 {
                        let k = left.min(MIB as u64) as usize;
                        file.write_all(&buf[..k])?;
                        left -= k as u64;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writers do not panic"))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let cpu = self_cpu() - cpu0;
    for p in &paths {
        let _ = fs::remove_file(p);
    }
    for r in results {
        r?;
    }
    Ok(Measure {
        bytes: bytes * n as u64,
        secs,
        cpu,
    })
}

// ---------------------------------------------------------------------------
// Inputs and checks.

/// Daemon options this benchmark knows to be harmless on loopback.
const KNOWN_OPTIONS: [&str; 6] = [
    "listen",
    "reseed",
    "max_upload_rate",
    "request_timeout_secs",
    "fetch_wait_secs",
    "max_connections",
];

/// The daemon's configuration for this run: listening on 127.0.0.1 only,
/// and any option the shipped configuration (as built with the binary) has
/// beyond [`KNOWN_OPTIONS`] switched off (`false`, or an empty list), so
/// that discovery added later (mDNS, a DHT, relays) cannot reach beyond
/// loopback. Returns the file's text and the options switched off.
fn loopback_config() -> BoxResult<(String, Vec<String>)> {
    let shipped: toml::Table = include_str!("../configs/peerdrop.toml")
        .parse()
        .map_err(|e| format!("configs/peerdrop.toml: {e}"))?;
    let mut text = format!("listen = [\"{LISTEN}\"]\n");
    let mut off = Vec::new();
    for (key, value) in &shipped {
        if KNOWN_OPTIONS.contains(&key.as_str()) {
            continue;
        }
        match value {
            toml::Value::Boolean(_) => text.push_str(&format!("{key} = false\n")),
            // A role taken once the node finds itself public (DHT server,
            // relay server): `false` keeps it off.
            toml::Value::String(s) if s == "auto" => text.push_str(&format!("{key} = false\n")),
            // Where browsers are served (only with `web = true` or
            // `ui = true`, switched off above): kept on loopback all the
            // same.
            toml::Value::String(_) if key == "web_listen" || key == "ui_listen" => {
                text.push_str(&format!("{key} = \"127.0.0.1:0\"\n"))
            }
            toml::Value::Array(_) => text.push_str(&format!("{key} = []\n")),
            // A number switches nothing on (a limit, a size): left as is.
            toml::Value::Integer(_) | toml::Value::Float(_) => continue,
            _ => {
                return Err(format!(
                    "configs/peerdrop.toml has an option this benchmark does not know ({key} = {value}); \
                     teach benches/daemon.rs whether it is safe on loopback"
                )
                .into())
            }
        }
        off.push(key.clone());
    }
    Ok((text, off))
}

/// The flags that keep `peerdrop SUBCOMMAND` off the LAN: `--no-mdns` if
/// this binary has it (mDNS would multicast on every interface and could
/// dial what it finds). Refuses a binary that mentions mDNS without a way to
/// turn it off.
fn no_discovery_flags(ctx: &Ctx, sub: &str) -> BoxResult<Vec<&'static str>> {
    let out = ctx.log(&format!("{sub}-help.out"));
    let mut cmd = ctx.command();
    cmd.args([sub, "--help"]).stdout(File::create(&out)?);
    Proc::spawn(
        &format!("peerdrop {sub} --help"),
        cmd,
        ctx.log(&format!("{sub}-help.err")),
    )?
    .wait_usage(Instant::now(), CLI_LIMIT)?;
    let help = fs::read_to_string(&out)?;
    if help.contains("--no-mdns") {
        Ok(vec!["--no-mdns"])
    } else if help.to_ascii_lowercase().contains("mdns") {
        Err(
            format!("`peerdrop {sub}` mentions mDNS but has no --no-mdns; refusing to run it")
                .into(),
        )
    } else {
        Ok(Vec::new())
    }
}

/// Refuses a link unless every address in it is 127.0.0.1 (TCP or UDP,
/// optionally QUIC, optionally the peer id): fetchers dial only these.
/// Returns the addresses.
fn check_loopback(link: &str) -> BoxResult<Vec<String>> {
    let link = Link::parse_read_link(link).map_err(|e| format!("the link: {e}"))?;
    let mut seen = Vec::new();
    if link.hints().is_empty() {
        return Err("the link has no peer hint".into());
    }
    for h in link.hints() {
        if h.addrs.is_empty() {
            return Err("a hint in the link has no address".into());
        }
        for a in &h.addrs {
            let m = Multiaddr::try_from(a.clone())
                .map_err(|e| format!("an address in the link: {e}"))?;
            let mut parts = m.iter();
            let loopback = matches!(parts.next(), Some(Protocol::Ip4(ip)) if ip == Ipv4Addr::LOCALHOST)
                && parts.all(|p| {
                    matches!(
                        p,
                        Protocol::Tcp(_) | Protocol::Udp(_) | Protocol::QuicV1 | Protocol::P2p(_)
                    )
                });
            if !loopback {
                return Err(format!(
                    "the link names {m}, which is not 127.0.0.1; refusing to dial it"
                )
                .into());
            }
            seen.push(m.to_string());
        }
    }
    Ok(seen)
}

/// The share's manifest as the daemon saved it (for its chunk size).
fn read_manifest(data_dir: &Path, id: &str, link: &str) -> BoxResult<Manifest> {
    let link = Link::parse_read_link(link).map_err(|e| format!("the link: {e}"))?;
    let path = data_dir.join("shares").join(id).join("manifest");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        // A small share's manifest is in its record, in the journal.
        Err(_) => inline_manifest(data_dir, id)
            .ok_or_else(|| format!("{}: no manifest", path.display()))?,
    };
    Ok(Manifest::decode_verified(link.manifest_id(), &bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?)
}

/// A share's manifest from its record in `state.journal` or `state.json`.
fn inline_manifest(data_dir: &Path, id: &str) -> Option<Vec<u8>> {
    let from = |rec: &serde_json::Value| -> Option<Vec<u8>> {
        (rec["id"] == id).then_some(())?;
        peerdrop::chunk::unhex(rec["manifest"].as_str()?)
    };
    let journal = fs::read_to_string(data_dir.join("state.journal")).unwrap_or_default();
    let in_journal = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|c| c["op"] == "share")
        .find_map(|c| from(&c));
    in_journal.or_else(|| {
        let text = fs::read_to_string(data_dir.join("state.json")).ok()?;
        let st: serde_json::Value = serde_json::from_str(&text).ok()?;
        st["shares"].as_array()?.iter().find_map(from)
    })
}

// ---------------------------------------------------------------------------
// Child processes.

/// The private binary and where children's logs go.
struct Ctx {
    bin: PathBuf,
    logs: PathBuf,
    seq: AtomicUsize,
    /// Extra flags for `daemon` and `receive` that keep them off the LAN.
    daemon_flags: Vec<&'static str>,
    receive_flags: Vec<&'static str>,
    /// `PEERDROP_BENCH_DAEMON_LOG`: the daemons' `RUST_LOG`, to see where
    /// their time goes (the logs are then kept, see [`run_rates`]).
    daemon_log: Option<String>,
}

impl Ctx {
    /// A private copy of the binary in `tmp`, and `tmp/logs`. Call before
    /// any thread exists, so no fork can inherit the copy's write
    /// descriptor (ETXTBSY).
    fn private(tmp: &Path) -> BoxResult<Ctx> {
        let bin = tmp.join("peerdrop");
        // Another build (`PEERDROP_BENCH_BIN`) against this one, on a
        // machine whose load changes from run to run: before and after a
        // change, measured back to back.
        let from = std::env::var("PEERDROP_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned());
        fs::copy(&from, &bin).map_err(|e| format!("copying {from}: {e}"))?;
        let ctx = Ctx {
            bin,
            logs: tmp.join("logs"),
            seq: AtomicUsize::new(0),
            daemon_flags: Vec::new(),
            receive_flags: Vec::new(),
            daemon_log: std::env::var("PEERDROP_BENCH_DAEMON_LOG").ok(),
        };
        fs::create_dir(&ctx.logs)?;
        Ok(ctx)
    }

    /// A new log file path, unique within the run.
    fn log(&self, name: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.logs.join(format!("{n:03}-{name}"))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_remove("PEERDROP_LINK")
            .env_remove("PEERDROP_DATA_DIR")
            .env_remove("RUST_LOG");
        cmd
    }
}

/// Runs a CLI command to completion (bounded); returns its stdout.
fn cli(
    ctx: &Ctx,
    name: &str,
    args: &[&str],
    data_dir: &Path,
    limit: Duration,
) -> BoxResult<String> {
    let out = ctx.log(&format!("{name}.out"));
    let mut cmd = ctx.command();
    cmd.args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(File::create(&out)?);
    let mut p = Proc::spawn(
        &format!("peerdrop {name}"),
        cmd,
        ctx.log(&format!("{name}.err")),
    )?;
    p.wait_usage(Instant::now(), limit)?;
    Ok(fs::read_to_string(&out)?)
}

/// A running daemon, killed (by its PID) when dropped unless stopped.
struct Daemon {
    proc: Proc,
    dir: PathBuf,
    /// Spawn to the first `status` that exits 0.
    ready_secs: f64,
    /// The daemon when it first answered.
    ready: Snapshot,
}

impl Daemon {
    /// Starts a daemon on `dir`, listening on 127.0.0.1 only, and waits
    /// (bounded) until `peerdrop status` exits 0.
    fn start(ctx: &Ctx, dir: &Path, name: &str) -> BoxResult<Daemon> {
        let mut cmd = ctx.command();
        cmd.arg("daemon")
            .args(&ctx.daemon_flags)
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", LISTEN])
            .stdout(Stdio::null());
        if let Some(filter) = &ctx.daemon_log {
            cmd.env("RUST_LOG", filter);
        }
        let start = Instant::now();
        let mut proc = Proc::spawn(name, cmd, ctx.log(&format!("{name}.log")))?;
        let probe_log = ctx.log(&format!("{name}-status"));
        loop {
            if proc.poll(start)?.is_some() {
                return Err(format!(
                    "{name} exited before it was ready; its stderr ends with:\n{}",
                    proc.log_tail()
                )
                .into());
            }
            let mut probe = ctx.command();
            probe
                .arg("status")
                .arg("--data-dir")
                .arg(dir)
                .stdout(Stdio::null());
            let mut p = Proc::spawn("peerdrop status", probe, probe_log.clone())?;
            if p.wait_usage(Instant::now(), CLI_LIMIT).is_ok() {
                break;
            }
            if start.elapsed() > READY_LIMIT {
                return Err(format!(
                    "{name} did not answer `peerdrop status` within {READY_LIMIT:?}; its stderr ends with:\n{}",
                    proc.log_tail()
                )
                .into());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let ready_secs = start.elapsed().as_secs_f64();
        let ready = proc.snapshot();
        let d = Daemon {
            proc,
            dir: dir.to_owned(),
            ready_secs,
            ready,
        };
        // Its own word on where it listens: 127.0.0.1 only.
        let status: StatusReply = d.cli_json(ctx, &["status", "--json"], CLI_LIMIT)?;
        if status.listen.is_empty() {
            return Err(format!("{name} listens nowhere").into());
        }
        for a in &status.listen {
            if !a.starts_with("/ip4/127.0.0.1/") {
                return Err(format!("{name} listens on {a}, not only on 127.0.0.1").into());
            }
        }
        Ok(d)
    }

    /// Runs `peerdrop ARGS --data-dir DIR` and reads its last stdout line as
    /// the command's reply type.
    fn cli_json<T: DeserializeOwned>(
        &self,
        ctx: &Ctx,
        args: &[&str],
        limit: Duration,
    ) -> BoxResult<T> {
        let text = cli(ctx, args[0], args, &self.dir, limit)?;
        let last = text
            .lines()
            .last()
            .ok_or_else(|| format!("peerdrop {} printed nothing", args[0]))?;
        Ok(serde_json::from_str(last)
            .map_err(|e| format!("peerdrop {} printed {last:?}: {e}", args[0]))?)
    }

    /// SIGTERM, then a clean exit (bounded); the lifetime rusage.
    fn stop(&mut self) -> BoxResult<Usage> {
        self.proc.signal(libc::SIGTERM)?;
        self.proc.wait_usage(Instant::now(), STOP_LIMIT)
    }
}

// ---------------------------------------------------------------------------
// Fetch phases.

/// Whole-machine CPU time from /proc/stat, in seconds.
#[derive(Clone, Copy, Default)]
struct SysCpu {
    user: f64,
    sys: f64,
    iowait: f64,
    idle: f64,
}

fn sys_cpu() -> SysCpu {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return SysCpu::default();
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0.0) / clock_ticks();
    // user nice system idle iowait irq softirq steal
    SysCpu {
        user: g(0) + g(1),
        sys: g(2) + g(5) + g(6) + g(7),
        iowait: g(4),
        idle: g(3),
    }
}

impl SysCpu {
    fn minus(self, b: SysCpu) -> SysCpu {
        SysCpu {
            user: self.user - b.user,
            sys: self.sys - b.sys,
            iowait: self.iowait - b.iowait,
            idle: self.idle - b.idle,
        }
    }
}

/// One phase: `n` receives of the same link started at once.
struct Phase {
    /// First spawn to the last exit.
    wall: f64,
    /// Per fetcher: its rusage (wall from the phase's start), or why it
    /// failed or produced wrong bytes.
    fetchers: Vec<Result<Usage, String>>,
    /// The whole machine's CPU over the phase.
    sys: SysCpu,
}

impl Phase {
    fn ok(&self) -> Vec<Usage> {
        self.fetchers
            .iter()
            .filter_map(|r| r.clone().ok())
            .collect()
    }

    fn correct(&self) -> usize {
        self.fetchers.iter().filter(|r| r.is_ok()).count()
    }

    fn failures(&self) -> Vec<String> {
        self.fetchers
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("fetcher {i}: {e}")))
            .collect()
    }
}

/// Starts `n` `peerdrop receive` processes on `link` at once, waits for all
/// of them (bounded), then checks every output by BLAKE3 and removes it.
fn fetch_phase(
    ctx: &Ctx,
    tmp: &Path,
    link: &str,
    n: usize,
    label: &str,
    want: &blake3::Hash,
) -> BoxResult<Phase> {
    let outs: Vec<PathBuf> = (0..n)
        .map(|i| tmp.join(format!("out-{label}-{i:02}")))
        .collect();
    let sys_before = sys_cpu();
    let start = Instant::now();
    let mut procs = Vec::with_capacity(n);
    for (i, out) in outs.iter().enumerate() {
        let mut cmd = ctx.command();
        cmd.arg("receive")
            .args(&ctx.receive_flags)
            .arg("-o")
            .arg(out)
            .env("PEERDROP_LINK", link)
            .stdout(Stdio::null());
        procs.push(Proc::spawn(
            &format!("receive {label} #{i}"),
            cmd,
            ctx.log(&format!("receive-{label}-{i:02}.log")),
        )?);
    }
    let mut results: Vec<Option<Result<Usage, String>>> = vec![None; n];
    let mut last_exit = start;
    // Polled often enough that exit times are accurate to a few ms, rarely
    // enough not to compete with the fetchers for CPU.
    let period = if n == 1 {
        Duration::from_micros(500)
    } else {
        Duration::from_millis(2)
    };
    while results.iter().any(Option::is_none) {
        for (p, r) in procs.iter_mut().zip(results.iter_mut()) {
            if r.is_some() {
                continue;
            }
            match p.poll(start) {
                Ok(None) => {}
                Ok(Some(u)) => {
                    *r = Some(Ok(u));
                    last_exit = Instant::now();
                }
                Err(e) => {
                    *r = Some(Err(e.to_string()));
                    last_exit = Instant::now();
                }
            }
        }
        if start.elapsed() > FETCH_LIMIT {
            for r in results.iter_mut().filter(|r| r.is_none()) {
                *r = Some(Err(format!("did not finish within {FETCH_LIMIT:?}")));
            }
            break;
        }
        thread::sleep(period);
    }
    let wall = (last_exit - start).as_secs_f64();
    let sys = sys_cpu().minus(sys_before);
    // Kills (by PID) any that overran the deadline.
    drop(procs);

    // Verify every output that exited cleanly, on all cores.
    let mut fetchers: Vec<Result<Usage, String>> = results
        .into_iter()
        .map(|r| r.expect("every fetcher has a result"))
        .collect();
    let checks: Vec<Mutex<Option<Result<(), String>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = thread::available_parallelism()
        .map_or(1, |c| c.get())
        .min(n);
    thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                if fetchers[i].is_ok() {
                    *checks[i].lock().expect("not poisoned") = Some(verify_output(&outs[i], want));
                }
            });
        }
    });
    for (f, c) in fetchers.iter_mut().zip(checks) {
        if let Some(Err(e)) = c.into_inner().expect("not poisoned") {
            *f = Err(e);
        }
    }
    for out in &outs {
        if out.exists() {
            fs::remove_dir_all(out)?;
        }
    }
    Ok(Phase {
        wall,
        fetchers,
        sys,
    })
}

/// The output folder must hold exactly the shared file, equal (by BLAKE3)
/// to the input.
fn verify_output(out: &Path, want: &blake3::Hash) -> Result<(), String> {
    let names: Vec<String> = fs::read_dir(out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()
        .map_err(|e| format!("{}: {e}", out.display()))?;
    if names != [SHARE_NAME] {
        return Err(format!(
            "{} holds {names:?}, expected only {SHARE_NAME}",
            out.display()
        ));
    }
    let path = out.join(SHARE_NAME);
    let got = hash_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if got != *want {
        return Err(format!(
            "{} differs from the input: BLAKE3 {} vs {}",
            path.display(),
            got.to_hex(),
            want.to_hex()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The report.

/// One daemon process's life: at ready, at a mid point, after its last
/// fetcher exited, and its rusage after SIGTERM.
struct DaemonRun {
    ready: Snapshot,
    ready_secs: f64,
    /// Daemon 1: after `share` returned; daemon 2: at ready.
    mid: Snapshot,
    end: Snapshot,
    exit: Usage,
}

impl DaemonRun {
    /// CPU seconds from `mid` to the end of the fetches.
    fn serve_cpu(&self) -> (f64, f64) {
        (
            (self.end.user - self.mid.user).max(0.0),
            (self.end.sys - self.mid.sys).max(0.0),
        )
    }
}

struct Report {
    limits: Limits,
    drift: Drift,
    cores: usize,
    share_bytes: u64,
    n_fetchers: usize,
    chunk_bytes: u64,
    sealed_bytes: u64,
    serve: ServeConfig,
    share_secs: f64,
    d1: DaemonRun,
    d2: DaemonRun,
    single: Phase,
    many: Phase,
    uploaded: Option<u64>,
    hint_addrs: Vec<String>,
    turned_off: Vec<String>,
    /// Extra flags given to `daemon` and to `receive`.
    flags: [String; 2],
    load: [String; 2],
    temp_path: PathBuf,
    bin_built: String,
    total_secs: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "BELOW"
    }
}

fn print_report(r: &Report) {
    let l = &r.limits;
    let limit = l.network_crypto();
    let n = r.n_fetchers;
    let cores = r.cores as f64;
    println!();
    println!(
        "peerdrop daemon benchmark: one daemon serving one {:.0} MiB file to {n} concurrent `peerdrop receive`, 127.0.0.1 only, {} core(s)",
        mib(r.share_bytes),
        r.cores
    );
    println!(
        "binary: a copy of {BIN} (modified {} UTC), the same file for every process",
        r.bin_built
    );
    println!(
        "link hints dialled (checked loopback-only): {}; daemon config switched off: {}; flags: daemon {:?}, receive {:?}",
        r.hint_addrs.join(", "),
        if r.turned_off.is_empty() {
            "none needed".to_owned()
        } else {
            r.turned_off.join(", ")
        },
        r.flags[0],
        r.flags[1]
    );
    println!(
        "MB/s = 10^6 content bytes/s; MiB = 2^20 bytes; \"limit\" = min(plain TCP copy, 1-core AEAD+BLAKE3) = {limit:.0} MB/s"
    );

    println!();
    println!("limits of this machine, measured in this run");
    let header = format!(
        "{:<52} {:>9} {:>8} {:>9} {:>10}",
        "measure", "MiB", "seconds", "MB/s", "CPU s/GiB"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    let lim = |label: &str, m: &Measure| {
        println!(
            "{label:<52} {:>9.1} {:>8.3} {:>9.0} {:>10.2}",
            mib(m.bytes),
            m.secs,
            m.mbps(),
            m.cpu_per_gib()
        );
    };
    lim("(a) plain TCP copy, 127.0.0.1, 1 MiB writes", &l.tcp);
    lim("(b) AEAD+BLAKE3, 1 core (ring seal, blake3::hash)", &l.aead);
    lim("(c) write new file, 1 MiB writes, no sync", &l.write);
    lim("(c') write new file, then syncfs", &l.write_sync);
    lim(
        &format!(
            "(d) {n} threads, a new {} MiB file each, no sync",
            mib(CONCURRENT_WRITE_BYTES)
        ),
        &l.write_many,
    );
    println!("(CPU s/GiB = this process's user+sys over the pass, both ends for (a); writeback in kernel threads is not counted)");

    let single_mbps = r.share_bytes as f64 / r.single.wall / 1e6;
    let phase_row = |label: &str, p: &Phase, fetchers: usize| {
        // Only what arrived intact counts.
        let bytes = r.share_bytes * p.correct() as u64;
        let fetchers = if p.correct() == fetchers {
            fetchers.to_string()
        } else {
            format!("{}/{fetchers} ok", p.correct())
        };
        let agg = bytes as f64 / p.wall / 1e6;
        let per: Vec<f64> = p
            .ok()
            .iter()
            .map(|u| r.share_bytes as f64 / u.secs / 1e6)
            .collect();
        let min = per.iter().copied().fold(f64::INFINITY, f64::min);
        let max = per.iter().copied().fold(0.0, f64::max);
        println!(
            "{label:<22} {fetchers:>8} {:>9.1} {:>8.2} {agg:>8.0} {:>8.3} {:>7.3} {:>7.3} {:>7.3}   {min:.0} / {:.0} / {max:.0}",
            mib(bytes),
            p.wall,
            agg / single_mbps,
            agg / limit,
            agg / (cores * l.aead.mbps()),
            agg / l.write_sync.mbps(),
            median(per.clone()),
        );
    };
    println!();
    println!("fetches (wall = first receive spawned -> last receive exited; every output verified by BLAKE3)");
    let header = format!(
        "{:<22} {:>8} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}   {}",
        "case",
        "fetchers",
        "MiB out",
        "wall s",
        "MB/s",
        "/single",
        "/limit",
        "/cores(b)",
        "/(c')",
        "per fetcher MB/s min / median / max"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    phase_row("single fetcher", &r.single, 1);
    phase_row("concurrent fetchers", &r.many, n);
    println!(
        "(MB/s is aggregate content; /cores(b) = / ({} cores x 1-core AEAD+BLAKE3 {:.0} MB/s) = / {:.0} MB/s, the whole machine's crypto ceiling for one AEAD+hash pass per byte)",
        r.cores,
        l.aead.mbps(),
        cores * l.aead.mbps()
    );

    // Resources.
    let many_ok = r.many.ok();
    let single_ok = r.single.ok();
    let f_rss: Vec<f64> = many_ok.iter().map(|u| kib_mib(u.maxrss_kib)).collect();
    let f_rss_max = f_rss.iter().copied().fold(0.0, f64::max);
    let f_user: f64 = many_ok.iter().map(|u| u.user).sum();
    let f_sys: f64 = many_ok.iter().map(|u| u.sys).sum();
    let (d2u, d2s) = r.d2.serve_cpu();
    let (d1u, d1s) = r.d1.serve_cpu();
    let seal_u = (r.d1.mid.user - r.d1.ready.user).max(0.0);
    let seal_s = (r.d1.mid.sys - r.d1.ready.sys).max(0.0);
    // Content delivered intact.
    let content_many = r.share_bytes * r.many.correct() as u64;
    println!();
    println!(
        "resources (peak = ru_maxrss from wait4, or VmHWM/VmRSS from /proc where marked; CPU = user+sys seconds; cores = CPU / phase wall)"
    );
    let header = format!(
        "{:<50} {:>10} {:>14} {:>9} {:>6} {:>16}",
        "process (phase)", "peak MiB", "CPU u+s", "CPU s/GiB", "cores", "ctx sw vol/invol"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    let row = |label: &str,
               rss: String,
               (u, s): (f64, f64),
               bytes: u64,
               wall: f64,
               csw: Option<(u64, u64)>| {
        println!(
            "{label:<50} {rss:>10} {:>14} {:>9.2} {:>6.2} {:>16}",
            format!("{u:.2}+{s:.2}"),
            (u + s) / gib(bytes),
            (u + s) / wall,
            csw.map_or(String::new(), |(v, i)| format!("{v}/{i}"))
        );
    };
    row(
        &format!("daemon 1: `share` (sealing, {:.2}s)", r.share_secs),
        format!("{:.1}h", kib_mib(r.d1.mid.hwm_kib)),
        (seal_u, seal_s),
        r.share_bytes,
        r.share_secs,
        None,
    );
    row(
        "daemon 1: serving the single fetcher",
        format!("{:.1}", kib_mib(r.d1.exit.maxrss_kib)),
        (d1u, d1s),
        r.share_bytes,
        r.single.wall,
        Some(r.d1.exit.csw),
    );
    if let Some(u) = single_ok.first() {
        row(
            "receive: single fetcher",
            format!("{:.1}", kib_mib(u.maxrss_kib)),
            (u.user, u.sys),
            r.share_bytes,
            r.single.wall,
            Some(u.csw),
        );
    }
    println!(
        "{:<50} {:>10}   (VmHWM {:.1} MiB; ready {:.2}s after spawn)",
        "daemon 2: at ready, before any fetcher (VmRSS)",
        format!("{:.1}r", kib_mib(r.d2.ready.rss_kib)),
        kib_mib(r.d2.ready.hwm_kib),
        r.d2.ready_secs
    );
    row(
        &format!("daemon 2: serving {n} fetchers"),
        format!("{:.1}", kib_mib(r.d2.exit.maxrss_kib)),
        (d2u, d2s),
        content_many,
        r.many.wall,
        Some(r.d2.exit.csw),
    );
    println!(
        "{:<50} {:>10}",
        "daemon 2: VmHWM just before SIGTERM (check)",
        format!("{:.1}h", kib_mib(r.d2.end.hwm_kib))
    );
    let f_csw = many_ok
        .iter()
        .fold((0, 0), |(v, i), u| (v + u.csw.0, i + u.csw.1));
    row(
        &format!("receive x{}: max peak; CPU, ctx sw summed", many_ok.len()),
        format!("{f_rss_max:.1}"),
        (f_user, f_sys),
        content_many,
        r.many.wall,
        Some(f_csw),
    );
    println!(
        "{:<50} {:>10}",
        "receive: median peak",
        format!("{:.1}", median(f_rss.clone()))
    );
    row(
        &format!("daemon 2 + {n} fetchers"),
        String::new(),
        (d2u + f_user, d2s + f_sys),
        content_many,
        r.many.wall,
        None,
    );
    let machine = |label: &str, p: &Phase, daemon: f64, fetchers: f64| {
        let w = p.wall;
        let sys = &p.sys;
        println!(
            "whole machine, {label} (/proc/stat, in cores): busy {:.2} of {} (user {:.2}, sys+irq {:.2}), iowait {:.2}, idle {:.2}; this benchmark's processes {:.2} (daemon {:.2}, fetchers {:.2}); everything else (kernel writeback, other users) {:.2}",
            (sys.user + sys.sys) / w,
            r.cores,
            sys.user / w,
            sys.sys / w,
            sys.iowait / w,
            sys.idle / w,
            (daemon + fetchers) / w,
            daemon / w,
            fetchers / w,
            (sys.user + sys.sys - daemon - fetchers) / w
        );
    };
    machine(
        "single fetch",
        &r.single,
        d1u + d1s,
        single_ok.first().map_or(0.0, |u| u.user + u.sys),
    );
    machine(
        &format!("{n}-fetcher phase"),
        &r.many,
        d2u + d2s,
        f_user + f_sys,
    );
    println!("(h = VmHWM, r = VmRSS, from /proc; other peaks from wait4. CPU s/GiB is per GiB of content delivered)");

    // Targets.
    let chunk = mib(r.chunk_bytes);
    // The serving side's memory budget for chunk answers, in bytes.
    let budget = mib(r.serve.memory as u64);
    let jobs = r.serve.cpu_jobs.max(1);
    let at_ready = kib_mib(r.d2.ready.rss_kib);
    // Each CPU job also holds a plaintext read buffer while it works.
    let bound = budget + jobs as f64 * chunk + at_ready;
    let peak = kib_mib(r.d2.exit.maxrss_kib);
    let correct = r.many.correct();
    println!();
    println!("targets (BELOW = target not met)");
    println!(
        "  daemon peak RSS over the {n}-fetcher phase: {peak:.1} MiB (ru_maxrss of a daemon process started for this phase; VmHWM before SIGTERM {:.1} MiB)",
        kib_mib(r.d2.end.hwm_kib)
    );
    println!(
        "    stated bound: {budget:.0} MiB answers (ServeConfig::memory) + {jobs} cpu_jobs x {chunk:.0} MiB read buffer + {at_ready:.1} MiB at ready = {bound:.1} MiB; measured / bound = {:.2}",
        peak / bound
    );
    println!(
        "    target <= {TARGET_DAEMON_RSS_MIB:.0} MiB: {}",
        mark(peak <= TARGET_DAEMON_RSS_MIB)
    );
    println!(
        "  concurrent fetches correct: {correct}/{n} (exited 0, output holds only {SHARE_NAME}, BLAKE3 equal to the input's; the single fetch too: {}/1)   target all {n}: {}",
        r.single.correct(),
        mark(correct == n && r.single.correct() == 1)
    );
    for f in r.many.failures() {
        println!("    {}", f.replace('\n', "\n      "));
    }
    match r.uploaded {
        Some(u) => println!(
            "  daemon 2 reports uploaded_bytes {:.1} MiB = {:.3} x ({n} x {:.1} MiB sealed share)",
            mib(u),
            u as f64 / (n as u64 * r.sealed_bytes) as f64,
            mib(r.sealed_bytes)
        ),
        None => println!("  daemon 2 status has no uploaded_bytes"),
    }

    // A reading of the bottleneck, from the numbers above.
    let sys = &r.many.sys;
    let w = r.many.wall;
    let ours_cpu = d2u + d2s + f_user + f_sys;
    let busy = (sys.user + sys.sys) / w;
    println!();
    let reading = if busy >= 0.9 * cores {
        format!(
            "CPU-bound: {busy:.2} of {} cores busy; this benchmark's processes got {:.2} (daemon {:.0}% of that, fetchers {:.0}%, the fetchers' CPU {:.0}% in the kernel), everything else {:.2}",
            r.cores,
            ours_cpu / w,
            (d2u + d2s) / ours_cpu * 100.0,
            (f_user + f_sys) / ours_cpu * 100.0,
            f_sys / (f_user + f_sys) * 100.0,
            busy - ours_cpu / w
        )
    } else if sys.iowait / w >= 0.25 * cores {
        format!(
            "waiting on the disk: iowait {:.2} cores, busy only {busy:.2} of {}",
            sys.iowait / w,
            r.cores
        )
    } else {
        format!(
            "neither CPU ({busy:.2} of {} cores busy) nor disk (iowait {:.2}) saturated: latency or flow control",
            r.cores,
            sys.iowait / w
        )
    };
    println!("bottleneck (heuristic): {reading}");
    println!(
        "drift over the run (end vs start): plain TCP {:.0} MB/s ({:+.1}%), AEAD+BLAKE3 {:.0} MB/s ({:+.1}%)",
        r.drift.tcp.mbps(),
        (r.drift.tcp.mbps() / l.tcp.mbps() - 1.0) * 100.0,
        r.drift.aead.mbps(),
        (r.drift.aead.mbps() / l.aead.mbps() - 1.0) * 100.0
    );
    println!(
        "load average (1/5/15 min) before: {}, after: {}; temp dir {} removed; total {:.1}s",
        r.load[0],
        r.load[1],
        r.temp_path.display(),
        r.total_secs
    );
}
