//! Crash campaigns: `kill -9` of a receiving process, and of a fetching
//! daemon, at seeded random points. After every kill nothing unverified sits
//! at a final path; every run resumes from what the last one verified; the
//! last run ends byte-identical to the source.
//!
//! `cargo test` runs a short campaign (a few kills, a fresh seed each time,
//! printed). scripts/campaigns.sh runs the long one: 20 kills each, over
//! several seeds. Loopback only, mDNS off.

#[path = "common/campaign.rs"]
mod campaign;
mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use campaign::*;
use common::daemon::{err, fetch, Daemon};
use common::*;

/// A tree with several files, one empty, one odd-sized, and an empty folder,
/// so kills land before, inside and between files.
fn source(root: &Path) -> Tree {
    let mut t = Tree::new();
    t.insert("a.bin".into(), (false, false, bytes(11, 5 << 20)));
    t.insert("b.bin".into(), (false, true, bytes(12, (3 << 20) + 7)));
    t.insert("sub".into(), (true, false, vec![]));
    t.insert("sub/c.txt".into(), (false, false, b"small\n".to_vec()));
    t.insert("sub/empty".into(), (true, false, vec![]));
    t.insert("sub/zero".into(), (false, false, vec![]));
    t.insert("z.bin".into(), (false, false, bytes(13, 2 << 20)));
    write_tree(root, &t);
    t
}

/// Where a kill lands: a delay after the process starts (connecting,
/// fetching the manifest), or a delay after the transfer has started (or
/// resumed).
#[derive(Debug, Clone, Copy)]
enum Point {
    AfterSpawn(Duration),
    AfterStart(Duration),
}

fn point(rng: &mut Rng, per_kill: Duration) -> Point {
    let d = Duration::from_millis(rng.below(2 * per_kill.as_millis() as u64 + 1));
    if rng.below(4) == 0 {
        Point::AfterSpawn(Duration::from_millis(rng.below(400)))
    } else {
        Point::AfterStart(d)
    }
}

#[test]
fn receive_killed_at_random_points_always_resumes_to_the_same_bytes() {
    let kills = kills(5);
    let mut rng = Rng::from_env("receive kill -9 campaign");
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "album");
    let want = source(&root);
    let total: u64 = want.values().map(|(_, _, b)| b.len() as u64).sum();
    // 4 MiB/s: about 2.5 s of transfer to spread the kills over.
    let rate = 4u64 << 20;
    let sender = spawn_send(&[&root], &["--max-rate", "4M"], None);
    let link = &sender.link;
    let per_kill = Duration::from_millis(total * 1000 / rate / kills as u64);
    let dest = sub(&tmp, "out");
    let mut resumed = 0u64;
    let mut finished_early = 0;
    for i in 0..kills {
        let at = point(&mut rng, per_kill);
        let (mut rx, events) = spawn_receive(link, &dest, &[]);
        let delay = match at {
            Point::AfterSpawn(d) => d,
            Point::AfterStart(d) => {
                // An event names where this run starts: `resumed` (with the
                // bytes kept) comes before `started` when there are any.
                let first =
                    events.wait_for(&["resumed", "started", "done"], Duration::from_secs(60));
                if let Some(e) = first.filter(|e| e["event"] == "resumed") {
                    let bytes = e["bytes"].as_u64().unwrap();
                    assert!(
                        bytes >= resumed,
                        "run {i} resumed {bytes} bytes, the last one had {resumed}"
                    );
                    resumed = bytes;
                }
                d
            }
        };
        // The random point itself: what happens meanwhile is the test.
        let deadline = Instant::now() + delay;
        while events.next_before(deadline).is_some() {}
        let running = rx.kill9();
        let complete = nothing_unverified(&dest, "album", &want);
        eprintln!("kill {i}: {at:?}, running={running}, complete={complete}");
        if !running {
            finished_early += 1;
        }
        if complete {
            break;
        }
    }
    // The last run, not killed: it must resume and finish.
    let (mut rx, events) = spawn_receive(link, &dest, &[]);
    let done = events
        .wait_for(&["done", "error"], Duration::from_secs(120))
        .expect("the last receive printed its outcome");
    assert_eq!(done["event"], "done", "{done}");
    rx.0.wait().unwrap();
    let kept = done["resumed_bytes"].as_u64().unwrap();
    eprintln!("last run resumed {kept} of {total} bytes; {finished_early} run(s) had ended before their kill");
    assert!(kept >= resumed);
    assert_eq!(read_tree(&dest.join("album")), want);
    assert_eq!(names_in(&dest), ["album"], "the staging folder is gone");
}

/// Polls the daemon until its first fetch shows `min` bytes (or is done).
fn wait_fetch_bytes(d: &Daemon, min: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = d.json(&["list"]);
        let j = &l["fetches"][0];
        if j["bytes"].as_u64().unwrap_or(0) >= min || j["status"]["state"] == "done" {
            return;
        }
        assert_ne!(j["status"]["state"], "failed", "{j}");
        assert!(Instant::now() < deadline, "no progress: {l}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fetching_daemon_killed_at_random_points_resumes_the_job() {
    let kills = kills(4);
    let mut rng = Rng::from_env("daemon kill -9 campaign");
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "album");
    let want = source(&root);
    let total: u64 = want.values().map(|(_, _, b)| b.len() as u64).sum();
    let adir = sub(&tmp, "A");
    fs::create_dir_all(&adir).unwrap();
    let rate = 4u64 << 20;
    fs::write(
        adir.join("peerdrop.toml"),
        format!("max_upload_rate = {rate}\n"),
    )
    .unwrap();
    let a = Daemon::start(&adir);
    let link = a.share(&root);
    let bdir = sub(&tmp, "B");
    let out = sub(&tmp, "out");
    let mut b = Daemon::start(&bdir);
    let o = fetch(&b.dir, &link, &out, &["--detach"]);
    assert!(o.status.success(), "{}", err(&o));
    let per_kill = Duration::from_millis(total * 1000 / rate / kills as u64);
    for i in 0..kills {
        let at = point(&mut rng, per_kill);
        let delay = match at {
            Point::AfterSpawn(d) => d,
            Point::AfterStart(d) => {
                wait_fetch_bytes(&b, 1);
                d
            }
        };
        std::thread::sleep(delay); // the random point itself
        b.kill();
        let complete = nothing_unverified(&out, "album", &want);
        eprintln!("kill {i}: {at:?}, complete={complete}");
        b = Daemon::start(&bdir);
        if complete {
            break;
        }
    }
    // The restarted daemon resumes the job by itself and finishes it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let l = b.json(&["list"]);
        let j = &l["fetches"][0];
        if j["status"]["state"] == "done" {
            break;
        }
        assert_ne!(j["status"]["state"], "failed", "{j}");
        assert!(Instant::now() < deadline, "the job never finished: {l}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(read_tree(&out.join("album")), want);
    assert_eq!(names_in(&out), ["album"], "the staging folder is gone");
}
