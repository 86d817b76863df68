//! `syncfs` shared between callers (group commit for file-system flushes).
//!
//! A finished output is made durable with one `syncfs` of its file system
//! (`output`), which flushes everything dirty there, not just that output.
//! So one flush that *starts* after a caller's writes are done covers that
//! caller as well as it would be covered by a flush of its own. When many
//! small fetches finish at once (a daemon working through its queue), each
//! calling `syncfs` in turn made every fetch wait for a whole flush of the
//! disk, often several (measured on this machine under load: 5 to 215 ms
//! each, one per fetch). Here a caller that finds a flush running waits
//! for it to end and then for the next one, which it or another waiting
//! caller starts: every caller waiting meanwhile shares that one. A caller
//! waits for at most two flushes, never fewer than it needs.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Condvar, Mutex, OnceLock};

/// Flushes of one file system.
#[derive(Default)]
struct Fs {
    /// Flushes started so far (the running one included).
    started: u64,
    /// The latest flush that has ended.
    done: u64,
    /// How it ended: the OS error code of a failure.
    error: Option<i32>,
    running: bool,
    /// Callers waiting for a flush to end (for tests).
    waiting: usize,
}

/// Flushes in flight, by file system (device number): one entry per file
/// system ever flushed, so bounded by the file systems of the machine.
#[derive(Default)]
pub struct Group {
    fs: Mutex<HashMap<u64, Fs>>,
    ended: Condvar,
}

impl Group {
    /// Runs `flush` (a flush of file system `dev`), or waits for one that
    /// another caller started after this call began; the result is that
    /// flush's.
    pub fn flush(&self, dev: u64, flush: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut flush = Some(flush);
        let mut table = self.fs.lock().unwrap_or_else(|e| e.into_inner());
        // The first flush to start from now on covers every write made so
        // far: the running one (if any) may have started before them.
        let want = table.entry(dev).or_default().started + 1;
        loop {
            let fs = table.get_mut(&dev).expect("made above");
            if fs.done >= want {
                // A later flush than `want` covers this caller too.
                return match fs.error {
                    Some(code) => Err(io::Error::from_raw_os_error(code)),
                    None => Ok(()),
                };
            }
            if !fs.running {
                let Some(run) = flush.take() else {
                    // Started by this caller and ended: answered above.
                    unreachable!("a flush this caller ran has ended");
                };
                fs.running = true;
                fs.started += 1;
                let gen = fs.started;
                drop(table);
                let error = run().err().map(|e| e.raw_os_error().unwrap_or(libc::EIO));
                table = self.fs.lock().unwrap_or_else(|e| e.into_inner());
                let fs = table.get_mut(&dev).expect("made above");
                fs.running = false;
                fs.done = gen;
                fs.error = error;
                self.ended.notify_all();
                continue;
            }
            fs.waiting += 1;
            table = self.ended.wait(table).unwrap_or_else(|e| e.into_inner());
            table.get_mut(&dev).expect("made above").waiting -= 1;
        }
    }

    /// Callers of [`Group::flush`] waiting on file system `dev`.
    pub fn waiting(&self, dev: u64) -> usize {
        let table = self.fs.lock().unwrap_or_else(|e| e.into_inner());
        table.get(&dev).map_or(0, |fs| fs.waiting)
    }
}

/// `syncfs` of the file system holding `fd`, shared with every other
/// caller in this process (see the module docs).
pub fn sync_fs(fd: impl AsFd) -> io::Result<()> {
    static GROUP: OnceLock<Group> = OnceLock::new();
    let dev = rustix::fs::fstat(&fd)?.st_dev;
    GROUP
        .get_or_init(Group::default)
        .flush(dev, || Ok(rustix::fs::syncfs(&fd)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    /// Waits (bounded) until `n` callers wait on `dev`.
    fn until_waiting(g: &Group, dev: u64, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while g.waiting(dev) < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} waiting",
                g.waiting(dev)
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn callers_arriving_during_a_flush_share_the_next_one() {
        let g = Arc::new(Group::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, held) = mpsc::channel::<()>();
        // A flush that runs until released: everyone after it must wait.
        let first = {
            let (g, runs) = (g.clone(), runs.clone());
            std::thread::spawn(move || {
                g.flush(1, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    held.recv_timeout(Duration::from_secs(10)).unwrap();
                    Ok(())
                })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        let later: Vec<_> = (0..15)
            .map(|_| {
                let (g, runs) = (g.clone(), runs.clone());
                std::thread::spawn(move || {
                    g.flush(1, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                })
            })
            .collect();
        until_waiting(&g, 1, 15);
        // Another file system is not held up by this one.
        g.flush(2, || Ok(())).unwrap();
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        for t in later {
            t.join().unwrap().unwrap();
        }
        // The first flush may have started before their writes: they all
        // needed one more, and one more was enough.
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_flush_fails_every_caller_it_covers() {
        let g = Arc::new(Group::default());
        let (release, held) = mpsc::channel::<()>();
        let first = {
            let g = g.clone();
            std::thread::spawn(move || {
                g.flush(7, || {
                    held.recv_timeout(Duration::from_secs(10)).unwrap();
                    Ok(())
                })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Wait until the first flush runs (the next caller then waits).
        loop {
            let started = g.fs.lock().unwrap().get(&7).is_some_and(|f| f.running);
            if started {
                break;
            }
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        let later: Vec<_> = (0..3)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    g.flush(7, || Err(io::Error::from_raw_os_error(libc::EIO)))
                })
            })
            .collect();
        until_waiting(&g, 7, 3);
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        for t in later {
            let e = t.join().unwrap().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EIO));
        }
        // A flush after the failure is tried again, not answered from it.
        g.flush(7, || Ok(())).unwrap();
    }

    #[test]
    fn a_real_syncfs_works() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        sync_fs(std::fs::File::open(dir.path()).unwrap()).unwrap();
    }
}
