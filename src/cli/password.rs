//! Passwords for password links: where they come from (never argv), and
//! turning a read link into a password link and back.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use peerdrop::link::Link;
use peerdrop::password::{Params, MAX_PASSWORD_LEN};
use rustix::termios::{self, LocalModes, OptionalActions};
use zeroize::Zeroizing;

/// The environment variable a password may come from.
pub const PASSWORD_ENV: &str = "PEERDROP_PASSWORD";

/// How a password link's password is given, when a link needs one.
#[derive(Args, Debug, Clone, Default)]
pub struct PasswordSource {
    /// Read the password of a password link from this file (its first line).
    /// Otherwise PEERDROP_PASSWORD, otherwise it is asked on the terminal.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// `send`/`share --password`: make a password link.
#[derive(Args, Debug, Clone, Default)]
pub struct PasswordLock {
    /// Protect the link with a password (asked twice on the terminal, or
    /// PEERDROP_PASSWORD, or --password-file): the link alone no longer
    /// reads the share. Argon2id with 64 MiB, 3 passes.
    #[arg(long)]
    pub password: bool,
    #[command(flatten)]
    pub source: PasswordSource,
}

impl PasswordLock {
    /// Whether a password link is wanted (`--password-file` implies it).
    pub fn wanted(&self) -> bool {
        self.password || self.source.password_file.is_some()
    }

    /// The password for the new link, asked before any long work; `None`
    /// when no password link is wanted.
    pub fn password(&self) -> anyhow::Result<Option<Zeroizing<String>>> {
        self.wanted().then(|| self.source.get(true)).transpose()
    }
}

/// `link` locked under `password` if there is one, else as it is.
pub fn lock(link: Link, password: Option<&Zeroizing<String>>) -> anyhow::Result<Link> {
    match password {
        Some(pw) => Ok(link.lock(pw, Params::DEFAULT)?),
        None => Ok(link),
    }
}

impl PasswordSource {
    /// The password: from the file, the environment or the terminal, in
    /// that order. `confirm` asks twice on a terminal (for a new link).
    pub fn get(&self, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
        if let Some(f) = &self.password_file {
            return from_file(f);
        }
        if let Ok(pw) = std::env::var(PASSWORD_ENV) {
            return Ok(Zeroizing::new(pw));
        }
        let first = ask("password: ")?;
        if confirm {
            let again = ask("password again: ")?;
            if *first != *again {
                bail!("the two passwords differ; nothing was shared");
            }
        }
        Ok(first)
    }

    /// `link` unlocked if it is a password link (one Argon2id run), else as
    /// it is.
    pub fn open(&self, link: Link) -> anyhow::Result<Link> {
        let Some(locked) = link.locked() else {
            return Ok(link);
        };
        let p = locked.params();
        let pw = self.get(false)?;
        tracing::debug!(
            memory_kib = p.memory_kib,
            passes = p.passes,
            "unlocking a password link"
        );
        Ok(link.unlock(&pw)?)
    }
}

/// The first line of `path`, without its line ending.
fn from_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("opening the password file {}", path.display()))?;
    let mut line = Zeroizing::new(String::new());
    BufReader::new(f.take(MAX_PASSWORD_LEN as u64 * 4 + 2))
        .read_line(&mut line)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    trim_line_end(&mut line);
    Ok(line)
}

fn trim_line_end(s: &mut String) {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
}

/// Asks on the controlling terminal with echo off.
fn ask(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .with_context(|| {
            format!("a password is needed and there is no terminal to ask on: set {PASSWORD_ENV} or use --password-file")
        })?;
    let saved = termios::tcgetattr(&tty).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    termios::tcsetattr(&tty, OptionalActions::Flush, &quiet)
        .context("turning the terminal's echo off")?;
    let mut w = &tty;
    let r = w.write_all(prompt.as_bytes()).and_then(|()| {
        let mut line = Zeroizing::new(String::new());
        BufReader::new((&tty).take(MAX_PASSWORD_LEN as u64 * 4 + 2)).read_line(&mut line)?;
        Ok(line)
    });
    // Echo comes back even if reading failed.
    let _ = termios::tcsetattr(&tty, OptionalActions::Flush, &saved);
    let mut line = r.context("reading the password from the terminal")?;
    trim_line_end(&mut line);
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret pass\r\nsecond line\n").unwrap();
        assert_eq!(from_file(&f).unwrap().as_str(), "s3cret pass");
        std::fs::write(&f, "no newline").unwrap();
        assert_eq!(from_file(&f).unwrap().as_str(), "no newline");
    }
}
