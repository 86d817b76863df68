//! The files being shared: scanning, and reading them as one content stream.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::meta::{Entry, EntryKind, Metadata, MetadataError, PathError, RelPath, Timestamp};
use crate::store::output::is_staging_name;
use crate::store::{at, PathIoError};

/// Something under a shared folder that is left out of the share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Where it is.
    pub path: PathBuf,
    /// Why it is left out.
    pub reason: &'static str,
}

/// A regular file of the share, where its bytes sit in the content stream.
#[derive(Clone, Debug)]
struct SourceFile {
    abs: PathBuf,
    offset: u64,
    size: u64,
    modified: Option<SystemTime>,
    follow: bool,
}

/// Why the paths cannot be shared.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Nothing was named.
    #[error("nothing to share: name at least one file or folder")]
    Empty,
    /// Reading the file system failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A path such as `/` that has no name to share it under.
    #[error("cannot share {}: it has no name; share the files inside it instead", crate::store::shown(.0))]
    NoName(PathBuf),
    /// A name that is not UTF-8.
    #[error("cannot share {}: its name is not valid UTF-8; rename it first", crate::store::shown(.0))]
    NotUtf8(PathBuf),
    /// A name that would be unsafe or unportable on the receiving side.
    #[error(
        "cannot share {}: {reason}; rename it first",
        crate::store::shown(path)
    )]
    BadName {
        /// The file.
        path: PathBuf,
        /// What is wrong with its name.
        reason: PathError,
    },
    /// Two top-level paths with the same name.
    #[error("two of the paths to share are both named {0:?}; share their parent folder instead")]
    Duplicate(String),
    /// A top-level path that is an unfinished download's staging folder.
    #[error("cannot share {}: it is the staging folder of an unfinished peerdrop download (receivers refuse such names); share the files once they are received", crate::store::shown(.0))]
    Staging(PathBuf),
    /// A top-level path that is neither a file nor a folder.
    #[error("cannot share {}: only regular files and folders can be shared", crate::store::shown(.0))]
    Unsupported(PathBuf),
    /// The resulting file list is invalid (for example names that collide by case).
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// The scanned paths of a share.
#[derive(Debug)]
pub struct Source {
    metadata: Metadata,
    files: Vec<SourceFile>,
    skipped: Vec<Skipped>,
}

fn timestamp(t: Option<SystemTime>) -> Timestamp {
    match t.map(|t| t.duration_since(UNIX_EPOCH)) {
        Some(Ok(d)) => Timestamp {
            secs: d.as_secs().min(i64::MAX as u64) as i64,
            nanos: d.subsec_nanos(),
        },
        Some(Err(e)) => {
            let d = e.duration();
            let (secs, nanos) = if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            };
            Timestamp { secs, nanos }
        }
        None => Timestamp::default(),
    }
}

fn rel(path: &Path, name: &str) -> Result<RelPath, SourceError> {
    RelPath::new(name).map_err(|reason| SourceError::BadName {
        path: path.to_owned(),
        reason,
    })
}

