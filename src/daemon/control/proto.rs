//! The control protocol's messages: one type per request, one per answer,
//! the progress event and the error line. Pure data, no I/O. The daemon
//! writes and the CLI reads these same types; docs/CONTROL.md is tested
//! against them (`control::doc_tests`), so the three cannot drift apart.
//!
//! Every request carries `"version"` (read as 1 when absent: version 1 is
//! the protocol as it was before the field existed). A request of another
//! version is refused with an error naming both versions. Every final line
//! carries the daemon's `"version"` and `"ok"`; answers gain fields over
//! time, so readers ignore fields they do not know, while requests with an
//! unknown field are refused (a typo should not be silently ignored).

use std::path::PathBuf;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::daemon::state::{JobStatus, Origin};
use crate::daemon::{IdError, RequestError};
use crate::manifest::ManifestId;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// Longest request line accepted.
pub const MAX_REQUEST: u64 = 64 * 1024;

/// Every command's `cmd` name, in [`Request`]'s order.
pub const COMMANDS: [&str; 10] = [
    "share", "fetch", "pin", "list", "unshare", "link", "status", "cancel", "retry", "priority",
];

/// A request to the daemon: the command's fields plus `"cmd"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Share files and folders.
    Share(ShareRequest),
    /// Fetch a share into a folder.
    Fetch(FetchRequest),
    /// Host a share's ciphertext.
    Pin(PinRequest),
    /// Shares, fetches and pins.
    List(ListRequest),
    /// Stop serving a share or pin.
    Unshare(UnshareRequest),
    /// A share's link again.
    Link(LinkRequest),
    /// Node status.
    Status(StatusRequest),
    /// Stop a queued or running job.
    Cancel(CancelRequest),
    /// Queue a failed or cancelled job again.
    Retry(RetryRequest),
    /// Run a queued job next.
    Priority(PriorityRequest),
}

/// A request as it travels: the protocol version, then the command.
#[derive(Serialize, Deserialize)]
struct Versioned<R> {
    #[serde(default = "version_one")]
    version: u32,
    #[serde(flatten)]
    request: R,
}

/// Only the version, read before the rest so that a request of another
/// version is answered as such even if its command is unknown here.
#[derive(Deserialize)]
struct VersionOnly {
    #[serde(default = "version_one")]
    version: u32,
}

fn version_one() -> u32 {
    1
}

/// Reads one request line.
pub fn parse_request(line: &str) -> Result<Request, RequestError> {
    let head: VersionOnly = serde_json::from_str(line).map_err(RequestError::BadRequest)?;
    if head.version != VERSION {
        return Err(RequestError::UnsupportedVersion { got: head.version });
    }
    let v: Versioned<Request> = serde_json::from_str(line).map_err(RequestError::BadRequest)?;
    Ok(v.request)
}

/// Writes one request line (without the newline).
pub fn request_line(request: &Request) -> String {
    serde_json::to_string(&Versioned {
        version: VERSION,
        request,
    })
    .expect("requests serialize")
}

/// A command and the type of its final `"ok": true` line.
pub trait Command: Into<Request> {
    /// What the daemon answers.
    type Reply: DeserializeOwned + Serialize;
}

macro_rules! commands {
    ($($req:ident => $variant:ident, $reply:ty;)*) => {$(
        impl From<$req> for Request {
            fn from(r: $req) -> Request {
                Request::$variant(r)
            }
        }
        impl Command for $req {
            type Reply = $reply;
        }
    )*};
}

commands! {
    ShareRequest => Share, ShareReply;
    FetchRequest => Fetch, JobReply;
    PinRequest => Pin, JobReply;
    ListRequest => List, ListReply;
    UnshareRequest => Unshare, UnshareReply;
    LinkRequest => Link, LinkReply;
    StatusRequest => Status, StatusReply;
    CancelRequest => Cancel, JobStateReply;
    RetryRequest => Retry, JobStateReply;
    PriorityRequest => Priority, JobStateReply;
}

