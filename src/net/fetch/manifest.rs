//! Getting the manifest: from the first peer that has it, verified against
//! the link's id.

use futures::AsyncWriteExt;
use libp2p::PeerId;

use super::session::Fault;
use super::sources::Sources;
use super::FetchError;
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
        let mut s = src
            .client
            .control()
            .open_stream(peer, XFER)
            .await
            .map_err(|e| Fault::Lost(e.to_string()))?;
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
                let _ = s.close().await;
                Manifest::decode_verified(&src.share, &bytes)
                    .map(Some)
                    .map_err(|e| Fault::Misbehaved(e.to_string()))
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
