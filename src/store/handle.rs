//! Folders by handle: a held folder, and everything below it reached one
//! name at a time relative to it (`openat` with `O_NOFOLLOW`, `mkdirat`,
//! `renameat2`, `unlinkat`, `utimensat`). A path below the held folder is
//! never resolved afresh by the kernel from a string, so a folder swapped
//! for a symlink (while a transfer runs, or between a check and a rename)
//! makes the operation fail with `ELOOP`/`ENOTDIR` instead of redirecting it
//! outside.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps};

/// What `fstat`/`fstatat` say about one entry.
pub type Stat = rfs::Stat;

/// An open folder.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

/// The kind of an entry, from its `st_mode`.
pub fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Whether `e` says a path component was a symlink or not a folder: what a
/// folder swapped for a link looks like through `O_NOFOLLOW`.
pub fn is_swapped(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)
    )
}

impl Dir {
    /// Opens the folder at `path` (which the caller named: a link in it is
    /// followed, once, here; nothing below it ever is).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir { fd })
    }

    /// Opens the folder `name` inside this one, never through a link.
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let fd = rfs::openat(
            &self.fd,
            name.as_ref(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir { fd })
    }

    /// A second handle on the same folder.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
        })
    }

    /// `fstat` of the folder itself.
    pub fn stat_self(&self) -> io::Result<Stat> {
        Ok(rfs::fstat(&self.fd)?)
    }

    /// `lstat` of `name` inside this folder; `None` if nothing is there.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<Option<Stat>> {
        match rfs::statat(&self.fd, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the folder `name` (mode minus the umask).
    pub fn mkdir(&self, name: &str, mode: u32) -> io::Result<()> {
        Ok(rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode))?)
    }

    /// Opens the regular file `name` with `flags` (plus `O_NOFOLLOW`, and
    /// `O_NONBLOCK` so a FIFO planted there cannot hang the open); anything
    /// but a regular file is refused with `InvalidData`.
    pub fn open_file(&self, name: impl AsRef<OsStr>, flags: OFlags, mode: u32) -> io::Result<File> {
        open_regular(&self.fd, name.as_ref(), flags | OFlags::NOFOLLOW, mode).map(|(f, _)| f)
    }

    /// [`Dir::open_file`] for reading, with what `fstat` says of the file
    /// opened (saving a second `fstat` to a caller that checks it).
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> io::Result<(File, Stat)> {
        open_regular(
            &self.fd,
            name.as_ref(),
            OFlags::RDONLY | OFlags::NOFOLLOW,
            0,
        )
    }

    /// Renames `name` to `to_name` in `to`, failing with `AlreadyExists`
    /// rather than replacing anything.
    pub fn rename_noreplace(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        Ok(rfs::renameat_with(
            &self.fd,
            name,
            &to.fd,
            to_name,
            RenameFlags::NOREPLACE,
        )?)
    }

    /// Renames `name` to `to_name` in `to`, replacing a file there.
    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        Ok(rfs::renameat(&self.fd, name, &to.fd, to_name)?)
    }

    /// Sets the modification time of `name`, never through a link.
    pub fn set_mtime(&self, name: &str, secs: i64, nanos: u32) -> io::Result<()> {
        Ok(rfs::utimensat(
            &self.fd,
            name,
            &mtime_only(secs, nanos),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Removes the file (or link, or other non-folder) `name`.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        Ok(rfs::unlinkat(&self.fd, name.as_ref(), AtFlags::empty())?)
    }

    /// Removes the empty folder `name`.
    pub fn remove_dir(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        Ok(rfs::unlinkat(&self.fd, name.as_ref(), AtFlags::REMOVEDIR)?)
    }

    /// Removes `name` and, if it is a folder, everything in it, by handle
    /// all the way down (a link inside is removed, never followed).
    /// Iterative: the depth of what is removed costs no stack.
    pub fn remove_all(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        match self.stat(name)? {
            None => return Ok(()),
            Some(st) if kind(&st) != FileType::Directory => return self.remove_file(name),
            Some(_) => {}
        }
        // Each level: the handle of its parent and its own name; a folder is
        // removed once it is found empty.
        let mut stack: Vec<(Dir, OsString)> = vec![(self.try_clone()?, name.into())];
        while let Some((parent, dir_name)) = stack.pop() {
            let name = dir_name.as_os_str();
            let dir = parent.open_dir(name)?;
            let mut sub = Vec::new();
            for (child, ty) in dir.entries()? {
                if ty == FileType::Directory {
                    sub.push(child);
                } else {
                    rfs::unlinkat(&dir.fd, child.as_os_str(), AtFlags::empty())?;
                }
            }
            if sub.is_empty() {
                rfs::unlinkat(&parent.fd, name, AtFlags::REMOVEDIR)?;
            } else {
                stack.push((parent, dir_name));
                for child in sub {
                    stack.push((dir.try_clone()?, child));
                }
            }
        }
        Ok(())
    }

    /// The entries of this folder (without `.` and `..`), with their kinds
    /// as the file system reports them (`lstat`ed when it does not).
    pub fn entries(&self) -> io::Result<Vec<(OsString, FileType)>> {
        let mut out = Vec::new();
        let mut it = rfs::Dir::read_from(&self.fd)?;
        while let Some(e) = it.read() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let ty = match e.file_type() {
                FileType::Unknown => kind(&rfs::statat(
                    &self.fd,
                    e.file_name(),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?),
                ty => ty,
            };
            out.push((OsString::from_vec(name.to_vec()), ty));
        }
        Ok(out)
    }

    /// `fsync` of the folder (its entries are durable).
    pub fn sync(&self) -> io::Result<()> {
        Ok(rfs::fsync(&self.fd)?)
    }

    /// `syncfs`: flushes the whole file system holding this folder (one
    /// flush shared with the other callers at the time, `store::flush`).
    pub fn sync_fs(&self) -> io::Result<()> {
        crate::store::flush::sync_fs(&self.fd)
    }

    /// Free bytes available to this user on this folder's file system.
    pub fn free_space(&self) -> io::Result<u64> {
        let s = rfs::fstatvfs(&self.fd)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }
}

/// Opens the regular file at `path` for reading, as [`Dir::open_read`] does
/// but following a link in it (the caller named it: a file given to share).
pub fn open_named_file(path: &Path) -> io::Result<(File, Stat)> {
    open_regular(rfs::CWD, path, OFlags::RDONLY, 0)
}

/// `openat` of a regular file, never blocking on a FIFO (`O_NONBLOCK`,
/// cleared once it is open); anything else is refused with `InvalidData`.
fn open_regular(
    at: impl AsFd,
    name: impl rustix::path::Arg,
    flags: OFlags,
    mode: u32,
) -> io::Result<(File, Stat)> {
    let fd = rfs::openat(
        at,
        name,
        flags | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    let st = rfs::fstat(&fd)?;
    if kind(&st) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    // Back to blocking: only the open had to be kept from waiting. F_SETFL
    // changes only the status flags (O_NONBLOCK, O_APPEND, ...), so the
    // flags it was opened with, less O_NONBLOCK, are what it should hold:
    // no F_GETFL needed (a system call per file saved).
    rfs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)?;
    Ok((File::from(fd), st))
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `utimensat` times that leave the access time alone.
pub fn mtime_only(secs: i64, nanos: u32) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: secs,
            tv_nsec: nanos.into(),
        },
    }
}

