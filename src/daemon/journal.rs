//! The state store: `state.json` is a snapshot, `state.journal` the changes
//! made since, one JSON line each, appended and flushed by one writer thread
//! (group commit: every change waiting when a write starts goes out in that
//! write and its one `fdatasync`). A request that changes the state is
//! answered once its change is durable.
//!
//! Why not rewrite `state.json` on every change: with thousands of shares
//! that is megabytes and two `fsync`s per change (measured: 71 shares/s at
//! 2,200 shares). Why not an embedded database: the state is a few record
//! kinds read whole at start and changed one record at a time, which is
//! what a journal is for; a database would bring a large dependency tree
//! for a log and a snapshot.
//!
//! Compaction: once the journal holds more changes than the state has
//! records (and at least [`COMPACT_MIN`]), the writer writes its own copy
//! of the state as a new snapshot (atomically) and empties the journal. So
//! the journal stays within a constant factor of the state, and each change
//! costs an amortised constant. A crash between the two steps replays the
//! old journal over the new snapshot, which gives the same state: every
//! change puts or removes a whole record by id.
//!
//! A crash in the middle of a write leaves a torn last line, never
//! acknowledged: loading stops at the first line that does not read as a
//! change, says so in the log, and cuts the journal there.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::daemon::state::{FetchRecord, PinRecord, Ports, ShareRecord, State};
use crate::daemon::DaemonError;
use crate::manifest::ManifestId;

/// Fewest journalled changes before a compaction.
pub const COMPACT_MIN: usize = 1024;
/// Largest journal read at start (a bound before allocating).
const MAX_JOURNAL_LEN: u64 = 256 << 20;

/// One change to the state, as journalled.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A share record, new or replaced.
    Share(ShareRecord),
    /// A share forgotten.
    Unshare {
        /// Its id.
        id: ManifestId,
    },
    /// A fetch record, new or replaced.
    Fetch(FetchRecord),
    /// A pin record, new or replaced.
    Pin(PinRecord),
    /// A pin forgotten.
    Unpin {
        /// Its id.
        id: ManifestId,
    },
    /// The listen ports to keep.
    Ports(Ports),
}

impl Change {
    /// Applies the change to `st`.
    pub fn apply(self, st: &mut State) {
        match self {
            Change::Share(r) => st.put_share(r),
            Change::Unshare { id } => st.shares.retain(|s| s.id != id),
            Change::Fetch(r) => st.put_fetch(r),
            Change::Pin(r) => st.put_pin(r),
            Change::Unpin { id } => st.pins.retain(|p| p.id != id),
            Change::Ports(p) => st.ports = p,
        }
    }
}

/// The state, changed through methods that note each change for the
/// journal.
pub struct Tx<'a> {
    state: &'a mut State,
    changes: Vec<Change>,
}

impl<'a> Tx<'a> {
    /// Changes to `state`, none noted yet.
    pub fn new(state: &'a mut State) -> Tx<'a> {
        Tx {
            state,
            changes: Vec::new(),
        }
    }

    /// The state as it stands (read only: changes go through the methods).
    pub fn state(&self) -> &State {
        self.state
    }

    /// Makes `c` and notes it.
    pub fn change(&mut self, c: Change) {
        c.clone().apply(self.state);
        self.changes.push(c);
    }

    /// Changes the fetch record of `id`, if there is one.
    pub fn fetch<T>(
        &mut self,
        id: &ManifestId,
        f: impl FnOnce(&mut FetchRecord) -> T,
    ) -> Option<T> {
        let rec = self.state.fetch_mut(id)?;
        let out = f(rec);
        self.changes.push(Change::Fetch(rec.clone()));
        Some(out)
    }

    /// Changes the pin record of `id`, if there is one.
    pub fn pin<T>(&mut self, id: &ManifestId, f: impl FnOnce(&mut PinRecord) -> T) -> Option<T> {
        let rec = self.state.pin_mut(id)?;
        let out = f(rec);
        self.changes.push(Change::Pin(rec.clone()));
        Some(out)
    }

    /// The changes noted.
    pub fn into_changes(self) -> Vec<Change> {
        self.changes
    }
}

/// Why a change could not be made durable.
#[derive(Clone, Debug, thiserror::Error)]
#[error("saving the daemon state in {}: {error}; the change is lost at the next restart (free space in the data dir, then repeat the request)", path.display())]
pub struct StoreError {
    path: PathBuf,
    error: String,
}

impl StoreError {
    /// The writer thread is gone (it panicked; see the log).
    pub fn writer_gone() -> StoreError {
        StoreError {
            path: PathBuf::from("state.journal"),
            error: "the state writer stopped".into(),
        }
    }
}

type Ack = oneshot::Sender<Result<(), StoreError>>;

#[derive(Default)]
struct Pending {
    changes: Vec<Change>,
    acks: Vec<Ack>,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The writer of the state store.
pub struct Store {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The files of the store in `dir`.
struct Files {
    snapshot: PathBuf,
    journal: PathBuf,
}

impl Files {
    fn of(dir: &Path) -> Files {
        Files {
            snapshot: dir.join("state.json"),
            journal: dir.join("state.journal"),
        }
    }

