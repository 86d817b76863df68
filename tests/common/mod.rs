//! Shared test helpers: an in-memory chunk map, a raw sealer that can build
//! malformed shares (what a malicious sharer could publish), and tree tools.

#![allow(dead_code)]

pub mod daemon;
pub mod nat;
pub mod net;
pub mod netns;
pub mod swarm;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use peerdrop::chunk::{ChunkId, ChunkSize, Stream};
use peerdrop::crypto::{ChunkCipher, ChunkPosition, ShareKey};
use peerdrop::link::Link;
use peerdrop::manifest::{Manifest, ManifestId};
use peerdrop::meta::Metadata;
use peerdrop::open::Opener;
use peerdrop::seal::{seal, SealOptions};
use peerdrop::store::output::OutputOptions;
use peerdrop::store::unseal::{unseal, UnsealOptions, Unsealed};

/// Chunks by id, as any untrusted store would hold them.
pub type ChunkMap = HashMap<ChunkId, Vec<u8>>;

/// A share in memory: manifest bytes and chunks.
pub struct Share {
    pub id: ManifestId,
    pub manifest: Vec<u8>,
    pub chunks: ChunkMap,
}

/// Seals `metadata` + `content` with the library's sealer.
pub fn seal_mem(
    key: &ShareKey,
    metadata: &Metadata,
    content: &[u8],
    chunk_log2: u8,
    threads: usize,
) -> Share {
    let mut chunks = ChunkMap::new();
    let sealed = seal(
        key,
        metadata,
        content,
        &SealOptions {
            chunk_size: ChunkSize::from_log2(chunk_log2),
            threads,
            expires: None,
        },
        |c| {
            chunks.insert(c.id, c.bytes.to_vec());
            Ok(())
        },
    )
    .expect("sealing in memory cannot fail");
    Share {
        id: sealed.id,
        manifest: sealed.manifest_bytes,
        chunks,
    }
}

/// How a raw chunk is sealed: its plaintext and the position claimed in its AD.
pub struct RawChunk {
    pub plaintext: Vec<u8>,
    pub pos: ChunkPosition,
}

/// Cuts `data` into honest chunk descriptions for `stream`.
pub fn honest_chunks(stream: Stream, data: &[u8], size: ChunkSize) -> Vec<RawChunk> {
    let n = size.chunk_count(data.len() as u64);
    (0..n)
        .map(|i| {
            let len = size.chunk_len(data.len() as u64, i);
            let start = (i * size.bytes()) as usize;
            RawChunk {
                plaintext: data[start..start + len].to_vec(),
                pos: ChunkPosition {
                    stream,
                    index: i,
                    is_last: i + 1 == n,
                },
            }
        })
        .collect()
}

/// `data` as one stream's honest chunks, with its length: an argument of
/// [`seal_raw`].
pub fn stream_of(stream: Stream, data: &[u8], size: ChunkSize) -> (u64, Vec<RawChunk>) {
    (data.len() as u64, honest_chunks(stream, data, size))
}

/// Builds a share from raw chunk descriptions and declared lengths, with no
/// validation at all: what a malicious sharer holding the key could publish.
pub fn seal_raw(
    key: &ShareKey,
    size: ChunkSize,
    meta: (u64, Vec<RawChunk>),
    content: (u64, Vec<RawChunk>),
) -> (Manifest, ChunkMap) {
    let cipher = ChunkCipher::new(key);
    let mut chunks = ChunkMap::new();
    let mut ids = |raw: Vec<RawChunk>| -> Vec<ChunkId> {
        raw.into_iter()
            .map(|r| {
                let c = cipher.seal(r.pos, &r.plaintext);
                let id = ChunkId::of(&c);
                chunks.insert(id, c);
                id
            })
            .collect()
    };
    let metadata_chunks = ids(meta.1);
    let content_chunks = ids(content.1);
    let m = Manifest {
        chunk_size: size,
        key_commitment: key.commitment(),
        metadata_len: meta.0,
        content_len: content.0,
        metadata_chunks,
        content_chunks,
        expires: None,
    };
    (m, chunks)
}

/// Why [`receive_typed`] failed: the typed error of the step that refused.
#[derive(Debug)]
pub enum ReceiveError {
    /// The link did not parse.
    Link(peerdrop::link::ParseError),
    /// The manifest did not verify or decode.
    Manifest(peerdrop::manifest::ManifestError),
    /// The share expired, or the link's stated expiry is not the manifest's.
    Expiry(peerdrop::link::ExpiryError),
    /// The key does not open the manifest.
    Open(peerdrop::open::OpenError),
    /// Unsealing failed.
    Unseal(peerdrop::store::unseal::UnsealError),
}

impl std::fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiveError::Link(e) => e.fmt(f),
            ReceiveError::Manifest(e) => e.fmt(f),
            ReceiveError::Expiry(e) => e.fmt(f),
            ReceiveError::Open(e) => e.fmt(f),
            ReceiveError::Unseal(e) => e.fmt(f),
        }
    }
}

