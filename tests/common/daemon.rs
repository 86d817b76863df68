//! Running daemons and CLI commands as real processes, bounded in time and
//! stopped by their own PIDs. Optionally inside a network namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_peerdrop");

/// A daemon process, stopped (by its own PID) when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
}

impl Daemon {
    /// A daemon on loopback with mDNS off: tests never multicast on the
    /// host's interfaces.
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with(
            dir,
            &["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"],
            None,
        )
    }

    /// Starts a daemon with `args`, inside network namespace `netns` if given.
    pub fn start_with(dir: &Path, args: &[&str], netns: Option<&str>) -> Daemon {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .arg("daemon")
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env_remove("PEERDROP_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            dir: dir.to_owned(),
        };
        // Ready when it answers on its socket.
        let deadline = Instant::now() + Duration::from_secs(30);
        while cli(dir, &["status", "--json"]).status.code() != Some(0) {
            assert!(Instant::now() < deadline, "daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            assert!(c.wait().unwrap().success(), "daemon exited uncleanly");
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = cli(&self.dir, &a);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }

    /// This daemon's address for --peer.
    pub fn addr(&self) -> String {
        let s = self.json(&["status"]);
        format!(
            "{}/p2p/{}",
            s["listen"][0].as_str().unwrap(),
            s["peer_id"].as_str().unwrap()
        )
    }

    pub fn share(&self, path: &Path) -> String {
        self.json(&["share", path.to_str().unwrap()])["link"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a CLI command against a data dir, bounded in time.
pub fn cli(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("PEERDROP_LINK");
    bounded(c)
}

pub fn bounded(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_bounded(c.spawn().unwrap())
}

/// Waits for `child` (killed by its PID if it takes too long).
pub fn wait_bounded(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("command did not finish in time");
        }
    }
}

pub fn fetch(dir: &Path, link: &str, out: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("fetch")
        .arg("-o")
        .arg(out)
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .env("PEERDROP_LINK", link);
    bounded(c)
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
