//! `peerdrop daemon` and the commands that drive it over its control socket.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use peerdrop::daemon::control::{
    self, CancelRequest, Command, Event, FetchRequest, JobKind, JobReply, JobStateReply,
    LinkRequest, ListRequest, PinRequest, PriorityRequest, Reachability, RelayState, RetryRequest,
    ShareRequest, ShareState, StatusRequest, UnshareRequest,
};
use peerdrop::daemon::state::{JobStatus, Origin};
use peerdrop::daemon::{self, DaemonOptions};
use peerdrop::link::Link;
use peerdrop::manifest::ManifestId;

use crate::cli::{
    output, CancelArgs, DaemonArgs, FetchArgs, IdArgs, JobArgs, JsonArgs, LinkArgs, PinArgs,
    ShareArgs,
};

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

/// Sends `cmd` and returns its reply; with `--json`, every line of the
/// answer goes to stdout as the daemon sent it.
fn call<C: Command>(
    dir: &Path,
    cmd: C,
    json: bool,
    mut progress: impl FnMut(&Event),
) -> anyhow::Result<C::Reply> {
    let reply = control::call(dir, cmd, |raw, event| {
        if json {
            raw_line(raw);
        }
        if let Some(e) = event {
            progress(e);
        }
    })?;
    Ok(reply)
}

/// One line on stdout (a closed stdout is not worth reporting).
fn raw_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The first 16 hex digits of an id, as `list` shows them.
fn short(id: &ManifestId) -> String {
    id.to_string()[..16].to_owned()
}