/// Runs the whole receive path on a link text against an untrusted store
/// holding `manifest` under the link's id: parse, verify manifest, check key,
/// unseal into `dest`. Errors come back as the text a user would see.
pub fn receive(
    link: &str,
    manifest: &[u8],
    chunks: &ChunkMap,
    dest: &Path,
    force: bool,
) -> Result<Unsealed, String> {
    receive_typed(link, manifest, chunks, dest, force).map_err(|e| e.to_string())
}

/// [`receive`], with the typed error.
pub fn receive_typed(
    link: &str,
    manifest: &[u8],
    chunks: &ChunkMap,
    dest: &Path,
    force: bool,
) -> Result<Unsealed, ReceiveError> {
    let output = OutputOptions {
        force,
        ..OutputOptions::default()
    };
    receive_with(link, manifest, chunks, dest, &output)
}

/// [`receive`] with any output options, and the typed error.
pub fn receive_with(
    link: &str,
    manifest: &[u8],
    chunks: &ChunkMap,
    dest: &Path,
    output: &OutputOptions,
) -> Result<Unsealed, ReceiveError> {
    let link = Link::parse_read_link(link).map_err(ReceiveError::Link)?;
    let m =
        Manifest::decode_verified(link.manifest_id(), manifest).map_err(ReceiveError::Manifest)?;
    link.check_manifest(&m, std::time::SystemTime::now())
        .map_err(ReceiveError::Expiry)?;
    let opener = Opener::new(m, link.require_key().unwrap()).map_err(ReceiveError::Open)?;
    // Hands out whatever it holds, even over the size asked for: the
    // receiving side must catch that itself.
    let mut source = |id: &ChunkId, _max: usize| -> io::Result<Vec<u8>> {
        let c = chunks
            .get(id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such chunk"))?;
        Ok(c.clone())
    };
    unseal(
        &opener,
        &mut source,
        dest,
        &UnsealOptions {
            output: output.clone(),
            threads: 2,
        },
        |_| {},
    )
    .map_err(ReceiveError::Unseal)
}

/// What a tree looks like: relative path → (is_dir, executable, contents).
pub type Tree = BTreeMap<String, (bool, bool, Vec<u8>)>;

/// Reads a tree from disk (files and folders; no links expected).
pub fn read_tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.insert(rel, (true, false, Vec::new()));
                stack.push(p);
            } else if m.is_file() {
                out.insert(
                    rel,
                    (
                        false,
                        m.permissions().mode() & 0o100 != 0,
                        fs::read(&p).unwrap(),
                    ),
                );
            }
        }
    }
    out
}

/// Writes a tree to disk under `root`.
pub fn write_tree(root: &Path, tree: &Tree) {
    for (rel, (is_dir, exec, data)) in tree {
        let p = root.join(rel);
        if *is_dir {
            fs::create_dir_all(&p).unwrap();
        } else {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, data).unwrap();
            let mode = if *exec { 0o755 } else { 0o644 };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// Top-level names present in `dest` (to check nothing half-written appears).
pub fn names_in(dest: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dest)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Names in `dest` other than peerdrop's own staging folders.
pub fn final_names_in(dest: &Path) -> Vec<String> {
    names_in(dest)
        .into_iter()
        .filter(|n| !(n.starts_with(".peerdrop-") && n.ends_with(".partial")))
        .collect()
}

/// A deterministic pseudo-random byte string.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut ctr = 0u64;
    while out.len() < len {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&ctr.to_le_bytes());
        out.extend_from_slice(h.finalize().as_bytes());
        ctr += 1;
    }
    out.truncate(len);
    out
}

/// Runs the real `peerdrop receive --no-mdns ARGS -o DEST` for `link`
/// (given in PEERDROP_LINK, stdin empty) to its end: exit code, peak RSS
/// in KiB and stderr. The peak comes from wait4's rusage: exact, where
/// sampling /proc while it runs could miss it.
// The child is reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn receive_peak_rss(link: &str, dest: &Path, args: &[&str]) -> (i32, i64, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_peerdrop"))
        .args(["receive", "--no-mdns"])
        .args(args)
        .arg("-o")
        .arg(dest)
        .env("PEERDROP_LINK", link)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    // Ends when the child does, which its own deadlines (`--wait`) bound.
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut status = 0;
    // SAFETY: wait4 on our own child, with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (libc::WEXITSTATUS(status), usage.ru_maxrss, err)
}

/// A path inside a temp dir.
pub fn sub(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Seals the tree `tree` (written to a temp folder and scanned as a
/// sender would) in memory with 1 KiB chunks: its read link and chunks.
pub fn share_of(tree: &Tree) -> (String, Share) {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(tmp.path(), tree);
    let paths: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let source = peerdrop::store::source::Source::scan(&paths).unwrap();
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut source.reader(), &mut content).unwrap();
    let key = ShareKey::generate().unwrap();
    let share = seal_mem(&key, source.metadata(), &content, 10, 2);
    let link = Link::new(share.id, Vec::new(), Some(key))
        .unwrap()
        .to_uri_string();
    (link, share)
}

/// A [`Tree`] of folders (`None`) and files (`Some(bytes)`).
pub fn tree(items: &[(&str, Option<&[u8]>)]) -> Tree {
    items
        .iter()
        .map(|(p, d)| {
            (
                p.to_string(),
                (d.is_none(), false, d.unwrap_or_default().to_vec()),
            )
        })
        .collect()
}
