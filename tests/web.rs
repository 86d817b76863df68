//! Browser receive in a real browser: Debian's headless chromium, driven by
//! playwright-core (tests/browser/receive.mjs), opens web links and saves
//! what the page offers.
//!
//! - On a test LAN of two network namespaces, `peerdrop send --web` runs in
//!   one and chromium in the other; a 64 MiB file and a folder of 200 small
//!   files (as a zip) arrive byte-identical. The 64 MiB run also times
//!   `peerdrop receive` on the same share, for comparison.
//! - On loopback, against a server in this process: a corrupted chunk stops
//!   the page with a clear error and nothing saved; a wrong key fails the
//!   commitment check; a hostile file name is refused as the CLI refuses it.
//!
//! Skipped, with a message, where chromium, node or the npm packages are
//! missing; fails instead under CI (`CI` set), which installs them.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::{local_share, provider};
use common::netns::{self, Netns};
use common::*;
use peerdrop::chunk::{ChunkId, Stream};
use peerdrop::crypto::ShareKey;
use peerdrop::manifest::ManifestId;
use peerdrop::net::serve::{Provider, Refusal};
use peerdrop::wire::Have;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_peerdrop");
const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether a browser test can run here; otherwise says why (and under CI
/// fails, since CI installs everything).
fn browser_available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let missing = if !Path::new(CHROMIUM).exists() {
        Some("chromium (apt-get install chromium)")
    } else if !node {
        Some("node")
    } else if !browser_dir().join("node_modules/playwright-core").exists() {
        Some("playwright-core (cd tests/browser && npm ci)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(what) if std::env::var_os("CI").is_some() => {
            panic!("CI must run the browser tests, but {what} is missing; see .ci/run")
        }
        Some(what) => {
            eprintln!("skipped: needs {what}");
            false
        }
    }
}

/// The page's path rules (web/src/format.js, run in node) refuse exactly
/// the paths the CLI's `RelPath::new` refuses, for the same reason: the
/// hostile-path cases of src/meta.rs and thousands of generated ones.
#[test]
fn the_page_and_the_cli_refuse_the_same_paths() {
    let node = Command::new("node").arg("--version").output();
    if !node.map(|o| o.status.success()).unwrap_or(false) {
        assert!(std::env::var_os("CI").is_none(), "CI must have node");
        eprintln!("skipped: needs node");
        return;
    }
    let tokens = [
        "a",
        "b",
        ".",
        "..",
        " ",
        "/",
        "\\",
        ":",
        "<",
        "?",
        "*",
        "\"",
        "|",
        "\0",
        "\n",
        "\u{7f}",
        "\u{85}",
        "\u{9f}",
        "\u{202e}",
        "\u{2066}",
        "\u{61c}",
        "\u{2028}",
        "\u{200b}",
        "\u{200d}",
        "\u{2064}",
        "\u{feff}",
        "\u{ad}",
        "\u{34f}",
        "\u{180e}",
        "\u{200a}",
        "CON",
        "con",
        "nul",
        "CONIN$",
        "conout$",
        "CLOCK$",
        "COM",
        "lpt",
        "1",
        "0",
        "¹",
        "³",
        "$",
        ".txt",
        ".peerdrop-",
        ".PeerDrop-",
        "peerdrop",
        "-",
        "é",
        "e\u{301}",
        "ß",
        "名前",
        "\u{1f600}",
        "x",
    ];
    let safe = [
        "a",
        "b",
        "x",
        "-",
        "é",
        "名前",
        "1",
        "0",
        ".txt",
        "/",
        "CON",
        "lpt",
        ".peerdrop",
    ];
    let mut cases: Vec<String> = [
        "",
        "/etc/passwd",
        "a/../b",
        "..",
        "./a",
        "a//b",
        "a/",
        "C:\\x",
        "a\0b",
        "evil\u{202e}txt.exe",
        "trailing.",
        "trailing ",
        "CON .txt",
        "d/NUL  .x",
        "aux   .tar.gz",
        "lpt¹",
        "com10",
        "CONSOLE$",
        ".peerdrop",
        "x.peerdrop-y",
        "ünïcödé/名前",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cases.push("a".repeat(255));
    cases.push("a".repeat(256));
    cases.push("é".repeat(128));
    cases.push(vec!["d"; 128].join("/"));
    cases.push(vec!["d"; 129].join("/"));
    cases.push(vec!["abcdefghijklmnop"; 300].join("/"));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..5000 {
        let mut s = String::new();
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for _ in 0..(x >> 60) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mostly harmless pieces, so that refusals are not all early ones.
            let t = if (x >> 20) % 8 < 6 {
                safe[(x >> 33) as usize % safe.len()]
            } else {
                tokens[(x >> 33) as usize % tokens.len()]
            };
            s.push_str(t);
        }
        cases.push(s);
    }
    let mut child = Command::new("node")
        .arg(browser_dir().join("paths.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
            .unwrap();
    }
    let out = wait_with_deadline(child, Duration::from_secs(60));
    let page: Vec<Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page.len(), cases.len());
    let mut refused = 0;
    for (p, js) in cases.iter().zip(page) {
        let cli = peerdrop::meta::RelPath::new(p)
            .err()
            .map(|e| format!("{e:?}"));
        refused += cli.is_some() as usize;
        assert_eq!(js, cli, "the page and the CLI disagree on {p:?}");
    }
    // The generated cases exercise both sides.
    assert!(refused > 1000 && refused < cases.len() - 500, "{refused}");
}

