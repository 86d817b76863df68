//! Pieces shared by the benches: the machine's limits (TCP copy on
//! 127.0.0.1, single-core AEAD+BLAKE3, fresh-file writes), CPU accounting,
//! test data, and small formatting helpers. Each bench uses a subset.

#![allow(dead_code)]

pub mod proc;

use std::error::Error;
use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use peerdrop::chunk::{NONCE_LEN, TAG_LEN};
use peerdrop::crypto::AD_LEN;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

pub type BoxResult<T> = Result<T, Box<dyn Error>>;

pub const BIN: &str = env!("CARGO_BIN_EXE_peerdrop");

pub const MIB: usize = 1 << 20;

/// Untimed AEAD+BLAKE3 iterations first, so page faults on fresh buffers and
/// lazy CPU feature detection are not billed to the loop.
pub const WARMUP_ITERS: u64 = 16;

pub fn env_u64(name: &str, default: u64) -> BoxResult<u64> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(format!("{name}: {e}").into()),
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}={s:?} is not a positive number").into()),
        },
    }
}

/// One timed pass over `bytes`.
#[derive(Clone, Copy)]
pub struct Measure {
    pub bytes: u64,
    pub secs: f64,
    /// This process's CPU seconds (user+sys, all threads) over the pass.
    pub cpu: f64,
}

impl Measure {
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }

    pub fn cpu_per_gib(&self) -> f64 {
        self.cpu / gib(self.bytes)
    }
}

/// This process's CPU seconds so far (user+sys, all threads).
pub fn self_cpu() -> f64 {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    tv_secs(ru.ru_utime) + tv_secs(ru.ru_stime)
}

pub fn tv_secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

pub struct Drift {
    pub tcp: Measure,
    pub aead: Measure,
}

/// A plain, unencrypted copy over 127.0.0.1: one thread writes 1 MiB at a
/// time, another reads, each with its own core at best.
pub fn tcp_copy(bytes: u64) -> BoxResult<Measure> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let buf = pseudo_random(MIB, 6);
    // Connected before the reader starts (the backlog completes it), so a
    // failure here cannot leave a thread waiting in accept().
    let mut conn = TcpStream::connect(addr)?;
    let cpu0 = self_cpu();
    let start = Instant::now();
    let reader = thread::spawn(move || -> io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut rbuf = vec![0u8; MIB];
        let mut total = 0u64;
        loop {
            match conn.read(&mut rbuf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    });
    let mut left = bytes;
    let written = (|| -> io::Result<()> {
        while left > 0 {
            let n = left.min(MIB as u64) as usize;
            conn.write_all(&buf[..n])?;
            left -= n as u64;
        }
        conn.shutdown(Shutdown::Write)
    })();
    drop(conn);
    let received = reader.join().expect("the reader does not panic");
    let secs = start.elapsed().as_secs_f64();
    let cpu = self_cpu() - cpu0;
    written?;
    let received = received?;
    if received != bytes {
        return Err(format!("TCP copy: sent {bytes} bytes, received {received}").into());
    }
    Ok(Measure { bytes, secs, cpu })
}

