//! docs/CONTROL.md against the protocol's types, so they cannot drift.
//!
//! Every line of every ```` ```json ```` block in the document is a protocol
//! message: a request (it has `cmd`), a progress event (`event`), an error
//! line (`"ok": false`) or a reply (`"ok": true`). Each must parse as its
//! type, and a reply or event must carry exactly the fields its type writes
//! (no more, no fewer), compared after a round trip through the type.
//! Blocks marked ```` ```json state ```` must parse as `state.json`; blocks
//! marked ```` ```json cli ```` are the CLI's own lines and are skipped. Every
//! command, reply type, error code and reply field must appear in the
//! document. Long values shortened with `…` are expanded first: a hex id
//! prefix is padded to 64 digits; other strings stay as they are.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::proto::*;
use crate::daemon::state::State;

const DOC: &str = include_str!("../../../docs/CONTROL.md");

/// The ```` ```json ```` blocks, with their info string after `json`.
fn json_blocks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in DOC.lines() {
        match &mut cur {
            None => {
                if let Some(info) = line.strip_prefix("```json") {
                    cur = Some((info.trim().to_owned(), String::new()));
                }
            }
            Some((_, body)) if line.starts_with("```") => {
                let _ = body;
                out.push(cur.take().expect("in a block"));
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(cur.is_none(), "an unclosed json block in CONTROL.md");
    out
}

/// Expands values shortened with `…`.
fn expand(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Some(prefix) = s.strip_suffix('…') {
                if !prefix.is_empty()
                    && prefix.len() < 64
                    && prefix.bytes().all(|c| c.is_ascii_hexdigit())
                {
                    *s = format!("{prefix:0<64}");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(expand),
        Value::Object(m) => m.values_mut().for_each(expand),
        _ => {}
    }
}

/// Every object key path in `v` (`a.b`, arrays looked through).
fn keys(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                keys(x, &path, out);
                out.insert(path);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys(x, at, out)),
        _ => {}
    }
}

fn key_set(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    keys(v, "", &mut out);
    out
}

/// Parses `v` as `T` and returns its fields after a round trip, if `T`
/// reads it and writes back exactly its fields.
fn exactly<T: DeserializeOwned + Serialize>(v: &Value) -> Option<BTreeSet<String>> {
    let t: T = serde_json::from_value(v.clone()).ok()?;
    let back = serde_json::to_value(&t).expect("serializes");
    (key_set(&back) == key_set(v)).then(|| key_set(&back))
}

/// The reply types, by name, with their check.
type Check = fn(&Value) -> Option<BTreeSet<String>>;

fn reply_types() -> Vec<(&'static str, Check)> {
    vec![
        ("ShareReply", exactly::<Final<ShareReply>>),
        ("JobDone", exactly::<Final<JobDone>>),
        ("JobDetached", exactly::<Final<JobDetached>>),
        ("ListReply", exactly::<Final<ListReply>>),
        ("UnshareReply", exactly::<Final<UnshareReply>>),
        ("LinkReply", exactly::<Final<LinkReply>>),
        ("StatusReply", exactly::<Final<StatusReply>>),
        ("JobStateReply", exactly::<Final<JobStateReply>>),
    ]
}

/// The reply types a request may get: a `match`, so a new command does not
/// compile until it is listed here.
fn replies_of(r: &Request) -> &'static [&'static str] {
    match r {
        Request::Share(_) => &["ShareReply"],
        Request::Fetch(_) | Request::Pin(_) => &["JobDone", "JobDetached"],
        Request::List(_) => &["ListReply"],
        Request::Unshare(_) => &["UnshareReply"],
        Request::Link(_) => &["LinkReply"],
        Request::Status(_) => &["StatusReply"],
        Request::Cancel(_) | Request::Retry(_) | Request::Priority(_) => &["JobStateReply"],
    }
}

#[derive(Default)]
struct Seen {
    commands: BTreeSet<String>,
    replies: BTreeSet<&'static str>,
    codes: BTreeSet<String>,
    fields: BTreeSet<String>,
    progress: bool,
    state: bool,
}

