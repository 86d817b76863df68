//! `cargo bench --bench daemon -- rates`: the daemon at scale with many
//! small shares (issue 12). Two daemons on 127.0.0.1 (mDNS off, the
//! loopback-only configuration of the main benchmark); every request goes
//! through the control socket with the library's own client, `CLIENTS` at a
//! time.
//!
//! Measured, next to this machine's own limits taken in the same run (raw
//! `fdatasync`s per second on the same file system, and a plain TCP copy
//! over 127.0.0.1):
//! - new small (4 KiB) shares per second on daemon A while it goes from 0
//!   to 1,000 shares held, and from 9,000 to 10,000;
//! - small fetches per second by daemon B from A, each followed to its
//!   final line (verified and written by B), at 1,000 and at 10,000 shares
//!   held by A; and 1,000 fetches queued at once (detached) until the last
//!   is done;
//! - request-to-answer time (median, p99) of `share`, `list` and `status`
//!   with 10,000 shares held, one request at a time;
//! - both daemons' RSS and peak RSS;
//! - for each fetch batch, the CPU per fetch of the fetching daemon and of
//!   the source, and the rate those allow on 2 cores with nothing else
//!   running: the ceiling this design has on this machine.
//!
//! Every fetched file is compared with its input at the end. Knobs:
//! `PEERDROP_BENCH_SHARES` (default 10,000), `PEERDROP_BENCH_CLIENTS`
//! (default 8), `PEERDROP_BENCH_DAEMON_LOG` (the daemons' `RUST_LOG`; their
//! logs are then kept beside the temp dir), `PEERDROP_BENCH_BIN` (another
//! `peerdrop` binary to measure, e.g. the build before a change).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use peerdrop::daemon::control::{
    call, FetchRequest, ListReply, ListRequest, ShareRequest, StatusRequest,
};
use peerdrop::daemon::state::JobStatus;

use crate::common::{env_u64, tcp_copy, BoxResult};
use crate::{check_loopback, loopback_config, no_discovery_flags, Ctx, Daemon};

const SMALL: usize = 4096;
const LATENCY_SAMPLES: usize = 200;
/// A batch of fetches measured at each share count.
const FETCHES: usize = 1000;
const TARGET_RATE: f64 = 500.0;
const TARGET_P99_MS: f64 = 50.0;
const BATCH_LIMIT: Duration = Duration::from_secs(600);

struct Rate {
    what: String,
    n: usize,
    secs: f64,
    /// For fetches: CPU milliseconds per fetch of the fetching daemon and
    /// of the source, over the batch.
    cpu_ms: Option<(f64, f64)>,
}

/// CPU seconds (user + system) of a daemon so far.
fn cpu(d: &Daemon) -> f64 {
    let s = d.proc.snapshot();
    s.user + s.sys
}

/// Runs the fetch batch `batch` and records the CPU per fetch it cost
/// `fetcher` and `source`.
fn with_cpu(
    fetcher: &Daemon,
    source: &Daemon,
    batch: impl FnOnce() -> BoxResult<Rate>,
) -> BoxResult<Rate> {
    let (f0, s0) = (cpu(fetcher), cpu(source));
    let mut r = batch()?;
    let n = r.n.max(1) as f64;
    r.cpu_ms = Some(((cpu(fetcher) - f0) * 1e3 / n, (cpu(source) - s0) * 1e3 / n));
    Ok(r)
}

struct Latency {
    what: &'static str,
    median_ms: f64,
    p99_ms: f64,
}

