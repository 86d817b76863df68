//! A folder of sealed chunks and manifests, addressed by id.
//!
//! Layout: `manifests/<hex id>` and `chunks/<first two hex digits>/<hex id>`.
//! Writes go to a temporary name and are renamed into place, so a name only
//! ever holds complete bytes. Reads are size-capped before allocating; they do
//! not verify — the [`crate::open::Opener`] does that for every chunk anyway.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::chunk::{hex, ChunkId};
use crate::manifest::{ManifestId, MAX_MANIFEST_LEN};

/// A chunk folder.
#[derive(Clone, Debug)]
pub struct ChunkDir {
    root: PathBuf,
}

impl ChunkDir {
    /// Opens (creating if needed) a chunk folder at `root`.
    pub fn create(root: &Path) -> io::Result<ChunkDir> {
        fs::create_dir_all(root.join("chunks"))?;
        fs::create_dir_all(root.join("manifests"))?;
        Ok(ChunkDir {
            root: root.to_owned(),
        })
    }

    /// Opens an existing chunk folder.
    pub fn open(root: &Path) -> io::Result<ChunkDir> {
        if !root.join("manifests").is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} is not a peerdrop chunk folder (no manifests/ inside)",
                    root.display()
                ),
            ));
        }
        Ok(ChunkDir {
            root: root.to_owned(),
        })
    }

    fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        let h = hex(&id.0);
        self.root.join("chunks").join(&h[..2]).join(h)
    }

    fn manifest_path(&self, id: &ManifestId) -> PathBuf {
        self.root.join("manifests").join(hex(&id.0))
    }

    /// Stores a chunk (a no-op if it is already there).
    pub fn put(&self, id: &ChunkId, bytes: &[u8]) -> io::Result<()> {
        let path = self.chunk_path(id);
        if path.exists() {
            return Ok(());
        }
        fs::create_dir_all(path.parent().expect("chunk paths have a parent"))?;
        write_atomic(&path, bytes)
    }

    /// Reads a chunk of at most `max_len` bytes.
    pub fn get(&self, id: &ChunkId, max_len: usize) -> io::Result<Vec<u8>> {
        read_capped(&self.chunk_path(id), max_len)
    }

    /// Stores manifest bytes under their id.
    pub fn put_manifest(&self, id: &ManifestId, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.manifest_path(id), bytes)
    }

    /// Reads a manifest's bytes.
    pub fn get_manifest(&self, id: &ManifestId) -> io::Result<Vec<u8>> {
        read_capped(&self.manifest_path(id), MAX_MANIFEST_LEN)
    }

    /// Flushes everything written so far to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        crate::store::output::sync_fs(&self.root)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // Unique per process and call, so concurrent writers never share a name.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    fs::rename(&tmp, path)
}

fn read_capped(path: &Path, max_len: usize) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    if len > max_len as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes, more than the {max_len} allowed",
                path.display()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max_len as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}