/// `share`: share files and folders (absolute paths).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// What to share.
    pub paths: Vec<PathBuf>,
    /// Put this node's addresses in the link (default true).
    #[serde(default = "yes")]
    pub hints: bool,
    /// When the share expires, in Unix seconds (docs/FORMAT.md 7.6): it
    /// goes into the manifest and the link, and every honest node stops
    /// serving the share then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<crate::manifest::Expiry>,
    /// Stop serving once this many distinct receivers proved they hold the
    /// whole share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downloads: Option<u32>,
}

fn yes() -> bool {
    true
}

/// `fetch`: fetch a share into a folder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// The read link (it carries the key: treat it as a secret).
    pub link: String,
    /// Absolute destination folder.
    pub out: PathBuf,
    /// Replace existing files.
    #[serde(default)]
    pub force: bool,
    /// Write into existing folders of the share's top level.
    #[serde(default)]
    pub merge: bool,
    /// Extra sources: multiaddrs ending in /p2p/PEER.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Answer at once instead of streaming progress until done.
    #[serde(default)]
    pub detach: bool,
    /// Take only the entries matching these globs (`--only`; see
    /// [`crate::select`]). Left out of the line when empty, so a daemon
    /// older than the field still takes a whole-share fetch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// Leave out the entries matching these globs (`--exclude`; wins over
    /// `only`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// `pin`: host a share's ciphertext without its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// The pin link (never a read link).
    pub link: String,
    /// Extra sources: multiaddrs ending in /p2p/PEER.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Answer at once.
    #[serde(default)]
    pub detach: bool,
}

/// `list`: shares, fetches and pins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {}

/// `unshare`: stop serving a share or pin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnshareRequest {
    /// Its id or a unique prefix.
    pub id: IdPrefix,
}

/// `link`: a share's read link again, or its pin link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// Its id or a unique prefix.
    pub id: IdPrefix,
    /// The pin link instead of the read link.
    #[serde(default)]
    pub pin: bool,
}

/// `status`: node status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {}

/// `cancel`: stop a queued or running job (or clean up after a failed one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// The job's id or a unique prefix.
    pub id: IdPrefix,
    /// Which job, when a fetch and a pin have the same id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<JobKind>,
    /// Keep a fetch's partial data (by default it is removed).
    #[serde(default)]
    pub keep: bool,
}

/// `retry`: queue a failed or cancelled job again, at the back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// The job's id or a unique prefix.
    pub id: IdPrefix,
    /// Which job, when a fetch and a pin have the same id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<JobKind>,
}

/// `priority`: run a queued job next (before every other queued job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRequest {
    /// The job's id or a unique prefix.
    pub id: IdPrefix,
    /// Which job, when a fetch and a pin have the same id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<JobKind>,
}

/// A manifest id in full or a unique prefix of it: 8 to 64 hex digits,
/// kept in lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdPrefix(String);

/// Fewest hex digits an id prefix may have.
pub const MIN_PREFIX: usize = 8;

impl IdPrefix {
    /// Whether `id` starts with this prefix.
    pub fn matches(&self, id: &ManifestId) -> bool {
        self.0.bytes().enumerate().all(|(i, c)| {
            let byte = id.0[i / 2];
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0xf };
            (c as char).to_digit(16) == Some(u32::from(nibble))
        })
    }
}

impl FromStr for IdPrefix {
    type Err = IdError;

    fn from_str(s: &str) -> Result<IdPrefix, IdError> {
        let s = s.to_ascii_lowercase();
        if s.len() > 64 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(IdError::NotHex(s));
        }
        if s.len() < MIN_PREFIX {
            return Err(IdError::TooShort);
        }
        Ok(IdPrefix(s))
    }
}

impl TryFrom<String> for IdPrefix {
    type Error = IdError;

    fn try_from(s: String) -> Result<IdPrefix, IdError> {
        s.parse()
    }
}

impl From<IdPrefix> for String {
    fn from(p: IdPrefix) -> String {
        p.0
    }
}

