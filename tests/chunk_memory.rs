//! Audit F-10 end to end: memory in a fetch is bounded in bytes, whatever
//! chunk size the sharer picked. A share sealed with the largest chunks
//! (64 MiB) is received over loopback by the real `peerdrop receive`, and
//! that process's peak RSS stays within the documented bound
//! (docs/PROTOCOL.md, "Memory"): chunks asked for and not yet handed on fit
//! in `FETCH_MEMORY`, the writer's queue holds one such chunk, plus the
//! chunk being opened and the process itself. Before the fix a fetch asked
//! `depth` (8) chunks of any size at once from each of up to 8 sources:
//! here, with six sources, every chunk of the share at once.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::net::{link_for, provider, start_server};
use common::*;
use peerdrop::chunk::{ChunkSize, MAX_CHUNK_LOG2};
use peerdrop::crypto::ShareKey;
use peerdrop::net::fetch::FETCH_MEMORY;
use peerdrop::seal::SealOptions;
use peerdrop::store::share::LocalShare;

const MIB: u64 = 1 << 20;
/// Six chunks of 64 MiB, the last one 1 MiB short, and as many sources:
/// enough that a fetch holding every chunk at once shows, small enough for
/// CI.
const CHUNKS: u64 = 6;
const SIZE: u64 = CHUNKS * 64 * MIB - MIB;

/// The `i`th MiB of the file: one pseudo-random MiB, told apart by its
/// index, so a chunk written at the wrong offset shows.
fn mib(base: &[u8], i: u64) -> Vec<u8> {
    let mut b = base.to_vec();
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

fn write_file(path: &Path, base: &[u8]) {
    let mut f = File::create(path).unwrap();
    for i in 0..SIZE / MIB {
        f.write_all(&mib(base, i)).unwrap();
    }
}

fn assert_same(path: &Path, base: &[u8]) {
    let mut f = File::open(path).unwrap();
    assert_eq!(f.metadata().unwrap().len(), SIZE);
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..SIZE / MIB {
        f.read_exact(&mut buf).unwrap();
        assert!(buf == mib(base, i), "MiB {i} of the received file differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_of_64_mib_chunks_is_received_within_the_memory_bound() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let tmp = tempfile::tempdir().unwrap();
        let base = bytes(64, MIB as usize);
        let f: PathBuf = sub(&tmp, "big-chunks.bin");
        write_file(&f, &base);
        let key = ShareKey::generate().unwrap();
        let opts = SealOptions {
            chunk_size: ChunkSize::from_log2(MAX_CHUNK_LOG2),
            ..SealOptions::default()
        };
        let share = LocalShare::create(std::slice::from_ref(&f), &key, &opts, |_| {}).unwrap();
        let chunk = share.manifest().chunk_size.bytes();
        assert_eq!(chunk, 64 * MIB);
        assert_eq!(share.manifest().content_chunks.len() as u64, CHUNKS);
        let id = share.id();
        let share = provider(share);
        let mut servers = Vec::new();
        for _ in 0..CHUNKS {
            servers.push(start_server("/ip4/127.0.0.1/tcp/0", share.clone()).await);
        }
        let link = link_for(&key, id, &servers.iter().collect::<Vec<_>>()).to_uri_string();

        let dest = sub(&tmp, "dest");
        let (code, rss_kib, err) = {
            let dest = dest.clone();
            tokio::task::spawn_blocking(move || receive_peak_rss(&link, &dest, &["--wait", "30"]))
                .await
                .unwrap()
        };
        assert_eq!(code, 0, "{err}");
        assert_same(&dest.join("big-chunks.bin"), &base);

        // The documented bound: FETCH_MEMORY of chunks in flight, one chunk
        // in the writer's queue, the one being opened (sealed bytes in,
        // plaintext out), and 64 MiB for the process itself (it runs at
        // about 20 MiB with nothing in flight).
        let bound = FETCH_MEMORY + chunk + chunk + 64 * MIB;
        let peak = rss_kib as u64 * 1024;
        eprintln!(
            "peak RSS of receive, {CHUNKS} chunks of 64 MiB from {CHUNKS} sources: {} MiB (bound {} MiB)",
            peak / MIB,
            bound / MIB
        );
        assert!(
            peak <= bound,
            "peak RSS {} MiB over the {} MiB bound",
            peak / MIB,
            bound / MIB
        );
        for s in servers {
            s.client.shutdown().await;
        }
    })
    .await
    .unwrap();
}
