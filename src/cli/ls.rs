//! `peerdrop ls`: what a share holds, from its sealed file list alone.

use anyhow::Context;
use peerdrop::link::Link;
use peerdrop::meta::{EntryKind, Timestamp};
use peerdrop::net::fetch::list;
use serde_json::json;

use crate::cli::{output, Interrupted, LsArgs};

/// Runs the command.
pub fn run(args: &LsArgs) -> anyhow::Result<()> {
    let look = &args.look;
    crate::cli::init_logging(look.one_shot.verbose);
    let link = Link::parse_read_link(&crate::cli::link_text(args.link.as_deref())?)?;
    let link = look.password.open(link)?;
    let sources = crate::cli::receive::sources(&link, &look.peer, &look.one_shot.discovery)?;
    let rt = crate::cli::runtime()?;
    let listing = rt.block_on(async {
        let (client, opts) = crate::cli::receive::node_and_options(&look.one_shot).await?;
        let (tx, rx) = peerdrop::net::fetch::progress_channel();
        let ui = tokio::spawn(crate::cli::receive::report_waiting(rx, args.json));
        let r = tokio::select! {
            r = list(&client, &link, sources, &opts, tx) => r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
        };
        let _ = ui.await;
        client.shutdown().await;
        r
    })?;
    let m = &listing.metadata;
    if args.json {
        let entries: Vec<_> = m
            .entries()
            .iter()
            .map(|e| {
                json!({
                    "path": e.path.as_str(),
                    "kind": if e.kind == EntryKind::Dir { "dir" } else { "file" },
                    "size": e.size,
                    "executable": e.executable,
                    "mtime": e.mtime.secs,
                })
            })
            .collect();
        output::json_line(&json!({
            "manifest_id": link.manifest_id().to_string(),
            "files": m.file_count(),
            "bytes": m.content_len(),
            "chunk_size": listing.manifest.chunk_size.bytes(),
            "entries": entries,
        }));
        return Ok(());
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for e in m.entries() {
        let (size, slash) = match e.kind {
            EntryKind::Dir => ("-".to_owned(), "/"),
            EntryKind::File => (output::human_bytes(e.size), ""),
        };
        let line = if args.long {
            let x = if e.executable { "x" } else { "-" };
            format!(
                "{x} {} {size:>10}  {}{slash}",
                utc(e.mtime),
                e.path.as_str()
            )
        } else {
            format!("{size:>10}  {}{slash}", e.path.as_str())
        };
        writeln!(out, "{line}").context("writing the listing")?;
    }
    eprintln!(
        "{} file(s), {} in all",
        m.file_count(),
        output::human_bytes(m.content_len())
    );
    Ok(())
}

/// `YYYY-MM-DD HH:MM` in UTC, from Unix seconds; `?` outside the years
/// `time` represents (a hostile file list may carry any i64).
fn utc(t: Timestamp) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t.secs) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute()
        ),
        Err(_) => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_the_calendar_ones() {
        let at = |secs| utc(Timestamp { secs, nanos: 0 });
        assert_eq!(at(0), "1970-01-01 00:00");
        assert_eq!(at(951_782_400), "2000-02-29 00:00");
        assert_eq!(at(1_798_761_599), "2026-12-31 23:59");
        assert_eq!(at(-1), "1969-12-31 23:59");
        assert_eq!(at(i64::MAX), "?");
    }
}
