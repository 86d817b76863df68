//! Resuming: which parts of a share an interrupted run already left on disk,
//! verified again, so that they are not fetched twice.
//!
//! Nothing found on disk is trusted: a staged file may have been cut short
//! or edited, and a chunk file may have been damaged, since the run that
//! wrote it. Whatever does not verify against the manifest is simply fetched
//! again. No sockets here: a fetch over the network and an offline unseal
//! can both resume with these.

use crate::chunk::Stream;
use crate::manifest::Manifest;
use crate::seal::Resealer;
use crate::select::Subset;
use crate::store::chunks::ChunkDir;
use crate::store::output::{Output, OutputError};

/// Re-verifies a previous run's staged content by sealing it again and
/// comparing with the manifest (sealing is deterministic). Only the chunks
/// of `subset` (the part of the share being fetched) whose bytes are all
/// chosen can be checked this way; the others (shared with an unchosen
/// neighbour) are fetched again. Returns the content chunk indices that
/// match, in order. For an output found already in place
/// ([`Output::present`]), anything short of every chunk is
/// [`OutputError::Exists`]. Runs on [`crate::pipeline::default_threads`]
/// threads, fewer for big chunks ([`crate::pipeline::threads_within`]).
pub fn staged_content(
    output: &Output,
    resealer: &Resealer,
    subset: &Subset,
) -> Result<Vec<u64>, OutputError> {
    let m = resealer.manifest();
    let size = m.chunk_size.bytes();
    if output.placing() {
        // Verified and flushed before the marker was written; some of it
        // has already left the staging folder.
        return Ok(subset.chunks(size));
    }
    let wanted = subset.chunks(size);
    let count = wanted.len() as u64;
    let mut wanted = wanted.into_iter();
    let mut good = Vec::new();
    crate::pipeline::ordered(
        crate::pipeline::threads_within(
            crate::pipeline::default_threads(),
            size,
            crate::pipeline::MEMORY,
        ),
        || {
            let Some(i) = wanted.next() else {
                return Ok(None);
            };
            let (offset, len) = (i * size, m.plaintext_len(Stream::Content, i));
            if !subset.covers(offset, len) {
                return Ok(Some((i, None)));
            }
            let mut buf = vec![0; len];
            // A file not written yet (or cut short) just means "fetch it".
            let present = subset
                .map(offset, len)
                .all(|(to, r)| output.read_content(to, &mut buf[r]).is_ok());
            Ok(Some((i, present.then_some(buf))))
        },
        |(i, buf): (u64, Option<Vec<u8>>)| {
            let ok = buf.is_some_and(|b| resealer.reseal(Stream::Content, i, &b).is_ok());
            Ok::<_, OutputError>((i, ok))
        },
        |(i, ok)| {
            if ok {
                good.push(i);
            }
            Ok(())
        },
    )?;
    if output.present() && good.len() as u64 != count {
        // Files of the right names and sizes that are not the share: they
        // belong to someone else and stay untouched.
        return Err(output.taken());
    }
    Ok(good)
}

/// What a chunk folder already holds of one stream of a share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Chunk indices still to fetch, in order: missing, unreadable, or not
    /// matching their id and length.
    pub todo: Vec<u64>,
    /// Sealed bytes of the chunks that verified and are kept.
    pub kept_bytes: u64,
}

/// Checks every chunk of `stream` of `manifest` already in `dir` (from an
/// interrupted pin) against its id and length; see [`Stored`].
pub fn stored_chunks(dir: &ChunkDir, manifest: &Manifest, stream: Stream) -> Stored {
    let mut todo = Vec::new();
    let mut kept_bytes = 0u64;
    for (i, id) in manifest.chunks(stream).iter().enumerate() {
        let len = manifest.sealed_len(stream, i as u64);
        match dir.get(id, len) {
            Ok(b) if crate::open::check_chunk(manifest, stream, i as u64, &b).is_ok() => {
                kept_bytes += len as u64
            }
            _ => todo.push(i as u64),
        }
    }
    Stored { todo, kept_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkSize;
    use crate::crypto::ShareKey;
    use crate::meta::{Entry, EntryKind, Metadata, RelPath, Timestamp};
    use crate::seal::{seal, SealOptions};

    /// A pin interrupted after storing every chunk but one, where another
    /// chunk's bytes ended up under one id: only those two are fetched again.
    #[test]
    fn a_damaged_or_missing_chunk_is_fetched_again_and_the_rest_kept() {
        let size = ChunkSize::from_log2(16).unwrap();
        let content: Vec<u8> = (0..5 * 65536 + 100).map(|i| (i * 7 % 251) as u8).collect();
        let metadata = Metadata::from_entries(vec![Entry {
            path: RelPath::new("f").unwrap(),
            kind: EntryKind::File,
            executable: false,
            mtime: Timestamp { secs: 0, nanos: 0 },
            size: content.len() as u64,
        }])
        .unwrap();
        let opts = SealOptions {
            chunk_size: Some(size),
            threads: 1,
            expires: None,
        };
        let key = ShareKey::generate().unwrap();
        let mut chunks = std::collections::HashMap::new();
        let sealed = seal(&key, &metadata, &content[..], &opts, |c| {
            chunks.insert(c.id, c.bytes.to_vec());
            Ok(())
        })
        .unwrap();
        let m = sealed.manifest;
        let ids = m.chunks(Stream::Content);
        assert_eq!(ids.len(), 6);
        let sealed_len = |i: &u64| m.sealed_len(Stream::Content, *i) as u64;

        let tmp = tempfile::tempdir().unwrap();
        let whole = ChunkDir::create(&tmp.path().join("whole")).unwrap();
        for (id, bytes) in &chunks {
            whole.put(id, bytes).unwrap();
        }
        let all = stored_chunks(&whole, &m, Stream::Content);
        assert_eq!(all.todo, Vec::<u64>::new());
        assert_eq!(all.kept_bytes, (0..6).map(|i| sealed_len(&i)).sum::<u64>());

        // Chunk 1 holds chunk 2's bytes (same length, wrong id); chunk 4 is
        // missing.
        let damaged = ChunkDir::create(&tmp.path().join("damaged")).unwrap();
        for (i, id) in ids.iter().enumerate() {
            match i {
                1 => damaged.put(id, &chunks[&ids[2]]).unwrap(),
                4 => {}
                _ => damaged.put(id, &chunks[id]).unwrap(),
            }
        }
        let after = stored_chunks(&damaged, &m, Stream::Content);
        assert_eq!(after.todo, vec![1, 4]);
        assert_eq!(
            after.kept_bytes,
            [0, 2, 3, 5].iter().map(sealed_len).sum::<u64>()
        );
    }
}
