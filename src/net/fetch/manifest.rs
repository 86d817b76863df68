//! Getting the manifest: from the first peer that has it, verified against
//! the link's id.

use futures::AsyncWriteExt;
use libp2p::PeerId;

use super::session::SessionEnd;
use super::sources::Fetcher;
use super::FetchError;
use crate::manifest::{Manifest, MAX_MANIFEST_LEN};
use crate::net::frame::{read_msg, read_payload, write_msg};
use crate::net::node::XFER;
use crate::wire::{Request, Response};

impl Fetcher {
    /// Gets and verifies the manifest from the first peer that has it.
    pub(super) async fn manifest(
        &mut self,
        mut peers: Vec<PeerId>,
    ) -> Result<(Manifest, Vec<PeerId>), FetchError> {
        loop {
            let all = std::mem::take(&mut peers);
            for (k, &peer) in all.iter().enumerate() {
                match self.try_manifest(peer).await {
                    Ok(Some(m)) => {
                        // This peer and every one not yet asked: the
                        // sessions find out whether the others hold it.
                        peers.push(peer);
                        peers.extend_from_slice(&all[k + 1..]);
                        return Ok((m, peers));
                    }
                    Ok(None) => {
                        self.not_found.insert(peer);
                    }
                    Err(SessionEnd::Lost(reason)) => self.strike(peer, reason).await,
                    Err(SessionEnd::Dropped(reason)) => self.drop_peer(peer, reason).await,
                    Err(_) => unreachable!("try_manifest returns only Lost or Dropped"),
                }
            }
            peers = self.connect().await?;
        }
    }

    /// Asks `peer` for the manifest: `Ok(None)` if it does not hold it;
    /// `Err(Dropped)` if it misbehaved, `Err(Lost)` if the stream failed.
    async fn try_manifest(&self, peer: PeerId) -> Result<Option<Manifest>, SessionEnd> {
        let t = self.opts.request_timeout;
        let io = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                SessionEnd::Dropped(e.to_string())
            } else {
                SessionEnd::Lost(e.to_string())
            }
        };
        let work = async {
            let mut s = self
                .client
                .control()
                .open_stream(peer, XFER)
                .await
                .map_err(|e| SessionEnd::Lost(e.to_string()))?;
            write_msg(&mut s, &Request::Manifest { share: self.share })
                .await
                .map_err(io)?;
            s.flush().await.map_err(io)?;
            match read_msg::<_, Response>(&mut s).await.map_err(io)? {
                Some(Response::Manifest { len }) if len as usize <= MAX_MANIFEST_LEN => {
                    let bytes = read_payload(&mut s, len as usize).await.map_err(io)?;
                    let _ = s.close().await;
                    Manifest::decode_verified(&crate::manifest::ManifestId(self.share), &bytes)
                        .map(Some)
                        .map_err(|e| SessionEnd::Dropped(e.to_string()))
                }
                Some(Response::NotFound) => Ok(None),
                Some(other) => Err(SessionEnd::Dropped(format!(
                    "answered a manifest request with {other:?}"
                ))),
                None => Err(SessionEnd::Lost("closed the stream".into())),
            }
        };
        match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => Err(SessionEnd::Lost(format!(
                "did not answer within {}s",
                t.as_secs()
            ))),
        }
    }
}
