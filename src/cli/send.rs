//! `peerdrop send`: seal on the fly and serve from the original files.

use std::sync::Arc;

use anyhow::Context;
use libp2p::Multiaddr;
use peerdrop::crypto::{DoneKey, ShareKey};
use peerdrop::link::Link;
use peerdrop::net::addr::is_relayed;
use peerdrop::net::node::{self, NodeConfig};
use peerdrop::net::serve::{serve, DoneReport, Drain, LocalProvider, ServeConfig};
use peerdrop::net::{hint_addrs, PeerAddr};
use peerdrop::seal::SealOptions;
use peerdrop::store::share::LocalShare;
use serde_json::json;
use tokio::sync::mpsc;

use crate::cli::{output, relays, SendArgs};

/// Done reports waiting to be printed; more are dropped (the serving side
/// never waits on this loop).
const DONE_QUEUE: usize = 64;
/// How long `--once` waits for answers in progress before it stops.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Draws `link` as a QR code on stderr.
pub(crate) fn draw_qr(link: &str) -> anyhow::Result<()> {
    let code = qrcode::QrCode::new(link.as_bytes()).context("drawing the QR code")?;
    let text = code
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build();
    eprintln!("{text}");
    Ok(())
}

/// Runs the command.
pub fn run(args: &SendArgs) -> anyhow::Result<()> {
    crate::cli::init_logging(args.verbose);
    let rt = crate::cli::runtime()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: &SendArgs) -> anyhow::Result<()> {
    // Asked before sealing, which can take long.
    let password = args.lock.password()?;
    let key = ShareKey::generate()?;
    let paths = args.paths.clone();
    let json = args.json;
    // From when the command ran, not from when sealing ends.
    let expires = crate::cli::expiry::expiry_after(args.limits.expire)?;
    let seal = SealOptions {
        expires,
        ..SealOptions::default()
    };
    let share = {
        let key = key.duplicate();
        tokio::task::spawn_blocking(move || {
            // The total is known only after the scan; the bar starts unsized.
            let bar = output::bytes_bar(0, "sealing", json);
            let r = LocalShare::create(&paths, &key, &seal, |n| {
                bar.set_length(n.max(bar.length().unwrap_or(0)));
                bar.set_position(n);
            });
            bar.finish_and_clear();
            r
        })
        .await
        .expect("sealing does not panic")?
    };
    for s in share.source().skipped() {
        eprintln!("peerdrop: skipping {:?}: {}", s.path, s.reason);
    }
    let id = share.id();
    let total = share.manifest().content_len;
    let files = share.source().metadata().file_count();

    // With a bootstrap peer, relays are picked among the peers it leads
    // to, as a daemon does; relays named with --relay override the choice.
    let auto_relay = !args.discovery.bootstrap.is_empty() && args.relay.is_empty();
    let client = node::spawn(NodeConfig {
        mdns: !args.discovery.no_mdns,
        bootstrap: args.discovery.bootstrap.clone(),
        auto_relay,
        ..NodeConfig::default()
    })?;
    let listen: Vec<Multiaddr> = if args.listen.is_empty() {
        relays::ephemeral_listen()
    } else {
        args.listen.clone()
    };
    for a in listen {
        client.listen(a).await?;
    }
    for r in &args.relay {
        // A reservation on the relay: peers that cannot reach us directly
        // reach us through it (and try to upgrade to a direct connection).
        client
            .listen(r.clone().with(libp2p::multiaddr::Protocol::P2pCircuit))
            .await?;
    }
    if auto_relay {
        // Before the link and the provider record: both carry the circuit
        // addresses known when they are made.
        if relays::wait_for_relays(&client).await? == relays::Outcome::Public {
            eprintln!("peerdrop: reachable from outside; no relay needed");
        }
    }
    if !args.discovery.bootstrap.is_empty() {
        client.provide(id.locator().to_vec()).await;
    }
    let addrs = hint_addrs(client.listen_addrs().await?);
    let hints = if args.no_hints {
        Vec::new()
    } else {
        vec![PeerAddr {
            peer: client.peer_id(),
            addrs: addrs.clone(),
        }
        .to_hint()]
    };
    let web_key = args.web.then(|| key.duplicate());
    // Only a receiver that proves it holds the key counts (audit F-03).
    let (done_tx, mut done_rx) = mpsc::channel(DONE_QUEUE);
    let report = DoneReport {
        key: DoneKey::new(&key),
        to: done_tx,
    };
    let max_downloads = args.limits.max_downloads;
    let mut provider = LocalProvider::new(share, Some(report));
    if let Some(n) = max_downloads {
        provider = provider.with_max_downloads(DoneKey::new(&key), n);
    }
    let link = Link::new(id, hints, Some(key))?.with_expiry(expires);
    let link = crate::cli::password::lock(link, password.as_ref())?.to_uri_string();
    let provider = Arc::new(provider);
    let drain = Drain::default();
    let web_link = match web_key {
        Some(key) => Some(crate::cli::web::start(args, provider.clone(), &addrs, &id, &key).await?),
        None => None,
    };
    let config = ServeConfig {
        max_rate: args.max_rate,
        identity: Some(client.peer_id()),
        drain: Some(drain.clone()),
        ..ServeConfig::default()
    };
    tokio::spawn(serve(
        client.incoming().expect("sent once"),
        provider,
        config,
    ));

    if json {
        output::json_line(&json!({"event": "link", "link": link}));
        output::json_line(&json!({
            "event": "listening", "peer": client.peer_id().to_base58(),
            "addrs": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "files": files, "bytes": total,
            "relays": addrs.iter().filter(|a| is_relayed(a)).count(),
            "expires": expires.map(|e| e.to_string()),
            "max_downloads": max_downloads,
        }));
        if let Some(w) = &web_link {
            output::json_line(&json!({"event": "web_link", "link": w}));
        }
    } else {
        println!("{link}");
        if let Some(w) = &web_link {
            // Second line of stdout: scripts that read the first line keep working.
            println!("{w}");
            eprintln!("open the second link in a browser on the same network");
        }
    }
    if args.qr {
        draw_qr(web_link.as_deref().unwrap_or(&link))?;
    }
    if !json {
        eprintln!(
            "sharing {files} file(s), {}; waiting for receivers{} (Ctrl-C to stop)",
            output::human_bytes(total),
            if args.once {
                ", exiting after the first"
            } else {
                ""
            }
        );
        if let Some(e) = expires {
            eprintln!(
                "expires at {e} (in {}); stops after {} receiver(s). Advisory: whoever has the link and the data can keep them",
                crate::cli::expiry::human_duration(e.remaining()),
                max_downloads.map_or("any number of".to_owned(), |n| n.to_string())
            );
        } else if let Some(n) = max_downloads {
            eprintln!("stops after {n} receiver(s). Advisory: whoever has the link and the data can keep them");
        }
    }
    let expiry = async move {
        match expires {
            Some(e) => tokio::time::sleep(e.remaining()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    // Distinct receivers that proved they have everything.
    let mut received = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut expiry => {
                // The provider refuses everything from the expiry on.
                let at = expires.expect("only set with an expiry");
                if json {
                    output::json_line(&json!({"event": "expired", "at": at.to_string()}));
                } else {
                    eprintln!("the share expired at {at}; no longer serving it");
                }
                break;
            }
            peer = done_rx.recv() => {
                let Some(peer) = peer else { break };
                if json {
                    output::json_line(&json!({"event": "peer_done", "peer": peer.to_base58()}));
                } else {
                    eprintln!("peer {peer} received everything");
                }
                // Bounded by the limit: counted only when there is one.
                if max_downloads.is_some() {
                    received.insert(peer);
                }
                let used_up = max_downloads.is_some_and(|n| received.len() >= n as usize);
                if used_up && !json {
                    eprintln!("{} receiver(s) have everything; no longer serving it", received.len());
                }
                if args.once || used_up {
                    // Let answers in progress (to other receivers) finish.
                    if !drain.drain(DRAIN_DEADLINE).await {
                        tracing::debug!("some streams were still open when stopping");
                    }
                    break;
                }
            }
        }
    }
    client.shutdown().await;
    Ok(())
}