/// What the page did.
struct Outcome {
    json: Value,
    /// The URLs the page requested.
    requests: Vec<String>,
}

impl Outcome {
    fn state(&self) -> &str {
        self.json["state"].as_str().unwrap_or("")
    }
    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
    fn downloads(&self) -> &[Value] {
        self.json["downloads"].as_array().map_or(&[], |v| v)
    }
    fn saved(&self) -> PathBuf {
        let d = self.downloads();
        assert_eq!(d.len(), 1, "one download expected: {}", self.json);
        assert!(d[0]["failure"].is_null(), "download failed: {}", self.json);
        PathBuf::from(d[0]["path"].as_str().unwrap())
    }
}

/// Opens `url` in chromium (inside namespace `ns`, if given) and saves what
/// the page offers into `out`. Bounded: the script has its own deadline, and
/// the process is killed if it overruns it.
fn open_in_browser(ns: Option<&str>, url: &str, out: &Path, screenshot: Option<&Path>) -> Outcome {
    fs::create_dir_all(out).unwrap();
    let opts = serde_json::json!({
        "url": url, "out": out, "timeoutMs": 150_000, "chromium": CHROMIUM,
        "screenshot": screenshot, "phone": screenshot.is_some(),
    });
    let json = run_script(ns, "receive.mjs", &opts);
    // The page loads nothing from anywhere but the node, and the key never
    // leaves the page: not in a request, not in a Referer.
    let origin = url.split('#').next().unwrap();
    let key = url.rsplit('/').next().unwrap();
    let (json, requests) = checked_requests(json, &[origin], key);
    Outcome { json, requests }
}

/// Runs tests/browser/SCRIPT with `opts` (inside namespace `ns`, if given)
/// and returns the JSON line it prints; bounded: the script has its own
/// deadline, and the process is killed if it overruns it.
fn run_script(ns: Option<&str>, script: &str, opts: &Value) -> Value {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "node"]);
            c
        }
        None => Command::new("node"),
    };
    cmd.arg(browser_dir().join(script))
        .arg(opts.to_string())
        .current_dir(browser_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("starting node");
    let out = wait_with_deadline(child, Duration::from_secs(180));
    let line = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} printed no result ({e}): {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(json["fatal"].is_null(), "the browser script failed: {json}");
    json
}

