//! `peerdrop cat`: one file of a share, in order, each chunk verified before
//! a byte of it is handed on, fetched ahead in a bounded window.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use super::listing::{open_share, Opened};
use super::scheduler::run_queue;
use super::sources::Sources;
use super::{FetchError, FetchOptions, Progress, ProgressTx};
use crate::chunk::Stream;
use crate::link::Link;
use crate::meta::EntryKind;
use crate::net::node::Client;
use crate::net::PeerAddr;
use crate::open::Plaintext;

/// Most plaintext held ahead of the writer: the window grows from one chunk
/// (so the first byte comes after one round trip) to this.
const WINDOW_BYTES: u64 = 16 << 20;

/// Chunks verified but not yet written, and where the writer is.
struct InOrder {
    out: Box<dyn Write + Send>,
    /// The next chunk index to write.
    next: u64,
    /// Out of order arrivals, at most one window of them.
    waiting: BTreeMap<u64, Plaintext>,
    /// The file's range in the content stream.
    file: std::ops::Range<u64>,
    chunk_size: u64,
    written: u64,
}

impl InOrder {
    fn put(&mut self, index: u64, p: Plaintext) -> std::io::Result<()> {
        self.waiting.insert(index, p);
        while let Some(p) = self.waiting.remove(&self.next) {
            let start = self.next * self.chunk_size;
            let end = start + p.as_slice().len() as u64;
            let (a, b) = (self.file.start.max(start), self.file.end.min(end));
            self.out
                .write_all(&p.as_slice()[(a - start) as usize..(b - start) as usize])?;
            self.out.flush()?;
            self.written += b - a;
            self.next += 1;
        }
        Ok(())
    }
}

/// Fetches the file at `path` of the read link's share and writes it to
/// `out` in order, as its chunks verify; nothing goes to disk. Returns the
/// bytes written. A chunk that does not verify is never written: its source
/// is dropped and the chunk asked of another, or the stream ends with the
/// error. Sends no `Done`.
pub async fn stream_file(
    client: &Client,
    link: &Link,
    sources: Vec<PeerAddr>,
    path: &str,
    opts: &FetchOptions,
    progress: ProgressTx,
    out: Box<dyn Write + Send>,
) -> Result<u64, FetchError> {
    let mut src = Sources::new(client, *link.manifest_id(), sources, opts, progress);
    let Opened {
        manifest,
        metadata,
        opener,
        mut peers,
    } = open_share(&mut src, link).await?;
    let mut offset = 0;
    let mut file = None;
    for e in metadata.entries() {
        if e.path.as_str() == path.trim_matches('/') && e.kind == EntryKind::File {
            file = Some(offset..offset + e.size);
            break;
        }
        offset += e.size;
    }
    let file = file.ok_or_else(|| FetchError::NoSuchFile(path.to_owned()))?;
    src.report(Progress::Started {
        total: file.end - file.start,
        files: 1,
    });
    if file.is_empty() {
        return Ok(0);
    }
    let chunk_size = manifest.chunk_size.bytes();
    let (first, last) = (file.start / chunk_size, (file.end - 1) / chunk_size);
    let state = Arc::new(Mutex::new(InOrder {
        out,
        next: first,
        waiting: BTreeMap::new(),
        file,
        chunk_size,
        written: 0,
    }));
    let max_window = (WINDOW_BYTES / chunk_size).max(1);
    let (mut next, mut window) = (first, 1);
    while next <= last {
        let end = (next + window).min(last + 1);
        let sink = {
            let (state, progress) = (state.clone(), src.progress.clone());
            move |index: u64, p: Plaintext| {
                let mut s = state.lock().expect("never poisoned");
                s.put(index, p).map_err(FetchError::Write)?;
                progress.send(Progress::Bytes(s.written));
                Ok(())
            }
        };
        peers = run_queue(
            &mut src,
            &opener,
            Stream::Content,
            (next..end).collect(),
            peers,
            sink,
        )
        .await?;
        next = end;
        window = (window * 2).min(max_window);
    }
    let written = state.lock().expect("never poisoned").written;
    Ok(written)
}