impl std::fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a background job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Fetch a share into a folder.
    Fetch,
    /// Fetch a share's ciphertext into the chunk store.
    Pin,
}

/// The last line of an answer that succeeded: `version`, `ok` and the
/// command's reply.
#[derive(Serialize, Deserialize)]
pub struct Final<R> {
    /// The daemon's protocol version.
    pub version: u32,
    /// Always true here (an error line has `false`).
    pub ok: bool,
    /// The command's fields.
    #[serde(flatten)]
    pub reply: R,
}

/// The last line of an answer that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The daemon's protocol version (absent from daemons before versions).
    #[serde(default)]
    pub version: Option<u32>,
    /// Always false.
    pub ok: bool,
    /// What went wrong and what to do, for people.
    pub error: String,
    /// What went wrong, for programs.
    #[serde(default)]
    pub code: ErrorCode,
}

/// The kind of failure, so programs need not match on messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not a request of this protocol version.
    BadRequest,
    /// The request is of a protocol version the daemon does not speak.
    UnsupportedVersion,
    /// The request is well formed but cannot be done as asked (bad link,
    /// relative path, short or malformed id, bad peer address, a read link
    /// for a pin, paths that cannot be shared).
    Invalid,
    /// No share or pin has that id.
    NotFound,
    /// The request contradicts what the daemon holds (the share is being
    /// fetched elsewhere; only a pin link exists here).
    Conflict,
    /// The job ran and failed; its progress is kept.
    JobFailed,
    /// The followed job was cancelled.
    Cancelled,
    /// The daemon stopped; the job resumes when it starts again.
    JobStopped,
    /// The client is not the daemon's user.
    Denied,
    /// No request line arrived in time.
    Timeout,
    /// The daemon itself failed (disk, or a bug); see its log.
    Internal,
    /// A code this build does not know (from a newer daemon).
    #[default]
    #[serde(other)]
    Other,
}

/// A line before the final one, while a job is followed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Where the job stands.
    Progress {
        /// The job's manifest id.
        id: ManifestId,
        /// Bytes done: content for a fetch, ciphertext for a pin.
        bytes: u64,
        /// Bytes in all, 0 until known.
        total: u64,
    },
}

/// `share`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareReply {
    /// The new share's manifest id.
    pub id: ManifestId,
    /// Its read link, key included.
    pub link: String,
    /// Regular files in the share.
    pub files: u64,
    /// Content bytes.
    pub bytes: u64,
    /// `"PATH: reason"` for every entry left out.
    pub skipped: Vec<String>,
}

/// `fetch`'s and `pin`'s answer: done, or started in the background.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobReply {
    /// Without `detach`: the job is done.
    Done(JobDone),
    /// With `detach`: the job runs on.
    Detached(JobDetached),
}

/// A job that completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDone {
    /// The job's manifest id.
    pub id: ManifestId,
    /// Bytes in all: content for a fetch, ciphertext for a pin.
    pub bytes: u64,
}

/// A job started (or joined) in the background.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDetached {
    /// The job's manifest id.
    pub id: ManifestId,
    /// Always true.
    pub detached: bool,
}

impl JobReply {
    /// The job's manifest id.
    pub fn id(&self) -> &ManifestId {
        match self {
            JobReply::Done(d) => &d.id,
            JobReply::Detached(d) => &d.id,
        }
    }
}

/// `list`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReply {
    /// What this node serves from files.
    pub shares: Vec<ShareRow>,
    /// Fetch jobs.
    pub fetches: Vec<FetchRow>,
    /// Pin jobs.
    pub pins: Vec<PinRow>,
}

/// A served share in `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRow {
    /// Manifest id.
    pub id: ManifestId,
    /// Shared here or re-seeded after a fetch.
    pub origin: Origin,
    /// Top-level names.
    pub names: Vec<String>,
    /// Regular files.
    pub files: u64,
    /// Content bytes.
    pub bytes: u64,
    /// Serving, or stale.
    pub state: ShareState,
    /// Its download limit (`share --max-downloads`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downloads: Option<u32>,
    /// Distinct receivers counted against that limit so far (kept across
    /// restarts); only with a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloads: Option<u64>,
}

