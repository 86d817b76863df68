//! Sealing and unsealing throughput and peak memory, judged against this
//! machine's own single-core ChaCha20-Poly1305 and BLAKE3 speed measured in
//! the same run: on a small shared machine absolute numbers swing from run to
//! run, a ratio to a reference taken moments earlier swings far less.
//!
//! Run with `cargo bench --bench seal`. `PEERDROP_BENCH_BYTES` sets the input
//! size (default 1 GiB). Throughput is in GB/s = 10^9 bytes of plaintext per
//! second; sizes and memory are in MiB = 2^20 bytes. The table goes to stdout,
//! progress to stderr.

mod common;

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peerdrop::chunk::{ChunkId, Stream, NONCE_LEN, TAG_LEN};
use peerdrop::crypto::{ChunkCipher, ChunkPosition, ShareKey, AD_LEN};
use peerdrop::manifest::{Manifest, ManifestId};
use peerdrop::open::Opener;
use peerdrop::seal::{seal, SealOptions, Sealed};
use peerdrop::store::chunks::ChunkDir;
use peerdrop::store::source::Source;
use peerdrop::store::unseal::{unseal, UnsealOptions, Unsealed};
use ring::aead::Aad;

use common::{
    aead_blake3_step, aead_key, hash_file, loadavg, mib, next_nonce, pseudo_random,
    write_pseudo_random, BoxResult, MIB, WARMUP_ITERS,
};

const DEFAULT_INPUT_BYTES: u64 = 1 << 30;
/// Enough data that one reference pass lasts about a second: long enough to
/// swamp timer and frequency-ramp noise, short enough to keep the run short.
const RAW_BYTES: u64 = 1 << 30;
/// The target: sealing and unsealing at least this fraction of one
/// core's AEAD+BLAKE3 speed.
const TARGET_RATIO: f64 = 0.70;

/// How a row's ratio to the reference is judged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Shown for context only.
    None,
    /// The row every ratio is relative to.
    Reference,
    /// Must reach [`TARGET_RATIO`].
    Target,
}

/// Resident memory around one phase, in KiB as the kernel reports it.
#[derive(Clone, Copy)]
struct Mem {
    start_kib: Option<u64>,
    peak_kib: Option<u64>,
}

impl Mem {
    /// How far the phase itself pushed resident memory up.
    fn growth_kib(&self) -> Option<u64> {
        Some(self.peak_kib?.saturating_sub(self.start_kib?))
    }
}

struct Row {
    label: String,
    bytes: u64,
    secs: f64,
    /// `None` when the row is a slice of another phase's interval and has no
    /// peak of its own.
    mem: Option<Mem>,
    goal: Goal,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e9
    }
}