/// The folders on the way to paths below a held root, kept open as a chain:
/// paths taken in a share's order (a folder before what is in it) open each
/// folder once. Every folder is opened with `O_NOFOLLOW`, one name at a time
/// from the root, so a link anywhere on the way is an error, never followed.
pub struct Walker {
    root: Dir,
    /// The open chain: each folder's name and handle, from the root down.
    chain: Vec<(String, Dir)>,
}

impl Walker {
    /// A walker below `root` (which it duplicates).
    pub fn new(root: &Dir) -> io::Result<Walker> {
        Ok(Walker {
            root: root.try_clone()?,
            chain: Vec::new(),
        })
    }

    /// The root.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    /// The folder at `rel` (components separated by `/`; empty for the
    /// root itself).
    pub fn dir(&mut self, rel: &str) -> io::Result<&Dir> {
        self.dir_checked(rel, |_, _| Ok(()))
    }

    /// [`Walker::dir`], passing each folder it opens afresh (not one still
    /// open from an earlier call) to `check` with its path below the root
    /// before going on: a caller that knows what each folder must be (the
    /// device and inode a scan saw) refuses another one put in its place.
    /// A folder `check` refuses is not kept ([`Walker::failed_at`] names it).
    pub fn dir_checked(
        &mut self,
        rel: &str,
        mut check: impl FnMut(&str, &Dir) -> io::Result<()>,
    ) -> io::Result<&Dir> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        let same = self
            .chain
            .iter()
            .zip(&parts)
            .take_while(|((have, _), want)| have == *want)
            .count();
        self.chain.truncate(same);
        for (i, part) in parts.iter().enumerate().skip(same) {
            let next = match self.chain.last() {
                Some((_, d)) => d.open_dir(part)?,
                None => self.root.open_dir(part)?,
            };
            check(&parts[..=i].join("/"), &next)?;
            self.chain.push(((*part).to_owned(), next));
        }
        Ok(self.chain.last().map_or(&self.root, |(_, d)| d))
    }

    /// The folder holding `rel` and `rel`'s last name.
    pub fn parent<'a>(&mut self, rel: &'a str) -> io::Result<(&Dir, &'a str)> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        Ok((self.dir(dir)?, name))
    }

    /// The part of `rel` up to the folder that [`Walker::dir`] (or
    /// [`Walker::parent`]) last failed to open: what to name in the error.
    pub fn failed_at(&self, rel: &str) -> String {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        parts[..parts.len().min(self.chain.len() + 1)].join("/")
    }

    /// Forgets the open chain (after something in it was moved away).
    pub fn reset(&mut self) {
        self.chain.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_link_on_the_way_is_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
        let mut w = Walker::new(&Dir::open(&root).unwrap()).unwrap();
        assert!(w.dir("a/b").is_ok());
        let e = w.dir("a/link").unwrap_err();
        assert!(is_swapped(&e), "{e}");
        let e = w.parent("a/link/x").unwrap_err();
        assert!(is_swapped(&e), "{e}");
        assert_eq!(w.failed_at("a/link/x"), "a/link");
        // A file where a folder is expected.
        fs::write(root.join("a/f"), b"").unwrap();
        assert!(is_swapped(&w.dir("a/f").unwrap_err()));
    }

    #[test]
    fn a_checked_walk_asks_about_each_folder_it_opens_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::create_dir_all(root.join("a/x")).unwrap();
        let mut w = Walker::new(&Dir::open(&root).unwrap()).unwrap();
        let mut seen = Vec::new();
        let mut note = |p: &str, _: &Dir| {
            seen.push(p.to_owned());
            Ok(())
        };
        w.dir_checked("a/b/c", &mut note).unwrap();
        w.dir_checked("a/x", &mut note).unwrap();
        w.dir_checked("a/x", &mut note).unwrap();
        assert_eq!(seen, ["a", "a/b", "a/b/c", "a/x"]);
        // A refused folder is not kept: the error names it, and the next
        // walk asks again.
        let no = |p: &str, _: &Dir| match p {
            "a/b" => Err(io::Error::other("not this one")),
            _ => Ok(()),
        };
        assert!(w.dir_checked("a/b/c", no).is_err());
        assert_eq!(w.failed_at("a/b/c"), "a/b");
        let mut again = Vec::new();
        w.dir_checked("a/b", |p: &str, _: &Dir| {
            again.push(p.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(again, ["a/b"]);
    }

    #[test]
    fn open_file_refuses_links_and_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Dir::open(tmp.path()).unwrap();
        fs::write(tmp.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("f"), tmp.path().join("l")).unwrap();
        rustix::fs::mknodat(&d, "fifo", FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
        assert!(d.open_file("f", OFlags::RDONLY, 0).is_ok());
        assert!(d.open_file("l", OFlags::RDONLY, 0).is_err());
        // Neither hangs nor opens: a FIFO with no reader.
        assert!(d.open_file("fifo", OFlags::WRONLY, 0).is_err());
        assert!(d.open_file("fifo", OFlags::RDONLY, 0).is_err());
        // By name: a link is followed, a FIFO still refused.
        assert!(open_named_file(&tmp.path().join("l")).is_ok());
        assert!(open_named_file(&tmp.path().join("fifo")).is_err());
    }

    #[test]
    fn remove_all_removes_links_not_their_targets() {
        let tmp = tempfile::tempdir().unwrap();
        let keep = tmp.path().join("keep");
        fs::create_dir(&keep).unwrap();
        fs::write(keep.join("k"), b"k").unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("t/a/b")).unwrap();
        fs::write(root.join("t/a/b/f"), b"f").unwrap();
        std::os::unix::fs::symlink(&keep, root.join("t/a/link")).unwrap();
        Dir::open(&root).unwrap().remove_all("t").unwrap();
        assert!(!root.join("t").exists());
        assert_eq!(fs::read(keep.join("k")).unwrap(), b"k");
    }
}