    fn err(&self, e: impl ToString) -> StoreError {
        StoreError {
            path: self.journal.clone(),
            error: e.to_string(),
        }
    }
}

impl Store {
    /// Loads the state from `dir` (snapshot, then journal) and starts the
    /// writer. A journal left by the last run is folded into a new snapshot
    /// first, so the writer starts on an empty one.
    pub fn open(dir: &Path) -> Result<(Store, State), DaemonError> {
        let files = Files::of(dir);
        let mut state = State::load(&files.snapshot)?;
        let replayed = replay(&files.journal, &mut state)?;
        // A snapshot always exists (a first start writes the empty one), so
        // the data dir shows its state version from the start.
        if replayed > 0 || !files.snapshot.exists() {
            state.save(&files.snapshot)?;
        }
        let journal = File::options()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&files.journal)
            .map_err(|e| DaemonError::State(format!("{}: {e}", files.journal.display())))?;
        journal
            .sync_all()
            .map_err(|e| DaemonError::State(format!("{}: {e}", files.journal.display())))?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let mirror = state.clone();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("peerdrop-state".into())
            .spawn(move || writer(&s, files, journal, mirror))
            .map_err(|e| DaemonError::State(format!("starting the state writer: {e}")))?;
        Ok((
            Store {
                shared,
                thread: Mutex::new(Some(thread)),
            },
            state,
        ))
    }

    /// Queues `changes` for the next write; the receiver resolves once they
    /// are durable. Call with the state lock held, so the journal's order is
    /// the state's. The queue is bounded by its callers: each waits for its
    /// answer, and they are the control connections (at most
    /// `control::MAX_CONNECTIONS`) and the running jobs (at most
    /// `max_jobs`).
    pub fn submit(&self, changes: Vec<Change>) -> oneshot::Receiver<Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        let mut p = self.shared.pending.lock().expect("never poisoned");
        if p.closed {
            let _ = tx.send(Err(StoreError {
                path: PathBuf::from("state.journal"),
                error: "the daemon is stopping".into(),
            }));
            return rx;
        }
        p.changes.extend(changes);
        p.acks.push(tx);
        drop(p);
        self.shared.wake.notify_one();
        rx
    }

