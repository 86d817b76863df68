//! `peerdrop seal` and `peerdrop unseal`: shares through a folder of chunks
//! (a USB stick, any file host) instead of the network.

use std::time::Instant;

use anyhow::{bail, Context};
use peerdrop::chunk::ChunkSize;
use peerdrop::crypto::ShareKey;
use peerdrop::link::Link;
use peerdrop::manifest::Manifest;
use peerdrop::open::Opener;
use peerdrop::seal::{seal, SealOptions};
use peerdrop::store::chunks::ChunkDir;
use peerdrop::store::output::OutputOptions;
use peerdrop::store::source::Source;
use peerdrop::store::unseal::{unseal, UnsealOptions};
use serde_json::json;

use crate::cli::{output, SealArgs, UnsealArgs};

/// Runs `peerdrop seal`.
pub fn run_seal(args: &SealArgs) -> anyhow::Result<()> {
    let password = args.lock.password()?;
    let chunk_size = match args.chunk_size {
        None => None,
        Some(b) if b.is_power_of_two() => Some(
            ChunkSize::from_log2(b.trailing_zeros() as u8)
                .context("--chunk-size must be a power of two from 1024 to 67108864")?,
        ),
        Some(_) => bail!("--chunk-size must be a power of two from 1024 to 67108864"),
    };
    let start = Instant::now();
    let source = Source::scan(&args.paths)?;
    for s in source.skipped() {
        eprintln!("peerdrop: skipping {:?}: {}", s.path, s.reason);
    }
    let dir =
        ChunkDir::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let key = ShareKey::generate()?;
    let total = source.metadata().content_len();
    let bar = output::bytes_bar(total, "sealing", args.json);
    let sealed = seal(
        &key,
        source.metadata(),
        source.reader(),
        &SealOptions {
            chunk_size,
            threads: 0,
            expires: None,
        },
        |c| {
            dir.put(&c.id, c.bytes)?;
            if c.stream == peerdrop::chunk::Stream::Content {
                bar.inc((c.bytes.len() - peerdrop::chunk::CHUNK_OVERHEAD) as u64);
            }
            Ok(())
        },
    )?;
    dir.put_manifest(&sealed.id, &sealed.manifest_bytes)?;
    dir.sync().context("flushing the chunk folder")?;
    bar.finish_and_clear();
    let link = crate::cli::password::lock(
        Link::new(sealed.id, Vec::new(), Some(key))?,
        password.as_ref(),
    )?
    .to_uri_string();
    let files = source.metadata().file_count();
    if args.json {
        output::json_line(&json!({"event": "link", "link": link}));
        output::json_line(&json!({
            "event": "done", "files": files, "bytes": total,
            "chunks": sealed.manifest.chunk_count(), "manifest_id": sealed.id.to_string(),
            "seconds": start.elapsed().as_secs_f64(),
        }));
    } else {
        println!("{link}");
        eprintln!(
            "sealed {files} file(s), {} into {}",
            output::summary(total, start.elapsed()),
            args.out.display()
        );
    }
    Ok(())
}

/// Runs `peerdrop unseal`.
pub fn run_unseal(args: &UnsealArgs) -> anyhow::Result<()> {
    let link = Link::parse_read_link(&crate::cli::link_text_long(args.link.as_deref())?)?;
    let link = args.password.open(link)?;
    let start = Instant::now();
    let mut dir = ChunkDir::open(&args.from)?;
    let bytes = dir.get_manifest(link.manifest_id()).with_context(|| {
        format!(
            "{} does not hold this share's manifest",
            args.from.display()
        )
    })?;
    let manifest = Manifest::decode_verified(link.manifest_id(), &bytes)?;
    // An honest reader stops at the expiry, as honest servers do.
    link.check_manifest(&manifest, std::time::SystemTime::now())?;
    let opener = Opener::new(manifest, link.require_key()?)?;
    let total = opener.manifest().content_len;
    let bar = output::bytes_bar(total, "unsealing", args.json);
    let json = args.json;
    let mut last_event = Instant::now();
    let done = unseal(
        &opener,
        &mut dir,
        &args.out,
        &UnsealOptions {
            output: OutputOptions {
                force: args.force,
                merge: args.merge,
            },
            threads: 0,
        },
        |n| {
            bar.set_position(n);
            if json && last_event.elapsed().as_millis() >= 500 {
                last_event = Instant::now();
                output::json_line(&json!({"event": "progress", "bytes": n, "total": total}));
            }
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        output::json_line(&json!({
            "event": "done", "files": done.files, "bytes": done.bytes,
            "paths": done.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "seconds": start.elapsed().as_secs_f64(),
        }));
    } else {
        for p in &done.paths {
            eprintln!("wrote {:?}", p);
        }
        eprintln!(
            "{} file(s), {}",
            done.files,
            output::summary(done.bytes, start.elapsed())
        );
    }
    Ok(())
}
