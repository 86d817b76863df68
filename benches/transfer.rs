//! `peerdrop send` → `peerdrop receive` over loopback with the real
//! processes: throughput, peak memory and CPU time of each side, judged
//! against this machine's own limits measured in the same run (a plain TCP
//! copy over 127.0.0.1, single-core ChaCha20-Poly1305 + BLAKE3, and writing a
//! fresh file). On a small shared machine absolute numbers swing from run to
//! run; a ratio to a reference taken moments earlier swings far less.
//!
//! Run with `cargo bench --bench transfer`. Knobs (environment):
//! - `PEERDROP_BENCH_BYTES`: size of the large-file case (default 1 GiB); the
//!   big case is four times that.
//! - `PEERDROP_BENCH_BIG=0`: skip the big (default 4 GiB) case.
//! - `PEERDROP_BENCH_FILES`: number of small files (default 20,000).
//!
//! All traffic stays on 127.0.0.1: the sender listens only on
//! `/ip4/127.0.0.1/tcp/0`, and the receiver dials only the address in the
//! link. Child processes are killed (by their own PID) and temp files removed
//! however the run ends. Throughput is in MB/s = 10^6 bytes of content per
//! second; sizes and memory are in MiB = 2^20 bytes. The table goes to stdout,
//! progress to stderr.

mod common;

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::proc::{Proc, Snapshot, Usage};
use common::{
    aead_blake3, built_at, env_u64, fill_pseudo_random, fresh_write, hash_file, kib_mib,
    libp2p_copy, loadavg, mib, sync_fs, tcp_copy, tree_copy, write_pseudo_random, BoxResult, Drift,
    Measure, BIN,
};

/// The only address the sender ever listens on.
const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

const DEFAULT_LARGE_BYTES: u64 = 1 << 30;
/// Bytes for each reference measurement (TCP copy, AEAD+BLAKE3, file write).
const REF_BYTES: u64 = 1 << 30;
const DEFAULT_SMALL_FILES: usize = 20_000;
const SMALL_MIN: u64 = 1024;
const SMALL_MAX: u64 = 8 * 1024;
/// Small files per sub-folder (a tree, as real folders are).
const FILES_PER_DIR: usize = 200;

/// The targets.
const TARGET_RATIO: f64 = 0.50;
const TARGET_RSS_MIB: f64 = 100.0;
/// Peak memory of the big case counts as "the same" as the 1 GiB case's if
/// it is at most this much larger (relative, absolute), allowing for
/// allocator and scheduling jitter.
const SAME_RSS_SLACK: (f64, f64) = (0.10, 8.0);

/// How long the sender may take to print its link, and the receiver to
/// finish; a child that overruns is killed and the run fails.
const LINK_LIMIT: Duration = Duration::from_secs(15 * 60);
const RECEIVE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// How long a `--once` sender may take to exit once the receiver is done.
const SENDER_EXIT_LIMIT: Duration = Duration::from_secs(60);

