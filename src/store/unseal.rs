//! Unsealing a whole share from a chunk source into a destination folder.

use std::io;
use std::path::{Path, PathBuf};

use crate::chunk::{ChunkId, Stream};
use crate::manifest::Manifest;
use crate::open::{OpenError, Opener};
use crate::pipeline;
use crate::store::chunks::ChunkDir;
use crate::store::output::{Output, OutputError, OutputOptions};

/// Where sealed chunks come from.
pub trait ChunkSource: Send {
    /// The bytes stored under `id`, at most `max_len` of them. They are
    /// verified by the caller; a source need not (and cannot) be trusted.
    fn fetch(&mut self, id: &ChunkId, max_len: usize) -> io::Result<Vec<u8>>;
}

impl ChunkSource for ChunkDir {
    fn fetch(&mut self, id: &ChunkId, max_len: usize) -> io::Result<Vec<u8>> {
        self.get(id, max_len)
    }
}

impl<F: FnMut(&ChunkId, usize) -> io::Result<Vec<u8>> + Send> ChunkSource for F {
    fn fetch(&mut self, id: &ChunkId, max_len: usize) -> io::Result<Vec<u8>> {
        self(id, max_len)
    }
}

/// Why unsealing failed.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// Verification or decryption failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The destination could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A chunk could not be obtained.
    #[error("could not get {stream} chunk {index}: {error}")]
    Fetch {
        /// Stream of the chunk.
        stream: Stream,
        /// Index of the chunk.
        index: u64,
        /// What went wrong.
        error: io::Error,
    },
}

/// How to unseal.
#[derive(Clone, Debug, Default)]
pub struct UnsealOptions {
    /// How to treat the destination.
    pub output: OutputOptions,
    /// Worker threads for verification and decryption; 0 means one per core.
    pub threads: usize,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Unsealed {
    /// Top-level paths created in the destination.
    pub paths: Vec<PathBuf>,
    /// Number of regular files.
    pub files: usize,
    /// Bytes of content.
    pub bytes: u64,
}

/// Fetches, verifies and decrypts every chunk of the share opened by
/// `opener` from `source`, and writes the files under `dest`. Reports
/// content bytes written so far to `progress`.
pub fn unseal(
    opener: &Opener,
    source: &mut impl ChunkSource,
    dest: &Path,
    opts: &UnsealOptions,
    mut progress: impl FnMut(u64),
) -> Result<Unsealed, UnsealError> {
    let m: &Manifest = opener.manifest();
    let fetch_err = |stream, index| {
        move |error| UnsealError::Fetch {
            stream,
            index,
            error,
        }
    };
    let mut meta_index = 0u64;
    let metadata = opener.read_metadata(|id| {
        let r = source
            .fetch(id, m.sealed_len(Stream::Metadata, meta_index))
            .map_err(fetch_err(Stream::Metadata, meta_index));
        meta_index += 1;
        r
    })?;
    let files = metadata.file_count();
    let mut out = Output::create(dest, &opener.manifest_id(), metadata, &opts.output)?;
    // Every chunk is read here anyway (the source is local): files found
    // in place are compared as their bytes arrive, or with --force simply
    // written again.
    out.replace_all_found();
    let count = m.content_chunks.len() as u64;
    let chunk_size = m.chunk_size.bytes();
    let threads = match opts.threads {
        0 => pipeline::default_threads(),
        n => n,
    };
    let threads = pipeline::threads_within(threads, chunk_size, pipeline::MEMORY);
    let mut next = 0u64;
    let mut written = 0u64;
    if out.placing() {
        // An interrupted run verified and flushed everything; only the
        // renames are left.
        next = count;
        written = out.metadata().content_len();
    }
    let streamed = pipeline::ordered::<_, _, UnsealError>(
        threads,
        || {
            if next == count {
                return Ok(None);
            }
            let index = next;
            next += 1;
            let bytes = source
                .fetch(
                    &m.content_chunks[index as usize],
                    m.sealed_len(Stream::Content, index),
                )
                .map_err(fetch_err(Stream::Content, index))?;
            Ok(Some((index, bytes)))
        },
        |(index, bytes)| Ok((index, opener.open_chunk(Stream::Content, index, bytes)?)),
        |(index, plain)| {
            out.write_content(index * chunk_size, plain.as_slice())?;
            written += plain.as_slice().len() as u64;
            progress(written);
            Ok(())
        },
    );
    if let Err(UnsealError::Output(OutputError::Exists(_) | OutputError::Conflict(_))) = &streamed {
        // A found file that is not the share's: leave the destination as
        // it was.
        out.discard();
    }
    streamed?;
    let paths = out.finish()?;
    Ok(Unsealed {
        paths,
        files,
        bytes: written,
    })
}
