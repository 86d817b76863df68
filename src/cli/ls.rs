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
    crate::cli::init_logging(look.verbose);
    let link = Link::parse_read_link(&crate::cli::link_text(args.link.as_deref())?)?;
    let sources = crate::cli::receive::sources(&link, &look.peer, &look.discovery)?;
    let rt = crate::cli::runtime()?;
    let listing = rt.block_on(async {
        let (client, opts) =
            crate::cli::receive::node_and_options(&look.discovery, look.wait, look.timeout)?;
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

/// `YYYY-MM-DD HH:MM` in UTC, from Unix seconds (the civil-from-days
/// algorithm of H. Hinnant; no calendar crate for one column).
fn utc(t: Timestamp) -> String {
    let days = t.secs.div_euclid(86_400);
    let secs = t.secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
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
    }
}
