//! The crowd bench (issue 11): one sharer with a capped upload, N = 1, 4,
//! 8, 16 `peerdrop receive` processes fetching its link at once on
//! loopback, mDNS off, each knowing only the sharer's link hint; peer
//! exchange makes them a swarm. Prints, per N: the time for all to finish
//! relative to N = 1, the sharer's bytes uploaded relative to one copy, and
//! each receiver's peak RSS (ru_maxrss from wait4, the kernel's VmHWM at
//! exit), next to this machine's own limits measured in the same run (a
//! plain TCP copy over 127.0.0.1; the cap itself).
//!
//! Run with `cargo bench --bench swarm`. Knobs (environment):
//! - `PEERDROP_BENCH_BYTES`: share size (default 16 MiB: 16 chunks).
//! - `PEERDROP_BENCH_RATE`: the sharer's upload cap in bytes/s (default
//!   4 MiB/s, so one receiver alone takes about 4 s).
//! - `PEERDROP_BENCH_CROWDS`: the Ns, comma-separated (default 1,4,8,16).
//!
//! The sharer runs in this process (the library's node and `serve`, with
//! `max_rate` as `send --max-rate` sets it), so that the bytes it uploads
//! are counted where chunks are produced. It listens only on
//! 127.0.0.1; receivers listen on ephemeral ports, and peer exchange passes
//! on only addresses on the IP a peer connected from (127.0.0.1 here), so
//! every dial stays on loopback. Children are killed by their own PID and
//! temp files removed however the run ends. Table on stdout, progress on
//! stderr.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proc::{Proc, Usage};
use common::{
    env_u64, hash_file, kib_mib, loadavg, mib, tcp_copy, write_pseudo_random, BoxResult, BIN,
};
use peerdrop::chunk::ChunkId;
use peerdrop::crypto::ShareKey;
use peerdrop::link::Link;
use peerdrop::manifest::ManifestId;
use peerdrop::net::node::{self, NodeConfig};
use peerdrop::net::serve::{serve, LocalProvider, Provider, Refusal, ServeConfig};
use peerdrop::net::{Multiaddr, PeerAddr};
use peerdrop::seal::SealOptions;
use peerdrop::store::share::LocalShare;
use peerdrop::wire::Have;

/// How long one crowd may take before the run fails.
const CROWD_LIMIT: Duration = Duration::from_secs(600);

/// The sharer's provider, counting the bytes of the chunks it produces.
struct Counted {
    inner: LocalProvider,
    bytes: AtomicU64,
}

impl Provider for Counted {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.inner.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.inner.have(share)
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        let c = self.inner.chunk(share, chunk)?;
        self.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
        Ok(c)
    }
    fn chunk_len(&self, share: &ManifestId, chunk: &ChunkId) -> Option<usize> {
        self.inner.chunk_len(share, chunk)
    }
    fn holds(&self, locator: &[u8; 32]) -> Option<ManifestId> {
        self.inner.holds(locator)
    }
}

/// One crowd's outcome.
struct Crowd {
    n: usize,
    /// Spawn of the first to exit of the last.
    all_secs: f64,
    /// Each receiver's usage, in spawn order.
    each: Vec<Usage>,
    /// Sharer's bytes uploaded.
    uploaded: u64,
}