/// Runs the rates benchmark in `tmp`; `Ok(false)` if a fetch failed or
/// wrote wrong bytes.
pub fn run(ctx: &mut Ctx, tmp: &Path) -> BoxResult<bool> {
    let total = env_u64("PEERDROP_BENCH_SHARES", 10_000)? as usize;
    let clients = env_u64("PEERDROP_BENCH_CLIENTS", 8)? as usize;
    ctx.daemon_flags = no_discovery_flags(ctx, "daemon")?;

    eprintln!("limits: fdatasync rate, TCP copy over 127.0.0.1");
    let fsyncs = fsync_rate(tmp, Duration::from_secs(2))?;
    let tcp = tcp_copy(256 << 20)?;
    eprintln!("limits: the file-system work of one small fetch, {clients} at a time");
    let writes = small_output_rate(tmp, FETCHES, clients)?;

    let input = tmp.join("input");
    fs::create_dir(&input)?;
    eprintln!("input: {total} files of {SMALL} bytes");
    let files: Vec<PathBuf> = (0..total)
        .map(|i| {
            let p = input.join(format!("s{i:06}.bin"));
            let mut b = vec![0u8; SMALL];
            let mut x = i as u64 ^ 0x9e37_79b9_7f4a_7c15;
            for c in b.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            fs::write(&p, &b).map(|()| p)
        })
        .collect::<Result<_, _>>()?;

    let (config, _) = loopback_config()?;
    let start_daemon = |name: &str| -> BoxResult<Daemon> {
        let dir = tmp.join(name);
        fs::create_dir(&dir)?;
        fs::write(dir.join("peerdrop.toml"), &config)?;
        Daemon::start(ctx, &dir, name)
    };
    let a = start_daemon("A")?;
    let b = start_daemon("B")?;
    let c = start_daemon("C")?;

    let mut rates = Vec::new();
    let mut links = vec![String::new(); total];
    let first = total.min(1000);
    rates.push(share_batch(&a.dir, &files, &mut links, 0..first, clients)?);
    check_loopback(&links[0])?;
    let out_b = tmp.join("out-b");
    fs::create_dir(&out_b)?;
    rates.push(with_cpu(&b, &a, || {
        fetch_batch(&b.dir, &links[..first.min(FETCHES)], &out_b, clients, first)
    })?);
    if total > first {
        // Up to `total`, the last thousand timed.
        let last = total.saturating_sub(1000).max(first);
        share_batch(&a.dir, &files, &mut links, first..last, clients)?;
        rates.push(share_batch(
            &a.dir,
            &files,
            &mut links,
            last..total,
            clients,
        )?);
    }
    let latencies = latencies(&a.dir, &files[0])?;
    let out_c = tmp.join("out-c");
    fs::create_dir(&out_c)?;
    let later = &links[total - FETCHES.min(total)..];
    rates.push(with_cpu(&c, &a, || {
        fetch_batch(&c.dir, later, &out_c, clients, total)
    })?);
    // All queued at once, from the middle of the set (fetched by neither).
    let out_q = tmp.join("out-q");
    fs::create_dir(&out_q)?;
    let mid = total / 2;
    let queued_links = &links[mid.saturating_sub(FETCHES / 2)..(mid + FETCHES / 2).min(total)];
    rates.push(with_cpu(&b, &a, || {
        queued_batch(&b.dir, queued_links, &out_q, total)
    })?);

    let snaps = [
        ("A", a.proc.snapshot()),
        ("B", b.proc.snapshot()),
        ("C", c.proc.snapshot()),
    ];
    let mut ok = true;
    for (out, range) in [
        (&out_b, 0..first.min(FETCHES)),
        (&out_c, total - FETCHES.min(total)..total),
        (
            &out_q,
            mid.saturating_sub(FETCHES / 2)..(mid + FETCHES / 2).min(total),
        ),
    ] {
        for i in range {
            let name = files[i].file_name().expect("a name");
            if fs::read(out.join(name))? != fs::read(&files[i])? {
                eprintln!("wrong or missing output {}", out.join(name).display());
                ok = false;
            }
        }
    }

    println!();
    println!(
        "## daemon rates ({} cores, load {})",
        thread::available_parallelism().map_or(1, |n| n.get()),
        crate::common::loadavg()
    );
    println!();
    println!("machine limits, same run:");
    println!("  fdatasync (200-byte appends)  {fsyncs:>10.0} /s");
    println!("  TCP copy over 127.0.0.1       {:>10.0} MB/s", tcp.mbps());
    println!(
        "  a small fetch's disk work     {writes:>10.0} /s  ({clients} threads: staging dir, 4 KiB file, syncfs, rename, fsync of the folder, rmdir; no network, no crypto)"
    );
    println!();
    println!("| what | count | seconds | per second | target | | CPU ms per fetch: fetcher + source | ceiling on 2 cores |");
    println!("|---|---:|---:|---:|---:|---|---:|---:|");
    for r in &rates {
        let per = r.n as f64 / r.secs;
        let target = if r.what.starts_with("share") || r.what.starts_with("fetch") {
            TARGET_RATE
        } else {
            0.0
        };
        // What both daemons' CPU per fetch allows on 2 cores with nothing
        // else running (the bench's own clients not counted).
        let cpu = r.cpu_ms.map_or("| |".into(), |(f, s)| {
            format!("| {f:.2} + {s:.2} | {:.0} /s |", 2e3 / (f + s).max(1e-3))
        });
        println!(
            "| {} | {} | {:.2} | {:.0} | {} | {} {cpu}",
            r.what,
            r.n,
            r.secs,
            per,
            if target > 0.0 {
                format!("≥ {target:.0}")
            } else {
                "-".into()
            },
            if target == 0.0 {
                ""
            } else if per >= target {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    println!();
    println!("request to answer with {total} shares held, one at a time ({LATENCY_SAMPLES} each):");
    println!();
    println!("| request | median ms | p99 ms | target p99 | |");
    println!("|---|---:|---:|---:|---|");
    for l in &latencies {
        let target = l.what != "share";
        println!(
            "| {} | {:.2} | {:.2} | {} | {} |",
            l.what,
            l.median_ms,
            l.p99_ms,
            if target {
                format!("≤ {TARGET_P99_MS:.0}")
            } else {
                "-".into()
            },
            if !target {
                ""
            } else if l.p99_ms <= TARGET_P99_MS {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    println!();
    for (name, s) in snaps {
        println!(
            "daemon {name}: RSS {:.1} MiB, peak {:.1} MiB, CPU {:.1} s",
            s.rss_kib as f64 / 1024.0,
            s.hwm_kib as f64 / 1024.0,
            s.user + s.sys
        );
    }
    println!("one fdatasync per share would cap shares at {fsyncs:.0}/s; the journal's group commit shares one among the requests waiting");
    drop((a, b, c));
    Ok(ok)
}

/// Raw `fdatasync`s per second: 200-byte appends to one file in `dir`.
fn fsync_rate(dir: &Path, within: Duration) -> BoxResult<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = fs::File::create(&path)?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < within {
        f.write_all(&[b'x'; 200])?;
        f.sync_data()?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    fs::remove_file(&path)?;
    Ok(n as f64 / secs)
}

/// What writing one small fetch's output costs the file system alone, as
/// `store::output` does it (a staging folder, the file, one `syncfs`, a
/// rename into place, an `fsync` of the folder, the staging folder
/// removed), `clients` at a time: the ceiling for small fetches per second
/// on this disk.
fn small_output_rate(tmp: &Path, n: usize, clients: usize) -> BoxResult<f64> {
    let dest = tmp.join("write-probe");
    fs::create_dir(&dest)?;
    let data = vec![7u8; SMALL];
    let secs = parallel(0..n, clients, |i| {
        let staging = dest.join(format!(".stage-{i}"));
        fs::create_dir(&staging)?;
        let f = staging.join("f");
        fs::write(&f, &data)?;
        crate::common::sync_fs(&staging)?;
        fs::rename(&f, dest.join(format!("f{i}")))?;
        fs::File::open(&dest)?.sync_all()?;
        fs::remove_dir(&staging)?;
        Ok(())
    })?;
    fs::remove_dir_all(&dest)?;
    Ok(n as f64 / secs)
}

/// Runs `job(i)` for every `i` in `items` on `clients` threads.
fn parallel(
    items: std::ops::Range<usize>,
    clients: usize,
    job: impl Fn(usize) -> BoxResult<()> + Sync,
) -> BoxResult<f64> {
    let next = AtomicUsize::new(items.start);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.end || failed.lock().unwrap().is_some() {
                    return;
                }
                if start.elapsed() > BATCH_LIMIT {
                    *failed.lock().unwrap() = Some(format!("not done within {BATCH_LIMIT:?}"));
                    return;
                }
                if let Err(e) = job(i) {
                    *failed.lock().unwrap() = Some(format!("item {i}: {e}"));
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    match failed.into_inner().unwrap() {
        Some(e) => Err(e.into()),
        None => Ok(secs),
    }
}

fn share_batch(
    dir: &Path,
    files: &[PathBuf],
    links: &mut [String],
    range: std::ops::Range<usize>,
    clients: usize,
) -> BoxResult<Rate> {
    eprintln!("sharing {}..{}", range.start, range.end);
    let got: Vec<Mutex<String>> = range.clone().map(|_| Mutex::new(String::new())).collect();
    let base = range.start;
    let secs = parallel(range.clone(), clients, |i| {
        let req = ShareRequest {
            paths: vec![files[i].clone()],
            hints: true,
            expires: None,
            max_downloads: None,
        };
        *got[i - base].lock().unwrap() = call(dir, req, |_, _| {})?.link;
        Ok(())
    })?;
    for (i, l) in got.into_iter().enumerate() {
        links[base + i] = l.into_inner().unwrap();
    }
    Ok(Rate {
        what: format!("share, {} → {} held", range.start, range.end),
        n: range.len(),
        secs,
        cpu_ms: None,
    })
}

fn fetch_request(link: &str, out: &Path, detach: bool) -> FetchRequest {
    FetchRequest {
        link: link.to_owned(),
        out: out.to_owned(),
        force: false,
        merge: false,
        peers: Vec::new(),
        detach,
        ..FetchRequest::default()
    }
}

/// Fetches `links` into `out`, each followed until done.
fn fetch_batch(
    dir: &Path,
    links: &[String],
    out: &Path,
    clients: usize,
    held: usize,
) -> BoxResult<Rate> {
    eprintln!("fetching {} (followed, {clients} at a time)", links.len());
    let secs = parallel(0..links.len(), clients, |i| {
        call(dir, fetch_request(&links[i], out, false), |_, _| {})?;
        Ok(())
    })?;
    Ok(Rate {
        what: format!("fetch, followed, source holds {held}"),
        n: links.len(),
        secs,
        cpu_ms: None,
    })
}

/// Queues every fetch at once (detached), then waits until all are done.
fn queued_batch(dir: &Path, links: &[String], out: &Path, held: usize) -> BoxResult<Rate> {
    eprintln!("queueing {} fetches at once", links.len());
    let start = Instant::now();
    for l in links {
        call(dir, fetch_request(l, out, true), |_, _| {})?;
    }
    let ids: std::collections::HashSet<_> = links
        .iter()
        .map(|l| {
            peerdrop::link::Link::parse_read_link(l)
                .map(|l| *l.manifest_id())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    loop {
        let list: ListReply = call(dir, ListRequest {}, |_, _| {})?;
        let mine: Vec<_> = list
            .fetches
            .iter()
            .filter(|f| ids.contains(&f.id))
            .collect();
        if let Some(f) = mine
            .iter()
            .find(|f| matches!(f.status, JobStatus::Failed { .. }))
        {
            return Err(format!("a queued fetch failed: {:?}", f.status).into());
        }
        if mine.len() == ids.len() && mine.iter().all(|f| f.status == JobStatus::Done) {
            break;
        }
        if start.elapsed() > BATCH_LIMIT {
            return Err(format!("queued fetches not done within {BATCH_LIMIT:?}").into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(Rate {
        what: format!("fetch, {} queued at once, source holds {held}", links.len()),
        n: links.len(),
        secs: start.elapsed().as_secs_f64(),
        cpu_ms: None,
    })
}

/// Median and p99 of `share`, `list` and `status`, one request at a time.
fn latencies(dir: &Path, file: &Path) -> BoxResult<Vec<Latency>> {
    eprintln!("request-to-answer times");
    let mut out = Vec::new();
    let mut time = |what: &'static str, f: &mut dyn FnMut() -> BoxResult<()>| -> BoxResult<()> {
        let mut ms = Vec::with_capacity(LATENCY_SAMPLES);
        for _ in 0..LATENCY_SAMPLES {
            let t = Instant::now();
            f()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        out.push(Latency {
            what,
            median_ms: ms[ms.len() / 2],
            p99_ms: ms[(ms.len() * 99).div_ceil(100) - 1],
        });
        Ok(())
    };
    // The same file again: a new key, so a new share each time.
    time("share", &mut || {
        let req = ShareRequest {
            paths: vec![file.to_owned()],
            hints: true,
            expires: None,
            max_downloads: None,
        };
        call(dir, req, |_, _| {})?;
        Ok(())
    })?;
    time("list", &mut || {
        call(dir, ListRequest {}, |_, _| {})?;
        Ok(())
    })?;
    time("status", &mut || {
        call(dir, StatusRequest {}, |_, _| {})?;
        Ok(())
    })?;
    Ok(out)
}