/// `peerdrop share`.
pub fn share(a: &ShareArgs) -> anyhow::Result<()> {
    let paths = a
        .paths
        .iter()
        .map(|p| std::path::absolute(p).with_context(|| format!("resolving {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let req = ShareRequest {
        paths,
        hints: !a.no_hints,
        expires: crate::cli::expiry::expiry_after(a.limits.expire)?,
        max_downloads: a.limits.max_downloads,
    };
    // Asked before the daemon seals; the password never reaches it: the
    // link is locked here.
    let password = a.lock.password()?;
    let dir = a.dir.path()?;
    let as_sent = a.json && password.is_none() && !a.web;
    let mut r = call(&dir, req, as_sent, |_| {})?;
    if password.is_some() {
        let link = Link::parse_read_link(&r.link)?;
        r.link = crate::cli::password::lock(link, password.as_ref())?.to_uri_string();
    }
    let web_link = a.web.then(|| web_link(&dir, &r.link)).transpose()?;
    if a.json && !as_sent {
        let mut v = serde_json::to_value(&r)?;
        v["version"] = control::VERSION.into();
        v["ok"] = true.into();
        if let Some(w) = &web_link {
            v["web_link"] = w.as_str().into();
        }
        raw_line(&v.to_string());
    }
    if !a.json {
        for s in &r.skipped {
            // The daemon escapes names; control characters are escaped
            // here too, in case it is an older one.
            let s: String = s
                .chars()
                .map(|c| match c.is_control() {
                    true => c.escape_default().to_string(),
                    false => c.to_string(),
                })
                .collect();
            eprintln!("peerdrop: skipped {s}");
        }
        println!("{}", r.link);
        if let Some(w) = &web_link {
            // Second line of stdout, as `send --web` prints it.
            println!("{w}");
            eprintln!("open the second link in a browser on the same network");
        }
        eprintln!(
            "sharing {} file(s), {} (id {})",
            r.files,
            output::human_bytes(r.bytes),
            short(&r.id)
        );
    }
    if a.qr {
        crate::cli::send::draw_qr(web_link.as_deref().unwrap_or(&r.link))?;
    }
    Ok(())
}

/// The web link for read link `link`, at the address where the daemon
/// serves browsers (from `status`).
fn web_link(dir: &Path, link: &str) -> anyhow::Result<String> {
    let status = call(dir, StatusRequest {}, false, |_| {})?;
    let addr = status.web.context(
        "the daemon does not serve browsers: set `web = true` in its peerdrop.toml and restart it",
    )?;
    let link = Link::parse_read_link(link)?;
    let key = link
        .key()
        .context("the daemon answered a link without a key")?;
    Ok(peerdrop::web::web_link(addr, link.manifest_id(), key))
}

fn follow_bar(json: bool) -> (indicatif::ProgressBar, impl FnMut(&Event)) {
    let bar = output::bytes_bar(0, "fetching", json);
    let b = bar.clone();
    (bar, move |e: &Event| match e {
        Event::Progress { bytes, total, .. } => {
            b.set_length(*total);
            b.set_position(*bytes);
        }
    })
}

/// `peerdrop fetch`.
pub fn fetch(a: &FetchArgs) -> anyhow::Result<()> {
    let text = crate::cli::link_text_long(a.get.link.as_deref())?;
    // Checked here too, so a mistake is reported before the daemon is asked;
    // a password link is unlocked here and the daemon gets the read link.
    let link = Link::parse_read_link(&text)?;
    let text = match link.locked() {
        Some(_) => a.get.password.open(link)?.to_uri_string(),
        None => text,
    };
    // Checked here too, so a bad pattern is reported before the daemon is
    // asked.
    peerdrop::select::Selection::new(&a.get.only, &a.get.exclude)?;
    let out = std::path::absolute(&a.get.out)?;
    let req = FetchRequest {
        link: text.trim().to_owned(),
        out: out.clone(),
        force: a.get.force,
        merge: a.get.merge,
        peers: a.get.peer.iter().map(|p| p.to_string()).collect(),
        detach: a.detach,
        only: a.get.only.clone(),
        exclude: a.get.exclude.clone(),
    };
    let (bar, progress) = follow_bar(a.json);
    let start = std::time::Instant::now();
    let r = call(&a.dir.path()?, req, a.json, progress);
    bar.finish_and_clear();
    let r = r?;
    if !a.json {
        match r {
            JobReply::Detached(d) => eprintln!(
                "fetching in the background into {} (id {}); see `peerdrop list`",
                out.display(),
                d.id
            ),
            JobReply::Done(d) => eprintln!(
                "fetched into {}: {}",
                out.display(),
                output::summary(d.bytes, start.elapsed())
            ),
        }
    }
    Ok(())
}

/// `peerdrop pin`.
pub fn pin(a: &PinArgs) -> anyhow::Result<()> {
    let link: Link = crate::cli::link_text_long(a.link.as_deref())?.parse()?;
    // The key never reaches the daemon: only the pin link is sent.
    let req = PinRequest {
        link: link.to_pin_link().to_uri_string(),
        peers: a.peer.iter().map(|p| p.to_string()).collect(),
        detach: a.detach,
    };
    let (bar, progress) = follow_bar(a.json);
    let r = call(&a.dir.path()?, req, a.json, progress);
    bar.finish_and_clear();
    let r = r?;
    if !a.json {
        let what = match r {
            JobReply::Detached(_) => "pinning in the background:",
            JobReply::Done(_) => "pinned",
        };
        eprintln!("{what} {}", r.id());
    }
    Ok(())
}

/// `peerdrop list`.
pub fn list(a: &JsonArgs) -> anyhow::Result<()> {
    let r = call(&a.dir.path()?, ListRequest {}, a.json, |_| {})?;
    if a.json {
        return Ok(());
    }
    let size = output::human_bytes;
    let state = |s: &JobStatus| match s {
        JobStatus::Failed { error } => ("failed", format!("  ({error})")),
        s => (status_name(s), String::new()),
    };
    println!("SHARES");
    for s in &r.shares {
        println!(
            "  {}  {:<8} {:<8} {:>10}  {} file(s)  {:?}",
            short(&s.id),
            match s.state {
                ShareState::Serving => "serving",
                ShareState::Stale => "stale",
                ShareState::Expired => "expired",
                ShareState::UsedUp => "used up",
            },
            match s.origin {
                Origin::Shared => "shared",
                Origin::Fetched => "fetched",
            },
            size(s.bytes),
            s.files,
            s.names
        );
    }
    println!("FETCHES");
    for f in &r.fetches {
        let (st, error) = state(&f.status);
        println!(
            "  {}  {st:<8} {:>10} / {:<10} -> {}{error}",
            short(&f.id),
            size(f.bytes),
            size(f.total),
            f.out.display(),
        );
    }
    println!("PINS");
    for p in &r.pins {
        let (st, error) = state(&p.status);
        println!(
            "  {}  {st:<8} {:>10} / {:<10}{error}",
            short(&p.id),
            size(p.bytes),
            size(p.total),
        );
    }
    Ok(())
}

/// `peerdrop unshare`.
pub fn unshare(a: &IdArgs) -> anyhow::Result<()> {
    let req = UnshareRequest { id: a.id.parse()? };
    let r = call(&a.dir.path()?, req, a.json, |_| {})?;
    if !a.json {
        eprintln!("no longer serving {}", r.id);
    }
    Ok(())
}

/// `peerdrop link`.
pub fn link(a: &LinkArgs) -> anyhow::Result<()> {
    let req = LinkRequest {
        id: a.id.parse()?,
        pin: a.pin,
    };
    let r = call(&a.dir.path()?, req, a.json, |_| {})?;
    if !a.json {
        println!("{}", r.link);
    }
    Ok(())
}

/// `peerdrop status`.
pub fn status(a: &JsonArgs) -> anyhow::Result<()> {
    let r = call(&a.dir.path()?, StatusRequest {}, a.json, |_| {})?;
    if a.json {
        return Ok(());
    }
    println!("peer id:   {}", r.peer_id);
    for l in &r.listen {
        println!("listening: {l}");
    }
    println!(
        "reachable: {}",
        match r.reachability {
            Reachability::Unknown => "not known yet",
            Reachability::Public => "yes, from outside",
            Reachability::Private => "no (behind NAT or a firewall: reached through relays)",
        }
    );
    for a in &r.external_addrs {
        println!("external:  {a}");
    }
    println!("relays:    {}", r.relays.len());
    for relay in &r.relays {
        println!(
            "  {} {}{}",
            relay.peer,
            match relay.state {
                RelayState::Requesting => "requesting a circuit",
                RelayState::Reserved => "circuit reserved",
            },
            if relay.configured {
                " (configured)"
            } else {
                ""
            }
        );
        for a in &relay.circuit_addrs {
            println!("    {a}");
        }
    }
    println!("peer cache: {} peer(s) to bootstrap from", r.cached_peers);
    println!("LAN peers: {} (found by mDNS)", r.lan_peers);
    println!("re-seeding: {}", if r.reseed { "on" } else { "off" });
    if let Some(u) = r.ui {
        println!("ui:        http://{u}/ (`peerdrop ui` prints its link, with the token)");
    }
    if let Some(w) = r.web {
        println!("web:       http://{w}/ (browsers on the LAN; share --web prints a share's link)");
    }
    println!("uploaded:  {}", output::human_bytes(r.uploaded_bytes));
    println!("peers:     {}", r.connected.len());
    for p in &r.connected {
        let how = if p.relayed { "relayed" } else { "direct" };
        println!("  {} {} ({how})", p.peer, p.addr);
    }
    println!("transfers: {} ({} queued)", r.transfers.len(), r.queued);
    for t in &r.transfers {
        println!(
            "  {} {} {}/{} at {}/s",
            match t.kind {
                JobKind::Fetch => "fetch",
                JobKind::Pin => "pin",
            },
            short(&t.id),
            output::human_bytes(t.bytes),
            output::human_bytes(t.total),
            output::human_bytes(t.rate)
        );
    }
    Ok(())
}

fn status_name(s: &JobStatus) -> &'static str {
    match s {
        JobStatus::Queued => "queued",
        JobStatus::Running => "running",
        JobStatus::Done => "done",
        JobStatus::Failed { .. } => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

fn job_kind(a: &JobArgs) -> Option<JobKind> {
    match (a.fetch, a.pin) {
        (true, _) => Some(JobKind::Fetch),
        (_, true) => Some(JobKind::Pin),
        _ => None,
    }
}

fn print_job(r: &JobStateReply) {
    let kind = match r.kind {
        JobKind::Fetch => "fetch",
        JobKind::Pin => "pin",
    };
    eprintln!("{kind} {} is {}", short(&r.id), status_name(&r.status));
}

/// `peerdrop cancel`.
pub fn cancel(a: &CancelArgs) -> anyhow::Result<()> {
    let req = CancelRequest {
        id: a.job.id.parse()?,
        kind: job_kind(&a.job),
        keep: a.keep,
    };
    let r = call(&a.job.dir.path()?, req, a.job.json, |_| {})?;
    if !a.job.json {
        print_job(&r);
    }
    Ok(())
}

/// `peerdrop retry`.
pub fn retry(a: &JobArgs) -> anyhow::Result<()> {
    let req = RetryRequest {
        id: a.id.parse()?,
        kind: job_kind(a),
    };
    let r = call(&a.dir.path()?, req, a.json, |_| {})?;
    if !a.json {
        print_job(&r);
    }
    Ok(())
}

/// `peerdrop priority`.
pub fn priority(a: &JobArgs) -> anyhow::Result<()> {
    let req = PriorityRequest {
        id: a.id.parse()?,
        kind: job_kind(a),
    };
    let r = call(&a.dir.path()?, req, a.json, |_| {})?;
    if !a.json {
        print_job(&r);
        eprintln!("it runs next");
    }
    Ok(())
}
