//! `receive` under a pseudo-terminal (stdin and stderr a tty): it shows the
//! offer and asks before writing; "n" writes nothing, "y" writes the share,
//! `--yes` skips the question. Sender on loopback, mDNS off.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::*;
use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

const BIN: &str = env!("CARGO_BIN_EXE_peerdrop");
const LIMIT: Duration = Duration::from_secs(60);

/// A child process killed (by its own PID) when the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child whose stdin and stderr are the slave side of a pseudo-terminal;
/// everything it writes there arrives on `rx` (a thread drains the master,
/// so the child never blocks on a full terminal).
struct OnTty {
    child: Proc,
    master: File,
    rx: Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl OnTty {
    fn spawn(mut cmd: Command) -> OnTty {
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(name.to_str().unwrap())
            .unwrap();
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .stdout(Stdio::null());
        let child = Proc(cmd.spawn().unwrap());
        // Our copies of the slave go with the command, so the master reads
        // end (EIO) once the child has exited.
        drop(cmd);
        let master = File::from(master);
        let mut reader = master.try_clone().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OnTty {
            child,
            master,
            rx,
            seen: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Waits until the terminal shows `what`; panics with what it did show.
    fn expect(&mut self, what: &str) {
        let deadline = Instant::now() + LIMIT;
        while !self.text().contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.extend(b),
                Err(e) => panic!(
                    "{e:?} waiting for {what:?}; the terminal shows:\n{}",
                    self.text()
                ),
            }
        }
    }

    fn type_line(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
        self.master.write_all(b"\n").unwrap();
    }

    /// Waits (bounded) for the child to close the terminal and exit.
    fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.extend(b),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the child did not exit; the terminal shows:\n{}",
                        self.text()
                    )
                }
            }
        }
        let status = self.child.0.wait().unwrap();
        (status, self.text())
    }
}

/// `peerdrop send` on loopback, mDNS off; the process and its link.
fn send(path: &Path) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .arg("send")
        .arg(path)
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .env_remove("PEERDROP_LINK")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (Proc(child), line.trim().to_owned())
}

fn receive_cmd(link: &str, dest: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["receive", "--no-mdns", "-o"])
        .arg(dest)
        .args(extra)
        .env("PEERDROP_LINK", link)
        .env_remove("PEERDROP_PASSWORD");
    c
}

/// A folder with a hidden file, an executable and a plain one.
fn fixture(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    let root = sub(tmp, "share");
    let mut t = Tree::new();
    t.insert(".env".into(), (false, false, b"SECRET=1\n".to_vec()));
    t.insert("run.sh".into(), (false, true, b"#!/bin/sh\n".to_vec()));
    t.insert("docs/a.txt".into(), (false, false, bytes(1, 5000)));
    write_tree(&root, &t);
    root
}

#[test]
fn receive_on_a_terminal_shows_the_offer_and_asks_first() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fixture(&tmp);
    let (_sender, link) = send(&root);

    // "n": the offer is shown, nothing is written, exit 1.
    let dest = sub(&tmp, "no");
    let mut t = OnTty::spawn(receive_cmd(&link, &dest, &[]));
    t.expect("[y/N] ");
    let shown = t.text();
    for want in [
        "3 file(s)",
        "share/  (folder: 3 file(s)",
        "share/.env: hidden",
        "share/run.sh: executable",
    ] {
        assert!(shown.contains(want), "{want:?} missing from:\n{shown}");
    }
    t.type_line("n");
    let (status, text) = t.finish();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("declined"), "{text}");
    assert_eq!(names_in(&dest), Vec::<String>::new(), "nothing written");

    // "y": the share lands.
    let dest = sub(&tmp, "yes");
    let mut t = OnTty::spawn(receive_cmd(&link, &dest, &[]));
    t.expect("[y/N] ");
    t.type_line("y");
    let (status, text) = t.finish();
    assert!(status.success(), "{text}");
    assert_eq!(read_tree(&dest.join("share")), read_tree(&root));

    // --yes: no question, on a terminal still.
    let dest = sub(&tmp, "flag");
    let (status, text) = OnTty::spawn(receive_cmd(&link, &dest, &["--yes"])).finish();
    assert!(status.success(), "{text}");
    assert!(!text.contains("[y/N]"), "{text}");
    assert_eq!(read_tree(&dest.join("share")), read_tree(&root));

    // No terminal: proceeds as before, without asking.
    let dest = sub(&tmp, "pipe");
    let o = common::daemon::bounded(receive_cmd(&link, &dest, &[]));
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    assert!(!text.contains("[y/N]"), "{text}");
    assert_eq!(read_tree(&dest.join("share")), read_tree(&root));
}
