//! The files being shared: scanning, and reading them as one content stream.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::meta::{Entry, EntryKind, Metadata, MetadataError, PathError, RelPath, Timestamp};
use crate::store::handle::{self, Dir, Stat, Walker};
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

/// Device and inode of a scanned file or folder: what is opened later must
/// be that same one, not something put in its place (audit F-09).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(st: &Stat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// A top-level path of the share, as it was named.
#[derive(Clone, Debug)]
struct Root {
    path: PathBuf,
    /// Its entry in the file list.
    entry: usize,
}

/// A regular file of the share, where its bytes sit in the content stream.
#[derive(Clone, Debug)]
struct SourceFile {
    /// Its entry in the file list.
    entry: usize,
    /// The top-level path it is under, in [`Source::roots`].
    root: usize,
    offset: u64,
    size: u64,
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
    /// A folder that is no longer the one the scan saw (swapped for a link
    /// or for another folder while it was being scanned, audit F-09):
    /// nothing of it is shared, since what it holds now may come from
    /// anywhere.
    #[error("{} was replaced (perhaps by a link) while it was being scanned; nothing was shared. Check who else can write to the shared folder, then run the command again", crate::store::shown(.0))]
    Replaced(PathBuf),
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
    roots: Vec<Root>,
    /// What the scan saw at each entry, in file-list order; empty for a
    /// source rebuilt from a file list (nothing was seen to compare with;
    /// serving checks every chunk against its id anyway).
    ids: Vec<FileId>,
    files: Vec<SourceFile>,
    skipped: Vec<Skipped>,
}

/// A folder below a root that is not the one the scan saw there.
#[derive(Debug, thiserror::Error)]
#[error("not the folder that was scanned")]
struct NotScanned;

/// Whether opening failed because something was put in place of what the
/// scan saw: a link, a folder where a file was or the other way round, a
/// special file, or another file or folder.
fn is_replaced(e: &io::Error) -> bool {
    handle::is_swapped(e)
        || e.kind() == io::ErrorKind::InvalidData
        || e.get_ref().is_some_and(|r| r.is::<NotScanned>())
}

/// `Ok` if `st` is what the scan saw (`None`: nothing was seen).
fn same(seen: Option<FileId>, st: &Stat) -> io::Result<()> {
    match seen {
        Some(id) if id != FileId::of(st) => Err(io::Error::other(NotScanned)),
        _ => Ok(()),
    }
}

/// The folders last opened while reading, kept so that files read in
/// order open each folder once: the root's index and a walker below it.
type Cursor = Option<(usize, Walker)>;

/// The modification time in `st`.
fn mtime(st: &Stat) -> Timestamp {
    Timestamp {
        secs: st.st_mtime,
        nanos: st.st_mtime_nsec as u32,
    }
}

fn rel(path: &Path, name: &str) -> Result<RelPath, SourceError> {
    RelPath::new(name).map_err(|reason| SourceError::BadName {
        path: path.to_owned(),
        reason,
    })
}

/// The index of the entry at `path` in a file list.
fn entry_at(metadata: &Metadata, path: &str) -> Option<usize> {
    metadata
        .entries()
        .binary_search_by(|e| e.path.as_str().cmp(path))
        .ok()
}