/// Bulk bytes through libp2p alone: two nodes built exactly as peerdrop
/// builds them (TCP + Noise + Yamux on 127.0.0.1, in this process), one
/// stream, 1 MiB writes, memory to memory: no peerdrop protocol, no chunk
/// crypto, no disk. No transfer over this transport can beat it, so it is the
/// ceiling the transfer's figures are read against.
pub fn libp2p_copy(bytes: u64) -> BoxResult<Measure> {
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use peerdrop::net::node::{self, NodeConfig};

    const PROTO: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/peerdrop-bench/raw/1");
    const LIMIT: Duration = Duration::from_secs(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (recv, send) = (
            node::spawn(NodeConfig::default())?,
            node::spawn(NodeConfig::default())?,
        );
        let addr = recv.listen("/ip4/127.0.0.1/tcp/0".parse()?).await?;
        let mut incoming = recv
            .control()
            .accept(PROTO)
            .map_err(|e| format!("accept: {e}"))?;
        send.dial(recv.peer_id(), vec![addr]).await?;
        let reader = tokio::spawn(async move {
            let (_, mut s) = incoming.next().await.ok_or("no stream came")?;
            let mut buf = vec![0u8; MIB];
            let mut total = 0u64;
            loop {
                match s.read(&mut buf).await.map_err(|e| e.to_string())? {
                    0 => return Ok::<u64, String>(total),
                    n => total += n as u64,
                }
            }
        });
        let buf = pseudo_random(MIB, 8);
        let cpu0 = self_cpu();
        let start = Instant::now();
        let copy = async {
            let mut s = send
                .control()
                .open_stream(recv.peer_id(), PROTO)
                .await
                .map_err(|e| e.to_string())?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(MIB as u64) as usize;
                s.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
                left -= n as u64;
            }
            s.close().await.map_err(|e| e.to_string())?;
            reader.await.map_err(|e| e.to_string())?
        };
        let received = tokio::time::timeout(LIMIT, copy)
            .await
            .map_err(|_| "libp2p copy: timed out")??;
        let secs = start.elapsed().as_secs_f64();
        let cpu = self_cpu() - cpu0;
        send.shutdown().await;
        recv.shutdown().await;
        if received != bytes {
            return Err(format!("libp2p copy: sent {bytes} bytes, received {received}").into());
        }
        Ok(Measure { bytes, secs, cpu })
    })
}

/// Copying a tree of files locally, as `cp -r` does: one thread creates each
/// file, writes it, sets its time and closes it, then one `syncfs`. The
/// per-file work of the file system alone, with no network and no crypto:
/// what receiving many small files cannot beat. The copy is left in place
/// (deleting many files makes creating files slower for a while on ext4).
pub fn tree_copy(src: &Path, files: &[std::path::PathBuf], dst: &Path) -> BoxResult<Measure> {
    use std::os::fd::AsRawFd;
    sync_fs(src)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut bytes = 0;
    let cpu0 = self_cpu();
    let start = Instant::now();
    let mut made = std::collections::HashSet::new();
    for f in files {
        let to = dst.join(f.strip_prefix(src)?);
        let parent = to.parent().expect("under dst").to_owned();
        if made.insert(parent.clone()) {
            fs::create_dir_all(&parent)?;
        }
        let mut input = File::open(f)?;
        let mtime = input.metadata()?.modified()?;
        let mut out = File::create(&to)?;
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            bytes += n as u64;
        }
        let d = mtime.duration_since(std::time::UNIX_EPOCH)?;
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
        ];
        // SAFETY: an open descriptor and a two-element timespec array.
        if unsafe { libc::futimens(out.as_raw_fd(), times.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
    }
    sync_fs(dst)?;
    Ok(Measure {
        bytes,
        secs: start.elapsed().as_secs_f64(),
        cpu: self_cpu() - cpu0,
    })
}

/// Sealing a 1 MiB chunk and hashing the result on one core: the least any
/// chunk-id-addressed AEAD format must do per byte.
pub fn aead_blake3(bytes: u64) -> BoxResult<Measure> {
    let mut step = aead_blake3_step(aead_key()?);
    for _ in 0..WARMUP_ITERS {
        step();
    }
    let iters = bytes / MIB as u64;
    let cpu0 = self_cpu();
    let start = Instant::now();
    for _ in 0..iters {
        step();
    }
    Ok(Measure {
        bytes: iters * MIB as u64,
        secs: start.elapsed().as_secs_f64(),
        cpu: self_cpu() - cpu0,
    })
}