/// Whether a share is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareState {
    /// Its chunks are served.
    Serving,
    /// A file changed since it was made (or it could not be loaded): its
    /// chunks are refused.
    Stale,
    /// Its expiry has passed: nothing of it is served.
    Expired,
    /// As many receivers as its download limit allows have it: nothing of
    /// it is served.
    UsedUp,
}

/// A fetch in `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRow {
    /// Manifest id.
    pub id: ManifestId,
    /// Destination folder.
    pub out: PathBuf,
    /// Where it stands.
    pub status: JobStatus,
    /// Content bytes done.
    pub bytes: u64,
    /// Content bytes in all, 0 while unknown.
    pub total: u64,
    /// Sources, as multiaddrs.
    pub sources: Vec<String>,
}

/// A pin in `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRow {
    /// Manifest id.
    pub id: ManifestId,
    /// Where it stands.
    pub status: JobStatus,
    /// Ciphertext bytes done.
    pub bytes: u64,
    /// Ciphertext bytes in all, 0 while unknown.
    pub total: u64,
    /// Sources, as multiaddrs.
    pub sources: Vec<String>,
    /// The share's expiry has passed: the pin is no longer served.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// `cancel`'s, `retry`'s and `priority`'s answer: where the job stands now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStateReply {
    /// The job's full id.
    pub id: ManifestId,
    /// Fetch or pin.
    pub kind: JobKind,
    /// Where it stands.
    pub status: JobStatus,
}

/// `unshare`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnshareReply {
    /// The full id no longer served.
    pub id: ManifestId,
}

/// `link`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReply {
    /// The full id.
    pub id: ManifestId,
    /// The read link (key included) or the pin link.
    pub link: String,
}

/// `status`'s answer. New facts about the node are added as new fields
/// (readers ignore fields they do not know).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// This node's peer id, base58.
    pub peer_id: String,
    /// Listen addresses, without `/p2p`, in hint order.
    pub listen: Vec<String>,
    /// Connected peers.
    pub connected: Vec<Connection>,
    /// Running jobs.
    pub transfers: Vec<Transfer>,
    /// Jobs waiting for a slot.
    pub queued: u64,
    /// Chunk bytes served since the daemon started.
    pub uploaded_bytes: u64,
    /// Whether finished fetches are re-seeded.
    pub reseed: bool,
    /// Whether other peers can dial this node, as far as it knows.
    #[serde(default)]
    pub reachability: Reachability,
    /// Addresses confirmed reachable from outside, without `/p2p`.
    #[serde(default)]
    pub external_addrs: Vec<String>,
    /// Relays this node holds (or asks for) a circuit reservation on.
    #[serde(default)]
    pub relays: Vec<Relay>,
    /// Peers in the peer cache (`peers.json`), bootstrapped from at the
    /// next start.
    #[serde(default)]
    pub cached_peers: u64,
    /// Peers this node found on the LAN by mDNS (a bounded table: at most
    /// 256; docs/PROTOCOL.md, section 7).
    #[serde(default)]
    pub lan_peers: u64,
    /// Where browsers on the LAN are served (`web = true`): web links are
    /// `http://ADDR/#…` (docs/WEB.md). Absent when the daemon does not
    /// serve browsers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<std::net::SocketAddr>,
    /// Where the local web UI listens (loopback; `peerdrop ui` prints its
    /// link with the token). Absent when the daemon serves no UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<std::net::SocketAddr>,
}

/// Whether other peers can dial this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// No verdict (yet).
    #[default]
    Unknown,
    /// Another peer confirmed an address of this node reachable.
    Public,
    /// Not reachable from outside: reached through relays.
    Private,
}