fn main() -> BoxResult<()> {
    let run_start = Instant::now();
    let large = env_u64("PEERDROP_BENCH_BYTES", DEFAULT_LARGE_BYTES)?;
    let big_on = std::env::var("PEERDROP_BENCH_BIG").map_or(true, |v| v.trim() != "0");
    let n_small = env_u64("PEERDROP_BENCH_FILES", DEFAULT_SMALL_FILES as u64)? as usize;
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = loadavg();

    let tmp = tempfile::Builder::new()
        .prefix("peerdrop-bench-transfer-")
        .tempdir()?;
    eprintln!("temp dir {}", tmp.path().display());
    // Others may rebuild target/release/peerdrop while this runs; a private
    // copy keeps every case on the same binary. Copied before any thread
    // exists, so no fork can inherit the write descriptor (ETXTBSY).
    let bin = tmp.path().join("peerdrop");
    fs::copy(BIN, &bin).map_err(|e| format!("copying {BIN}: {e}"))?;
    let bin_built = built_at(Path::new(BIN));

    eprintln!(
        "limits: plain TCP copy over 127.0.0.1, {} MiB",
        mib(REF_BYTES)
    );
    let tcp = tcp_copy(REF_BYTES)?;
    eprintln!("limits: single-core AEAD+BLAKE3, {} MiB", mib(REF_BYTES));
    let aead = aead_blake3(REF_BYTES)?;
    eprintln!("limits: writing a new {} MiB file", mib(REF_BYTES));
    let (write, write_sync) = fresh_write(tmp.path(), REF_BYTES)?;
    eprintln!(
        "limits: libp2p TCP+Noise+Yamux stream, memory to memory, {} MiB",
        mib(REF_BYTES)
    );
    let libp2p = libp2p_copy(REF_BYTES)?;
    let mut limits = Limits {
        tcp,
        aead,
        write,
        write_sync,
        libp2p,
        tree: None,
    };

    let mut cases = Vec::new();

    eprintln!("(i) one {:.0} MiB file", mib(large));
    let input = tmp.path().join("large.bin");
    write_pseudo_random(&input, large, 0x5eed_0001)?;
    cases.push(transfer(
        tmp.path(),
        "(i) one file",
        Input::File(&input),
        1,
        &bin,
    )?);
    fs::remove_file(&input)?;

    if big_on {
        let big = large * 4;
        eprintln!("(ii) one {:.0} MiB file", mib(big));
        let input = tmp.path().join("big.bin");
        write_pseudo_random(&input, big, 0x5eed_0002)?;
        cases.push(transfer(
            tmp.path(),
            "(ii) one file, 4x",
            Input::File(&input),
            2,
            &bin,
        )?);
        fs::remove_file(&input)?;
    } else {
        eprintln!("(ii) skipped (PEERDROP_BENCH_BIG=0)");
    }

    eprintln!("(iii) {n_small} files of {SMALL_MIN}-{SMALL_MAX} bytes");
    let small_dir = tmp.path().join("small");
    let small_total = write_small_files(&small_dir, n_small)?;
    let files = small_files(&small_dir, n_small);
    eprintln!("limits: copying the {n_small} small files locally (cp -r)");
    let tree_dst = tmp.path().join("small-copy");
    limits.tree = Some(tree_copy(&small_dir, &files, &tree_dst)?);
    cases.push(transfer(
        tmp.path(),
        "(iii) small files",
        Input::Dir(&small_dir, &files),
        3,
        &bin,
    )?);
    fs::remove_dir_all(&small_dir)?;

    eprintln!("(iv) one file of the same total size");
    let input = tmp.path().join("same-size.bin");
    write_pseudo_random(&input, small_total, 0x5eed_0004)?;
    cases.push(transfer(
        tmp.path(),
        "(iv) one file, same total",
        Input::File(&input),
        4,
        &bin,
    )?);
    fs::remove_file(&input)?;

    eprintln!("end of run: references again (drift check)");
    let drift = Drift {
        tcp: tcp_copy(REF_BYTES)?,
        aead: aead_blake3(REF_BYTES)?,
    };

    let temp_path = tmp.path().to_owned();
    tmp.close()?;
    print_report(&Report {
        limits,
        drift,
        cases,
        cores,
        large,
        n_small,
        small_total,
        load: [load_before, loadavg()],
        temp_path,
        bin_built,
        total_secs: run_start.elapsed().as_secs_f64(),
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// The machine's limits.

struct Limits {
    tcp: Measure,
    aead: Measure,
    write: Measure,
    write_sync: Measure,
    /// libp2p's own stream throughput: the transport's ceiling.
    libp2p: Measure,
    /// A local `cp -r` of the small files: the file system's per-file floor.
    tree: Option<Measure>,
}

impl Limits {
    /// What the throughput target is relative to.
    fn network_crypto(&self) -> f64 {
        self.tcp.mbps().min(self.aead.mbps())
    }
}

// ---------------------------------------------------------------------------
// Inputs.

/// Size of small file `i`: deterministic, 1 to 8 KiB inclusive.
fn small_size(i: usize) -> u64 {
    let mut state = 0x51ee_d000 ^ i as u64;
    let mut word = [0u8; 8];
    fill_pseudo_random(&mut word, &mut state);
    SMALL_MIN + u64::from_le_bytes(word) % (SMALL_MAX - SMALL_MIN + 1)
}

/// Relative path of small file `i` under the folder being shared.
fn small_path(i: usize) -> PathBuf {
    PathBuf::from(format!("d{:03}", i / FILES_PER_DIR)).join(format!("f{i:05}.bin"))
}

fn small_files(root: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| root.join(small_path(i))).collect()
}

/// Writes the small files under `root`; returns their total size.
fn write_small_files(root: &Path, n: usize) -> io::Result<u64> {
    let mut total = 0;
    let mut buf = vec![0u8; SMALL_MAX as usize];
    for i in 0..n {
        let path = root.join(small_path(i));
        if i % FILES_PER_DIR == 0 {
            fs::create_dir_all(path.parent().expect("has a folder"))?;
        }
        let len = small_size(i) as usize;
        fill_pseudo_random(&mut buf[..len], &mut (0xf11e_0000 + i as u64));
        fs::write(&path, &buf[..len])?;
        total += len as u64;
    }
    sync_fs(root)?;
    Ok(total)
}

fn count_files(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            n += count_files(&e.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------
// Child processes.

/// Reads the sender's first stdout line (the link) with a deadline. The
/// pipe is handed back so it stays open while the sender runs.
fn read_link(stdout: ChildStdout, limit: Duration) -> BoxResult<(String, BufReader<ChildStdout>)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let r = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send((r, reader));
    });
    match rx.recv_timeout(limit) {
        Ok((Ok(line), reader)) => Ok((line.trim().to_owned(), reader)),
        Ok((Err(e), _)) => Err(format!("reading the sender's link: {e}").into()),
        Err(_) => Err(format!("the sender printed no link within {limit:?}").into()),
    }
}

// ---------------------------------------------------------------------------
// Transfers.

enum Input<'a> {
    File(&'a Path),
    /// A folder and every file in it.
    Dir(&'a Path, &'a [PathBuf]),
}

struct Case {
    label: &'static str,
    files: usize,
    bytes: u64,
    /// Sender spawn to its link on stdout: scanning and sealing everything
    /// once, then starting the node.
    link_secs: f64,
    /// The sender at the moment it printed the link.
    at_link: Snapshot,
    send: Usage,
    /// Receive spawn to its exit.
    recv: Usage,
}

impl Case {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.recv.secs / 1e6
    }

    /// Including the sender's sealing pass, which a user also waits for.
    fn mbps_with_seal(&self) -> f64 {
        self.bytes as f64 / (self.recv.secs + self.link_secs) / 1e6
    }

    fn serve_user(&self) -> f64 {
        (self.send.user - self.at_link.user).max(0.0)
    }

    fn serve_sys(&self) -> f64 {
        (self.send.sys - self.at_link.sys).max(0.0)
    }
}