/// One step of the AEAD+BLAKE3 reference: seals 1 MiB in a chunk-shaped
/// buffer under `key` and hashes the result.
pub fn aead_blake3_step(key: LessSafeKey) -> impl FnMut() {
    let mut counter = 0u64;
    // Laid out like a sealed chunk (nonce, ciphertext, tag) so the hash covers
    // exactly the bytes a chunk id covers.
    let mut chunk = pseudo_random(NONCE_LEN + MIB + TAG_LEN, 3);
    move || {
        let body = &mut chunk[NONCE_LEN..NONCE_LEN + MIB];
        let tag = key
            .seal_in_place_separate_tag(next_nonce(&mut counter), Aad::from([0u8; AD_LEN]), body)
            .expect("1 MiB is far below the ChaCha20 limit");
        chunk[NONCE_LEN + MIB..].copy_from_slice(tag.as_ref());
        black_box(blake3::hash(&chunk));
    }
}

pub fn aead_key() -> BoxResult<LessSafeKey> {
    Ok(LessSafeKey::new(UnboundKey::new(
        &CHACHA20_POLY1305,
        &[7; 32],
    )?))
}

/// A fresh nonce per call: reuse would be harmless here, but a benchmark of
/// an AEAD should not model misuse.
pub fn next_nonce(counter: &mut u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    *counter += 1;
    Nonce::assume_unique_for_key(n)
}

/// Writing a new file in 1 MiB writes with no sync (the page-cache ceiling
/// for receive's output), then the same plus a `syncfs`, which `receive`
/// also does before it renames its output into place.
pub fn fresh_write(dir: &Path, bytes: u64) -> BoxResult<(Measure, Measure)> {
    sync_fs(dir)?;
    let path = dir.join("plain-write.bin");
    let buf = pseudo_random(MIB, 5);
    let cpu0 = self_cpu();
    let start = Instant::now();
    let mut file = File::create(&path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB as u64) as usize;
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    drop(file);
    let no_sync = start.elapsed().as_secs_f64();
    let cpu_no_sync = self_cpu() - cpu0;
    sync_fs(dir)?;
    let with_sync = start.elapsed().as_secs_f64();
    let cpu_with_sync = self_cpu() - cpu0;
    fs::remove_file(&path)?;
    Ok((
        Measure {
            bytes,
            secs: no_sync,
            cpu: cpu_no_sync,
        },
        Measure {
            bytes,
            secs: with_sync,
            cpu: cpu_with_sync,
        },
    ))
}

/// splitmix64: incompressible-looking bytes at several GB/s, with no RNG
/// dependency, and reproducible from `state`.
pub fn fill_pseudo_random(buf: &mut [u8], state: &mut u64) {
    for word in buf.chunks_mut(8) {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        word.copy_from_slice(&z.to_le_bytes()[..word.len()]);
    }
}

pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fill_pseudo_random(&mut buf, &mut { seed });
    buf
}

pub fn write_pseudo_random(path: &Path, len: u64, seed: u64) -> io::Result<()> {
    let mut file = File::create(path)?;
    let mut buf = vec![0u8; MIB];
    let mut state = seed;
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB as u64) as usize;
        fill_pseudo_random(&mut buf[..n], &mut state);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    // Written back now, so that receive's syncfs does not flush it too.
    file.sync_all()
}

pub fn hash_file(path: &Path) -> io::Result<blake3::Hash> {
    Ok(blake3::Hasher::new()
        .update_reader(File::open(path)?)?
        .finalize())
}

/// Flushes the file system holding `path`: before each timed phase, so that
/// the fetchers' own syncfs writes back only their own output.
pub fn sync_fs(path: &Path) -> io::Result<()> {
    peerdrop::store::output::sync_fs(path)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

pub fn kib_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// When `path` was last modified, as "YYYY-MM-DD HH:MM:SS" UTC.
pub fn built_at(path: &Path) -> String {
    let Ok(secs) = fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
        .map(|d| d.as_secs() as i64)
    else {
        return "?".into();
    };
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => "?".into(),
    }
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}