/// Checks that every request the pages made went to one of `origins` (or
/// a `blob:`), without `secret` and without a `Referer`, and that the
/// console shows no CSP violation or script error; returns the result
/// without its request list, and the requested URLs.
fn checked_requests(mut json: Value, origins: &[&str], secret: &str) -> (Value, Vec<String>) {
    let requests: Vec<String> = json["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["url"].as_str().unwrap().to_owned())
        .collect();
    for r in json["requests"].as_array().unwrap() {
        let u = r["url"].as_str().unwrap();
        assert!(
            origins.iter().any(|o| u.starts_with(o)) || u.starts_with("blob:"),
            "a request left the node's origin: {u}"
        );
        assert!(!u.contains(secret), "the key was sent: {u}");
        let referer = r["referer"].as_str().unwrap_or("");
        assert!(referer.is_empty(), "a Referer was sent: {r}");
    }
    // Checked above; too long for the messages below.
    json.as_object_mut().unwrap().remove("requests");
    assert_eq!(json["console"], serde_json::json!([]), "console: {json}");
    (json, requests)
}

fn wait_with_deadline(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    loop {
        match child.try_wait().unwrap() {
            Some(_) => return child.wait_with_output().unwrap(),
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "timed out after {limit:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            // Polling a child's exit: there is no portable exit event to wait on.
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A `peerdrop send` process, killed when dropped.
struct Sender(Child);

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `peerdrop send --web` in namespace `ns` on `ip`; returns it with
/// its peerdrop link and web link (stdout's first two lines).
fn send_web(ns: &str, ip: &str, paths: &[&Path]) -> (Sender, String, String) {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, BIN, "send", "--no-mdns", "--web"])
        .args(["--listen", &format!("/ip4/{ip}/tcp/0")])
        .args(["--web-listen", &format!("{ip}:0")])
        .args(paths)
        .env_remove("PEERDROP_LINK")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Reading blocks until sealing is done; `send` prints nothing else first.
    let mut link = String::new();
    out.read_line(&mut link).unwrap();
    let mut web = String::new();
    out.read_line(&mut web).unwrap();
    let sender = Sender(child);
    assert!(link.starts_with("peerdrop:"), "no link: {link:?}");
    assert!(
        web.starts_with(&format!("http://{ip}:")),
        "no web link: {web:?}"
    );
    (sender, link.trim().to_owned(), web.trim().to_owned())
}

/// The entries of a zip as client-zip writes them (stored, not deflated):
/// name → contents (`None` for a folder).
fn unzip(bytes: &[u8]) -> BTreeMap<String, Option<Vec<u8>>> {
    let u16at = |i: usize| u16::from_le_bytes(bytes[i..i + 2].try_into().unwrap()) as usize;
    let u32at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let eocd = (0..=bytes.len() - 22)
        .rev()
        .find(|&i| bytes[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .expect("a zip has an end of central directory");
    let count = u16at(eocd + 10);
    let mut at = u32at(eocd + 16);
    let mut out = BTreeMap::new();
    for _ in 0..count {
        assert_eq!(
            bytes[at..at + 4],
            [0x50, 0x4b, 0x01, 0x02],
            "central header"
        );
        let method = u16at(at + 10);
        let size = u32at(at + 20);
        let (nlen, xlen, clen) = (u16at(at + 28), u16at(at + 30), u16at(at + 32));
        let local = u32at(at + 42);
        let name = String::from_utf8(bytes[at + 46..at + 46 + nlen].to_vec()).unwrap();
        at += 46 + nlen + xlen + clen;
        assert_eq!(method, 0, "{name}: stored entries expected");
        assert_eq!(
            bytes[local..local + 4],
            [0x50, 0x4b, 0x03, 0x04],
            "local header"
        );
        let data = local + 30 + u16at(local + 26) + u16at(local + 28);
        if let Some(dir) = name.strip_suffix('/') {
            out.insert(dir.to_owned(), None);
        } else {
            out.insert(name, Some(bytes[data..data + size].to_vec()));
        }
    }
    out
}

#[test]
fn chromium_on_the_lan_saves_a_large_file_and_a_folder_as_zip() {
    if !netns::available() {
        eprintln!("skipped: needs root and iproute2 to build a test LAN in network namespaces");
        return;
    }
    if !browser_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut lan = Netns::new();
    let br = lan.bridge("wbbr");
    let sender_ns = lan.host_on(&br, "wbs", "eth0", "10.231.14.1/24");
    let phone_ns = lan.host_on(&br, "wbp", "eth0", "10.231.14.2/24");

    // A 64 MiB file.
    let big = sub(&tmp, "big").join("video.bin");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    let data = bytes(14, 64 << 20);
    fs::write(&big, &data).unwrap();
    let (_s1, link, web) = send_web(&sender_ns, "10.231.14.1", &[&big]);
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/web-receive.png");
    let got = open_in_browser(
        Some(&phone_ns),
        &web,
        &sub(&tmp, "dl1"),
        Some(&tmp.path().join("shot.png")),
    );
    assert_eq!(got.state(), "saved", "{}", got.json);
    let saved = got.saved();
    assert_eq!(saved.file_name().unwrap(), "video.bin");
    assert!(fs::read(&saved).unwrap() == data, "the saved file differs");
    // The screenshot is refreshed only on request, so a test run leaves the
    // checkout clean.
    if std::env::var_os("PEERDROP_WEB_SCREENSHOT").is_some() {
        fs::copy(tmp.path().join("shot.png"), &shot).unwrap();
    }

    // The same share through `peerdrop receive`, from the same namespace.
    let dest = sub(&tmp, "cli");
    fs::create_dir_all(&dest).unwrap();
    let start = Instant::now();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &phone_ns,
            BIN,
            "receive",
            "--no-mdns",
            "-o",
        ])
        .arg(&dest)
        .arg(&link)
        .output()
        .unwrap();
    let cli = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(dest.join("video.bin")).unwrap() == data);
    let mib = data.len() as f64 / (1 << 20) as f64;
    let page_s = got.json["ms"].as_f64().unwrap() / 1000.0;
    eprintln!(
        "64 MiB: page (headless chromium, verify+decrypt in JS) {:.1} MiB/s in {page_s:.2} s; \
         peerdrop receive {:.1} MiB/s in {:.2} s (whole process); page/CLI = {:.2}",
        mib / page_s,
        mib / cli.as_secs_f64(),
        cli.as_secs_f64(),
        cli.as_secs_f64() / page_s
    );

    // A folder of 200 small files, in subfolders, saved as one zip.
    let root = sub(&tmp, "photos");
    let mut tree = Tree::new();
    tree.insert("raw".into(), (true, false, vec![]));
    tree.insert("empty".into(), (true, false, vec![]));
    for i in 0..200u64 {
        let name = if i % 4 == 0 {
            format!("raw/img-{i:03}.dat")
        } else {
            format!("img-{i:03}.jpg")
        };
        tree.insert(name, (false, i == 7, bytes(i, (i as usize * 997) % 20_000)));
    }
    write_tree(&root, &tree);
    let (_s2, _, web) = send_web(&sender_ns, "10.231.14.1", &[&root]);
    let got = open_in_browser(Some(&phone_ns), &web, &sub(&tmp, "dl2"), None);
    assert_eq!(got.state(), "saved", "{}", got.json);
    let zip = got.saved();
    assert_eq!(zip.file_name().unwrap(), "photos.zip");
    let entries = unzip(&fs::read(&zip).unwrap());
    let mut want: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    want.insert("photos".into(), None);
    for (p, (dir, _, d)) in &tree {
        want.insert(format!("photos/{p}"), (!dir).then(|| d.clone()));
    }
    assert_eq!(entries.len(), 203);
    assert!(entries == want, "the zip's entries differ from the folder");
}

/// Serves a share with one content chunk corrupted, as a broken or
/// malicious sender would.
struct Corrupting {
    inner: Arc<dyn Provider>,
    victim: ChunkId,
}

impl Provider for Corrupting {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.inner.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.inner.have(share)
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        let mut c = self.inner.chunk(share, chunk)?;
        if *chunk == self.victim {
            c[40] ^= 1;
        }
        Ok(c)
    }
}

