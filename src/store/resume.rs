//! Resuming: which parts of a share an interrupted run already left on disk,
//! verified again, so that they are not fetched twice.
//!
//! Nothing found on disk is trusted: a staged file may have been cut short
//! or edited, and a chunk file may have been damaged, since the run that
//! wrote it. Whatever does not verify against the manifest is simply fetched
//! again. No sockets here: a fetch over the network and an offline unseal
//! can both resume with these.

use std::collections::HashSet;

use crate::chunk::Stream;
use crate::manifest::Manifest;
use crate::seal::Resealer;
use crate::select::Subset;
use crate::store::chunks::ChunkDir;
use crate::store::output::{Output, OutputError};

/// Re-verifies what is on disk before fetching: a previous run's staged
/// content, and the files found at their final paths
/// ([`Output::needs_check`]), by sealing each chunk again from those bytes
/// and comparing with the manifest (sealing is deterministic). Only the
/// chunks of `subset` (the part of the share being fetched) whose bytes are
/// all chosen and all on disk can be checked this way; the others are
/// fetched, and the bytes of found files in them are compared when they
/// arrive ([`Output::write_content`]). Returns the content chunk indices
/// that match, in order: these are not fetched.
///
/// A found file is kept if every chunk holding its bytes matched. One in a
/// chunk that did not match (or could not be checked) is replaced when the
/// caller asked to (`--force`: it is fetched whole and staged); otherwise it
/// is kept only if the fetched bytes match it. A chunk that does not match
/// and whose bytes are all in found files refused in the same words is
/// refused now, before anything is fetched; the staging folder this run
/// made is then removed ([`Output::discard`]), so the destination is left
/// as it was. Runs on [`crate::pipeline::default_threads`] threads, fewer
/// for big chunks ([`crate::pipeline::threads_within`]).
pub fn staged_content(
    output: &mut Output,
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
    let mut wanted = wanted.into_iter();
    // Per chunk: None when it could not be assembled from the disk, else
    // whether it sealed again to its id.
    let mut checked: Vec<(u64, Option<bool>)> = Vec::new();
    let out: &Output = output;
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
                .all(|(to, r)| out.read_content(to, &mut buf[r]).is_ok());
            Ok(Some((i, present.then_some(buf))))
        },
        |(i, buf): (u64, Option<Vec<u8>>)| {
            let ok = buf.map(|b| resealer.reseal(Stream::Content, i, &b).is_ok());
            Ok::<_, OutputError>((i, ok))
        },
        |r| {
            checked.push(r);
            Ok(())
        },
    )?;
    // The files (entry indices) holding chosen bytes of chunk `i`.
    let files_of = |out: &Output, i: u64| -> Vec<usize> {
        let len = m.plaintext_len(Stream::Content, i);
        let mut v: Vec<usize> = subset
            .map(i * size, len)
            .flat_map(|(to, r)| out.files_at(to, r.len() as u64).collect::<Vec<_>>())
            .collect();
        v.dedup();
        v
    };
    let mut good = Vec::new();
    let mut unproven: HashSet<usize> = HashSet::new();
    for &(i, ok) in &checked {
        if ok == Some(true) {
            good.push(i);
            continue;
        }
        let files = files_of(out, i);
        if ok == Some(false) {
            // All of its bytes are in found files that would be refused
            // alike: one of them is not the share's, and which one does not
            // change the answer.
            let refusals: Option<Vec<_>> = files
                .iter()
                .map(|&f| out.found(f).filter(|f| !f.replaceable).map(|f| &f.refusal))
                .collect();
            if let Some(r) = refusals.filter(|r| r.windows(2).all(|w| w[0] == w[1])) {
                if let Some(&refusal) = r.first() {
                    let e = refusal.clone().into();
                    out.discard();
                    return Err(e);
                }
            }
        }
        unproven.extend(files.into_iter().filter(|&f| out.found(f).is_some()));
    }
    let replaced: HashSet<usize> = unproven
        .into_iter()
        .filter(|&f| output.found(f).is_some_and(|f| f.replaceable))
        .collect();
    for &f in &replaced {
        output.replace_found(f);
    }
    if !replaced.is_empty() {
        // Their bytes must all be staged now, so every chunk holding any
        // of them is fetched.
        good.retain(|&i| !files_of(output, i).iter().any(|f| replaced.contains(f)));
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
