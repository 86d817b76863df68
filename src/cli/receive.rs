//! `peerdrop receive`: fetch a share from a link.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use peerdrop::link::Link;
use peerdrop::net::fetch::{fetch, FetchOptions, Partial, Progress};
use peerdrop::net::node::{self, Client, NodeConfig};
use peerdrop::net::serve::{serve, ServeConfig};
use peerdrop::net::PeerAddr;
use peerdrop::select::Selection;
use peerdrop::store::output::OutputOptions;
use serde_json::json;
use tokio::sync::mpsc;

use crate::cli::{output, Discovery, Interrupted, OneShot, ReceiveArgs};

/// Runs the command.
pub fn run(args: &ReceiveArgs) -> anyhow::Result<()> {
    crate::cli::init_logging(args.one_shot.verbose);
    let link = Link::parse_read_link(&crate::cli::link_text_long(args.get.link.as_deref())?)?;
    let link = args.get.password.open(link)?;
    let sources = sources(&link, &args.get.peer, &args.one_shot.discovery)?;
    let rt = crate::cli::runtime()?;
    rt.block_on(run_async(args, link, sources))
}

/// The peers to fetch `link` from: its hints and the `--peer` flags; an
/// error if there are none and nowhere to look for one.
pub fn sources(
    link: &Link,
    peers: &[libp2p::Multiaddr],
    discovery: &Discovery,
) -> anyhow::Result<Vec<PeerAddr>> {
    let mut sources = Vec::new();
    for h in link.hints() {
        match PeerAddr::from_hint(h) {
            Some(p) => sources.push(p),
            None => eprintln!("peerdrop: skipping a peer hint in the link with an invalid peer id"),
        }
    }
    for a in peers {
        let p = PeerAddr::from_multiaddr(a.clone())
            .with_context(|| format!("--peer {a} must end in /p2p/PEER_ID"))?;
        sources.push(p);
    }
    if sources.is_empty() && discovery.no_mdns && discovery.bootstrap.is_empty() {
        anyhow::bail!(
            "the link names no peer to fetch from, and with --no-mdns and no --bootstrap there is nowhere to look for one; drop --no-mdns (same LAN), or add --bootstrap MULTIADDR/p2p/PEER_ID or --peer MULTIADDR/p2p/PEER_ID"
        );
    }
    Ok(sources)
}

/// A node for one fetch, and the options every one-shot fetch shares. It
/// listens (ephemeral TCP and QUIC ports), so that a sender behind NAT that
/// it reaches through a relay can hole-punch to it.
pub async fn node_and_options(one_shot: &OneShot) -> anyhow::Result<(Client, FetchOptions)> {
    let OneShot {
        wait,
        timeout,
        discovery,
        ..
    } = one_shot;
    let client = node::spawn(NodeConfig {
        mdns: !discovery.no_mdns,
        bootstrap: discovery.bootstrap.clone(),
        ..NodeConfig::default()
    })?;
    crate::cli::relays::listen_ephemeral(&client).await;
    let opts = FetchOptions {
        discover: !discovery.no_mdns || !discovery.bootstrap.is_empty(),
        request_timeout: Duration::from_secs((*timeout).max(1)),
        wait: Duration::from_secs(*wait),
        ..FetchOptions::default()
    };
    Ok((client, opts))
}

fn say_waiting(reason: &str, secs_left: u64, json: bool) {
    if json {
        output::json_line(&json!({"event": "waiting", "reason": reason, "secs_left": secs_left}));
    } else {
        // Every event, terminal or not: the fetch repeats it at least every
        // few seconds while it waits.
        eprintln!(
            "peerdrop: cannot reach the sender yet ({reason}); retrying for up to {secs_left}s"
        );
    }
}

fn say_dropped(peer: libp2p::PeerId, reason: &str) {
    eprintln!("peerdrop: stopped using peer {peer}: {reason}");
}

/// Tells the user about waits and dropped sources (for commands without a
/// progress bar: `ls`, `cat`).
pub async fn report_waiting(mut rx: mpsc::Receiver<Progress>, json: bool) {
    while let Some(p) = rx.recv().await {
        match p {
            Progress::Waiting { reason, secs_left } => say_waiting(&reason, secs_left, json),
            Progress::PeerDropped { peer, reason } => say_dropped(peer, &reason),
            Progress::Connected(peer) => tracing::info!(%peer, "connected"),
            _ => {}
        }
    }
}

