//! `peerdrop daemon` and the commands that drive it over its control socket.

use std::path::Path;

use anyhow::{bail, Context};
use peerdrop::daemon::control::{request, Request};
use peerdrop::daemon::{self, DaemonOptions};
use peerdrop::link::Link;
use serde_json::Value;

use crate::cli::{output, DaemonArgs, FetchArgs, IdArgs, JsonArgs, LinkArgs, PinArgs, ShareArgs};

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run_daemon(args: &DaemonArgs) -> anyhow::Result<()> {
    crate::cli::init_logging(args.verbose.max(1));
    let data_dir = args.dir.path()?;
    let rt = crate::cli::runtime()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        eprintln!("peerdrop daemon: data dir {}", data_dir.display());
        daemon::run(
            DaemonOptions {
                data_dir,
                listen: args.listen.clone(),
                no_reseed: args.no_reseed,
                no_mdns: args.discovery.no_mdns,
                bootstrap: args.discovery.bootstrap.clone(),
                relay_server: args.relay_server,
                relays: args.relay.clone(),
            },
            shutdown,
        )
        .await?;
        Ok(())
    })
}

/// Sends `req`, printing progress lines; fails with the daemon's error.
fn call(
    dir: &Path,
    req: &Request,
    json: bool,
    mut progress: impl FnMut(&Value),
) -> anyhow::Result<Value> {
    let last = request(dir, req, |v| {
        if v.get("event").is_some() {
            if json {
                output::json_line(v);
            }
            progress(v);
        }
    })?;
    if last["ok"] != true {
        if json {
            output::json_line(&last);
        }
        bail!(
            "{}",
            last["error"]
                .as_str()
                .unwrap_or("the daemon reported an error")
        );
    }
    if json {
        output::json_line(&last);
    }
    Ok(last)
}

