//! Getting the manifest: from the first peer that has it, verified against
//! the link's id; and, before that, making sure a peer found by discovery
//! holds the share before the manifest id is named to it.

use futures::AsyncWriteExt;
use libp2p::PeerId;

use super::session::Fault;
use super::sources::Sources;
use super::FetchError;
use crate::crypto::{holder_proof, proofs_match, random_32};
use crate::link::ExpiryError;
use crate::manifest::{Manifest, MAX_MANIFEST_LEN};
use crate::net::frame::{read_msg, read_payload, write_msg};
use crate::net::node::XFER;
use crate::wire::{Request, Response};

/// Gets and verifies the manifest from the first of `peers` that has it
/// (reconnecting while none does). Returns it with that peer and every peer
/// not yet asked: the sessions find out whether the others hold the share.
pub(super) async fn get_manifest(
    src: &mut Sources,
    mut peers: Vec<PeerId>,
) -> Result<(Manifest, Vec<PeerId>), FetchError> {
    loop {
        let all = std::mem::take(&mut peers);
        for (k, &peer) in all.iter().enumerate() {
            match try_manifest(src, peer).await {
                Ok(Some(m)) => {
                    // Every copy has the same expiry (it is part of the
                    // id): no other source can help.
                    if let Some(e) = m.expires.filter(|e| e.passed()) {
                        return Err(ExpiryError::Expired(e).into());
                    }
                    // The sharer chose the chunk size (up to 64 MiB): from
                    // here on, chunks in flight are bounded in bytes.
                    src.opts = src.opts.within_memory(m.chunk_size.bytes());
                    peers.push(peer);
                    peers.extend_from_slice(&all[k + 1..]);
                    return Ok((m, peers));
                }
                Ok(None) => src.lacks_share(peer),
                Err(fault) => src.blame(peer, fault).await,
            }
        }
        peers = src.connect().await?;
    }
}

/// Asks `peer` for the manifest: `Ok(None)` if it does not hold it.
async fn try_manifest(src: &Sources, peer: PeerId) -> Result<Option<Manifest>, Fault> {
    let t = src.opts.request_timeout;
    let work = async {
        let mut s = match src.idle.take(&peer) {
            Some(r) => r.stream,
            None => src
                .client
                .control()
                .open_stream(peer, XFER)
                .await
                .map_err(|e| Fault::Lost(e.to_string()))?,
        };
        let req = Request::Manifest { share: src.share };
        write_msg(&mut s, &req).await.map_err(Fault::from_io)?;
        s.flush().await.map_err(Fault::from_io)?;
        match read_msg::<_, Response>(&mut s)
            .await
            .map_err(Fault::from_io)?
        {
            Some(Response::Manifest { len }) if len as usize <= MAX_MANIFEST_LEN => {
                let bytes = read_payload(&mut s, len as usize)
                    .await
                    .map_err(Fault::from_io)?;
                let m = Manifest::decode_verified(&src.share, &bytes)
                    .map_err(|e| Fault::Misbehaved(e.to_string()))?;
                // The file list's session goes on on this stream.
                src.idle.put(peer, s, None);
                Ok(Some(m))
            }
            Some(Response::NotFound) => Ok(None),
            Some(Response::Busy { retry_ms }) => Err(Fault::busy(retry_ms)),
            Some(other) => Err(Fault::Misbehaved(format!(
                "answered a manifest request with {other:?}"
            ))),
            None => Err(Fault::Lost("closed the stream".into())),
        }
    };
    match tokio::time::timeout(t, work).await {
        Ok(r) => r,
        Err(_) => Err(Fault::Lost(format!(
            "did not answer within {}s",
            t.as_secs()
        ))),
    }
}

/// The peers of `peers` that may hear the manifest id: the trusted ones
/// (given by the caller, or already proven), and the others once they prove
/// they hold the share (asked all at once). A LAN peer or a DHT "provider"
/// that does not hold it learns only the locator, which the DHT publishes
/// anyway (audit F-04; docs/PROTOCOL.md, section 7). One that answers
/// `NotFound` or a wrong proof is not asked again; one that fails to answer
/// is asked again in a later round.
pub(super) async fn holders_only(src: &mut Sources, peers: Vec<PeerId>) -> Vec<PeerId> {
    let (trusted, unknown): (Vec<PeerId>, Vec<PeerId>) =
        peers.into_iter().partition(|p| src.trusted(p));
    let shared: &Sources = src;
    let asks = unknown
        .iter()
        .map(|&peer| async move { (peer, proves_holder(shared, peer).await) });
    let answers = futures::future::join_all(asks).await;
    let mut out = trusted;
    for (peer, answer) in answers {
        match answer {
            Ok(true) => {
                src.proved_holder(peer);
                out.push(peer);
            }
            Ok(false) => src.lacks_share(peer),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "a discovered peer did not answer whether it holds the share")
            }
        }
    }
    out
}

/// Asks `peer` whether it holds the share by its locator, with a fresh
/// nonce: `Ok(true)` only if its answer proves it knows the manifest id.
async fn proves_holder(src: &Sources, peer: PeerId) -> std::io::Result<bool> {
    let nonce = random_32().map_err(std::io::Error::other)?;
    let work = async {
        let mut s = src
            .client
            .control()
            .open_stream(peer, XFER)
            .await
            .map_err(std::io::Error::other)?;
        let req = Request::Holder {
            locator: src.share.locator(),
            nonce,
        };
        write_msg(&mut s, &req).await?;
        s.flush().await?;
        let answer = read_msg::<_, Response>(&mut s).await?;
        let _ = s.close().await;
        Ok(match answer {
            Some(Response::Holder { proof }) => {
                let local = src.client.peer_id().to_bytes();
                let expected = holder_proof(&src.share.0, &nonce, &local, &peer.to_bytes());
                proofs_match(&expected, &proof)
            }
            Some(Response::Busy { .. }) | None => {
                return Err(std::io::Error::other("busy, or closed the stream"))
            }
            // NotFound, or an answer a holder would not give.
            Some(_) => false,
        })
    };
    tokio::time::timeout(src.opts.request_timeout, work)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