/// Says whether each connection the fetch ended with is direct or goes
/// through a relay (a JSON `connections` event, or log lines with -v).
async fn report_connections(client: &Client, json: bool) {
    let Ok(st) = client.reach_status().await else {
        return;
    };
    if json {
        let peers: Vec<_> = st
            .connections
            .iter()
            .map(|c| {
                json!({"peer": c.peer.to_base58(), "direct": c.direct.len(), "relayed": c.relayed.len()})
            })
            .collect();
        output::json_line(&json!({"event": "connections", "peers": peers}));
    }
    for c in &st.connections {
        let kind = if c.is_direct() { "direct" } else { "relayed" };
        tracing::info!(peer = %c.peer, kind, "connection at the end of the fetch");
    }
}

/// While it runs, the receiver serves what it has verified to other
/// receivers of the same share (they find it on the LAN or are told with
/// `--peer`; docs/PROTOCOL.md, "Partial holders"), with the default serving
/// limits.
fn serve_while_fetching(client: &Client, link: &Link, opts: &mut FetchOptions) {
    let Some(incoming) = client.incoming() else {
        return;
    };
    let partial = Arc::new(Partial::new(*link.manifest_id()));
    let config = ServeConfig {
        identity: Some(client.peer_id()),
        ..ServeConfig::default()
    };
    tokio::spawn(serve(incoming, partial.clone(), config));
    opts.serve_as = Some(partial);
}

async fn run_async(args: &ReceiveArgs, link: Link, sources: Vec<PeerAddr>) -> anyhow::Result<()> {
    let start = Instant::now();
    let (client, mut opts) = node_and_options(&args.one_shot).await?;
    opts.output = OutputOptions {
        force: args.get.force,
        merge: args.get.merge,
    };
    opts.selection = Selection::new(&args.get.only, &args.get.exclude)?;
    opts.approve = crate::cli::offer::approver(&args.get.out, args.yes, args.json);
    serve_while_fetching(&client, &link, &mut opts);
    let (tx, mut rx) = peerdrop::net::fetch::progress_channel();
    let json = args.json;
    // Draws progress while the fetch runs.
    let ui = tokio::spawn(async move {
        let mut bar = None;
        let mut total = 0;
        let mut last_json = Instant::now();
        while let Some(p) = rx.recv().await {
            match p {
                Progress::Connected(peer) => tracing::info!(%peer, "connected"),
                Progress::Waiting { reason, secs_left } => say_waiting(&reason, secs_left, json),
                Progress::Started { total: t, files } => {
                    total = t;
                    if json {
                        output::json_line(&json!({"event": "started", "bytes": t, "files": files}));
                    }
                    bar = Some(output::bytes_bar(t, "receiving", json));
                }
                Progress::Resumed { bytes } => {
                    if json {
                        output::json_line(&json!({"event": "resumed", "bytes": bytes}));
                    } else {
                        eprintln!(
                            "resuming: {} already here and verified",
                            output::human_bytes(bytes)
                        );
                    }
                }
                Progress::Bytes(n) => {
                    if let Some(b) = &bar {
                        b.set_position(n);
                    }
                    if json && (last_json.elapsed() >= Duration::from_millis(250) || n == total) {
                        last_json = Instant::now();
                        output::json_line(
                            &json!({"event": "progress", "bytes": n, "total": total}),
                        );
                    }
                }
                Progress::PeerDropped { peer, reason } => say_dropped(peer, &reason),
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    });
    let result = tokio::select! {
        r = fetch(&client, &link, sources, &args.get.out, &opts, tx) => r.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
    };
    let _ = ui.await;
    if result.is_ok() {
        report_connections(&client, json).await;
    }
    client.shutdown().await;
    let done = result?;
    let elapsed = start.elapsed();
    if json {
        output::json_line(&json!({
            "event": "done", "files": done.files, "bytes": done.bytes,
            "resumed_bytes": done.resumed_bytes,
            "paths": done.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "seconds": elapsed.as_secs_f64(),
        }));
    } else {
        for p in &done.paths {
            eprintln!("wrote {:?}", p);
        }
        let fetched = done.bytes - done.resumed_bytes;
        eprintln!(
            "received {} file(s), {}{}",
            done.files,
            output::summary(fetched, elapsed),
            if done.resumed_bytes > 0 {
                format!(" (+{} resumed)", output::human_bytes(done.resumed_bytes))
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