impl Source {
    /// Scans `paths`: each file or folder becomes a top-level entry named
    /// after its last component. Top-level symlinks are followed; symlinks and
    /// special files inside folders are skipped and reported.
    ///
    /// Folders are walked by handle: each is opened relative to its parent
    /// with `O_NOFOLLOW` and must be the folder (device and inode) its
    /// parent's listing showed, so one swapped for a link or another folder
    /// while the scan runs fails it ([`SourceError::Replaced`]) instead of
    /// bringing files from elsewhere into the share. What is recorded is
    /// checked the same way again when the files are read.
    pub fn scan(paths: &[PathBuf]) -> Result<Source, SourceError> {
        if paths.is_empty() {
            return Err(SourceError::Empty);
        }
        let mut entries = Vec::new();
        let mut ids: HashMap<String, FileId> = HashMap::new();
        let mut skipped = Vec::new();
        let mut top = HashSet::new();
        let mut roots = Vec::new();
        for p in paths {
            // Only to choose how to open it: what is recorded is what the
            // opened handle says.
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
            let replaced = |e: io::Error| match is_replaced(&e) {
                true => SourceError::Replaced(p.clone()),
                false => at(p)(e).into(),
            };
            if meta.is_file() {
                let (_, st) = handle::open_named_file(p).map_err(replaced)?;
                ids.insert(root.as_str().to_owned(), FileId::of(&st));
                entries.push(file_entry(root.clone(), &st));
            } else if meta.is_dir() {
                let dir = Dir::open(p).map_err(replaced)?;
                let st = dir.stat_self().map_err(at(p))?;
                ids.insert(root.as_str().to_owned(), FileId::of(&st));
                entries.push(dir_entry(root.clone(), &st));
                walk(&dir, p, &root, &mut entries, &mut ids, &mut skipped)?;
            } else {
                return Err(SourceError::Unsupported(p.clone()));
            }
            roots.push((root, p.clone()));
        }
        let metadata = Metadata::from_entries(entries)?;
        let ids = metadata
            .entries()
            .iter()
            .map(|e| ids[e.path.as_str()])
            .collect();
        let roots: HashMap<String, PathBuf> = roots
            .into_iter()
            .map(|(r, p)| (r.as_str().to_owned(), p))
            .collect();
        let mut source = Source::from_metadata(metadata, &roots)?;
        source.ids = ids;
        source.skipped = skipped;
        Ok(source)
    }

    /// Rebuilds a source from a file list sealed earlier, with `roots`
    /// mapping each top-level name to where it is on disk now (for a share
    /// served across restarts, or re-seeded from where a fetch wrote it).
    /// Nothing is read: files that changed are caught when serving. Below
    /// each root, folders and files are still reached one name at a time,
    /// never through a link.
    pub fn from_metadata(
        metadata: Metadata,
        roots: &HashMap<String, PathBuf>,
    ) -> Result<Source, SourceError> {
        let mut files = Vec::new();
        let mut root_of: HashMap<&str, usize> = HashMap::new();
        let mut kept = Vec::new();
        let mut offset = 0;
        for (i, e) in metadata.entries().iter().enumerate() {
            if e.kind != EntryKind::File {
                continue;
            }
            let top = e.path.components().next().expect("paths have a component");
            let root = match root_of.get(top) {
                Some(&r) => r,
                None => {
                    let path = roots
                        .get(top)
                        .ok_or_else(|| SourceError::NoName(PathBuf::from(top)))?;
                    let entry = entry_at(&metadata, top).expect("every parent is listed");
                    kept.push(Root {
                        path: path.clone(),
                        entry,
                    });
                    root_of.insert(top, kept.len() - 1);
                    kept.len() - 1
                }
            };
            files.push(SourceFile {
                entry: i,
                root,
                offset,
                size: e.size,
            });
            offset += e.size;
        }
        Ok(Source {
            metadata,
            roots: kept,
            ids: Vec::new(),
            files,
            skipped: Vec::new(),
        })
    }