    /// Writes what is queued and stops the writer.
    pub fn close(&self) {
        self.shared.pending.lock().expect("never poisoned").closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().expect("never poisoned").take() {
            if t.join().is_err() {
                tracing::error!("the state writer panicked");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Applies the journal at `path` to `state`; returns how many changes it
/// held. A torn or unreadable tail is cut off (with a warning).
fn replay(path: &Path, state: &mut State) -> Result<usize, DaemonError> {
    let bad = |e: String| DaemonError::State(format!("{}: {e}", path.display()));
    let mut f = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(bad(e.to_string())),
    };
    let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    if len > MAX_JOURNAL_LEN {
        return Err(bad(format!(
            "{len} bytes is more than a journal ever holds ({MAX_JOURNAL_LEN}); move it away to start from the last snapshot"
        )));
    }
    let mut text = Zeroizing::new(Vec::with_capacity(len as usize));
    f.read_to_end(&mut text).map_err(|e| bad(e.to_string()))?;
    let mut n = 0;
    let mut good = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let change = line
            .strip_suffix(b"\n")
            .and_then(|l| serde_json::from_slice::<Change>(l).ok());
        let Some(change) = change else {
            tracing::warn!(
                "{}: dropping {} byte(s) after the last whole change (a write the last run did not finish)",
                path.display(),
                text.len() - good
            );
            break;
        };
        change.apply(state);
        n += 1;
        good += line.len();
    }
    Ok(n)
}

fn writer(shared: &Shared, files: Files, mut journal: File, mut mirror: State) {
    let mut journalled = 0usize;
    let mut len = 0u64;
    let mut line = Zeroizing::new(Vec::new());
    loop {
        let (changes, acks) = {
            let mut p = shared.pending.lock().expect("never poisoned");
            while p.acks.is_empty() && !p.closed {
                p = shared.wake.wait(p).expect("never poisoned");
            }
            if p.acks.is_empty() {
                return;
            }
            (std::mem::take(&mut p.changes), std::mem::take(&mut p.acks))
        };
        line.clear();
        for c in &changes {
            serde_json::to_writer(&mut *line, c).expect("changes serialize");
            line.push(b'\n');
        }
        let r = journal
            .write_all(&line)
            .and_then(|()| journal.sync_data())
            .map_err(|e| files.err(e));
        match &r {
            Ok(()) => {
                len += line.len() as u64;
                journalled += changes.len();
                for c in changes {
                    c.apply(&mut mirror);
                }
            }
            Err(e) => {
                tracing::error!("{e}");
                // A half-written batch must not stay in front of the next.
                if let Err(e) = journal.set_len(len) {
                    tracing::error!("{}", files.err(e));
                }
            }
        }
        for a in acks {
            let _ = a.send(r.clone());
        }
        let records = mirror.shares.len() + mirror.fetches.len() + mirror.pins.len();
        if journalled > records.max(COMPACT_MIN) {
            match compact(&files, &mirror, &journal) {
                Ok(()) => {
                    journalled = 0;
                    len = 0;
                }
                Err(e) => tracing::error!("compacting the state: {e}"),
            }
        }
    }
}

/// Writes `state` as the new snapshot, then empties the journal.
fn compact(files: &Files, state: &State, journal: &File) -> Result<(), StoreError> {
    state.save(&files.snapshot).map_err(|e| files.err(e))?;
    journal
        .set_len(0)
        .and_then(|()| journal.sync_all())
        .map_err(|e| files.err(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::JobStatus;
    use std::fs;

    fn pin(i: u8) -> PinRecord {
        PinRecord {
            id: ManifestId([i; 32]),
            sources: Vec::new(),
            status: JobStatus::Done,
            bytes: u64::from(i),
            rank: 0,
        }
    }

    fn commit(store: &Store, c: Vec<Change>) {
        let rx = store.submit(c);
        rx.blocking_recv().unwrap().unwrap();
    }

    #[test]
    fn changes_survive_a_restart_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (store, st) = Store::open(dir.path()).unwrap();
        assert!(st.pins.is_empty());
        // Past the compaction threshold, so both the snapshot and the
        // journal hold part of it.
        for round in 0..3u8 {
            for i in 0..=255u8 {
                let mut p = pin(i);
                p.bytes += u64::from(round);
                commit(&store, vec![Change::Pin(p)]);
            }
        }
        commit(
            &store,
            vec![Change::Unpin {
                id: ManifestId([7; 32]),
            }],
        );
        store.close();
        let journal_len = fs::metadata(dir.path().join("state.journal"))
            .unwrap()
            .len();
        assert!(journal_len > 0, "some changes are in the journal");
        let (_store, st) = Store::open(dir.path()).unwrap();
        assert_eq!(st.pins.len(), 255);
        assert!(st.pins.iter().all(|p| p.bytes == u64::from(p.id.0[0]) + 2));
        assert!(!st.pins.iter().any(|p| p.id.0[0] == 7));
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        commit(&store, vec![Change::Pin(pin(1)), Change::Pin(pin(2))]);
        store.close();
        let path = dir.path().join("state.journal");
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(br#"{"op":"pin","id":"03"#).unwrap();
        drop(f);
        let (store, st) = Store::open(dir.path()).unwrap();
        assert_eq!(st.pins.len(), 2);
        // The torn line is gone: new changes append after whole lines.
        commit(&store, vec![Change::Pin(pin(3))]);
        store.close();
        let (_s, st) = Store::open(dir.path()).unwrap();
        assert_eq!(st.pins.len(), 3);
    }

    #[test]
    fn many_waiting_changes_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let rxs: Vec<_> = (0..50u8)
            .map(|i| store.submit(vec![Change::Pin(pin(i))]))
            .collect();
        for rx in rxs {
            rx.blocking_recv().unwrap().unwrap();
        }
        store.close();
        let (_s, st) = Store::open(dir.path()).unwrap();
        assert_eq!(st.pins.len(), 50);
    }
}