impl Source {
    /// Scans `paths`: each file or folder becomes a top-level entry named
    /// after its last component. Top-level symlinks are followed; symlinks and
    /// special files inside folders are skipped and reported.
    pub fn scan(paths: &[PathBuf]) -> Result<Source, SourceError> {
        if paths.is_empty() {
            return Err(SourceError::Empty);
        }
        let mut entries = Vec::new();
        let mut abs_of: HashMap<RelPath, (PathBuf, u64, Option<SystemTime>, bool)> = HashMap::new();
        let mut skipped = Vec::new();
        let mut top = HashSet::new();
        for p in paths {
            let meta = fs::metadata(p).map_err(at(p))?;
            let named = if p.file_name().is_some() {
                p.clone()
            } else {
                fs::canonicalize(p).map_err(at(p))?
            };
            let name = named
                .file_name()
                .ok_or_else(|| SourceError::NoName(p.clone()))?;
            let name = name
                .to_str()
                .ok_or_else(|| SourceError::NotUtf8(p.clone()))?;
            if is_staging_name(name) {
                return Err(SourceError::Staging(p.clone()));
            }
            if !top.insert(name.to_owned()) {
                return Err(SourceError::Duplicate(name.to_owned()));
            }
            let root = rel(p, name)?;
            if meta.is_file() {
                abs_of.insert(
                    root.clone(),
                    (p.clone(), meta.len(), meta.modified().ok(), true),
                );
                entries.push(file_entry(root, &meta));
            } else if meta.is_dir() {
                entries.push(dir_entry(root.clone(), &meta));
                walk(p, &root, &mut entries, &mut abs_of, &mut skipped)?;
            } else {
                return Err(SourceError::Unsupported(p.clone()));
            }
        }
        let metadata = Metadata::from_entries(entries)?;
        let mut files = Vec::with_capacity(abs_of.len());
        let mut offset = 0;
        for e in metadata
            .entries()
            .iter()
            .filter(|e| e.kind == EntryKind::File)
        {
            let (abs, size, modified, follow) = abs_of
                .remove(&e.path)
                .expect("every file entry was recorded");
            files.push(SourceFile {
                abs,
                offset,
                size,
                modified,
                follow,
            });
            offset += size;
        }
        Ok(Source {
            metadata,
            files,
            skipped,
        })
    }

    /// Rebuilds a source from a file list sealed earlier, with `roots`
    /// mapping each top-level name to where it is on disk now (for a share
    /// served across restarts, or re-seeded from where a fetch wrote it).
    /// Nothing is read: files that changed are caught when serving.
    pub fn from_metadata(
        metadata: Metadata,
        roots: &HashMap<String, PathBuf>,
    ) -> Result<Source, SourceError> {
        let mut files = Vec::new();
        let mut offset = 0;
        for e in metadata
            .entries()
            .iter()
            .filter(|e| e.kind == EntryKind::File)
        {
            let mut parts = e.path.components();
            let top = parts.next().expect("paths have a component");
            let root = roots
                .get(top)
                .ok_or_else(|| SourceError::NoName(PathBuf::from(top)))?;
            let abs = parts.fold(root.clone(), |p, c| p.join(c));
            files.push(SourceFile {
                abs,
                offset,
                size: e.size,
                modified: None,
                follow: e.path.parent().is_none(),
            });
            offset += e.size;
        }
        Ok(Source {
            metadata,
            files,
            skipped: Vec::new(),
        })
    }

    /// Whether every file still has the size and modification time it was
    /// sealed with (a cheap check; serving verifies every chunk anyway).
    pub fn unchanged(&self) -> bool {
        let entries = self
            .metadata
            .entries()
            .iter()
            .filter(|e| e.kind == EntryKind::File);
        entries
            .zip(&self.files)
            .all(|(e, f)| match fs::metadata(&f.abs) {
                Ok(m) => {
                    m.is_file() && m.len() == e.size && timestamp(m.modified().ok()) == e.mtime
                }
                Err(_) => false,
            })
    }

    /// The file list.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// What was left out.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The content stream: every file, in order. Fails if a file has changed
    /// size or modification time since the scan.
    pub fn reader(&self) -> ContentReader<'_> {
        ContentReader {
            source: self,
            next: 0,
            current: None,
        }
    }

    /// Reads `buf.len()` bytes of the content stream from `offset`, for
    /// re-sealing one chunk. A short file is an error; a changed file is caught
    /// by the caller's check of the chunk id.
    pub fn read_range(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut i = self.files.partition_point(|f| f.offset + f.size <= offset);
        let mut done = 0;
        while done < buf.len() {
            let f = self.files.get(i).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the share",
                )
            })?;
            let start = offset + done as u64 - f.offset;
            let n = ((f.size - start) as usize).min(buf.len() - done);
            let file = open(f)?;
            file.read_exact_at(&mut buf[done..done + n], start)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: {e}", crate::store::shown(&f.abs)))
                })?;
            done += n;
            i += 1;
        }
        Ok(())
    }
}

