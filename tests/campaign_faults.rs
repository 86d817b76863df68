//! Fault campaigns: a disk that fills up in the middle of a transfer, and a
//! connection that drops every few chunks. Each fault must end cleanly (a
//! clear error, nothing unverified at a final path) or be survived, and the
//! transfer must then complete byte for byte.
//!
//! Loopback only, mDNS off. The dropping connection runs through a proxy
//! in this test; the sender sits in a network namespace of its own, so the
//! proxy is the fetcher's only way to it (the addresses the sender announces
//! lead nowhere from outside). Needs root for tmpfs and namespaces; skipped
//! with a message otherwise.

#[path = "common/campaign.rs"]
mod campaign;
mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use campaign::*;
use common::netns::{self, Netns};
use common::*;
use peerdrop::link::Link;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs of `mb` MiB at a fresh temporary folder, unmounted when dropped.
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(mb: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.path().to_owned(), dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` to the last byte; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let f = dir.join("filler");
    let mut out = fs::File::create(&f).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    loop {
        match out.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {dir:?}: {e}"),
        }
    }
    // What is left is less than a block: small writes take the rest.
    while out.write(&[0u8; 512]).map(|n| n > 0).unwrap_or(false) {}
    f
}

#[test]
fn a_disk_filling_up_mid_transfer_fails_cleanly_then_resumes_exactly() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let Some(disk) = Tmpfs::mount(80) else {
        eprintln!("skipped: could not mount a tmpfs");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "payload.bin");
    let content = bytes(21, 12 << 20);
    fs::write(&f, &content).unwrap();
    let sender = spawn_send(&[&f], &["--max-rate", "4M"], None);
    let link = &sender.link;
    let dest = disk.0.join("in");
    fs::create_dir(&dest).unwrap();

    let (mut rx, events) = spawn_receive(link, &dest, &[]);
    // Once a few MiB are in, the disk fills up under it.
    loop {
        let e = events
            .wait_for(&["progress", "done", "error"], Duration::from_secs(60))
            .expect("receive reported progress");
        assert_eq!(e["event"], "progress", "{e}");
        if e["bytes"].as_u64().unwrap() >= 3 << 20 {
            break;
        }
    }
    let filler = fill(&disk.0);
    let outcome = events
        .wait_for(&["done", "error"], Duration::from_secs(60))
        .expect("receive reported its outcome");
    let (status, stderr) = rx.finish();
    eprintln!("outcome on a full disk: {outcome}\nstderr: {stderr}");
    assert_eq!(outcome["event"], "error", "{outcome}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let message = outcome["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("No space left")
            && message.contains("free some space, then run the same command again"),
        "the error names the problem and what to do: {outcome}"
    );
    assert!(
        !dest.join("payload.bin").exists(),
        "nothing at the final path"
    );
    assert_eq!(final_names_in(&dest).len(), 0);

    // Space returns: the same command resumes from what was verified.
    fs::remove_file(filler).unwrap();
    let (mut rx, events) = spawn_receive(link, &dest, &[]);
    let done = events
        .wait_for(&["done", "error"], Duration::from_secs(120))
        .expect("receive reported its outcome");
    rx.0.wait().unwrap();
    assert_eq!(done["event"], "done", "{done}");
    let resumed = done["resumed_bytes"].as_u64().unwrap();
    eprintln!("resumed {resumed} bytes after the disk had room again");
    assert!(resumed >= 2 << 20, "resumed only {resumed} bytes");
    assert!(fs::read(dest.join("payload.bin")).unwrap() == content);
    assert_eq!(names_in(&dest), ["payload.bin"]);
}

/// Forwards TCP connections from the default namespace to `port` on
/// loopback inside namespace `ns`, cutting each one (both ways) after about
/// `budget` bytes towards the client. Returns the local port and the count
/// of connections cut.
fn dropping_proxy(ns: &str, port: u16, budget: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = listener.local_addr().unwrap().port();
    let cuts = Arc::new(AtomicUsize::new(0));
    let ns_path = format!("/run/netns/{ns}");
    let counted = cuts.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let ns_path = ns_path.clone();
            let cuts = counted.clone();
            std::thread::spawn(move || {
                // This thread alone moves into the sender's namespace, so
                // the socket it opens is there.
                let nsfd = fs::File::open(&ns_path).unwrap();
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&nsfd),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                pump(client, server, budget, &cuts);
            });
        }
    });
    (local, cuts)
}

fn pump(client: TcpStream, server: TcpStream, budget: usize, cuts: &AtomicUsize) {
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        while let Ok(n @ 1..) = c2.read(&mut buf) {
            if s2.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s2.shutdown(Shutdown::Write);
    });
    let (mut c, mut s) = (client, server);
    let mut sent = 0;
    let mut buf = [0u8; 16 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n;
                if sent >= budget {
                    cuts.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = c.shutdown(Shutdown::Both);
    let _ = s.shutdown(Shutdown::Both);
    let _ = up.join();
}

#[test]
fn a_connection_dropped_every_few_chunks_still_completes() {
    if !netns::available() {
        eprintln!("skipped: needs root and `ip netns`");
        return;
    }
    let mut nets = Netns::new();
    let ns = nets.add("cfdrop");
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "payload.bin");
    let content = bytes(31, 16 << 20);
    fs::write(&f, &content).unwrap();
    let sender = spawn_send(&[&f], &[], Some(&ns));
    let (link, peer, port) = (&sender.link, &sender.peer, sender.port);
    // About three 1 MiB chunks per connection.
    let (proxy, cuts) = dropping_proxy(&ns, port, 3 << 20);
    // The link's own hints lead into the namespace: strip them, so the only
    // way to the sender is the proxy.
    let full: Link = link.parse().unwrap();
    let bare = Link::new(
        *full.manifest_id(),
        vec![],
        full.key().map(|k| k.duplicate()),
    )
    .unwrap()
    .to_uri_string();
    let dest = sub(&tmp, "out");
    let via = format!("/ip4/127.0.0.1/tcp/{proxy}/p2p/{peer}");
    let (mut rx, events) = spawn_receive(&bare, &dest, &["--peer", &via]);
    let done = events
        .wait_for(&["done", "error"], Duration::from_secs(180))
        .expect("receive reported its outcome");
    let (_, stderr) = rx.finish();
    let cut = cuts.load(Ordering::Relaxed);
    eprintln!("{cut} connection(s) cut; outcome {done}\nstderr: {stderr}");
    assert_eq!(done["event"], "done", "{done}\n{stderr}");
    assert!(cut >= 3, "the proxy cut only {cut} connection(s)");
    assert!(fs::read(dest.join("payload.bin")).unwrap() == content);
    assert_eq!(names_in(&dest), ["payload.bin"]);
}