/// Serves manifests and chunks from memory (a format vector).
struct Fixed {
    manifest: Arc<[u8]>,
    chunks: std::collections::HashMap<ChunkId, Vec<u8>>,
}

impl Provider for Fixed {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        (ManifestId::of(&self.manifest) == *share).then(|| self.manifest.clone())
    }
    fn have(&self, _: &ManifestId) -> Option<Have> {
        Some(Have::All)
    }
    fn chunk(&self, _: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        self.chunks.get(chunk).cloned().ok_or(Refusal::NotFound)
    }
}

fn unhex32(s: &str) -> [u8; 32] {
    peerdrop::chunk::unhex(s).unwrap().try_into().unwrap()
}

/// Starts the web server on loopback in a runtime of its own.
fn serve_local(p: Arc<dyn Provider>) -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt
        .block_on(peerdrop::web::spawn(
            "127.0.0.1:0".parse().unwrap(),
            p,
            peerdrop::web::WebConfig::default(),
        ))
        .unwrap();
    (rt, addr)
}

#[test]
fn the_page_refuses_corrupt_chunks_wrong_keys_and_hostile_names() {
    if !browser_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = sub(&tmp, "src").join("report.pdf");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, bytes(3, (3 << 20) + 5)).unwrap();
    let (key, share) = local_share(&[file]);
    let id = share.id();
    let victim = share.manifest().chunks(Stream::Content)[1];
    let corrupting = Corrupting {
        inner: provider(share),
        victim,
    };
    let (_rt, addr) = serve_local(Arc::new(corrupting));

    // A corrupted chunk: stopped, named, and nothing saved.
    let out = sub(&tmp, "dl-corrupt");
    let got = open_in_browser(None, &peerdrop::web::web_link(addr, &id, &key), &out, None);
    assert_eq!(got.state(), "error", "{}", got.json);
    assert_eq!(
        got.error(),
        "the data received for content chunk 1 does not match its id; \
         the source sent corrupt or wrong data. Nothing was saved."
    );
    assert!(got.downloads().is_empty(), "{}", got.json);
    assert!(
        names_in(&out).is_empty(),
        "something was saved: {:?}",
        names_in(&out)
    );

    // A wrong key: the commitment check fails before any chunk is fetched.
    let wrong = ShareKey::generate().unwrap();
    let got = open_in_browser(
        None,
        &peerdrop::web::web_link(addr, &id, &wrong),
        &sub(&tmp, "dl-key"),
        None,
    );
    assert_eq!(got.state(), "error");
    assert!(
        got.error()
            .starts_with("wrong key: the key in the link does not belong to this share"),
        "{}",
        got.json
    );
    let chunk_requests = got
        .requests
        .iter()
        .filter(|u| u.contains("/v1/chunk/"))
        .count();
    assert_eq!(chunk_requests, 0, "chunks were fetched with a wrong key");

    // A hostile name ("../evil"): the page refuses it with the message the
    // CLI gives (tests/vectors.rs checks the CLI's side of this vector).
    let vectors: Value = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/format-v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let v = vectors["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "path-traversal")
        .unwrap();
    let fixed = Fixed {
        manifest: peerdrop::chunk::unhex(v["manifest"].as_str().unwrap())
            .unwrap()
            .into(),
        chunks: v["chunks"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, c)| {
                (
                    ChunkId(unhex32(id)),
                    peerdrop::chunk::unhex(c.as_str().unwrap()).unwrap(),
                )
            })
            .collect(),
    };
    let link: peerdrop::link::Link = v["link"].as_str().unwrap().parse().unwrap();
    let (_rt2, addr2) = serve_local(Arc::new(fixed));
    let out = sub(&tmp, "dl-hostile");
    let got = open_in_browser(
        None,
        &peerdrop::web::web_link(addr2, link.manifest_id(), link.key().unwrap()),
        &out,
        None,
    );
    assert_eq!(got.state(), "error");
    let cli = v["expect"]["error"].as_str().unwrap();
    assert!(cli.contains("\"../evil\" is unsafe"), "{cli}");
    assert_eq!(got.error(), format!("{cli}. Nothing was saved."));
    assert!(got.downloads().is_empty() && names_in(&out).is_empty());
}