/// A relay in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    /// Its peer id, base58.
    pub peer: String,
    /// This node's addresses through it (`…/p2p/RELAY/p2p-circuit`), once
    /// reserved.
    pub circuit_addrs: Vec<String>,
    /// Where the reservation stands.
    pub state: RelayState,
    /// Whether the relay was named by configuration (`relays`, `--relay`)
    /// rather than picked by the daemon itself.
    pub configured: bool,
}

/// Where a relay reservation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Asked for, no answer yet.
    Requesting,
    /// Accepted (and renewed before it expires).
    Reserved,
}

/// A connected peer in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Its peer id, base58.
    pub peer: String,
    /// The remote address of its latest connection.
    pub addr: String,
    /// Whether that address goes through a relay.
    pub relayed: bool,
}

/// A running job in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Manifest id.
    pub id: ManifestId,
    /// Fetch or pin.
    pub kind: JobKind,
    /// Bytes done.
    pub bytes: u64,
    /// Bytes in all, 0 while unknown.
    pub total: u64,
    /// Bytes per second over the job's run in this daemon.
    pub rate: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_the_request_variants() {
        // serde lists the variants it expects; COMMANDS must be that list.
        let e = parse_request(r#"{"cmd":"nope"}"#).unwrap_err().to_string();
        let listed: Vec<&str> = COMMANDS.iter().map(|c| &**c).collect();
        let want = listed
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(e.contains(&want), "{e} lists {want}");
    }

    #[test]
    fn a_request_round_trips_with_its_version() {
        let r = Request::Link(LinkRequest {
            id: "E70A8AB9".parse().unwrap(),
            pin: true,
        });
        let line = request_line(&r);
        assert_eq!(
            line,
            r#"{"version":1,"cmd":"link","id":"e70a8ab9","pin":true}"#
        );
        assert_eq!(parse_request(&line).unwrap(), r);
        // Version 1 is also the protocol before the field existed.
        assert_eq!(
            parse_request(r#"{"cmd":"list"}"#).unwrap(),
            Request::List(ListRequest {})
        );
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let e = parse_request(r#"{"version":2,"cmd":"teleport"}"#).unwrap_err();
        assert!(matches!(e, RequestError::UnsupportedVersion { got: 2 }));
        let msg = e.to_string();
        assert!(
            msg.contains("version 2") && msg.contains("version 1"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_for_every_command() {
        for c in COMMANDS {
            let e = parse_request(&format!(r#"{{"cmd":"{c}","extra":1}}"#)).unwrap_err();
            assert!(e.to_string().contains("extra"), "{c}: {e}");
        }
    }

    #[test]
    fn id_prefixes_are_checked_and_matched_by_digit() {
        let id: ManifestId = "e70a8ab98f7ceb98a69733451b72ecf37a26c315f1947d7f122da4c955743dad"
            .parse()
            .unwrap();
        assert!("E70A8AB9".parse::<IdPrefix>().unwrap().matches(&id));
        assert!("e70a8ab98".parse::<IdPrefix>().unwrap().matches(&id));
        assert!(!"e70a8ab99".parse::<IdPrefix>().unwrap().matches(&id));
        assert!(IdPrefix::from_str(&id.to_string()).unwrap().matches(&id));
        assert_eq!("e70a8ab".parse::<IdPrefix>(), Err(IdError::TooShort));
        assert!(matches!(
            "e70a8abz".parse::<IdPrefix>(),
            Err(IdError::NotHex(_))
        ));
        assert!(IdPrefix::from_str(&format!("{id}0")).is_err());
        let e = parse_request(r#"{"cmd":"unshare","id":"e70a"}"#).unwrap_err();
        assert!(e.to_string().contains("at least 8 hex digits"), "{e}");
    }

    #[test]
    fn an_unknown_error_code_is_read_as_other() {
        let f: Failure =
            serde_json::from_str(r#"{"version":1,"ok":false,"error":"x","code":"brand_new"}"#)
                .unwrap();
        assert_eq!(f.code, ErrorCode::Other);
    }
}
