//! `peerdrop inspect`: what a link holds, never the key.

use libp2p::{Multiaddr, PeerId};
use peerdrop::link::{Hint, Link};
use serde_json::json;

use crate::cli::{output, InspectArgs};

/// Renders a hint's peer id and addresses, or says why they are invalid.
pub fn describe_hint(h: &Hint) -> (String, Vec<String>) {
    let peer = PeerId::from_bytes(&h.peer)
        .map(|p| p.to_base58())
        .unwrap_or_else(|_| "<invalid peer id>".into());
    let addrs = h
        .addrs
        .iter()
        .map(|a| {
            Multiaddr::try_from(a.clone())
                .map(|m| m.to_string())
                .unwrap_or_else(|_| "<invalid address>".into())
        })
        .collect();
    (peer, addrs)
}

/// Runs the command.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let link: Link = crate::cli::parse_link(args.link.as_deref())?;
    let hints: Vec<_> = link.hints().iter().map(describe_hint).collect();
    let pin = link.to_pin_link().to_uri_string();
    let (version, kind) = match (link.key(), link.locked()) {
        (Some(_), _) => ("1", "read"),
        (None, Some(_)) => ("p1", "password"),
        (None, None) => ("1", "pin"),
    };
    let params = link.locked().map(|l| l.params());
    let expires = link.expires();
    if args.json {
        output::json_line(&json!({
            "version": 1,
            "link_version": version,
            "manifest_id": link.manifest_id().to_string(),
            "has_key": link.key().is_some(),
            "kind": kind,
            "password": params.map(|p| json!({
                "kdf": "argon2id", "memory_kib": p.memory_kib, "passes": p.passes, "lanes": p.lanes,
            })),
            "hints": hints.iter().map(|(p, a)| json!({"peer": p, "addrs": a})).collect::<Vec<_>>(),
            // The link's copy of the manifest's expiry: null when the link
            // states none (the manifest may still carry one).
            "expires": expires.map(|e| e.to_string()),
            "expires_unix": expires.map(|e| e.unix()),
            "expired": expires.map(|e| e.passed()),
            "pin_link": pin,
        }));
        return Ok(());
    }
    println!("version:     {version}");
    println!("manifest id: {}", link.manifest_id());
    if link.key().is_some() {
        println!("key:         present (read link: decrypts the share; keep it secret)");
    } else if let Some(p) = params {
        println!(
            "key:         locked by a password (Argon2id, {} MiB, {} passes, {} lane(s)): the link reads the share only with it",
            p.memory_kib / 1024,
            p.passes,
            p.lanes
        );
    } else {
        println!("key:         absent (pin link: can fetch and host the ciphertext, not read it)");
    }
    match expires {
        Some(e) if e.passed() => {
            println!("expires:     {e} (expired; honest peers no longer serve it)")
        }
        Some(e) => println!(
            "expires:     {e} (in {}; advisory: whoever has the link and the data can keep them)",
            crate::cli::expiry::human_duration(e.remaining())
        ),
        None => println!("expires:     not stated in the link"),
    }
    println!("hints:       {}", hints.len());
    for (peer, addrs) in &hints {
        println!("  peer {peer}");
        for a in addrs {
            println!("    {a}");
        }
    }
    println!("pin link:    {pin}");
    Ok(())
}