    /// Whether every file still has the size and modification time it was
    /// sealed with, and is still the file the scan saw, reached the same
    /// way (a cheap check; serving verifies every chunk anyway).
    pub fn unchanged(&self) -> bool {
        let mut cursor = None;
        self.files.iter().all(|f| {
            let e = &self.metadata.entries()[f.entry];
            let st = match e.path.as_str().split_once('/') {
                None => rustix::fs::stat(&self.roots[f.root].path).ok(),
                Some((_, below)) => {
                    let (dir, name) = below.rsplit_once('/').unwrap_or(("", below));
                    self.walk_to(f, dir, &mut cursor)
                        .ok()
                        .and_then(|d| d.stat(name).ok().flatten())
                }
            };
            st.is_some_and(|st| {
                handle::kind(&st) == FileType::RegularFile
                    && st.st_size as u64 == e.size
                    && mtime(&st) == e.mtime
                    && same(self.seen(f.entry), &st).is_ok()
            })
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
    /// size or modification time since the scan, or is not the file the
    /// scan saw.
    pub fn reader(&self) -> ContentReader<'_> {
        ContentReader {
            source: self,
            next: 0,
            current: None,
            cursor: None,
        }
    }

    /// Reads `buf.len()` bytes of the content stream from `offset`, for
    /// re-sealing one chunk. A short file is an error; a changed file is caught
    /// by the caller's check of the chunk id.
    pub fn read_range(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut i = self.files.partition_point(|f| f.offset + f.size <= offset);
        let mut done = 0;
        let mut cursor = None;
        while done < buf.len() {
            let f = self.files.get(i).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the share",
                )
            })?;
            let start = offset + done as u64 - f.offset;
            let n = ((f.size - start) as usize).min(buf.len() - done);
            let file = self.open(f, &mut cursor)?;
            file.read_exact_at(&mut buf[done..done + n], start)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.shown(f))))?;
            done += n;
            i += 1;
        }
        Ok(())
    }

    /// What the scan saw at entry `i`, if anything.
    fn seen(&self, i: usize) -> Option<FileId> {
        self.ids.get(i).copied()
    }

    /// Where `f` is on disk.
    fn abs(&self, f: &SourceFile) -> PathBuf {
        let e = &self.metadata.entries()[f.entry];
        e.path
            .components()
            .skip(1)
            .fold(self.roots[f.root].path.clone(), |p, c| p.join(c))
    }

    /// `f`'s path as messages show it.
    fn shown(&self, f: &SourceFile) -> String {
        crate::store::shown(&self.abs(f))
    }

    /// The folder `dir` (a path below `f`'s root), reached from the root
    /// one name at a time, each folder checked against the scan.
    fn walk_to<'c>(
        &self,
        f: &SourceFile,
        dir: &str,
        cursor: &'c mut Cursor,
    ) -> io::Result<&'c Dir> {
        let root = &self.roots[f.root];
        if cursor.as_ref().is_none_or(|(r, _)| *r != f.root) {
            *cursor = None;
            let d = Dir::open(&root.path)?;
            same(self.seen(root.entry), &d.stat_self()?)?;
            *cursor = Some((f.root, Walker::new(&d)?));
        }
        let (_, w) = cursor.as_mut().expect("just opened");
        let top = self.metadata.entries()[root.entry].path.as_str();
        w.dir_checked(dir, |below, d| {
            let seen =
                entry_at(&self.metadata, &format!("{top}/{below}")).and_then(|i| self.seen(i));
            same(seen, &d.stat_self()?)
        })
    }

    /// Opens `f` for reading: by the path named for a top-level file, by
    /// handle below its root otherwise; either way it must be the file the
    /// scan saw.
    fn open(&self, f: &SourceFile, cursor: &mut Cursor) -> io::Result<File> {
        let e = &self.metadata.entries()[f.entry];
        let opened = match e.path.as_str().split_once('/') {
            None => handle::open_named_file(&self.roots[f.root].path),
            Some((_, below)) => {
                let (dir, name) = below.rsplit_once('/').unwrap_or(("", below));
                self.walk_to(f, dir, cursor).and_then(|d| d.open_read(name))
            }
        };
        let file = opened
            .and_then(|(file, st)| {
                same(self.seen(f.entry), &st)?;
                Ok(file)
            })
            .map_err(|e| match is_replaced(&e) {
                true => changed(&self.shown(f), "was replaced (perhaps by a link)"),
                false => io::Error::new(e.kind(), format!("{}: {e}", self.shown(f))),
            })?;
        Ok(file)
    }
}