fn main() -> BoxResult<()> {
    let size = input_bytes()?;
    let quarter = (size / 4).max(1);
    let peak_resettable = reset_peak();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = loadavg();

    eprintln!(
        "measuring single-core references, {} MiB each",
        mib(RAW_BYTES)
    );
    let limits = reference_rows()?;
    let reference = limits
        .iter()
        .find(|r| r.goal == Goal::Reference)
        .map(Row::gbps)
        .expect("reference_rows includes the reference");

    let tmp = tempfile::Builder::new()
        .prefix("peerdrop-bench-")
        .tempdir()?;
    let input = tmp.path().join("input.bin");
    let input_quarter = tmp.path().join("quarter.bin");
    eprintln!(
        "writing {:.1} MiB + {:.1} MiB of input under {}",
        mib(size),
        mib(quarter),
        tmp.path().display()
    );
    write_pseudo_random(&input, size, 0x5eed_0001)?;
    write_pseudo_random(&input_quarter, quarter, 0x5eed_0002)?;
    // Reading each input once both fills the page cache, so the phases below
    // measure CPU and not the disk, and gives the hash the unsealed copy must
    // match.
    let input_hash = hash_file(&input)?;
    hash_file(&input_quarter)?;

    let key = ShareKey::generate()?;
    let mut phases = Vec::new();

    eprintln!("(a) sealing, 1 thread, discard sink");
    let (a, secs, mem) = measure(|| seal_discard(&input, &key, 1));
    let a = a?;
    phases.push(row("(a) seal, 1 thread, discard", size, secs, mem));

    eprintln!("(b) sealing, all cores, discard sink");
    let (b, secs, mem_full) = measure(|| seal_discard(&input, &key, 0));
    let b = b?;
    phases.push(row("(b) seal, all cores, discard", size, secs, mem_full));

    eprintln!("(b') sealing 1/4 of the input, all cores, discard sink");
    let (b_quarter, secs, mem_quarter) = measure(|| seal_discard(&input_quarter, &key, 0));
    b_quarter?;
    phases.push(row(
        "(b') seal, all cores, discard, 1/4 size",
        quarter,
        secs,
        mem_quarter,
    ));

    eprintln!("(c) sealing into a chunk folder, all cores");
    let chunk_root = tmp.path().join("chunks");
    let (c, secs, mem) = measure(|| seal_to_dir(&input, &key, &chunk_root));
    let (c, dir) = c?;
    phases.push(row("(c) seal, all cores, into ChunkDir", size, secs, mem));
    // Flushed on its own so that the syncfs inside unseal's finish() below
    // writes back only the unsealed output, not these chunks as well.
    let (synced, secs, mem) = measure(|| dir.sync());
    synced?;
    phases.push(Row {
        goal: Goal::None,
        ..row("    flush ChunkDir (syncfs; disk-bound)", size, secs, mem)
    });

    if a.id != b.id || a.id != c.id {
        return Err(format!(
            "sealing is deterministic under one key, yet the manifests differ: \
             1 thread {}, all cores {}, chunk folder {}",
            a.id, b.id, c.id
        )
        .into());
    }

    eprintln!("(d) unsealing from the chunk folder, all cores");
    let dest = tmp.path().join("out");
    let (d, secs, mem) = measure(|| unseal_from_dir(&chunk_root, &c.id, &key, &dest));
    let (unsealed, to_last_chunk) = d?;
    phases.push(Row {
        secs: to_last_chunk.map_or(secs, |t| t.as_secs_f64()),
        mem: None,
        ..row(
            "(d) unseal, all cores, to last chunk written",
            size,
            secs,
            mem,
        )
    });
    phases.push(row(
        "(d) unseal, incl. finish (syncfs + rename)",
        size,
        secs,
        mem,
    ));

    let output = dest.join("input.bin");
    let output_hash = hash_file(&output)?;
    if unsealed.bytes != size || output_hash != input_hash {
        return Err(format!(
            "unsealed output differs from the input: {} bytes with BLAKE3 {}, expected {size} bytes with BLAKE3 {}",
            unsealed.bytes,
            output_hash.to_hex(),
            input_hash.to_hex()
        )
        .into());
    }

    eprintln!("end-of-run references");
    // Re-measuring the reference shows how much the machine's speed drifted
    // while the phases ran (other work on a shared box), i.e. how far the
    // ratios can be trusted.
    let mut checks = vec![Row {
        goal: Goal::None,
        ..aead_blake3_row("AEAD+BLAKE3 again (drift check)")?
    }];
    // (c) and (d) write a whole share's worth of new files; this is what the
    // kernel alone needs for that, with no crypto at all.
    let (written, secs, mem) = measure(|| write_plain(&tmp.path().join("plain.bin"), size));
    written?;
    checks.push(Row {
        goal: Goal::None,
        ..row("write new file, 1 MiB writes, no sync", size, secs, mem)
    });

    let load_after = loadavg();
    let temp_path = tmp.path().to_owned();
    tmp.close()?;

    print_report(&Report {
        groups: [
            ("single-core limits of this machine, 1 MiB buffers", &limits),
            ("peerdrop", &phases),
            ("end of run", &checks),
        ],
        reference,
        size,
        cores,
        peak_resettable,
        load: [load_before, load_after],
        manifest: c.id,
        content_hash: input_hash,
        temp_path,
        mem_full,
        mem_quarter,
        quarter,
    });
    Ok(())
}

fn input_bytes() -> BoxResult<u64> {
    match std::env::var("PEERDROP_BENCH_BYTES") {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_INPUT_BYTES),
        Err(e) => Err(format!("PEERDROP_BENCH_BYTES: {e}").into()),
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("PEERDROP_BENCH_BYTES={s:?} is not a positive byte count").into()),
        },
    }
}

/// A row held to the target; the few that are not override `goal`.
fn row(label: &str, bytes: u64, secs: f64, mem: Mem) -> Row {
    Row {
        label: label.into(),
        bytes,
        secs,
        mem: Some(mem),
        goal: Goal::Target,
    }
}

/// Runs `f` once and returns its result, wall time and resident memory.
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, Mem) {
    // Memory freed by an earlier phase and cached by the allocator would
    // otherwise be reused silently and hide this phase's own peak.
    trim_heap();
    reset_peak();
    let start_kib = proc_status_kib("VmRSS");
    let t = Instant::now();
    let value = f();
    let secs = t.elapsed().as_secs_f64();
    let peak_kib = proc_status_kib("VmHWM");
    (
        value,
        secs,
        Mem {
            start_kib,
            peak_kib,
        },
    )
}

/// Resets VmHWM to the current RSS; false where the kernel does not allow it,
/// in which case VmHWM is the peak since the process started.
fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it has
    // no preconditions and touches no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The machine's limits on one core: what peerdrop could reach at best.