fn open(f: &SourceFile) -> io::Result<File> {
    let mut o = File::options();
    o.read(true);
    if !f.follow {
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(&f.abs)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", crate::store::shown(&f.abs))))
}

fn file_entry(path: RelPath, meta: &fs::Metadata) -> Entry {
    Entry {
        path,
        kind: EntryKind::File,
        executable: meta.permissions().mode() & 0o111 != 0,
        mtime: timestamp(meta.modified().ok()),
        size: meta.len(),
    }
}

fn dir_entry(path: RelPath, meta: &fs::Metadata) -> Entry {
    Entry {
        path,
        kind: EntryKind::Dir,
        executable: false,
        mtime: timestamp(meta.modified().ok()),
        size: 0,
    }
}

type FileMap = HashMap<RelPath, (PathBuf, u64, Option<SystemTime>, bool)>;

/// Iterative walk (no recursion on input depth).
fn walk(
    root_abs: &Path,
    root: &RelPath,
    entries: &mut Vec<Entry>,
    files: &mut FileMap,
    skipped: &mut Vec<Skipped>,
) -> Result<(), SourceError> {
    let mut stack = vec![(root_abs.to_owned(), root.clone())];
    while let Some((dir, rel_dir)) = stack.pop() {
        for item in fs::read_dir(&dir).map_err(at(&dir))? {
            let item = item.map_err(at(&dir))?;
            let abs = item.path();
            let meta = fs::symlink_metadata(&abs).map_err(at(&abs))?;
            let reason = if meta.file_type().is_symlink() {
                Some("symbolic links are not shared")
            } else if !meta.is_file() && !meta.is_dir() {
                Some("only regular files and folders are shared")
            } else if item.file_name().to_str().is_some_and(is_staging_name) {
                // Receivers refuse the name (it could mix into a download
                // of theirs), and its content is unverified anyway.
                Some("an unfinished peerdrop download is not shared")
            } else {
                None
            };
            if let Some(reason) = reason {
                skipped.push(Skipped { path: abs, reason });
                continue;
            }
            let name = item.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| SourceError::NotUtf8(abs.clone()))?;
            let path = rel(&abs, &format!("{}/{name}", rel_dir.as_str()))?;
            if meta.is_dir() {
                entries.push(dir_entry(path.clone(), &meta));
                stack.push((abs, path));
            } else {
                files.insert(path.clone(), (abs, meta.len(), meta.modified().ok(), false));
                entries.push(file_entry(path, &meta));
            }
        }
    }
    Ok(())
}

/// The content stream of a [`Source`], as a `Read`.
pub struct ContentReader<'a> {
    source: &'a Source,
    next: usize,
    current: Option<(File, u64, usize)>,
}

fn changed(f: &SourceFile, what: &str) -> io::Error {
    io::Error::other(format!(
        "{} {what} while it was being shared; run the command again",
        crate::store::shown(&f.abs)
    ))
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((file, left, idx)) = &mut self.current {
                let f = &self.source.files[*idx];
                let n = if *left == 0 || buf.is_empty() {
                    0
                } else {
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    match file.read(&mut buf[..want])? {
                        0 => return Err(changed(f, "shrank")),
                        n => n,
                    }
                };
                *left -= n as u64;
                if *left == 0 {
                    // Checked as soon as the last byte is read, so that a
                    // file that grew or was rewritten fails the seal even when
                    // it is the last one.
                    let mut probe = [0u8; 1];
                    let meta = file.metadata()?;
                    if file.read(&mut probe)? != 0
                        || meta.len() != f.size
                        || meta.modified().ok() != f.modified
                    {
                        return Err(changed(f, "changed"));
                    }
                    self.current = None;
                }
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                continue;
            }
            let Some(f) = self.source.files.get(self.next) else {
                return Ok(0);
            };
            self.current = Some((open(f)?, f.size, self.next));
            self.next += 1;
        }
    }
}
