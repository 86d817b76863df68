//! A folder of sealed chunks and manifests, addressed by id.
//!
//! Layout: `manifests/<hex id>` and `chunks/<first two hex digits>/<hex id>`.
//! Writes go to a temporary name and are renamed into place, so a name only
//! ever holds complete bytes. Reads are size-capped before allocating; they do
//! not verify — the [`crate::open::Opener`] does that for every chunk anyway.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

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
    // A chunk folder may come from anyone (`unseal --from`): a FIFO would
    // block `open` forever and a symlink to `/dev/zero` would read without
    // end, so nothing but a regular file is read, and never through a link.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let f = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::LOOP) => return Err(not_regular(path, "a symbolic link")),
        Err(e) => return Err(e.into()),
    };
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(not_regular(path, "not a regular file"));
    }
    let len = meta.len();
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

fn not_regular(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is {what}; a chunk folder holds regular files only (remove it, or fetch the chunk again)",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Reads `path` on another thread: a read that blocks fails the test
    /// instead of hanging it.
    fn read_within(path: PathBuf) -> io::Result<Vec<u8>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_capped(&path, 1 << 20));
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("reading a chunk blocked")
    }

    #[test]
    fn special_files_in_a_chunk_folder_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = read_within(fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");

        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read_within(link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");

        let e = read_within(PathBuf::from("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");

        let file = dir.path().join("chunk");
        fs::write(&file, b"sealed bytes").unwrap();
        assert_eq!(read_within(file).unwrap(), b"sealed bytes");
    }
}
