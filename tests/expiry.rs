//! Expiry and download limits (issue 13 item 6; docs/FORMAT.md 7.6): an
//! expired share is refused by its sharer and by an honest pinner, a fetcher
//! refuses it by its link before any traffic, `--max-downloads 1` refuses
//! a second receiver, and `inspect` shows the expiry.
//!
//! Loopback only, no mDNS. Expiries are a few seconds away; waiting for one
//! is waiting for a clock to pass a time the test set, with a deadline.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::net::{fetch_link, impatient, link_for, quick, start_server, Server};
use common::*;
use futures::AsyncWriteExt;
use peerdrop::crypto::{DoneKey, ShareKey};
use peerdrop::link::{ExpiryError, Link};
use peerdrop::manifest::Expiry;
use peerdrop::net::fetch::FetchError;
use peerdrop::net::frame::{read_msg, write_msg};
use peerdrop::net::node::{self, Client, NodeConfig, XFER};
use peerdrop::net::serve::{LocalProvider, Provider};
use peerdrop::seal::SealOptions;
use peerdrop::store::share::LocalShare;
use peerdrop::wire::{Have, Request, Response};

const BIN: &str = env!("CARGO_BIN_EXE_peerdrop");
const LIMIT: Duration = Duration::from_secs(120);

/// A child process killed (by its own PID) when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `e` has passed by this machine's clock, at most `limit`
/// after it.
async fn wait_past(e: Expiry, limit: Duration) {
    let deadline = Instant::now() + e.remaining() + limit;
    while !e.passed() {
        assert!(Instant::now() < deadline, "the clock did not reach {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one request to `server` on a fresh stream and reads the answer's
/// header (a manifest's or chunk's bytes are not read).
async fn ask(client: &Client, server: &Server, req: Request) -> Option<Response> {
    client
        .dial(server.addr.peer, server.addr.addrs.clone())
        .await
        .unwrap();
    let mut s = client
        .control()
        .open_stream(server.addr.peer, XFER)
        .await
        .unwrap();
    write_msg(&mut s, &req).await.unwrap();
    s.flush().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), read_msg::<_, Response>(&mut s))
        .await
        .expect("the server answers in time")
        .unwrap();
    let _ = s.close().await;
    answer
}

/// A 200 KiB file sealed in 16 KiB chunks, expiring `expires`.
fn share_file(tmp: &tempfile::TempDir, expires: Option<Expiry>) -> (ShareKey, LocalShare) {
    let f = sub(tmp, "report.bin");
    fs::write(&f, bytes(7, 200 << 10)).unwrap();
    let key = ShareKey::generate().unwrap();
    let opts = SealOptions {
        chunk_size: peerdrop::chunk::ChunkSize::from_log2(14),
        expires,
        ..SealOptions::default()
    };
    let share = LocalShare::create(&[f], &key, &opts, |_| {}).unwrap();
    (key, share)
}

/// The sharer serves a share until its expiry, then answers every request
/// naming it `NotFound`, the holder question too; a fetcher whose link
/// states the expiry refuses at once, without asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_share_is_refused_by_its_sharer() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let expires = Expiry::after(SystemTime::now(), Duration::from_secs(4)).unwrap();
        let (key, share) = share_file(&tmp, Some(expires));
        assert_eq!(share.manifest().expires, Some(expires));
        let (id, chunk) = (share.id(), share.manifest().content_chunks[0]);
        let server = start_server(
            "/ip4/127.0.0.1/tcp/0",
            Arc::new(LocalProvider::new(share, None)),
        )
        .await;
        let link = link_for(&key, id, &[&server]).with_expiry(Some(expires));
        let asker = node::spawn(NodeConfig::default()).unwrap();
        let holder = Request::Holder {
            locator: id.locator(),
            nonce: [5; 32],
        };

        // Before: served, and fetched byte for byte.
        assert!(matches!(
            ask(&asker, &server, Request::Manifest { share: id }).await,
            Some(Response::Manifest { .. })
        ));
        assert!(matches!(
            ask(&asker, &server, holder.clone()).await,
            Some(Response::Holder { .. })
        ));
        let dest = tempfile::tempdir().unwrap();
        let (got, _) = fetch_link(&link, dest.path(), &quick()).await;
        got.expect("fetched before the expiry");
        assert_eq!(
            fs::read(dest.path().join("report.bin")).unwrap(),
            bytes(7, 200 << 10)
        );
        assert!(!expires.passed(), "the fetch took longer than the expiry");

        wait_past(expires, Duration::from_secs(10)).await;
        for req in [
            Request::Manifest { share: id },
            Request::Have { share: id },
            Request::Chunk { share: id, chunk },
            Request::DoneChallenge { share: id },
            holder,
        ] {
            assert_eq!(
                ask(&asker, &server, req.clone()).await,
                Some(Response::NotFound),
                "{req:?} after the expiry"
            );
        }

        // The link says it expired: refused before any traffic.
        let started = Instant::now();
        let (got, events) = fetch_link(&link, tempfile::tempdir().unwrap().path(), &quick()).await;
        assert!(
            matches!(got, Err(FetchError::Expiry(ExpiryError::Expired(e))) if e == expires),
            "{got:?}"
        );
        assert!(events.is_empty(), "{events:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(got
            .unwrap_err()
            .to_string()
            .starts_with(&format!("this share expired at {expires}")));
        // A link that does not state it gets nothing from the sharer.
        let silent = link_for(&key, id, &[&server]);
        let (got, _) = fetch_link(&silent, tempfile::tempdir().unwrap().path(), &impatient()).await;
        assert!(got.is_err(), "fetched an expired share");
        asker.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

/// `--max-downloads 1`: once one receiver proved it holds everything, the
/// sharer serves nothing more, so a second receiver is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_downloads_one_refuses_a_second_receiver() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let (key, share) = share_file(&tmp, None);
        let id = share.id();
        let provider =
            Arc::new(LocalProvider::new(share, None).with_max_downloads(DoneKey::new(&key), 1));
        let server = start_server("/ip4/127.0.0.1/tcp/0", provider.clone()).await;
        let link = link_for(&key, id, &[&server]);
        assert_eq!(provider.have(&id), Some(Have::All));

        let first = tempfile::tempdir().unwrap();
        let (got, _) = fetch_link(&link, first.path(), &quick()).await;
        got.expect("the first receiver fetches");
        // Its proven `Done` is acknowledged before the fetch returns.
        assert_eq!(provider.downloads(), 1);
        assert!(provider.used_up());

        let asker = node::spawn(NodeConfig::default()).unwrap();
        assert_eq!(
            ask(&asker, &server, Request::Manifest { share: id }).await,
            Some(Response::NotFound)
        );
        let second = tempfile::tempdir().unwrap();
        let (got, _) = fetch_link(&link, second.path(), &impatient()).await;
        assert!(got.is_err(), "a second receiver fetched");
        assert_eq!(final_names_in(second.path()), Vec::<String>::new());
        asker.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

/// `peerdrop send --expire EXPIRE --json` of `file` on loopback: the
/// process, its link, and its later JSON lines.
fn send_expiring(file: &std::path::Path, expire: &str) -> (Proc, String, Receiver<String>) {
    let mut c = Command::new(BIN);
    c.arg("send")
        .arg(file)
        .args(["--expire", expire, "--json", "--no-mdns"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut sender = Proc(c.spawn().unwrap());
    let mut out = BufReader::new(sender.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let link = v["link"].as_str().unwrap().to_owned();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    (sender, link, lines)
}

/// Runs the CLI with `args`, bounded.
fn peerdrop(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("PEERDROP_LINK");
    common::daemon::bounded(c)
}

/// `send --expire`: the link states the expiry, `inspect` shows it, the
/// sender stops by itself then, and a receive of the link is refused at
/// once, saying why.
#[test]
fn send_expire_is_shown_by_inspect_and_ends_the_share() {
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "notes.txt");
    fs::write(&f, b"gone soon").unwrap();
    let (mut sender, link, lines) = send_expiring(&f, "3s");
    let parsed = Link::parse_read_link(&link).unwrap();
    let expires = parsed.expires().expect("the link states the expiry");
    assert!(
        link.contains(&format!("?expires={}#", expires.unix())),
        "{link}"
    );

    let shown = peerdrop(&["inspect", "--json", &link]);
    assert!(shown.status.success());
    let j: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(j["expires"], expires.to_string());
    assert_eq!(j["expires_unix"], expires.unix());
    assert_eq!(j["expired"], false);
    let text = peerdrop(&["inspect", &link]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("expires:     {expires} (in ")),
        "{text}"
    );

    // The sender says it expired, and exits by itself.
    let deadline = Instant::now() + expires.remaining() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = lines
            .recv_timeout(left)
            .expect("the sender says it expired, in time");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v["event"] == "expired" {
            assert_eq!(v["at"], expires.to_string());
            break;
        }
    }
    assert!(expires.passed());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = sender.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the sender did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    let shown = peerdrop(&["inspect", "--json", &link]);
    let j: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(j["expired"], true);
    let dest = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let got = peerdrop(&[
        "receive",
        "--no-mdns",
        "--yes",
        "--wait",
        "30",
        "-o",
        dest.path().to_str().unwrap(),
        &link,
    ]);
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(!got.status.success());
    assert!(
        err.contains(&format!("this share expired at {expires}")),
        "{err}"
    );
    // Refused by the link, not after waiting for a source.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(final_names_in(dest.path()), Vec::<String>::new());
}

/// An honest pinner holds the ciphertext of a share that expires, and
/// serves it until then; from the expiry on it answers `NotFound`, the
/// holder question too, though it never had the key (the expiry is in the
/// manifest it verified).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_share_is_refused_by_an_honest_pinner() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "slides.pdf");
        fs::write(&f, bytes(9, 300 << 10)).unwrap();
        let (sender, link, _lines) = send_expiring(&f, "12s");
        let link = Link::parse_read_link(&link).unwrap();
        let expires = link.expires().unwrap();
        let id = *link.manifest_id();
        let pin_link = link.to_pin_link().to_uri_string();
        assert!(pin_link.ends_with(&format!("?expires={}", expires.unix())));

        let pinner = common::daemon::Daemon::start(&sub(&tmp, "pinner"));
        let o = common::daemon::cli(&pinner.dir, &["pin", &pin_link]);
        assert!(o.status.success(), "{}", common::daemon::err(&o));
        // The sharer is gone: only the pinner can answer now.
        drop(sender);
        let status = pinner.json(&["status"]);
        let server = Server {
            client: node::spawn(NodeConfig::default()).unwrap(),
            addr: peerdrop::net::PeerAddr {
                peer: status["peer_id"].as_str().unwrap().parse().unwrap(),
                addrs: vec![status["listen"][0].as_str().unwrap().parse().unwrap()],
            },
        };
        let asker = &server.client;
        let holder = Request::Holder {
            locator: id.locator(),
            nonce: [6; 32],
        };
        assert!(matches!(
            ask(asker, &server, Request::Manifest { share: id }).await,
            Some(Response::Manifest { .. })
        ));
        assert!(matches!(
            ask(asker, &server, holder.clone()).await,
            Some(Response::Holder { .. })
        ));
        assert!(!expires.passed(), "pinning took longer than the expiry");

        wait_past(expires, Duration::from_secs(10)).await;
        for req in [
            Request::Manifest { share: id },
            Request::Have { share: id },
            holder,
        ] {
            assert_eq!(
                ask(asker, &server, req.clone()).await,
                Some(Response::NotFound),
                "{req:?} after the expiry"
            );
        }
        assert_eq!(pinner.json(&["list"])["pins"][0]["expired"], true);
        server.client.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

/// `peerdrop receive LINK -o DEST` on loopback, without asking.
fn receive_into(link: &str, dest: &std::path::Path) -> std::process::Output {
    peerdrop(&[
        "receive",
        "--no-mdns",
        "--yes",
        "--wait",
        "5",
        "-o",
        dest.to_str().unwrap(),
        link,
    ])
}

/// The daemon's `share --expire --max-downloads 1`: the link states the
/// expiry, one receiver gets the share, `list` then says `used_up` and a
/// second receiver is refused; after the expiry `list` says `expired`.
#[test]
fn a_daemon_share_is_used_up_then_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "minutes.txt");
    fs::write(&f, b"for one reader only").unwrap();
    let d = common::daemon::Daemon::start(&sub(&tmp, "daemon"));
    let r = d.json(&[
        "share",
        f.to_str().unwrap(),
        "--expire",
        "8s",
        "--max-downloads",
        "1",
    ]);
    let link = r["link"].as_str().unwrap().to_owned();
    let expires = Link::parse_read_link(&link).unwrap().expires().unwrap();
    let state = || d.json(&["list"])["shares"][0]["state"].clone();
    assert_eq!(state(), "serving");
    // `link` gives it again with the expiry.
    let id = r["id"].as_str().unwrap();
    let again = d.json(&["link", &id[..12]])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        again.contains(&format!("?expires={}#", expires.unix())),
        "{again}"
    );

    let receive = |dest: &std::path::Path| receive_into(&link, dest);
    let first = tempfile::tempdir().unwrap();
    let o = receive(first.path());
    assert!(o.status.success(), "{}", common::daemon::err(&o));
    assert_eq!(
        fs::read(first.path().join("minutes.txt")).unwrap(),
        b"for one reader only"
    );
    assert_eq!(state(), "used_up");
    let second = tempfile::tempdir().unwrap();
    let o = receive(second.path());
    assert!(!o.status.success(), "a second receiver got it");
    assert_eq!(final_names_in(second.path()), Vec::<String>::new());

    let deadline = Instant::now() + expires.remaining() + Duration::from_secs(10);
    while !expires.passed() {
        assert!(
            Instant::now() < deadline,
            "the clock did not reach {expires}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state(), "expired");
}

/// Issue 13: the daemon keeps its count of distinct receivers across a
/// restart. With `--max-downloads 2`, one receiver before a restart and one
/// after use the share up, and a third is refused.
#[test]
fn a_daemon_keeps_its_download_count_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "minutes.txt");
    fs::write(&f, b"for two readers").unwrap();
    let dir = sub(&tmp, "daemon");
    let mut d = common::daemon::Daemon::start(&dir);
    let r = d.json(&["share", f.to_str().unwrap(), "--max-downloads", "2"]);
    let link = r["link"].as_str().unwrap().to_owned();
    let receive = |dest: &std::path::Path| receive_into(&link, dest);
    let first = tempfile::tempdir().unwrap();
    let o = receive(first.path());
    assert!(o.status.success(), "{}", common::daemon::err(&o));
    let state = |d: &common::daemon::Daemon| d.json(&["list"])["shares"][0]["state"].clone();
    assert_eq!(state(&d), "serving");
    // The count is saved once the receiver's proven Done is counted, which
    // is before its receive returns; the save itself follows at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let saved = || {
        fs::read_dir(&dir).unwrap().any(|e| {
            let p = e.unwrap().path();
            p.is_file() && fs::read_to_string(&p).is_ok_and(|t| t.contains("downloaded_by"))
        })
    };
    while !saved() {
        assert!(Instant::now() < deadline, "the count was never saved");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
    let d = common::daemon::Daemon::start(&dir);
    assert_eq!(state(&d), "serving");
    let row = &d.json(&["list"])["shares"][0];
    assert_eq!(
        (&row["downloads"], &row["max_downloads"]),
        (&1.into(), &2.into()),
        "{row}"
    );
    let second = tempfile::tempdir().unwrap();
    let o = receive(second.path());
    assert!(o.status.success(), "{}", common::daemon::err(&o));
    assert_eq!(state(&d), "used_up", "the first receiver was forgotten");
    let third = tempfile::tempdir().unwrap();
    let o = receive(third.path());
    assert!(!o.status.success(), "a third receiver got it");
    assert_eq!(final_names_in(third.path()), Vec::<String>::new());
}

