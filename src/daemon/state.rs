//! The daemon's persistent state: its records, kept by the journal
//! (`journal`: `state.json` is a snapshot, written atomically, and
//! `state.journal` the changes since), plus a folder per large served share
//! under `shares/<id>/` holding its manifest and file list (a small share's
//! are in its record).
//!
//! Keys are stored only for shares this node made or fetched with a read
//! link (it needs them to re-encrypt what it serves) and for fetches until
//! they end; pins have no key field. In memory a key is a [`StoredKey`]:
//! zeroed when dropped, never shown by `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::chunk::{hex, unhex};
use crate::crypto::ShareKey;
use crate::daemon::DaemonError;
use crate::manifest::ManifestId;

/// A share key as the state holds it (64 hex digits in the file).
#[derive(Clone)]
pub struct StoredKey(Zeroizing<[u8; 32]>);

impl StoredKey {
    /// The bytes of `key`, to be kept.
    pub fn of(key: &ShareKey) -> StoredKey {
        StoredKey(Zeroizing::new(*key.expose_secret()))
    }

    /// The key again; `None` if the stored bytes are no key (all zero).
    pub fn to_key(&self) -> Option<ShareKey> {
        ShareKey::from_bytes(*self.0).ok()
    }

    fn parse(text: &str) -> Option<StoredKey> {
        let bytes = Zeroizing::new(unhex(text)?);
        let mut key = Zeroizing::new([0u8; 32]);
        (bytes.len() == 32).then(|| key.copy_from_slice(&bytes))?;
        Some(StoredKey(key))
    }
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredKey(redacted)")
    }
}

impl Serialize for StoredKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(hex(&*self.0)))
    }
}

impl<'de> Deserialize<'de> for StoredKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StoredKey, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        StoredKey::parse(&text).ok_or_else(|| serde::de::Error::custom("a key is 64 hex digits"))
    }
}

/// A fetch's key: absent, or `""` as written before keys were optional.
fn key_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StoredKey>, D::Error> {
    let text = Zeroizing::new(String::deserialize(d)?);
    if text.is_empty() {
        return Ok(None);
    }
    StoredKey::parse(&text)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("a key is 64 hex digits"))
}

/// Where a served share came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `peerdrop share`: files of this machine.
    Shared,
    /// Re-seeded after a fetch, from where it was written.
    Fetched,
}

/// A share this node serves from files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShareRecord {
    /// Manifest id (hex in the file).
    pub id: ManifestId,
    /// Share key.
    pub key: StoredKey,
    /// Top-level name → where it is on disk.
    pub roots: BTreeMap<String, PathBuf>,
    /// Shared here or fetched.
    pub origin: Origin,
    /// Content bytes.
    pub bytes: u64,
    /// Regular files.
    pub files: usize,
    /// The encoded manifest, kept here when small (see [`INLINE_MAX`]);
    /// otherwise it is `shares/<id>/manifest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Blob>,
    /// The encoded file list, kept beside the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Blob>,
    /// Distinct receivers after which it is no longer served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downloads: Option<u32>,
    /// The receivers (peer ids, base58) counted so far against
    /// `max_downloads`, at most that many: kept so that a restart does not
    /// start the count again from zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downloaded_by: Vec<String>,
}

/// Largest manifest plus file list kept inside a share record: a small
/// share then costs one journal line instead of two files with their own
/// `fsync`s, while a large one's chunk list is not copied into every
/// snapshot.
pub const INLINE_MAX: usize = 64 * 1024;

/// Bytes kept in the state, as hex in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        let text = String::deserialize(d)?;
        unhex(&text)
            .map(Blob)
            .ok_or_else(|| serde::de::Error::custom("expected hex digits"))
    }
}

/// How a background job stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum JobStatus {
    /// Waiting for a free slot (`max_jobs` run at once).
    Queued,
    /// Running (or interrupted: resumed on the next start).
    Running,
    /// Complete.
    Done,
    /// Stopped with an error; progress is kept, and `retry` queues it again.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// Stopped by `cancel`; `retry` queues it again.
    Cancelled,
}

impl JobStatus {
    /// Whether the job still has work to do (queued or running).
    pub fn is_live(&self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// A fetch into a folder of this machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchRecord {
    /// Manifest id (hex in the file).
    pub id: ManifestId,
    /// Share key (a fetch is made with a read link), kept only while the
    /// fetch may still resume or be retried (dropped once done).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "key_or_empty"
    )]
    pub key: Option<StoredKey>,
    /// Destination folder.
    pub out: PathBuf,
    /// Sources: multiaddrs ending in /p2p/PEER.
    pub sources: Vec<String>,
    /// Replace existing files.
    pub force: bool,
    /// Write into existing folders of the share's top level.
    #[serde(default)]
    pub merge: bool,
    /// Where it stands.
    pub status: JobStatus,
    /// Content bytes, once known.
    pub bytes: u64,
    /// Top-level paths written, once done.
    pub paths: Vec<PathBuf>,
    /// Place in the queue: lower runs first.
    #[serde(default)]
    pub rank: i64,
    /// `--only` globs: only the entries they match are fetched (all when
    /// empty and `exclude` is empty too). Kept so a restart resumes the
    /// same part of the share.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// `--exclude` globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl FetchRecord {
    /// The part of the share this fetch takes.
    pub fn selection(&self) -> Result<crate::select::Selection, crate::select::SelectError> {
        crate::select::Selection::new(&self.only, &self.exclude)
    }
}

