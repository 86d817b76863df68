//! The first half of every keyed fetch, and all of `peerdrop ls`: the
//! manifest and the sealed file list, verified, with no content.

use std::sync::{Arc, Mutex};

use libp2p::PeerId;

use super::manifest::get_manifest;
use super::scheduler::run_queue;
use super::sources::Sources;
use super::{FetchError, FetchOptions, ProgressTx};
use crate::chunk::Stream;
use crate::link::Link;
use crate::manifest::Manifest;
use crate::meta::Metadata;
use crate::net::node::Client;
use crate::net::PeerAddr;
use crate::open::{Opener, Plaintext};

/// A share's verified manifest and file list: what `peerdrop ls` shows.
#[derive(Clone, Debug)]
pub struct Listing {
    /// The verified manifest.
    pub manifest: Manifest,
    /// The verified file list.
    pub metadata: Metadata,
}

/// The share opened: its manifest, file list, the opener for its chunks,
/// and the peers to go on with.
pub(super) struct Opened {
    pub(super) manifest: Manifest,
    pub(super) metadata: Metadata,
    pub(super) opener: Arc<Opener>,
    pub(super) peers: Vec<PeerId>,
}

/// Connects, gets the manifest and the file list, and verifies both. An
/// expired share, by the link or its manifest, is refused before the key
/// is checked (docs/FORMAT.md, 7.6): the link's before anything is asked.
pub(super) async fn open_share(src: &mut Sources, link: &Link) -> Result<Opened, FetchError> {
    let key = link.require_key()?;
    link.check_time(std::time::SystemTime::now())?;
    let peers = src.connect().await?;
    let (manifest, peers) = get_manifest(src, peers).await?;
    link.check_manifest(&manifest, std::time::SystemTime::now())?;
    let opener = Arc::new(Opener::new(manifest.clone(), key)?);
    // The file list, collected in order.
    let n_meta = manifest.metadata_chunks.len() as u64;
    let meta_plain = Arc::new(Mutex::new(vec![Vec::new(); n_meta as usize]));
    let sink = {
        let meta_plain = meta_plain.clone();
        move |index: u64, p: Plaintext| {
            meta_plain.lock().expect("never poisoned")[index as usize] = p.as_slice().to_vec();
            Ok::<(), FetchError>(())
        }
    };
    let indices = (0..n_meta).collect();
    let peers = run_queue(src, &opener, Stream::Metadata, indices, peers, sink).await?;
    let plain = std::mem::take(&mut *meta_plain.lock().expect("never poisoned")).concat();
    let metadata = opener.metadata(&plain)?;
    Ok(Opened {
        manifest,
        metadata,
        opener,
        peers,
    })
}

/// Fetches and verifies only the manifest and the file list of the read
/// link `link`: no content chunk is asked for. Sends no `Done` (this node
/// does not hold the share).
pub async fn list(
    client: &Client,
    link: &Link,
    sources: Vec<PeerAddr>,
    opts: &FetchOptions,
    progress: ProgressTx,
) -> Result<Listing, FetchError> {
    let mut src = Sources::new(client, *link.manifest_id(), sources, opts, progress);
    let o = open_share(&mut src, link).await?;
    Ok(Listing {
        manifest: o.manifest,
        metadata: o.metadata,
    })
}