fn reference_rows() -> BoxResult<Vec<Row>> {
    let mut rows = Vec::new();
    let buf = pseudo_random(MIB, 1);
    rows.push(reference("BLAKE3 hash (blake3::hash)", Goal::None, || {
        black_box(blake3::hash(black_box(&buf)));
    }));

    let key = aead_key()?;
    let mut counter = 0u64;
    let mut buf = pseudo_random(MIB, 2);
    rows.push(reference(
        "ChaCha20-Poly1305 seal (ring)",
        Goal::None,
        || {
            let tag = key
                .seal_in_place_separate_tag(
                    next_nonce(&mut counter),
                    Aad::from([0u8; AD_LEN]),
                    &mut buf,
                )
                .expect("1 MiB is far below the ChaCha20 limit");
            black_box(tag.as_ref());
        },
    ));

    rows.push(aead_blake3_row("AEAD+BLAKE3 (seal, then hash the chunk)")?);

    // peerdrop's per-chunk work without the pipeline or any I/O: it adds the
    // keyed BLAKE3 of the synthetic nonce to AEAD+BLAKE3, so this is the
    // ceiling for (a) and shows how much of any gap is the format's and how
    // much the pipeline's.
    let cipher = ChunkCipher::new(&ShareKey::from_bytes([9; 32])?);
    let mut index = 0u64;
    let mut buf = pseudo_random(NONCE_LEN + MIB, 4);
    buf.reserve_exact(TAG_LEN);
    rows.push(reference(
        "ChunkCipher::seal_in_place + ChunkId::of",
        Goal::None,
        || {
            buf.truncate(NONCE_LEN + MIB);
            let pos = ChunkPosition {
                stream: Stream::Content,
                index,
                is_last: false,
            };
            index += 1;
            cipher.seal_in_place(pos, &mut buf);
            black_box(ChunkId::of(&buf));
        },
    ));
    Ok(rows)
}

/// The reference every ratio is taken against: sealing a chunk and hashing
/// the result, the least any chunk-id-addressed AEAD format must do.
fn aead_blake3_row(label: &str) -> BoxResult<Row> {
    Ok(reference(
        label,
        Goal::Reference,
        aead_blake3_step(aead_key()?),
    ))
}

/// Times `step`, which must process 1 MiB of plaintext per call, over
/// [`RAW_BYTES`] on the calling thread.
fn reference(label: &str, goal: Goal, mut step: impl FnMut()) -> Row {
    for _ in 0..WARMUP_ITERS {
        step();
    }
    let iters = RAW_BYTES / MIB as u64;
    let ((), secs, mem) = measure(|| {
        for _ in 0..iters {
            step();
        }
    });
    Row {
        goal,
        ..row(label, iters * MIB as u64, secs, mem)
    }
}

fn write_plain(path: &Path, len: u64) -> io::Result<()> {
    let buf = pseudo_random(MIB, 5);
    let mut file = File::create(path)?;
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB as u64) as usize;
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn seal_options(threads: usize) -> SealOptions {
    SealOptions {
        threads,
        ..SealOptions::default()
    }
}

fn seal_discard(path: &Path, key: &ShareKey, threads: usize) -> BoxResult<Sealed> {
    let source = Source::scan(&[path.to_owned()])?;
    let mut sunk = 0u64;
    let sealed = seal(
        key,
        source.metadata(),
        source.reader(),
        &seal_options(threads),
        |chunk| {
            sunk += chunk.bytes.len() as u64;
            Ok(())
        },
    )?;
    // A sink that was never called would make the fastest "sealing" of all.
    let expected = sealed.manifest.sealed_size();
    if sunk != expected {
        return Err(format!("the sink saw {sunk} bytes, the manifest lists {expected}").into());
    }
    Ok(sealed)
}

fn seal_to_dir(path: &Path, key: &ShareKey, root: &Path) -> BoxResult<(Sealed, ChunkDir)> {
    let source = Source::scan(&[path.to_owned()])?;
    let dir = ChunkDir::create(root)?;
    let sealed = seal(
        key,
        source.metadata(),
        source.reader(),
        &seal_options(0),
        |chunk| dir.put(&chunk.id, chunk.bytes),
    )?;
    dir.put_manifest(&sealed.id, &sealed.manifest_bytes)?;
    Ok((sealed, dir))
}

/// Unseals like `peerdrop unseal` does, and also returns when the last chunk
/// was written, which separates decryption from the final flush to disk.
fn unseal_from_dir(
    root: &Path,
    id: &ManifestId,
    key: &ShareKey,
    dest: &Path,
) -> BoxResult<(Unsealed, Option<Duration>)> {
    let start = Instant::now();
    let mut dir = ChunkDir::open(root)?;
    let manifest = Manifest::decode_verified(id, &dir.get_manifest(id)?)?;
    let total = manifest.content_len;
    let opener = Opener::new(manifest, key)?;
    let mut last_chunk = None;
    let unsealed = unseal(
        &opener,
        &mut dir,
        dest,
        &UnsealOptions {
            threads: 0,
            ..UnsealOptions::default()
        },
        |written| {
            if written == total {
                last_chunk = Some(start.elapsed());
            }
        },
    )?;
    Ok((unsealed, last_chunk))
}