fn main() -> BoxResult<()> {
    let size = env_u64("PEERDROP_BENCH_BYTES", 16 << 20)?;
    let rate = env_u64("PEERDROP_BENCH_RATE", 4 << 20)?;
    let crowds: Vec<usize> = std::env::var("PEERDROP_BENCH_CROWDS")
        .unwrap_or_else(|_| "1,4,8,16".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("PEERDROP_BENCH_CROWDS: {e}"))?;
    let load_before = loadavg();
    let tmp = tempfile::Builder::new()
        .prefix("peerdrop-bench-swarm-")
        .tempdir()?;
    eprintln!("temp dir {}", tmp.path().display());
    // A private copy of the binary, made before any thread exists (no fork
    // can inherit its write descriptor), so a rebuild meanwhile changes
    // nothing.
    let bin = tmp.path().join("peerdrop");
    fs::copy(BIN, &bin)?;

    eprintln!("measuring a plain TCP copy over 127.0.0.1 (256 MiB)");
    let tcp = tcp_copy(256 << 20)?;

    let file = tmp.path().join("data.bin");
    write_pseudo_random(&file, size, 41)?;
    let want = hash_file(&file)?;
    let key = ShareKey::generate()?;
    let share = LocalShare::create(
        std::slice::from_ref(&file),
        &key,
        &SealOptions::default(),
        |_| {},
    )?;
    let copy = share.manifest().sealed_size();
    let id = share.id();
    let counted = Arc::new(Counted {
        inner: LocalProvider::new(share, None),
        bytes: AtomicU64::new(0),
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (client, hint) = rt.block_on(async {
        let client = node::spawn(NodeConfig::default())?;
        let mut addr: Multiaddr = client.listen("/ip4/127.0.0.1/tcp/0".parse()?).await?;
        addr.pop();
        let config = ServeConfig {
            identity: Some(client.peer_id()),
            max_rate: Some(rate),
            ..ServeConfig::default()
        };
        let incoming = client.incoming().ok_or("the node's streams were taken")?;
        tokio::spawn(serve(incoming, counted.clone(), config));
        let hint = PeerAddr {
            peer: client.peer_id(),
            addrs: vec![addr],
        }
        .to_hint();
        BoxResult::Ok((client, hint))
    })?;
    let link = Link::new(id, vec![hint], Some(key.duplicate()))?.to_uri_string();

    let mut results = Vec::new();
    for &n in &crowds {
        eprintln!("crowd of {n}");
        let before = counted.bytes.load(Ordering::Relaxed);
        let (all_secs, each) = run_crowd(&bin, &link, n, tmp.path().join(format!("n{n}")), &want)?;
        let uploaded = counted.bytes.load(Ordering::Relaxed) - before;
        eprintln!(
            "  all {n} done in {all_secs:.2}s, sharer uploaded {:.2} copies",
            uploaded as f64 / copy as f64
        );
        results.push(Crowd {
            n,
            all_secs,
            each,
            uploaded,
        });
    }
    rt.block_on(client.shutdown());

    println!(
        "peerdrop swarm bench: one sharer capped at {:.1} MiB/s, a {:.1} MiB share ({:.2} MiB sealed), N receive processes at once on 127.0.0.1, mDNS off, each given only the sharer's hint",
        mib(rate),
        mib(size),
        mib(copy)
    );
    println!(
        "machine: plain TCP copy over 127.0.0.1 {:.0} MB/s; the cap alone moves one copy in {:.2}s; load {load_before} before, {} after",
        tcp.mbps(),
        copy as f64 / rate as f64,
        loadavg()
    );
    let base = results
        .iter()
        .find(|r| r.n == 1)
        .map(|r| r.all_secs)
        .unwrap_or(f64::NAN);
    println!();
    println!("| N | all done (s) | vs N = 1 | sharer uploaded (copies) | peak RSS per receiver (MiB): min / median / max |");
    println!("|---|---|---|---|---|");
    for r in &results {
        let mut rss: Vec<f64> = r.each.iter().map(|u| kib_mib(u.maxrss_kib)).collect();
        rss.sort_by(f64::total_cmp);
        println!(
            "| {} | {:.2} | {:.2}x | {:.2} | {:.1} / {:.1} / {:.1} |",
            r.n,
            r.all_secs,
            r.all_secs / base,
            r.uploaded as f64 / copy as f64,
            rss[0],
            rss[rss.len() / 2],
            rss[rss.len() - 1]
        );
    }
    println!();
    println!("targets (issue 11): N = 8 within 3x of N = 1, the sharer at most 2 copies");
    Ok(())
}

/// Runs `n` receive processes of `link` at once; returns the time until the
/// last exited and each one's usage, after checking every copy.
fn run_crowd(
    bin: &PathBuf,
    link: &str,
    n: usize,
    dir: PathBuf,
    want: &blake3::Hash,
) -> BoxResult<(f64, Vec<Usage>)> {
    fs::create_dir_all(&dir)?;
    let start = Instant::now();
    let mut procs = Vec::new();
    for k in 0..n {
        let dest = dir.join(format!("out-{k}"));
        let mut cmd = Command::new(bin);
        // mDNS off: benchmarks never multicast on the host's interfaces.
        cmd.arg("receive")
            .arg("--no-mdns")
            .arg("-o")
            .arg(&dest)
            .env("PEERDROP_LINK", link)
            .stdout(Stdio::null());
        procs.push((
            Proc::spawn(
                &format!("receive {k}"),
                cmd,
                dir.join(format!("recv-{k}.log")),
            )?,
            dest,
        ));
    }
    let mut each = vec![None; n];
    while each.iter().any(Option::is_none) {
        if start.elapsed() > CROWD_LIMIT {
            return Err(format!("a crowd of {n} did not finish within {CROWD_LIMIT:?}").into());
        }
        for (k, (p, _)) in procs.iter_mut().enumerate() {
            if each[k].is_none() {
                each[k] = p.poll(start)?;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let each: Vec<Usage> = each.into_iter().map(|u| u.expect("all exited")).collect();
    let all = each.iter().map(|u| u.secs).fold(0.0, f64::max);
    for (_, dest) in &procs {
        if hash_file(&dest.join("data.bin"))? != *want {
            return Err(format!("{} differs from the share", dest.display()).into());
        }
    }
    Ok((all, each))
}