/// Runs one `send --once` / `receive` pair on `input` and verifies the
/// output byte for byte (by BLAKE3).
fn transfer(
    tmp: &Path,
    label: &'static str,
    input: Input<'_>,
    n: usize,
    bin: &Path,
) -> BoxResult<Case> {
    // Reading every input once fills the page cache, so the transfer measures
    // CPU and network, not the disk, and gives the hashes the output must
    // match.
    let (share_path, expected): (&Path, Vec<(PathBuf, blake3::Hash)>) = match input {
        Input::File(p) => (p, vec![(PathBuf::new(), hash_file(p)?)]),
        Input::Dir(root, files) => (
            root,
            files
                .iter()
                .map(|f| {
                    let rel = f.strip_prefix(root).expect("under root").to_owned();
                    Ok((rel, hash_file(f)?))
                })
                .collect::<io::Result<_>>()?,
        ),
    };
    let bytes: u64 = match input {
        Input::File(p) => fs::metadata(p)?.len(),
        Input::Dir(_, files) => files
            .iter()
            .map(|f| fs::metadata(f).map(|m| m.len()))
            .sum::<io::Result<u64>>()?,
    };
    // Whatever earlier steps left dirty is written back now, not during
    // receive's syncfs.
    sync_fs(tmp)?;

    let mut cmd = Command::new(bin);
    // mDNS off: benchmarks never multicast on the host's interfaces.
    cmd.arg("send")
        .arg("--no-mdns")
        .arg("--once")
        .args(["--listen", LISTEN])
        .arg(share_path)
        .stdout(Stdio::piped())
        .env_remove("PEERDROP_LINK");
    let send_start = Instant::now();
    let mut sender = Proc::spawn("peerdrop send", cmd, tmp.join(format!("send-{n}.log")))?;
    let stdout = sender.child.stdout.take().expect("stdout is piped");
    let (link, _stdout) = read_link(stdout, LINK_LIMIT)?;
    let link_secs = send_start.elapsed().as_secs_f64();
    let at_link = sender.snapshot();
    if !link.starts_with("peerdrop:1/") {
        return Err(format!("the sender printed {link:?} instead of a link").into());
    }
    eprintln!("    sender sealed and printed its link in {link_secs:.2}s; receiving");

    let dest = tmp.join(format!("out-{n}"));
    let mut cmd = Command::new(bin);
    cmd.arg("receive")
        .arg("--no-mdns")
        .arg("-o")
        .arg(&dest)
        .env("PEERDROP_LINK", &link)
        .stdout(Stdio::null());
    let recv_start = Instant::now();
    let mut receiver = Proc::spawn("peerdrop receive", cmd, tmp.join(format!("recv-{n}.log")))?;
    let recv = receiver.wait_usage(recv_start, RECEIVE_LIMIT)?;
    let send = sender.wait_usage(recv_start, RECEIVE_LIMIT + SENDER_EXIT_LIMIT)?;
    if send.secs > recv.secs + SENDER_EXIT_LIMIT.as_secs_f64() {
        return Err("the --once sender took too long to exit after the receiver".into());
    }
    eprintln!(
        "    received in {:.2}s ({:.0} MB/s); verifying",
        recv.secs,
        bytes as f64 / recv.secs / 1e6
    );

    let out_root = dest.join(share_path.file_name().expect("inputs have names"));
    for (rel, want) in &expected {
        // An empty `rel` is the single-file case (join would add a slash).
        let out = if rel.as_os_str().is_empty() {
            out_root.clone()
        } else {
            out_root.join(rel)
        };
        let got = hash_file(&out).map_err(|e| format!("output {}: {e}", out.display()))?;
        if got != *want {
            return Err(format!(
                "{label}: the output {} differs from its input: BLAKE3 {} vs {}",
                out.display(),
                got.to_hex(),
                want.to_hex()
            )
            .into());
        }
    }
    let found = if out_root.is_dir() {
        count_files(&out_root)?
    } else {
        1
    };
    let top = fs::read_dir(&dest)?.count();
    if found != expected.len() || top != 1 {
        return Err(format!(
            "{label}: the output holds {found} file(s) under {} entries at the top, expected {} under 1",
            top,
            expected.len()
        )
        .into());
    }
    fs::remove_dir_all(&dest)?;
    Ok(Case {
        label,
        files: expected.len(),
        bytes,
        link_secs,
        at_link,
        send,
        recv,
    })
}