fn file_entry(path: RelPath, st: &Stat) -> Entry {
    Entry {
        path,
        kind: EntryKind::File,
        executable: st.st_mode & 0o111 != 0,
        mtime: mtime(st),
        size: st.st_size as u64,
    }
}

fn dir_entry(path: RelPath, st: &Stat) -> Entry {
    Entry {
        path,
        kind: EntryKind::Dir,
        executable: false,
        mtime: mtime(st),
        size: 0,
    }
}

/// Iterative walk (no recursion on input depth), by handle: see
/// [`Source::scan`]. Only names wait on the stack, never an open folder,
/// so a wide tree holds no more descriptors than it is deep.
fn walk(
    root_dir: &Dir,
    root_abs: &Path,
    root: &RelPath,
    entries: &mut Vec<Entry>,
    ids: &mut HashMap<String, FileId>,
    skipped: &mut Vec<Skipped>,
) -> Result<(), SourceError> {
    let mut walker = Walker::new(root_dir).map_err(at(root_abs))?;
    // Each folder still to list: its path below the root, and in the share.
    let mut stack = vec![(String::new(), root.clone())];
    while let Some((below, rel_dir)) = stack.pop() {
        let abs_dir = match below.as_str() {
            "" => root_abs.to_owned(),
            b => root_abs.join(b),
        };
        #[cfg(test)]
        tests::before_open(&abs_dir);
        let top = root.as_str();
        let opened = walker.dir_checked(&below, |b, d| {
            same(ids.get(&format!("{top}/{b}")).copied(), &d.stat_self()?)
        });
        let dir = match opened {
            Ok(d) => d,
            Err(e) if is_replaced(&e) => {
                return Err(SourceError::Replaced(
                    root_abs.join(walker.failed_at(&below)),
                ))
            }
            Err(e) => return Err(at(&abs_dir)(e).into()),
        };
        for (name, _) in dir.entries().map_err(at(&abs_dir))? {
            let abs = abs_dir.join(&name);
            let st = dir
                .stat(&name)
                .and_then(|st| st.ok_or_else(|| io::ErrorKind::NotFound.into()))
                .map_err(at(&abs))?;
            let ty = handle::kind(&st);
            let reason = if ty == FileType::Symlink {
                Some("symbolic links are not shared")
            } else if ty != FileType::RegularFile && ty != FileType::Directory {
                Some("only regular files and folders are shared")
            } else if name.to_str().is_some_and(is_staging_name) {
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
            let name = name
                .to_str()
                .ok_or_else(|| SourceError::NotUtf8(abs.clone()))?;
            let path = rel(&abs, &format!("{}/{name}", rel_dir.as_str()))?;
            ids.insert(path.as_str().to_owned(), FileId::of(&st));
            if ty == FileType::Directory {
                entries.push(dir_entry(path.clone(), &st));
                let below = match below.as_str() {
                    "" => name.to_owned(),
                    b => format!("{b}/{name}"),
                };
                stack.push((below, path));
            } else {
                entries.push(file_entry(path, &st));
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
    cursor: Cursor,
}

fn changed(shown: &str, what: &str) -> io::Error {
    io::Error::other(format!(
        "{shown} {what} while it was being shared; run the command again"
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
                        0 => return Err(changed(&self.source.shown(f), "shrank")),
                        n => n,
                    }
                };
                *left -= n as u64;
                if *left == 0 {
                    // Checked as soon as the last byte is read, so that a
                    // file that grew or was rewritten fails the seal even when
                    // it is the last one.
                    let mut probe = [0u8; 1];
                    let st = rustix::fs::fstat(&*file)?;
                    let e = &self.source.metadata.entries()[f.entry];
                    if file.read(&mut probe)? != 0
                        || st.st_size as u64 != f.size
                        || mtime(&st) != e.mtime
                    {
                        return Err(changed(&self.source.shown(f), "changed"));
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
            self.current = Some((self.source.open(f, &mut self.cursor)?, f.size, self.next));
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    type Hook = Box<dyn FnMut(&Path)>;

    thread_local! {
        /// Called by the scan with each folder it is about to list, after
        /// its parent's listing saw it as a folder: where a collaborator
        /// racing the scan would swap it.
        static BEFORE_OPEN: RefCell<Option<Hook>> = RefCell::new(None);
    }

    pub(super) fn before_open(dir: &Path) {
        BEFORE_OPEN.with(|h| {
            if let Some(h) = h.borrow_mut().as_mut() {
                h(dir)
            }
        });
    }

    /// Runs `f` with `hook` called before each folder is listed.
    fn with_hook<T>(hook: impl FnMut(&Path) + 'static, f: impl FnOnce() -> T) -> T {
        BEFORE_OPEN.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
        let r = f();
        BEFORE_OPEN.with(|h| *h.borrow_mut() = None);
        r
    }

    const SECRET: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY----- victim";

    /// A shared folder `proj` (with `proj/sub/ok.txt`) and, outside it, a
    /// private `ssh/id_ed25519` of the same size as `ok.txt`.
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let proj = tmp.path().join("proj");
        fs::create_dir_all(proj.join("sub")).unwrap();
        fs::write(proj.join("sub/ok.txt"), vec![b'o'; SECRET.len()]).unwrap();
        fs::write(proj.join("top.txt"), b"top").unwrap();
        let ssh = tmp.path().join("ssh");
        fs::create_dir(&ssh).unwrap();
        fs::write(ssh.join("id_ed25519"), SECRET).unwrap();
        (tmp, proj, ssh)
    }

    fn content(s: &Source) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        s.reader().read_to_end(&mut v)?;
        Ok(v)
    }

    fn names(s: &Source) -> Vec<&str> {
        s.metadata()
            .entries()
            .iter()
            .map(|e| e.path.as_str())
            .collect()
    }

    /// Scans `proj` of [`layout`], calling `swap(sub, proj, ssh)` once the
    /// scan has seen `proj/sub` as a folder, just before it is opened.
    fn scan_swapping_sub(swap: fn(&Path, &Path, &Path)) -> (Result<Source, SourceError>, PathBuf) {
        let (tmp, proj, ssh) = layout();
        let sub = proj.join("sub");
        let (s2, p2) = (sub.clone(), proj.clone());
        let r = with_hook(
            move |dir| {
                if dir == s2 {
                    fs::rename(&s2, p2.join(".moved")).unwrap();
                    swap(&s2, &p2, &ssh);
                }
            },
            || Source::scan(std::slice::from_ref(&proj)),
        );
        drop(tmp);
        (r, sub)
    }

    /// Audit F-09: a subfolder swapped for a link to a private folder after
    /// the scan saw it as a folder, before it is listed. The scan fails
    /// naming it; nothing from outside ever enters the file list.
    #[test]
    fn a_subfolder_swapped_for_a_link_mid_scan_is_refused() {
        let (r, sub) = scan_swapping_sub(|sub, _, ssh| {
            std::os::unix::fs::symlink(ssh, sub).unwrap();
        });
        let e = match r {
            Ok(s) => panic!(
                "the scan went through the link: {:?}, secret in content: {}",
                names(&s),
                content(&s).is_ok_and(|c| c.windows(SECRET.len()).any(|w| w == SECRET))
            ),
            Err(e) => e,
        };
        assert!(matches!(&e, SourceError::Replaced(p) if *p == sub), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("proj/sub") && msg.contains("replaced"),
            "{msg}"
        );
    }

    /// The same swap, to another real folder (moved in from elsewhere on
    /// the same file system): it is not the folder the scan saw either.
    #[test]
    fn a_subfolder_swapped_for_another_folder_mid_scan_is_refused() {
        let (r, sub) = scan_swapping_sub(|sub, _, ssh| fs::rename(ssh, sub).unwrap());
        match r {
            Err(SourceError::Replaced(p)) => assert_eq!(p, sub),
            Err(e) => panic!("{e:?}"),
            Ok(s) => panic!("the scan listed the other folder: {:?}", names(&s)),
        }
    }

    /// Gives `to` the modification time of `from`.
    fn same_time(from: &Path, to: &Path) {
        let t = fs::metadata(from).unwrap().modified().unwrap();
        File::options()
            .write(true)
            .open(to)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    /// Between the scan and the read: a file swapped for a link, for
    /// another file of the same size and time, or a folder on its way
    /// swapped for a link or another folder holding such a file: each read
    /// (the content stream, and a range of it as serving re-seals a chunk)
    /// is refused, and no byte of the secret is returned.
    #[test]
    fn a_file_replaced_after_the_scan_is_not_read() {
        type Swap = fn(&Path, &Path);
        let swaps: [(&str, Swap); 5] = [
            ("file -> link", |proj, ssh| {
                fs::remove_file(proj.join("sub/ok.txt")).unwrap();
                std::os::unix::fs::symlink(ssh.join("id_ed25519"), proj.join("sub/ok.txt"))
                    .unwrap();
            }),
            ("file -> another file", |proj, ssh| {
                same_time(&proj.join("sub/ok.txt"), &ssh.join("id_ed25519"));
                fs::rename(ssh.join("id_ed25519"), proj.join("sub/ok.txt")).unwrap();
            }),
            ("folder -> link", |proj, ssh| {
                fs::rename(proj.join("sub"), proj.join(".moved")).unwrap();
                fs::rename(ssh.join("id_ed25519"), ssh.join("ok.txt")).unwrap();
                std::os::unix::fs::symlink(ssh, proj.join("sub")).unwrap();
            }),
            ("folder -> another folder", |proj, ssh| {
                same_time(&proj.join("sub/ok.txt"), &ssh.join("id_ed25519"));
                fs::rename(ssh.join("id_ed25519"), ssh.join("ok.txt")).unwrap();
                fs::rename(proj.join("sub"), proj.join(".moved")).unwrap();
                fs::rename(ssh, proj.join("sub")).unwrap();
            }),
            ("shared folder -> link", |proj, ssh| {
                let fake = ssh.join("fake");
                fs::create_dir_all(fake.join("sub")).unwrap();
                fs::write(fake.join("top.txt"), b"top").unwrap();
                fs::rename(ssh.join("id_ed25519"), fake.join("sub/ok.txt")).unwrap();
                same_time(&proj.join("sub/ok.txt"), &fake.join("sub/ok.txt"));
                same_time(&proj.join("top.txt"), &fake.join("top.txt"));
                fs::rename(proj, proj.with_extension("old")).unwrap();
                std::os::unix::fs::symlink(&fake, proj).unwrap();
            }),
        ];
        for (what, swap) in swaps {
            let (_tmp, proj, ssh) = layout();
            let s = Source::scan(std::slice::from_ref(&proj)).unwrap();
            assert_eq!(
                names(&s),
                ["proj", "proj/sub", "proj/sub/ok.txt", "proj/top.txt"]
            );
            swap(&proj, &ssh);
            let e = content(&s).expect_err(what);
            assert!(e.to_string().contains("replaced"), "{what}: {e}");
            let mut buf = vec![0; SECRET.len()];
            let e = s.read_range(0, &mut buf).expect_err(what);
            assert!(e.to_string().contains("replaced"), "{what}: {e}");
            assert!(!buf.windows(6).any(|w| w == &SECRET[..6]), "{what}");
            assert!(!s.unchanged(), "{what}");
        }
    }
}