/// A daemon with `web = true` serves its shares to browsers too: `share
/// --web` prints the web link next to the read link, `status` says where,
/// and chromium saves the file byte-identical through the daemon's server.
#[test]
fn a_daemon_with_web_on_serves_its_shares_to_chromium() {
    if !browser_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = sub(&tmp, "node");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("peerdrop.toml"),
        "web = true\nweb_listen = \"127.0.0.1:0\"\nmdns = false\n",
    )
    .unwrap();
    let d = common::daemon::Daemon::start(&dir);
    let web = d.json(&["status"])["web"].as_str().unwrap().to_owned();
    assert!(web.starts_with("127.0.0.1:"), "{web}");

    let file = sub(&tmp, "src").join("notes.bin");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let data = bytes(21, (5 << 20) + 321);
    fs::write(&file, &data).unwrap();
    let reply = d.json(&["share", "--web", file.to_str().unwrap()]);
    let link = reply["link"].as_str().unwrap();
    let web_link = reply["web_link"].as_str().unwrap();
    assert!(
        web_link.starts_with(&format!("http://{web}/#1/")),
        "{web_link}"
    );
    // The same share: the web link's key is the read link's.
    let parsed: peerdrop::link::Link = link.parse().unwrap();
    assert_eq!(
        web_link,
        peerdrop::web::web_link(
            web.parse().unwrap(),
            parsed.manifest_id(),
            parsed.key().unwrap()
        )
    );
    // Printed for people as send --web prints it: the link, then the web link.
    let out = common::daemon::cli(&dir, &["share", "--web", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::daemon::err(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("peerdrop:"), "{text}");
    assert!(lines[1].starts_with(&format!("http://{web}/#1/")), "{text}");

    let got = open_in_browser(None, web_link, &sub(&tmp, "dl"), None);
    assert_eq!(got.state(), "saved", "{}", got.json);
    let saved = got.saved();
    assert_eq!(saved.file_name().unwrap(), "notes.bin");
    assert!(fs::read(&saved).unwrap() == data, "the saved file differs");

    // Without web = true, `share --web` says what to change.
    let plain = sub(&tmp, "plain");
    let d2 = common::daemon::Daemon::start(&plain);
    let out = common::daemon::cli(&plain, &["share", "--web", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        common::daemon::err(&out).contains("set `web = true` in its peerdrop.toml"),
        "{}",
        common::daemon::err(&out)
    );
    assert!(d2.json(&["status"])["web"].is_null());
}

/// One HTTP/1.1 request to `addr` (the whole request text, `Connection:
/// close` added) and the answer's status and text; bounded by socket
/// deadlines.
fn http(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = head.trim_end().replace('\n', "\r\n");
    req.push_str(&format!(
        "\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    if body.is_empty() && head.starts_with("GET") {
        req = req.replace("Content-Length: 0\r\n", "");
    }
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, text)
}

/// The body of an HTTP answer.
fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// `peerdrop ui`'s link, split into the listener's address and the token.
fn ui_link_of(dir: &Path) -> (String, String, String) {
    let out = common::daemon::cli(dir, &["ui"]);
    assert!(out.status.success(), "{}", common::daemon::err(&out));
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let rest = link.strip_prefix("http://").unwrap();
    let (addr, token) = rest.split_once("/?token=").unwrap();
    (link.clone(), addr.to_owned(), token.to_owned())
}

/// The UI listens on loopback only and answers nothing without its token,
/// from another origin, or under another host name (DNS rebinding); with
/// them it answers control requests exactly as the socket does and takes
/// uploads, bounded in size and refusing unsafe names.
#[test]
fn the_ui_needs_its_token_its_origin_and_its_host() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sub(&tmp, "node");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("peerdrop.toml"), "ui_max_upload = 1000\n").unwrap();
    let d = common::daemon::Daemon::start(&dir);
    let (link, addr, token) = ui_link_of(&dir);
    assert!(addr.starts_with("127.0.0.1:"), "{link}");
    assert_eq!(d.json(&["status"])["ui"].as_str(), Some(addr.as_str()));
    assert_eq!(token.len(), 64);
    // Kept owner-only, and the same link after a restart.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir.join("ui.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let host = format!("Host: {addr}");
    let origin = format!("Origin: http://{addr}");
    let tok = format!("X-Peerdrop-Token: {token}");

    // The page, with its token in its own URLs, and the strict headers.
    let (code, page) = http(&addr, &format!("GET /?token={token} HTTP/1.1\n{host}"), b"");
    assert_eq!(code, 200, "{page}");
    assert!(body_of(&page).contains(&format!("/ui.js?token={token}")));
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains(&format!(
        "content-security-policy: {}",
        peerdrop::web::CSP.to_ascii_lowercase()
    )));
    assert!(lower.contains("cache-control: no-store"));
    assert!(lower.contains("referrer-policy: no-referrer"));
    let (code, _) = http(
        &addr,
        &format!("GET /ui.js?token={token} HTTP/1.1\n{host}"),
        b"",
    );
    assert_eq!(code, 200);

    // Refused: no token, a wrong one, another origin, another host.
    let list = br#"{"version":1,"cmd":"list"}"#;
    let json = "Content-Type: application/json";
    let post = |extra: &str| http(&addr, &format!("POST /api/control HTTP/1.1\n{extra}"), list);
    let mut wrong = token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
    let wrong = format!("X-Peerdrop-Token: {}", String::from_utf8(wrong).unwrap());
    for (what, headers, want) in [
        ("no token", format!("{host}\n{origin}\n{json}"), 401),
        (
            "a wrong token",
            format!("{host}\n{origin}\n{json}\n{wrong}"),
            403,
        ),
        (
            "another origin",
            format!("{host}\nOrigin: http://evil.example\n{json}\n{tok}"),
            403,
        ),
        (
            "a cross-site fetch",
            format!("{host}\nSec-Fetch-Site: cross-site\n{json}\n{tok}"),
            403,
        ),
        (
            "a rebound host name",
            format!(
                "Host: evil.example:{}\n{json}\n{tok}",
                addr.rsplit(':').next().unwrap()
            ),
            421,
        ),
        ("no host", format!("{json}\n{tok}"), 421),
        (
            "not JSON",
            format!("{host}\n{origin}\n{tok}\nContent-Type: text/plain"),
            415,
        ),
    ] {
        let (code, answer) = post(&headers);
        assert_eq!(code, want, "{what}: {answer}");
        assert!(
            !body_of(&answer).contains("\"ok\""),
            "{what} was answered: {answer}"
        );
    }
    let (code, _) = http(&addr, &format!("GET / HTTP/1.1\n{host}"), b"");
    assert_eq!(code, 401, "the page without its token");

    // Allowed: the control protocol's own answers, errors included.
    let (code, answer) = post(&format!("{host}\n{origin}\n{json}\n{tok}"));
    assert_eq!(code, 200, "{answer}");
    let reply: Value = serde_json::from_str(body_of(&answer).trim()).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(reply["shares"].as_array().unwrap().is_empty());
    let (_, answer) = http(
        &addr,
        &format!("POST /api/control?token={token} HTTP/1.1\n{host}\n{json}"),
        br#"{"version":1,"cmd":"nope"}"#,
    );
    let reply: Value = serde_json::from_str(body_of(&answer).trim()).unwrap();
    assert_eq!(reply["code"], "bad_request", "{reply}");

    // An upload is stored in the data dir and shared from there.
    let upload = |name: &str, data: &[u8]| {
        http(
            &addr,
            &format!("POST /api/upload?name={name} HTTP/1.1\n{host}\n{origin}\n{tok}"),
            data,
        )
    };
    let (code, answer) = upload("hello%20there.txt", b"hello from the UI");
    assert_eq!(code, 200, "{answer}");
    let reply: Value = serde_json::from_str(body_of(&answer).trim()).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["files"], 1);
    let list = d.json(&["list"]);
    assert_eq!(list["shares"][0]["names"][0], "hello there.txt", "{list}");
    let stored: Vec<PathBuf> = fs::read_dir(dir.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().path().join("hello there.txt"))
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(fs::read(&stored[0]).unwrap(), b"hello from the UI");
    // Too large, or a name the share format refuses: nothing kept.
    let (code, _) = upload("big.bin", &[7; 1001]);
    assert_eq!(code, 413);
    for bad in ["..", "a%2Fb", "%2E%2E%2Fx", "CON"] {
        let (code, answer) = upload(bad, b"x");
        assert_eq!(code, 400, "{bad}: {answer}");
    }
    assert_eq!(fs::read_dir(dir.join("uploads")).unwrap().count(), 1);
    // The data dir itself is still refused.
    let (_, answer) = http(
        &addr,
        &format!("POST /api/control HTTP/1.1\n{host}\n{origin}\n{tok}\n{json}"),
        format!(
            r#"{{"version":1,"cmd":"share","paths":[{:?}]}}"#,
            dir.join("uploads").to_str().unwrap()
        )
        .as_bytes(),
    );
    assert!(
        body_of(&answer).contains("\"code\":\"invalid\""),
        "{answer}"
    );

    // Unsharing it removes the stored copy.
    d.json(&["unshare", reply["id"].as_str().unwrap()]);
    assert_eq!(fs::read_dir(dir.join("uploads")).unwrap().count(), 0);

    // A QR code of a link, as SVG.
    let (code, answer) = http(
        &addr,
        &format!("POST /api/qr HTTP/1.1\n{host}\n{origin}\n{tok}"),
        reply["link"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(code, 200);
    assert!(body_of(&answer).contains("<svg"), "{answer}");

    // The token survives a restart; a UI not on loopback is refused.
    drop(d);
    let d = common::daemon::Daemon::start(&dir);
    assert_eq!(ui_link_of(&dir).2, token);
    drop(d);
    fs::write(dir.join("peerdrop.toml"), "ui_listen = \"0.0.0.0:0\"\n").unwrap();
    let mut c = Command::new(BIN);
    c.args([
        "daemon",
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--data-dir",
    ])
    .arg(&dir);
    let out = common::daemon::bounded(c);
    assert!(!out.status.success());
    assert!(
        common::daemon::err(&out).contains("is not a loopback address"),
        "{}",
        common::daemon::err(&out)
    );
}

/// The local UI in chromium: on daemon A's UI a file is shared by its path
/// and listed with its link and QR code, and another is shared by dropping
/// it; on daemon B's UI that link is fetched (through B, from A) until
/// done, byte-identical, and a fetch of a link nobody serves is cancelled.
/// Every request stays on the UI's origin, with no Referer, and the
/// console shows no CSP violation.
#[test]
fn the_ui_in_chromium_shares_fetches_and_cancels() {
    if !browser_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = sub(&tmp, "a");
    let b_dir = sub(&tmp, "b");
    let a = common::daemon::Daemon::start(&a_dir);
    let b = common::daemon::Daemon::start(&b_dir);
    let (a_link, a_addr, _) = ui_link_of(&a_dir);
    let (b_link, b_addr, _) = ui_link_of(&b_dir);

    let file = sub(&tmp, "src").join("report.pdf");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let data = bytes(31, (3 << 20) + 77);
    fs::write(&file, &data).unwrap();
    // A link nobody serves: sealed into a folder no node reads.
    let mut seal = Command::new(BIN);
    seal.arg("seal")
        .arg(&file)
        .arg("--out")
        .arg(sub(&tmp, "sealed"));
    let out = common::daemon::bounded(seal);
    assert!(out.status.success(), "{}", common::daemon::err(&out));
    let stuck = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let got_dir = sub(&tmp, "got");
    let stuck_dir = sub(&tmp, "stuck");
    let shot = tmp.path().join("ui.png");
    let json = run_script(
        None,
        "ui.mjs",
        &serde_json::json!({
            "a": a_link, "b": b_link, "chromium": CHROMIUM, "timeoutMs": 150_000,
            "sharePath": file, "shareName": "report.pdf",
            "dropName": "dropped.txt", "dropText": "dropped on the UI\n",
            "fetchOut": got_dir, "stuckLink": stuck, "stuckOut": stuck_dir,
            "screenshot": shot, "screenshotB": tmp.path().join("ui-jobs.png"),
        }),
    );
    let (json, _) = checked_requests(
        json,
        &[&format!("http://{a_addr}/"), &format!("http://{b_addr}/")],
        // The share's key: the page never sends it anywhere but to the
        // daemon that runs the fetch, and only in a request body.
        "#",
    );
    assert_eq!(json["errorA"], Value::Null, "{json}");
    assert_eq!(json["errorB"], Value::Null, "{json}");

    // Listed with its link: the daemon's own read link for the share.
    let id = json["shareId"].as_str().unwrap();
    let want = a.json(&["link", id])["link"].as_str().unwrap().to_owned();
    assert!(same_share(json["link"].as_str().unwrap(), &want), "{json}");
    // Dropped: stored under A's uploads/, shared from there.
    let list = a.json(&["list"]);
    let dropped = json["droppedId"].as_str().unwrap();
    let row = list["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == dropped)
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(row["names"][0], "dropped.txt");
    assert!(same_share(
        json["droppedLink"].as_str().unwrap(),
        a.json(&["link", dropped])["link"].as_str().unwrap()
    ));
    // Fetched through B, byte-identical.
    assert_eq!(json["fetchState"], "done", "{json}");
    assert!(fs::read(got_dir.join("report.pdf")).unwrap() == data);
    // Cancelled, and nothing of it written.
    assert_eq!(json["stuckState"], "cancelled", "{json}");
    let fetches = b.json(&["list"])["fetches"].clone();
    let stuck_row = fetches
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == json["stuckId"])
        .unwrap_or_else(|| panic!("{fetches}"));
    assert_eq!(stuck_row["status"]["state"], "cancelled");
    assert!(!stuck_dir.exists() || final_names_in(&stuck_dir).is_empty());
    if std::env::var_os("PEERDROP_WEB_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        fs::copy(&shot, docs.join("ui.png")).unwrap();
        fs::copy(tmp.path().join("ui-jobs.png"), docs.join("ui-jobs.png")).unwrap();
    }
}

/// Whether two read links name the same share with the same key (their
/// peer hints change as the node learns its addresses).
fn same_share(a: &str, b: &str) -> bool {
    let a: peerdrop::link::Link = a.parse().unwrap();
    let b: peerdrop::link::Link = b.parse().unwrap();
    a.manifest_id() == b.manifest_id()
        && a.key().unwrap().expose_secret() == b.key().unwrap().expose_secret()
}
