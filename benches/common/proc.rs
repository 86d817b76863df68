//! Child processes of the benches: spawned with stderr to a log, polled or
//! waited for with a deadline, reaped with their rusage, and killed (by
//! their own PID) when dropped.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{describe_status, tv_secs, BoxResult};

/// What the kernel reports for a child that exited.
#[derive(Clone, Copy, Default)]
pub struct Usage {
    /// Wall time from the `start` given to [`Proc::poll`].
    pub secs: f64,
    pub user: f64,
    pub sys: f64,
    pub maxrss_kib: u64,
    /// Voluntary and involuntary context switches.
    pub csw: (u64, u64),
}

impl Usage {
    /// User plus system CPU seconds.
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// CPU time and memory of a running child, from /proc.
#[derive(Clone, Copy, Default)]
pub struct Snapshot {
    pub user: f64,
    pub sys: f64,
    pub hwm_kib: u64,
    pub rss_kib: u64,
}

/// A child process, killed (by its own PID) and reaped when dropped unless
/// it was already reaped by [`Proc::poll`].
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub reaped: bool,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stderr to `log`, and without the
    /// bench's own `RUST_LOG` unless `cmd` sets one.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> BoxResult<Proc> {
        cmd.stdin(Stdio::null())
            .stderr(Stdio::from(File::create(&log)?));
        if !cmd.get_envs().any(|(k, v)| k == "RUST_LOG" && v.is_some()) {
            cmd.env_remove("RUST_LOG");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {:?} ({name}): {e}", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            reaped: false,
            log,
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// One non-blocking wait4: `None` while the child runs; its rusage once
    /// it exited with status 0; an error (with its stderr's tail) otherwise.
    pub fn poll(&mut self, start: Instant) -> BoxResult<Option<Usage>> {
        if self.reaped {
            return Err(format!("{} was already reaped", self.name).into());
        }
        let pid = self.pid();
        loop {
            let mut status = 0;
            // SAFETY: rusage is plain old data; all-zero is a valid value.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own unreaped child's PID, with valid
            // out-pointers.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == 0 {
                return Ok(None);
            }
            if r == pid {
                let secs = start.elapsed().as_secs_f64();
                self.reaped = true;
                if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                    return Err(format!(
                        "{} failed ({}); its stderr ends with:\n{}",
                        self.name,
                        describe_status(status),
                        self.log_tail()
                    )
                    .into());
                }
                return Ok(Some(Usage {
                    secs,
                    user: tv_secs(ru.ru_utime),
                    sys: tv_secs(ru.ru_stime),
                    maxrss_kib: ru.ru_maxrss as u64,
                    csw: (ru.ru_nvcsw as u64, ru.ru_nivcsw as u64),
                }));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("wait4 on {} (pid {pid}): {e}", self.name).into());
            }
        }
    }

    /// Waits (polling every 0.5 ms, so a deadline can be kept) for the child
    /// to exit with status 0; wall time is counted from `start`.
    pub fn wait_usage(&mut self, start: Instant, limit: Duration) -> BoxResult<Usage> {
        loop {
            if let Some(u) = self.poll(start)? {
                return Ok(u);
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "{} did not exit within {limit:?}; killing it. Its stderr ends with:\n{}",
                    self.name,
                    self.log_tail()
                )
                .into());
            }
            thread::sleep(Duration::from_micros(500));
        }
    }

    /// Sends `sig` to the child, by its own PID, unless already reaped.
    pub fn signal(&self, sig: libc::c_int) -> BoxResult<()> {
        if self.reaped {
            return Err(format!("{} already exited", self.name).into());
        }
        // SAFETY: kill(2) on our own child's PID, not yet reaped (so not
        // reused by another process).
        if unsafe { libc::kill(self.pid(), sig) } != 0 {
            return Err(format!("signalling {}: {}", self.name, io::Error::last_os_error()).into());
        }
        Ok(())
    }

    /// CPU time, VmHWM and VmRSS so far, read from /proc while the child
    /// runs.
    pub fn snapshot(&self) -> Snapshot {
        let pid = self.pid();
        let mut s = Snapshot::default();
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name, which may hold spaces: state is
            // field 3, utime 14, stime 15.
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let tck = clock_ticks();
                let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
                s.user = tick(11).unwrap_or(0.0) / tck;
                s.sys = tick(12).unwrap_or(0.0) / tck;
            }
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| {
                        let rest = l.strip_prefix(name)?;
                        rest.trim().strip_suffix("kB")?.trim().parse().ok()
                    })
                    .unwrap_or(0)
            };
            s.hwm_kib = field("VmHWM:");
            s.rss_kib = field("VmRSS:");
        }
        s
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            // Child::kill signals this child's own PID.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}