fn check_line(line: &str, seen: &mut Seen) {
    let mut v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("CONTROL.md: not JSON: {line}: {e}"));
    expand(&mut v);
    let text = v.to_string();
    let other_version = v.get("version").is_some_and(|x| x != &Value::from(VERSION));
    if v.get("cmd").is_some() && other_version {
        // Shown to be refused: it must be, as a version error.
        let e = parse_request(&text).expect_err(line);
        assert!(
            matches!(e, crate::daemon::RequestError::UnsupportedVersion { .. }),
            "{line}: {e}"
        );
    } else if v.get("cmd").is_some() {
        let r = parse_request(&text)
            .unwrap_or_else(|e| panic!("CONTROL.md: a request that does not parse: {line}: {e}"));
        for name in replies_of(&r) {
            assert!(reply_types().iter().any(|(n, _)| n == name));
        }
        seen.commands.insert(v["cmd"].as_str().unwrap().to_owned());
    } else if v.get("event").is_some() {
        let fields = exactly::<Event>(&v)
            .unwrap_or_else(|| panic!("CONTROL.md: not a progress event: {line}"));
        seen.fields.extend(fields);
        seen.progress = true;
    } else if v.get("ok") == Some(&Value::Bool(false)) {
        let f: Failure = serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("CONTROL.md: not an error line: {line}: {e}"));
        assert_eq!(
            key_set(&v),
            ["version", "ok", "error", "code"].map(String::from).into(),
            "CONTROL.md: an error line with other fields: {line}"
        );
        assert_ne!(f.code, ErrorCode::Other, "CONTROL.md: unknown code: {line}");
        seen.codes.insert(v["code"].as_str().unwrap().to_owned());
    } else if v.get("ok") == Some(&Value::Bool(true)) {
        let fits: Vec<_> = reply_types()
            .into_iter()
            .filter_map(|(name, check)| Some((name, check(&v)?)))
            .collect();
        assert_eq!(
            fits.len(),
            1,
            "CONTROL.md: a reply that is not exactly one reply type: {line} (fits {:?})",
            fits.iter().map(|f| f.0).collect::<Vec<_>>()
        );
        let (name, fields) = fits.into_iter().next().unwrap();
        seen.replies.insert(name);
        seen.fields.extend(fields);
    } else {
        panic!("CONTROL.md: a json line that is no protocol message: {line}");
    }
}

#[test]
fn every_example_in_control_md_is_a_message_of_its_type() {
    let mut seen = Seen::default();
    for (info, body) in json_blocks() {
        match info.as_str() {
            "" => {
                for line in body.lines().map(str::trim) {
                    if !line.is_empty() && line != "…" {
                        check_line(line, &mut seen);
                    }
                }
            }
            "state" => {
                let mut v: Value = serde_json::from_str(&body).expect("the state example is JSON");
                expand(&mut v);
                let st: State = serde_json::from_value(v).expect("the state example is a State");
                assert_eq!(st.version, 1);
                seen.state = true;
            }
            "cli" => {}
            other => panic!("CONTROL.md: unknown json block kind {other:?}"),
        }
    }
    assert!(seen.progress && seen.state);
    let commands: BTreeSet<String> = COMMANDS.iter().map(|c| c.to_string()).collect();
    assert_eq!(seen.commands, commands, "every command has an example");
    let replies: BTreeSet<&str> = reply_types().iter().map(|r| r.0).collect();
    assert_eq!(seen.replies, replies, "every reply type has an example");
    // Every field a reply or event writes is described in a table row.
    for field in &seen.fields {
        let last = field.rsplit('.').next().unwrap();
        assert!(
            DOC.contains(&format!("| `{last}` |")),
            "CONTROL.md describes no field `{field}` in a table"
        );
    }
    // Every error code is described, and the examples use real ones.
    for code in &seen.codes {
        assert!(DOC.contains(&format!("| `{code}` |")), "{code} undescribed");
    }
}

#[test]
fn every_error_code_is_described() {
    let all = [
        ErrorCode::BadRequest,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Invalid,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::JobFailed,
        ErrorCode::Cancelled,
        ErrorCode::JobStopped,
        ErrorCode::Denied,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::Other,
    ];
    // A match, so a new code does not compile until it is listed above.
    for c in all {
        match c {
            ErrorCode::BadRequest
            | ErrorCode::UnsupportedVersion
            | ErrorCode::Invalid
            | ErrorCode::NotFound
            | ErrorCode::Conflict
            | ErrorCode::JobFailed
            | ErrorCode::Cancelled
            | ErrorCode::JobStopped
            | ErrorCode::Denied
            | ErrorCode::Timeout
            | ErrorCode::Internal
            | ErrorCode::Other => {}
        }
        let name = serde_json::to_value(c).unwrap();
        let name = name.as_str().unwrap();
        assert!(
            DOC.contains(&format!("| `{name}` |")),
            "CONTROL.md describes no error code `{name}`"
        );
    }
}
