//! The command line: argument parsing, output and exit codes.
//!
//! The only part of peerdrop that prints, reads environment variables or
//! decides paths. Stdout carries data (a link, or JSON lines with `--json`);
//! everything for people goes to stderr.

pub mod inspect;
pub mod local;
pub mod output;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use peerdrop::link::{Link, MAX_LINK_LEN};

/// Peer-to-peer, end-to-end encrypted file exchange.
///
/// Files are sealed into encrypted chunks addressed by their BLAKE3 hash; the
/// key travels only inside the share link.
#[derive(Parser, Debug)]
#[command(name = "peerdrop", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show what a link holds (manifest id, peer hints, whether it has a key) without printing the key.
    Inspect(InspectArgs),
    /// Seal files and folders into a folder of encrypted chunks, and print the link.
    Seal(SealArgs),
    /// Verify, decrypt and write out a share from a folder of encrypted chunks.
    Unseal(UnsealArgs),
}

/// `peerdrop inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The link; `-` or nothing reads it from stdin (or PEERDROP_LINK).
    pub link: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop seal`.
#[derive(Args, Debug)]
pub struct SealArgs {
    /// Files and folders to seal.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Folder to write the encrypted chunks and manifest into (created if missing).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Plaintext chunk size in bytes, a power of two from 1 KiB to 64 MiB (default: 1 MiB, more for huge shares).
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// Print JSON lines (link, done, error) on stdout instead of the bare link.
    #[arg(long)]
    pub json: bool,
}

/// `peerdrop unseal`.
#[derive(Args, Debug)]
pub struct UnsealArgs {
    /// The read link; `-` or nothing reads it from stdin (or PEERDROP_LINK).
    pub link: Option<String>,
    /// Folder of encrypted chunks, as written by `peerdrop seal`.
    #[arg(long)]
    pub from: PathBuf,
    /// Destination folder.
    #[arg(long, short = 'o', default_value = ".")]
    pub out: PathBuf,
    /// Replace existing files (folders are never replaced).
    #[arg(long)]
    pub force: bool,
    /// Print JSON lines (progress, done, error) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Gets the link text: from the argument, else PEERDROP_LINK, else stdin.
/// Reading from a file or stdin keeps the key out of `ps` and shell history.
pub fn link_text(arg: Option<&str>) -> anyhow::Result<String> {
    if let Some(s) = arg.filter(|s| *s != "-") {
        return Ok(s.to_owned());
    }
    if arg.is_none() {
        if let Ok(s) = std::env::var("PEERDROP_LINK") {
            return Ok(s);
        }
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("no link given: pass it as an argument, pipe it on stdin, or set PEERDROP_LINK");
    }
    let mut buf = Vec::new();
    stdin
        .lock()
        .take(MAX_LINK_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .context("reading the link from stdin")?;
    String::from_utf8(buf).context("the link on stdin is not UTF-8 text")
}

/// Parses a link, read or pin.
pub fn parse_link(arg: Option<&str>) -> anyhow::Result<Link> {
    Ok(link_text(arg)?.parse::<Link>()?)
}