fn kib_to_mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

struct Report<'a> {
    groups: [(&'a str, &'a [Row]); 3],
    reference: f64,
    size: u64,
    cores: usize,
    peak_resettable: bool,
    load: [String; 2],
    manifest: ManifestId,
    content_hash: blake3::Hash,
    temp_path: PathBuf,
    mem_full: Mem,
    mem_quarter: Mem,
    quarter: u64,
}

fn print_report(r: &Report<'_>) {
    println!();
    println!(
        "peerdrop seal benchmark: input {} bytes ({:.1} MiB), {} core(s), \"all cores\" = {} pipeline threads",
        r.size,
        mib(r.size),
        r.cores,
        peerdrop::pipeline::default_threads()
    );
    println!(
        "GB/s = 10^9 plaintext bytes/s; MiB = 2^20 bytes; ratio = GB/s / single-core AEAD+BLAKE3 ({:.3} GB/s)",
        r.reference
    );
    println!(
        "peak = VmHWM during the phase; +peak = peak minus VmRSS at its start{}",
        if r.peak_resettable {
            ""
        } else {
            " (/proc/self/clear_refs is not writable: VmHWM could not be reset, so peaks are since process start)"
        }
    );
    let header = format!(
        "{:<46} {:>9} {:>8} {:>7} {:>7} {:>8} {:>8}  {}",
        "phase", "MiB", "seconds", "GB/s", "ratio", "peak MiB", "+peak", "target"
    );
    for (title, rows) in r.groups {
        println!();
        println!("{title}");
        println!("{header}");
        println!("{}", "-".repeat(header.len()));
        for row in rows {
            print_row(row, r.reference);
        }
    }
    println!();

    let gbps = |prefix: &str| {
        r.groups
            .iter()
            .flat_map(|(_, rows)| rows.iter())
            .find(|row| row.label.starts_with(prefix))
            .map(Row::gbps)
    };
    if let (Some(one), Some(all)) = (gbps("(a)"), gbps("(b)")) {
        println!("all cores vs 1 thread, discard sink: {:.2}x", all / one);
    }
    if let (Some(floor), Some(one)) = (gbps("ChunkCipher"), gbps("(a)")) {
        println!(
            "format ceiling for 1 thread (ChunkCipher / AEAD+BLAKE3): {:.2}; (a) reaches {:.2} of that ceiling",
            floor / r.reference,
            one / floor
        );
    }
    if let Some(again) = gbps("AEAD+BLAKE3 again") {
        println!(
            "reference drift over the run: {:+.1}% (end vs start)",
            (again / r.reference - 1.0) * 100.0
        );
    }
    println!(
        "peak memory vs input size (all cores, discard sink): {:.1} MiB input: peak {} MiB (+{}); {:.1} MiB input: peak {} MiB (+{})",
        mib(r.size),
        kib_to_mib(r.mem_full.peak_kib),
        kib_to_mib(r.mem_full.growth_kib()),
        mib(r.quarter),
        kib_to_mib(r.mem_quarter.peak_kib),
        kib_to_mib(r.mem_quarter.growth_kib()),
    );
    println!(
        "verified: (a), (b) and (c) sealed to the same manifest {}; the unsealed file's BLAKE3 equals the input's ({})",
        r.manifest,
        r.content_hash.to_hex()
    );
    println!(
        "load average (1/5/15 min) before: {}, after: {}; temp dir {} removed",
        r.load[0],
        r.load[1],
        r.temp_path.display()
    );
}

fn print_row(row: &Row, reference: f64) {
    let ratio = row.gbps() / reference;
    let (peak, growth) = match row.mem {
        Some(m) => (kib_to_mib(m.peak_kib), kib_to_mib(m.growth_kib())),
        None => ("-".into(), "-".into()),
    };
    let target = match row.goal {
        Goal::None => String::new(),
        Goal::Reference => "reference".into(),
        Goal::Target if ratio >= TARGET_RATIO => format!(">= {TARGET_RATIO:.2} ok"),
        Goal::Target => format!(">= {TARGET_RATIO:.2} BELOW"),
    };
    println!(
        "{:<46} {:>9.1} {:>8.3} {:>7.3} {:>7.3} {:>8} {:>8}  {}",
        row.label,
        mib(row.bytes),
        row.secs,
        row.gbps(),
        ratio,
        peak,
        growth,
        target
    );
}