/// Issue 13: a daemon's share stops being announced in the DHT once it
/// expires. A node that knows only the daemon finds it as a provider of the
/// share's locator before the expiry and no longer after it (the daemon
/// dropped its own provider record, so it neither answers with it nor
/// re-publishes it), while `list` shows the share `expired`.
#[test]
fn an_expired_daemon_share_is_no_longer_announced() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "soon.txt");
    fs::write(&f, b"announced for a while").unwrap();
    // A DHT server, so that it answers lookups (on loopback AutoNAT never
    // finds it public).
    let dir = sub(&tmp, "daemon");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("peerdrop.toml"), "dht_server = true\n").unwrap();
    let d = common::daemon::Daemon::start(&dir);
    let r = d.json(&["share", f.to_str().unwrap(), "--expire", "8s"]);
    let link = Link::parse_read_link(r["link"].as_str().unwrap()).unwrap();
    let expires = link.expires().unwrap();
    let locator = link.manifest_id().locator().to_vec();
    let daemon: peerdrop::net::PeerId = d.json(&["status"])["peer_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let addr: peerdrop::net::Multiaddr = d.addr().parse().unwrap();
    rt.block_on(async {
        tokio::time::timeout(LIMIT, async {
            let asker = node::spawn(NodeConfig {
                bootstrap: vec![addr],
                ..NodeConfig::default()
            })
            .unwrap();
            let provides = || async {
                asker
                    .providers(locator.clone())
                    .await
                    .unwrap_or_default()
                    .contains(&daemon)
            };
            // The announcement is made when the share is; the lookup may
            // start before the bootstrap connection is up.
            while !provides().await {
                assert!(!expires.passed(), "never found before the expiry");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            wait_past(expires, LIMIT).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            while provides().await {
                assert!(
                    Instant::now() < deadline,
                    "still announced 30 s after the expiry"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            asker.shutdown().await;
        })
        .await
        .expect("within the time limit");
    });
    assert_eq!(d.json(&["list"])["shares"][0]["state"], "expired");
}