/// `peerdrop share`.
pub fn share(a: &ShareArgs) -> anyhow::Result<()> {
    let paths = a
        .paths
        .iter()
        .map(|p| std::path::absolute(p).with_context(|| format!("resolving {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let v = call(
        &a.dir.path()?,
        &Request::Share {
            paths,
            hints: !a.no_hints,
        },
        a.json,
        |_| {},
    )?;
    if !a.json {
        for s in v["skipped"].as_array().into_iter().flatten() {
            eprintln!("peerdrop: skipped {}", s.as_str().unwrap_or_default());
        }
        println!("{}", v["link"].as_str().unwrap_or_default());
        eprintln!(
            "sharing {} file(s), {} (id {})",
            v["files"],
            output::human_bytes(v["bytes"].as_u64().unwrap_or(0)),
            &v["id"].as_str().unwrap_or_default()[..16]
        );
    }
    Ok(())
}

fn follow_bar(json: bool) -> (indicatif::ProgressBar, impl FnMut(&Value)) {
    let bar = output::bytes_bar(0, "fetching", json);
    let b = bar.clone();
    (bar, move |v: &Value| {
        if let (Some(n), Some(t)) = (v["bytes"].as_u64(), v["total"].as_u64()) {
            b.set_length(t);
            b.set_position(n);
        }
    })
}

/// `peerdrop fetch`.
pub fn fetch(a: &FetchArgs) -> anyhow::Result<()> {
    let text = crate::cli::link_text(a.get.link.as_deref())?;
    // Checked here too, so a mistake is reported before the daemon is asked.
    Link::parse_read_link(&text)?;
    let out = std::path::absolute(&a.get.out)?;
    let req = Request::Fetch {
        link: text.trim().to_owned(),
        out: out.clone(),
        force: a.get.force,
        peers: a.get.peer.iter().map(|p| p.to_string()).collect(),
        detach: a.detach,
    };
    let (bar, progress) = follow_bar(a.json);
    let start = std::time::Instant::now();
    let v = call(&a.dir.path()?, &req, a.json, progress);
    bar.finish_and_clear();
    let v = v?;
    if !a.json {
        if a.detach {
            eprintln!(
                "fetching in the background into {} (id {}); see `peerdrop list`",
                out.display(),
                v["id"].as_str().unwrap_or_default()
            );
        } else {
            eprintln!(
                "fetched into {}: {}",
                out.display(),
                output::summary(v["bytes"].as_u64().unwrap_or(0), start.elapsed())
            );
        }
    }
    Ok(())
}

/// `peerdrop pin`.
pub fn pin(a: &PinArgs) -> anyhow::Result<()> {
    let link: Link = crate::cli::link_text(a.link.as_deref())?.parse()?;
    // The key never reaches the daemon: only the pin link is sent.
    let req = Request::Pin {
        link: link.to_pin_link().to_uri_string(),
        peers: a.peer.iter().map(|p| p.to_string()).collect(),
        detach: a.detach,
    };
    let (bar, progress) = follow_bar(a.json);
    let v = call(&a.dir.path()?, &req, a.json, progress);
    bar.finish_and_clear();
    let v = v?;
    if !a.json {
        eprintln!(
            "{} {}",
            if a.detach {
                "pinning in the background:"
            } else {
                "pinned"
            },
            v["id"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// `peerdrop list`.
pub fn list(a: &JsonArgs) -> anyhow::Result<()> {
    let v = call(&a.dir.path()?, &Request::List, a.json, |_| {})?;
    if a.json {
        return Ok(());
    }
    let short = |v: &Value| {
        v.as_str()
            .unwrap_or_default()
            .chars()
            .take(16)
            .collect::<String>()
    };
    let size = |v: &Value| output::human_bytes(v.as_u64().unwrap_or(0));
    println!("SHARES");
    for s in v["shares"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<8} {:<8} {:>10}  {} file(s)  {}",
            short(&s["id"]),
            s["state"].as_str().unwrap_or(""),
            s["origin"].as_str().unwrap_or(""),
            size(&s["bytes"]),
            s["files"],
            s["names"]
        );
    }
    println!("FETCHES");
    for f in v["fetches"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<8} {:>10} / {:<10} -> {}{}",
            short(&f["id"]),
            f["status"]["state"].as_str().unwrap_or(""),
            size(&f["bytes"]),
            size(&f["total"]),
            f["out"].as_str().unwrap_or(""),
            f["status"]["error"]
                .as_str()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
    println!("PINS");
    for p in v["pins"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<8} {:>10} / {:<10}{}",
            short(&p["id"]),
            p["status"]["state"].as_str().unwrap_or(""),
            size(&p["bytes"]),
            size(&p["total"]),
            p["status"]["error"]
                .as_str()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `peerdrop unshare`.
pub fn unshare(a: &IdArgs) -> anyhow::Result<()> {
    let v = call(
        &a.dir.path()?,
        &Request::Unshare { id: a.id.clone() },
        a.json,
        |_| {},
    )?;
    if !a.json {
        eprintln!("no longer serving {}", v["id"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// `peerdrop link`.
pub fn link(a: &LinkArgs) -> anyhow::Result<()> {
    let v = call(
        &a.dir.path()?,
        &Request::Link {
            id: a.id.clone(),
            pin: a.pin,
        },
        a.json,
        |_| {},
    )?;
    if !a.json {
        println!("{}", v["link"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// `peerdrop status`.
pub fn status(a: &JsonArgs) -> anyhow::Result<()> {
    let v = call(&a.dir.path()?, &Request::Status, a.json, |_| {})?;
    if a.json {
        return Ok(());
    }
    println!("peer id:   {}", v["peer_id"].as_str().unwrap_or_default());
    for l in v["listen"].as_array().into_iter().flatten() {
        println!("listening: {}", l.as_str().unwrap_or_default());
    }
    println!(
        "re-seeding: {}",
        if v["reseed"] == true { "on" } else { "off" }
    );
    println!(
        "uploaded:  {}",
        output::human_bytes(v["uploaded_bytes"].as_u64().unwrap_or(0))
    );
    let peers = v["connected"].as_array().cloned().unwrap_or_default();
    println!("peers:     {}", peers.len());
    for p in peers {
        println!(
            "  {} {} ({})",
            p["peer"].as_str().unwrap_or_default(),
            p["addr"].as_str().unwrap_or_default(),
            if p["relayed"] == true {
                "relayed"
            } else {
                "direct"
            }
        );
    }
    let transfers = v["transfers"].as_array().cloned().unwrap_or_default();
    println!("transfers: {}", transfers.len());
    for t in transfers {
        println!(
            "  {} {} {}/{} at {}/s",
            t["kind"].as_str().unwrap_or_default(),
            &t["id"].as_str().unwrap_or_default()[..16],
            output::human_bytes(t["bytes"].as_u64().unwrap_or(0)),
            output::human_bytes(t["total"].as_u64().unwrap_or(0)),
            output::human_bytes(t["rate"].as_u64().unwrap_or(0))
        );
    }
    Ok(())
}