/// A pin: ciphertext hosted in the chunk store, no key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinRecord {
    /// Manifest id (hex in the file).
    pub id: ManifestId,
    /// Sources: multiaddrs ending in /p2p/PEER.
    pub sources: Vec<String>,
    /// Where it stands.
    pub status: JobStatus,
    /// Sealed bytes, once known.
    pub bytes: u64,
    /// Place in the queue: lower runs first.
    #[serde(default)]
    pub rank: i64,
}

/// Ports picked on the first start, reused afterwards.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ports {
    /// TCP port.
    pub tcp: Option<u16>,
    /// UDP (QUIC) port.
    pub udp: Option<u16>,
}

/// Everything the daemon remembers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Format version of this file.
    pub version: u32,
    /// Listen ports to keep.
    pub ports: Ports,
    /// Served shares.
    pub shares: Vec<ShareRecord>,
    /// Fetches.
    pub fetches: Vec<FetchRecord>,
    /// Pins.
    pub pins: Vec<PinRecord>,
}

/// Largest state file read (a bound before allocating).
const MAX_STATE_LEN: u64 = 64 << 20;

impl State {
    /// Reads the state; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<State, DaemonError> {
        let bad = |e: String| DaemonError::State(format!("{}: {e}", path.display()));
        match fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: 1,
                    ..State::default()
                })
            }
            Err(e) => return Err(bad(e.to_string())),
            Ok(m) if m.len() > MAX_STATE_LEN => return Err(bad("too large".into())),
            Ok(_) => {}
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
        let state: State = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if state.version != 1 {
            return Err(bad(format!("unknown version {}", state.version)));
        }
        Ok(state)
    }

    /// The fetch record of `id`.
    pub fn fetch_mut(&mut self, id: &ManifestId) -> Option<&mut FetchRecord> {
        self.fetches.iter_mut().find(|r| r.id == *id)
    }

    /// The pin record of `id`.
    pub fn pin_mut(&mut self, id: &ManifestId) -> Option<&mut PinRecord> {
        self.pins.iter_mut().find(|r| r.id == *id)
    }

    /// Adds a share record, or replaces the one of the same id.
    pub fn put_share(&mut self, rec: ShareRecord) {
        match self.shares.iter_mut().find(|r| r.id == rec.id) {
            Some(r) => *r = rec,
            None => self.shares.push(rec),
        }
    }

    /// Adds a fetch record at the end, or replaces the one of the same id.
    pub fn put_fetch(&mut self, rec: FetchRecord) {
        match self.fetch_mut(&rec.id) {
            Some(r) => *r = rec,
            None => self.fetches.push(rec),
        }
    }

    /// Adds a pin record at the end, or replaces the one of the same id.
    pub fn put_pin(&mut self, rec: PinRecord) {
        match self.pin_mut(&rec.id) {
            Some(r) => *r = rec,
            None => self.pins.push(rec),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, path: &Path) -> Result<(), DaemonError> {
        let text = Zeroizing::new(serde_json::to_vec_pretty(self).expect("state serializes"));
        write_private(path, &text)
            .map_err(|e| DaemonError::State(format!("{}: {e}", path.display())))
    }
}

/// Writes `bytes` to `path` atomically, readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    // A *.tmp left by a crash keeps whatever mode (and links) it has: never
    // write into it, make a new one, created here with mode 0600.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = File::options()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_file_is_0600_even_over_a_stale_tmp_of_another_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let tmp = dir.path().join("state.tmp");
        fs::write(&tmp, b"left by a crash").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"secret").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert!(!tmp.exists());
    }

    #[test]
    fn keys_read_back_and_never_show() {
        let key = ShareKey::from_bytes([9; 32]).unwrap();
        let stored = StoredKey::of(&key);
        assert_eq!(format!("{stored:?}"), "StoredKey(redacted)");
        let text = serde_json::to_string(&stored).unwrap();
        assert_eq!(text, format!("\"{}\"", "09".repeat(32)));
        let back: StoredKey = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_key().unwrap().expose_secret(), key.expose_secret());
        // A fetch record written before keys were optional had "" once done.
        let old = r#"{"id":"0909090909090909090909090909090909090909090909090909090909090909","key":"","out":"/o","sources":[],"force":false,"status":{"state":"done"},"bytes":1,"paths":[]}"#;
        let f: FetchRecord = serde_json::from_str(old).unwrap();
        assert!(f.key.is_none());
        assert!(!serde_json::to_string(&f).unwrap().contains("key"));
    }
}