// ---------------------------------------------------------------------------
// The report.

struct Report {
    limits: Limits,
    drift: Drift,
    cases: Vec<Case>,
    cores: usize,
    large: u64,
    n_small: usize,
    small_total: u64,
    load: [String; 2],
    temp_path: PathBuf,
    bin_built: String,
    total_secs: f64,
}

fn mark(ok: bool, miss: &str) -> String {
    if ok {
        "ok".into()
    } else {
        miss.into()
    }
}

fn print_report(r: &Report) {
    let l = &r.limits;
    let limit = l.network_crypto();
    println!();
    println!(
        "peerdrop transfer benchmark: send --once → receive over 127.0.0.1, {} core(s), large file {:.0} MiB, {} small files ({:.1} MiB)",
        r.cores,
        mib(r.large),
        r.n_small,
        mib(r.small_total)
    );
    println!(
        "binary: a copy of {BIN} (modified {} UTC), the same file for every case",
        r.bin_built
    );
    println!(
        "MB/s = 10^6 content bytes/s; MiB = 2^20 bytes; \"limit\" = min(plain TCP copy, 1-core AEAD+BLAKE3) = {limit:.0} MB/s"
    );

    println!();
    println!("limits of this machine, measured in this run");
    let header = format!(
        "{:<52} {:>9} {:>8} {:>9}",
        "measure", "MiB", "seconds", "MB/s"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    let lim = |label: &str, m: &Measure| {
        println!(
            "{label:<52} {:>9.1} {:>8.3} {:>9.0}",
            mib(m.bytes),
            m.secs,
            m.mbps()
        );
    };
    lim("(a) plain TCP copy, 127.0.0.1, 1 MiB writes", &l.tcp);
    lim("(b) AEAD+BLAKE3, 1 core (ring seal, blake3::hash)", &l.aead);
    lim("(c) write new file, 1 MiB writes, no sync", &l.write);
    lim("(c') write new file, then syncfs", &l.write_sync);
    lim("(d) libp2p TCP+Noise+Yamux stream, mem to mem", &l.libp2p);
    if let Some(t) = &l.tree {
        lim(
            &format!("(e) cp -r of the {} small files, then syncfs", r.n_small),
            t,
        );
    }

    println!();
    println!("transfers (time = receive spawn to exit; seal = send spawn to link printed)");
    let header = format!(
        "{:<26} {:>6} {:>8} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>7}",
        "case", "files", "MiB", "seal s", "recv s", "MB/s", "/limit", "/(c)", "/(c')", "w/seal"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for c in &r.cases {
        let v = c.mbps();
        println!(
            "{:<26} {:>6} {:>8.1} {:>7.2} {:>7.2} {:>6.0} {:>7.3} {:>6.3} {:>7.3} {:>7.0}",
            c.label,
            c.files,
            mib(c.bytes),
            c.link_secs,
            c.recv.secs,
            v,
            v / limit,
            v / l.write.mbps(),
            v / l.write_sync.mbps(),
            c.mbps_with_seal()
        );
    }
    println!("(w/seal = MB/s counting the sender's sealing pass as well)");

    println!();
    println!(
        "resources per side (peak = ru_maxrss from wait4; CPU = user+sys seconds; cores = CPU / receive wall time)"
    );
    let header = format!(
        "{:<26} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11} {:>6} {:>6}",
        "case", "send pk", "seal pk", "recv pk", "send seal", "send serve", "recv", "send", "recv"
    );
    println!("{header}");
    let units = format!(
        "{:<26} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11} {:>6} {:>6}",
        "", "MiB", "MiB", "MiB", "CPU u+s", "CPU u+s", "CPU u+s", "cores", "cores"
    );
    println!("{units}");
    println!("{}", "-".repeat(header.len()));
    for c in &r.cases {
        let serve_cpu = c.serve_user() + c.serve_sys();
        println!(
            "{:<26} {:>9.1} {:>9.1} {:>9.1} {:>11} {:>11} {:>11} {:>6.2} {:>6.2}",
            c.label,
            kib_mib(c.send.maxrss_kib),
            kib_mib(c.at_link.hwm_kib),
            kib_mib(c.recv.maxrss_kib),
            format!("{:.2}+{:.2}", c.at_link.user, c.at_link.sys),
            format!("{:.2}+{:.2}", c.serve_user(), c.serve_sys()),
            format!("{:.2}+{:.2}", c.recv.user, c.recv.sys),
            serve_cpu / c.recv.secs,
            c.recv.cpu() / c.recv.secs,
        );
    }
    println!("(seal pk = sender's VmHWM when it printed the link; send serve = sender CPU after the link)");
    println!("CPU seconds per GiB of content:");
    for c in &r.cases {
        let gib = c.bytes as f64 / (1u64 << 30) as f64;
        println!(
            "  {:<26} sender seal {:.2}, sender serve {:.2}, receiver {:.2}",
            c.label,
            (c.at_link.user + c.at_link.sys) / gib,
            (c.serve_user() + c.serve_sys()) / gib,
            c.recv.cpu() / gib
        );
    }

    println!();
    println!("targets");
    let find = |prefix: &str| r.cases.iter().find(|c| c.label.starts_with(prefix));
    if let Some(one) = find("(i)") {
        let v = one.mbps();
        println!(
            "  (i) transfer {v:.0} MB/s / min(TCP {:.0}, AEAD+BLAKE3 {:.0}) = {:.3}   target >= {TARGET_RATIO:.2}: {}",
            l.tcp.mbps(),
            l.aead.mbps(),
            v / limit,
            mark(v / limit >= TARGET_RATIO, "BELOW")
        );
        println!(
            "  (i) the target asks for {:.0} MB/s; libp2p's own stream (d) moves {:.0} MB/s with no crypto and no disk: target / (d) = {:.2}{}",
            TARGET_RATIO * limit,
            l.libp2p.mbps(),
            TARGET_RATIO * limit / l.libp2p.mbps(),
            if TARGET_RATIO * limit > l.libp2p.mbps() {
                "  (above the transport's ceiling on this machine)"
            } else {
                ""
            }
        );
        println!(
            "  (i) transfer / libp2p stream (d) = {:.3}",
            v / l.libp2p.mbps()
        );
        println!(
            "  (i) transfer / fresh-file write {:.0} MB/s = {:.3}; / write+syncfs {:.0} MB/s = {:.3}   (context: receive writes and syncfs's its output)",
            l.write.mbps(),
            v / l.write.mbps(),
            l.write_sync.mbps(),
            v / l.write_sync.mbps()
        );
    }
    for c in &r.cases {
        let s = kib_mib(c.send.maxrss_kib);
        let rv = kib_mib(c.recv.maxrss_kib);
        println!(
            "  peak RSS {:<26} sender {s:.1} MiB, receiver {rv:.1} MiB   target <= {TARGET_RSS_MIB:.0} MiB: {}",
            c.label,
            mark(s.max(rv) <= TARGET_RSS_MIB, "OVER")
        );
    }
    if let (Some(one), Some(four)) = (find("(i)"), find("(ii)")) {
        let same = |a: u64, b: u64| {
            let (a, b) = (kib_mib(a), kib_mib(b));
            b <= a * (1.0 + SAME_RSS_SLACK.0) + SAME_RSS_SLACK.1
        };
        let (s1, s4) = (one.send.maxrss_kib, four.send.maxrss_kib);
        let (r1, r4) = (one.recv.maxrss_kib, four.recv.maxrss_kib);
        println!(
            "  peak RSS 4x vs 1x size: sender {:.1} vs {:.1} MiB ({:.2}x), receiver {:.1} vs {:.1} MiB ({:.2}x)   target same (within {:.0}% + {:.0} MiB): {}",
            kib_mib(s4),
            kib_mib(s1),
            s4 as f64 / s1.max(1) as f64,
            kib_mib(r4),
            kib_mib(r1),
            r4 as f64 / r1.max(1) as f64,
            SAME_RSS_SLACK.0 * 100.0,
            SAME_RSS_SLACK.1,
            mark(same(s1, s4) && same(r1, r4), "DIFFERS")
        );
    } else {
        println!("  peak RSS 4x vs 1x size: not measured (PEERDROP_BENCH_BIG=0)");
    }
    if let (Some(small), Some(same)) = (find("(iii)"), find("(iv)")) {
        let ratio = small.mbps() / same.mbps();
        println!(
            "  (iii) {} small files {:.1} MB/s ({:.0} files/s) / (iv) one file {:.1} MB/s = {ratio:.3}   target >= {TARGET_RATIO:.2}: {}",
            small.files,
            small.mbps(),
            small.files as f64 / small.recv.secs,
            same.mbps(),
            mark(ratio >= TARGET_RATIO, "BELOW")
        );
        if let Some(t) = &l.tree {
            println!(
                "  (iii) a local cp -r of the same files (e) takes {:.2}s; the target allows {:.2}s for the whole transfer: (e) alone / allowed = {:.2}{}",
                t.secs,
                same.recv.secs / TARGET_RATIO,
                t.secs / (same.recv.secs / TARGET_RATIO),
                if t.secs > same.recv.secs / TARGET_RATIO {
                    "  (the file system's per-file work alone exceeds it)"
                } else {
                    ""
                }
            );
            println!(
                "  (iii) transfer {:.2}s / local cp -r (e) {:.2}s = {:.2}",
                small.recv.secs,
                t.secs,
                small.recv.secs / t.secs
            );
        }
    }

    println!();
    println!(
        "drift over the run (end vs start): plain TCP {:.0} MB/s ({:+.1}%), AEAD+BLAKE3 {:.0} MB/s ({:+.1}%)",
        r.drift.tcp.mbps(),
        (r.drift.tcp.mbps() / l.tcp.mbps() - 1.0) * 100.0,
        r.drift.aead.mbps(),
        (r.drift.aead.mbps() / l.aead.mbps() - 1.0) * 100.0
    );
    println!("verified: every output file's BLAKE3 equals its input's; file counts match");
    println!(
        "load average (1/5/15 min) before: {}, after: {}; temp dir {} removed; total {:.1}s",
        r.load[0],
        r.load[1],
        r.temp_path.display(),
        r.total_secs
    );
}
