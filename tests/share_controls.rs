//! Share controls on loopback (mDNS off): `ls` fetches the file list and no
//! content; `--only`/`--exclude` fetch only the chunks covering the chosen
//! files, write exactly those, and resume, in one-shot `receive` and in the
//! daemon's `fetch`.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::daemon::{err, fetch, Daemon};
use common::net::*;
use common::*;
use peerdrop::chunk::{ChunkId, ChunkSize};
use peerdrop::crypto::ShareKey;
use peerdrop::manifest::ManifestId;
use peerdrop::meta::{EntryKind, Metadata};
use peerdrop::net::fetch::{list, stream_file, FetchError, FetchOptions, Progress};
use peerdrop::net::node::{self, NodeConfig};
use peerdrop::net::serve::{LocalProvider, Provider, Refusal};
use peerdrop::net::PeerAddr;
use peerdrop::seal::SealOptions;
use peerdrop::select::Selection;
use peerdrop::store::share::LocalShare;
use peerdrop::wire::Have;

const LIMIT: Duration = Duration::from_secs(180);

/// Serves a share, recording every chunk asked for; after `limit` chunks it
/// refuses the rest (a source that goes away), or with `hold` keeps them
/// unanswered until [`Counting::release`] (a source that stalls), then
/// refuses them unrecorded (whoever asked has given up by then).
struct Counting {
    inner: LocalProvider,
    asked: Mutex<Vec<ChunkId>>,
    served: AtomicUsize,
    limit: AtomicUsize,
    hold: bool,
    released: Mutex<bool>,
    opened: Condvar,
    /// A chunk served with one bit flipped.
    bad: Option<ChunkId>,
}

impl Counting {
    fn new(share: LocalShare, limit: usize) -> Arc<Counting> {
        Arc::new(Counting {
            inner: LocalProvider::new(share, None),
            asked: Mutex::new(Vec::new()),
            served: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            hold: false,
            released: Mutex::new(false),
            opened: Condvar::new(),
            bad: None,
        })
    }

    /// Holds every chunk request after the first `limit`.
    fn holding(share: LocalShare, limit: usize) -> Arc<Counting> {
        let mut c = Counting::new(share, limit);
        Arc::get_mut(&mut c).unwrap().hold = true;
        c
    }

    /// Serves everything from now on; held requests are refused.
    fn release(&self) {
        self.limit.store(usize::MAX, Ordering::SeqCst);
        *self.released.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn asked(&self) -> Vec<ChunkId> {
        self.asked.lock().unwrap().clone()
    }
}

impl Provider for Counting {
    fn manifest(&self, share: &ManifestId) -> Option<Arc<[u8]>> {
        self.inner.manifest(share)
    }
    fn have(&self, share: &ManifestId) -> Option<Have> {
        self.inner.have(share)
    }
    fn chunk(&self, share: &ManifestId, chunk: &ChunkId) -> Result<Vec<u8>, Refusal> {
        if self.served.fetch_add(1, Ordering::SeqCst) >= self.limit.load(Ordering::SeqCst) {
            if self.hold {
                // Bounded: a test that never releases still ends.
                let g = self.released.lock().unwrap();
                let held = self
                    .opened
                    .wait_timeout_while(g, LIMIT, |released| !*released);
                drop(held);
            }
            return Err(Refusal::NotFound);
        }
        self.asked.lock().unwrap().push(*chunk);
        let mut c = self.inner.chunk(share, chunk)?;
        if self.bad == Some(*chunk) {
            let n = c.len();
            c[n / 2] ^= 1;
        }
        Ok(c)
    }
}

/// 1,000 files of 1 to 6,000 bytes in 10 folders, one empty file, one empty
/// folder; returns the root.
fn thousand_files(tmp: &tempfile::TempDir) -> PathBuf {
    let root = sub(tmp, "tree");
    let mut tree = Tree::new();
    for i in 0..1000u64 {
        let len = 1 + (i * 7919 % 6000) as usize;
        tree.insert(
            format!("d{}/f{i:04}.bin", i % 10),
            (false, false, bytes(i, len)),
        );
    }
    tree.insert("d3/empty.bin".into(), (false, false, Vec::new()));
    tree.insert("d3/nothing".into(), (true, false, Vec::new()));
    write_tree(&root, &tree);
    root
}

/// Seals `root` with 16 KiB chunks, so that most chunks hold several files.
fn share_of(root: &Path, key: &ShareKey) -> LocalShare {
    let opts = SealOptions {
        chunk_size: ChunkSize::from_log2(14),
        ..SealOptions::default()
    };
    LocalShare::create(&[root.to_path_buf()], key, &opts, |_| {}).unwrap()
}

/// Content chunk indices holding any byte of the entries `chosen` picks,
/// computed from the file list independently of `peerdrop::select`.
fn chunks_for(m: &Metadata, chunk: u64, chosen: impl Fn(&str) -> bool) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut offset = 0;
    for e in m.entries() {
        if e.kind == EntryKind::File && e.size > 0 && chosen(e.path.as_str()) {
            out.extend(offset / chunk..=(offset + e.size - 1) / chunk);
        }
        offset += e.size;
    }
    out
}

/// A fresh receiving node, the link's hints as sources, a progress sender.
fn receiver(
    link: &peerdrop::link::Link,
) -> (
    peerdrop::net::node::Client,
    Vec<PeerAddr>,
    peerdrop::net::fetch::ProgressTx,
) {
    let client = node::spawn(NodeConfig::default()).unwrap();
    let sources = link
        .hints()
        .iter()
        .filter_map(PeerAddr::from_hint)
        .collect();
    (client, sources, peerdrop::net::fetch::progress_channel().0)
}

async fn list_link(
    link: &peerdrop::link::Link,
) -> Result<peerdrop::net::fetch::Listing, FetchError> {
    let (client, sources, tx) = receiver(link);
    let r = list(&client, link, sources, &quick(), tx).await;
    client.shutdown().await;
    r
}

/// [`thousand_files`] served by a [`Counting`] provider.
async fn serve_thousand(
    tmp: &tempfile::TempDir,
) -> (PathBuf, ShareKey, ManifestId, Arc<Counting>, Server) {
    let root = thousand_files(tmp);
    let key = ShareKey::generate().unwrap();
    let share = share_of(&root, &key);
    let id = share.id();
    let counting = Counting::new(share, usize::MAX);
    let server = start_server("/ip4/127.0.0.1/tcp/0", counting.clone()).await;
    (root, key, id, counting, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_fetches_the_file_list_and_no_content_chunk() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let (_root, key, id, counting, server) = serve_thousand(&tmp).await;
        let listing = list_link(&link_for(&key, id, &[&server])).await.unwrap();
        let m = &listing.metadata;
        assert_eq!(m.file_count(), 1001);
        assert!(m
            .entries()
            .iter()
            .any(|e| e.path.as_str() == "tree/d3/nothing"));
        let content: HashSet<_> = listing.manifest.content_chunks.iter().collect();
        let asked = counting.asked();
        assert!(!asked.is_empty(), "the file list was fetched");
        assert_eq!(asked.len(), listing.manifest.metadata_chunks.len());
        assert!(
            asked.iter().all(|c| !content.contains(c)),
            "ls asked for a content chunk"
        );
        server.client.shutdown().await;
    })
    .await
    .unwrap();
}

/// What `--only tree/d3 --exclude '*5?3.bin'` takes, by hand: folder d3
/// but for f0503 to f0593 (a run in the middle of it).
fn chosen(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap();
    path.starts_with("tree/d3/") && !(name.starts_with("f05") && name.ends_with("3.bin"))
}

fn selection() -> FetchOptions {
    FetchOptions {
        selection: Selection::new(&["tree/d3".into()], &["*5?3.bin".into()]).unwrap(),
        ..quick()
    }
}

/// What `chosen` picks of the source tree, as it should land under `dest`.
fn expected_part(root: &Path) -> Tree {
    let mut want: Tree = read_tree(root)
        .into_iter()
        .filter(|(p, _)| chosen(&format!("tree/{p}")) || p == "d3")
        .map(|(p, v)| (format!("tree/{p}"), v))
        .collect();
    want.insert("tree".into(), (true, false, Vec::new()));
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_fetches_the_chunks_of_the_chosen_files_and_writes_just_those() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let (root, key, id, counting, server) = serve_thousand(&tmp).await;
        let link = link_for(&key, id, &[&server]);
        let dest = sub(&tmp, "dest");
        let (r, events) = fetch_link(&link, &dest, &selection()).await;
        let done = r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
        assert!(!done.whole);
        let m = &done.metadata;
        let manifest = &done.manifest;
        let want = chunks_for(m, 1 << 14, chosen);
        let all = manifest.content_chunks.len();
        assert!(want.len() * 4 < all, "{} of {all}", want.len());
        let asked: HashSet<ChunkId> = counting.asked().into_iter().collect();
        let asked_content: BTreeSet<u64> = (0..all as u64)
            .filter(|&i| asked.contains(&manifest.content_chunks[i as usize]))
            .collect();
        assert_eq!(
            asked_content, want,
            "exactly the chunks of the chosen files"
        );
        assert_eq!(read_tree(&dest), expected_part(&root));
        let chosen_bytes: u64 = m
            .entries()
            .iter()
            .filter(|e| chosen(e.path.as_str()))
            .map(|e| e.size)
            .sum();
        assert_eq!(done.bytes, chosen_bytes);
        assert!(
            events.contains(&Progress::Bytes(chosen_bytes)),
            "{events:?}"
        );
        server.client.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_partial_fetch_resumes_with_what_it_has() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let root = thousand_files(&tmp);
        let key = ShareKey::generate().unwrap();
        let share = share_of(&root, &key);
        let id = share.id();
        // The file list (1 chunk) and 12 content chunks, then it goes away.
        let flaky = Counting::new(share, 13);
        let server = start_server("/ip4/127.0.0.1/tcp/0", flaky.clone()).await;
        let dest = sub(&tmp, "dest");
        let impatient = FetchOptions {
            wait: Duration::from_secs(2),
            ..selection()
        };
        let (r, _) = fetch_link(&link_for(&key, id, &[&server]), &dest, &impatient).await;
        assert!(matches!(r, Err(FetchError::NotFound)), "{r:?}");
        assert_eq!(final_names_in(&dest), Vec::<String>::new());
        server.client.shutdown().await;

        let counting = Counting::new(share_of(&root, &key), usize::MAX);
        let good = start_server("/ip4/127.0.0.1/tcp/0", counting.clone()).await;
        let (r, events) = fetch_link(&link_for(&key, id, &[&good]), &dest, &selection()).await;
        let done = r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
        assert!(done.resumed_bytes > 0, "{events:?}");
        let want = chunks_for(&done.metadata, 1 << 14, chosen);
        let content: HashSet<_> = done.manifest.content_chunks.iter().collect();
        let again = counting
            .asked()
            .iter()
            .filter(|c| content.contains(c))
            .count();
        assert!(
            again < want.len(),
            "{again} of {} fetched again",
            want.len()
        );
        assert_eq!(read_tree(&dest), expected_part(&root));
        assert_eq!(final_names_in(&dest), ["tree"], "staging folder removed");
        good.client.shutdown().await;
    })
    .await
    .unwrap();
}

/// Content chunk indices asked for among `asked`, as a set.
fn content_indices(asked: &[ChunkId], manifest: &peerdrop::manifest::Manifest) -> BTreeSet<u64> {
    let index: HashMap<&ChunkId, u64> = manifest
        .content_chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (c, i as u64))
        .collect();
    asked.iter().filter_map(|c| index.get(c).copied()).collect()
}

/// The content range of the files `pick` chooses, which must be one run
/// (a folder's files are contiguous in the sorted file list).
fn range_of(m: &Metadata, pick: impl Fn(&str) -> bool) -> (u64, u64) {
    let (mut offset, mut range) = (0, None::<(u64, u64)>);
    for e in m.entries() {
        if e.kind == EntryKind::File && pick(e.path.as_str()) {
            let r = range.get_or_insert((offset, offset));
            assert_eq!(r.1, offset, "not one run: {}", e.path.as_str());
            r.1 = offset + e.size;
        }
        offset += e.size;
    }
    range.expect("something picked")
}

/// What a wider fetch into a folder holding an earlier part asks for: the
/// chunks of its choice (by `chosen`), but for those wholly inside the
/// content range `kept` (checked from the disk by sealing them again).
fn chunks_beyond(
    m: &Metadata,
    chunk: u64,
    chosen: impl Fn(&str) -> bool,
    kept: (u64, u64),
) -> BTreeSet<u64> {
    let len = m.content_len();
    chunks_for(m, chunk, chosen)
        .into_iter()
        .filter(|i| !(i * chunk >= kept.0 && ((i + 1) * chunk).min(len) <= kept.1))
        .collect()
}

fn only(patterns: &[&str], force: bool, merge: bool) -> FetchOptions {
    let only: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
    FetchOptions {
        selection: Selection::new(&only, &[]).unwrap(),
        output: peerdrop::store::output::OutputOptions { force, merge },
        ..quick()
    }
}

/// The folders `names` of [`thousand_files`]'s tree, as they land under a
/// destination.
fn folders_of(root: &Path, names: &[&str]) -> Tree {
    let mut want: Tree = read_tree(root)
        .into_iter()
        .filter(|(p, _)| names.iter().any(|n| p.split('/').next() == Some(n)))
        .map(|(p, v)| (format!("tree/{p}"), v))
        .collect();
    want.insert("tree".into(), (true, false, Vec::new()));
    want
}

/// Whether a path is inside one of `folders`.
fn in_folders(folders: &[&str]) -> impl Fn(&str) -> bool {
    let folders: Vec<String> = folders.iter().map(|f| format!("{f}/")).collect();
    move |p: &str| folders.iter().any(|f| p.starts_with(f))
}

/// Issue 13: `receive --only tree/d3`, then `--only tree/d3 --only
/// tree/d4` into the same folder. Without --merge the second is refused
/// before any content is asked for (it would write into the existing
/// `tree`); with it, the files of d3 found in place are checked from the
/// disk and kept, and only the chunks of d4 (and of d3's first chunk,
/// shared with d2, which could not be checked offline) are asked for. The
/// result is exactly d3 and d4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wider_fetch_keeps_the_earlier_part_and_asks_only_for_the_rest() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let (root, key, id, counting, server) = serve_thousand(&tmp).await;
        let link = link_for(&key, id, &[&server]);
        let dest = sub(&tmp, "dest");
        let (r, _) = fetch_link(&link, &dest, &only(&["tree/d3"], false, false)).await;
        let first = r.unwrap();
        let (m, manifest) = (&first.metadata, &first.manifest);
        let before = counting.asked().len();

        let wider = ["tree/d3", "tree/d4"];
        let (r, _) = fetch_link(&link, &dest, &only(&wider, false, false)).await;
        match r {
            Err(FetchError::Output(peerdrop::store::output::OutputError::Conflict(p))) => {
                assert_eq!(p, dest.join("tree"))
            }
            r => panic!("{:?}", r.map(|d| d.paths)),
        }
        let asked = counting.asked();
        assert!(content_indices(&asked[before..], manifest).is_empty());
        assert_eq!(names_in(&dest), ["tree"], "no staging folder left");
        let before = asked.len();

        let (r, events) = fetch_link(&link, &dest, &only(&wider, false, true)).await;
        let done = r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
        let asked = content_indices(&counting.asked()[before..], manifest);
        let d3 = range_of(m, in_folders(&["tree/d3"]));
        let want = chunks_beyond(m, 1 << 14, in_folders(&wider), d3);
        assert_eq!(asked, want, "only the chunks the new files need");
        let all = chunks_for(m, 1 << 14, in_folders(&wider)).len();
        assert!(asked.len() * 3 < all * 2, "{} of {all}", asked.len());
        // All of d3 but what its two end chunks hold.
        let kept: u64 = d3.1 - d3.0;
        assert!(
            done.resumed_bytes + 2 * (1 << 14) >= kept,
            "{} of {kept}",
            done.resumed_bytes
        );
        assert_eq!(read_tree(&dest), folders_of(&root, &["d3", "d4"]));
        assert_eq!(names_in(&dest), ["tree"]);
        eprintln!(
            "wider fetch: {} of the {all} chunks of d3+d4 asked for, {} bytes kept",
            asked.len(),
            done.resumed_bytes
        );
        server.client.shutdown().await;
    })
    .await
    .unwrap();
}

/// Issue 13: a share of two folders `a` and `b`. Fetching `a`, then `a`
/// and `b` (no --merge needed: nothing is written into `a`) asks only for
/// b's chunks. A file of `a` changed since (same size) is refused before
/// any content is asked for, naming `a` without --merge and the file with
/// it; --force replaces it; the refusals leave the folder as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_part_is_reused_only_if_it_checks_out() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = Tree::new();
        a.insert("1.bin".into(), (false, false, bytes(11, 40_000)));
        a.insert("2.bin".into(), (false, false, bytes(12, 30_000)));
        a.insert("s/3.bin".into(), (false, false, bytes(13, 5_000)));
        let mut b = Tree::new();
        b.insert("4.bin".into(), (false, false, bytes(14, 50_000)));
        b.insert("5.bin".into(), (false, false, bytes(15, 100)));
        let (ra, rb) = (sub(&tmp, "a"), sub(&tmp, "b"));
        write_tree(&ra, &a);
        write_tree(&rb, &b);
        let key = ShareKey::generate().unwrap();
        let opts = SealOptions {
            chunk_size: ChunkSize::from_log2(14),
            ..SealOptions::default()
        };
        let share = LocalShare::create(&[ra.clone(), rb.clone()], &key, &opts, |_| {}).unwrap();
        let (id, manifest) = (share.id(), share.manifest().clone());
        let m = share.source().metadata().clone();
        let counting = Counting::new(share, usize::MAX);
        let server = start_server("/ip4/127.0.0.1/tcp/0", counting.clone()).await;
        let link = link_for(&key, id, &[&server]);
        let dest = sub(&tmp, "dest");

        fetch_link(&link, &dest, &only(&["/a"], false, false))
            .await
            .0
            .unwrap();
        assert_eq!(read_tree(&dest.join("a")), read_tree(&ra));
        let before = counting.asked().len();
        let both = ["/a", "/b"];
        let (r, events) = fetch_link(&link, &dest, &only(&both, false, false)).await;
        r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
        let asked = content_indices(&counting.asked()[before..], &manifest);
        let in_a = range_of(&m, in_folders(&["a"]));
        assert_eq!(asked, chunks_beyond(&m, 1 << 14, |_| true, in_a));
        assert!(!asked.contains(&0) && !asked.contains(&1), "{asked:?}");
        assert_eq!(read_tree(&dest.join("a")), read_tree(&ra));
        assert_eq!(read_tree(&dest.join("b")), read_tree(&rb));

        // Chunk 1 (bytes 16,384 to 32,767) lies inside a/1.bin.
        fs::remove_dir_all(dest.join("b")).unwrap();
        let one = dest.join("a/1.bin");
        let mut changed = fs::read(&one).unwrap();
        changed[20_000] ^= 1;
        fs::write(&one, &changed).unwrap();
        let before = counting.asked().len();
        for (merge, named) in [(false, dest.join("a")), (true, one.clone())] {
            let (r, _) = fetch_link(&link, &dest, &only(&both, false, merge)).await;
            let e = r.map(|d| d.paths).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{} already exists", named.display())),
                "{e}"
            );
            assert_eq!(names_in(&dest), ["a"], "nothing placed, nothing staged");
            assert_eq!(fs::read(&one).unwrap(), changed);
        }
        assert!(content_indices(&counting.asked()[before..], &manifest).is_empty());
        fetch_link(&link, &dest, &only(&both, true, true))
            .await
            .0
            .unwrap();
        assert_eq!(read_tree(&dest.join("a")), read_tree(&ra));
        assert_eq!(read_tree(&dest.join("b")), read_tree(&rb));
        assert_eq!(names_in(&dest), ["a", "b"]);
        server.client.shutdown().await;
    })
    .await
    .unwrap();
}

/// A `Write` whose bytes the test keeps.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Collect {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn cat_link(
    link: &peerdrop::link::Link,
    path: &str,
    opts: &FetchOptions,
) -> (Result<u64, FetchError>, Vec<u8>) {
    let (client, sources, tx) = receiver(link);
    let out = Collect::default();
    let r = stream_file(
        &client,
        link,
        sources,
        path,
        opts,
        tx,
        Box::new(out.clone()),
    )
    .await;
    client.shutdown().await;
    let bytes = out.0.lock().unwrap().clone();
    (r, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_streams_the_file_and_stops_before_a_bad_chunk() {
    tokio::time::timeout(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let root = sub(&tmp, "media");
        let mut tree = Tree::new();
        tree.insert("a.txt".into(), (false, false, bytes(1, 1000)));
        let movie = bytes(2, (3 << 20) + 12345);
        tree.insert("movie.mkv".into(), (false, false, movie.clone()));
        tree.insert("z.txt".into(), (false, false, bytes(3, 777)));
        write_tree(&root, &tree);
        let key = ShareKey::generate().unwrap();
        let opts = SealOptions {
            chunk_size: ChunkSize::from_log2(16),
            ..SealOptions::default()
        };
        let share = LocalShare::create(std::slice::from_ref(&root), &key, &opts, |_| {}).unwrap();
        let id = share.id();
        let server = start_server("/ip4/127.0.0.1/tcp/0", provider(share)).await;
        let link = link_for(&key, id, &[&server]);
        let (r, out) = cat_link(&link, "media/movie.mkv", &quick()).await;
        assert_eq!(r.unwrap(), movie.len() as u64);
        assert!(out == movie, "cat output differs from the file");
        let (r, _) = cat_link(&link, "media/nope", &quick()).await;
        assert!(matches!(r, Err(FetchError::NoSuchFile(_))), "{r:?}");
        server.client.shutdown().await;

        // Chunk 20 of the content (movie bytes from 20 * 64 KiB - 1000) is
        // corrupted by the only source: everything before it arrives, not a
        // byte of it or after it.
        let share = LocalShare::create(std::slice::from_ref(&root), &key, &opts, |_| {}).unwrap();
        let bad = share.manifest().content_chunks[20];
        let server = start_server(
            "/ip4/127.0.0.1/tcp/0",
            Arc::new(Counting {
                bad: Some(bad),
                ..Arc::into_inner(Counting::new(share, usize::MAX)).unwrap()
            }),
        )
        .await;
        let link = link_for(&key, id, &[&server]);
        let impatient = FetchOptions {
            wait: Duration::from_secs(2),
            ..quick()
        };
        let (r, out) = cat_link(&link, "media/movie.mkv", &impatient).await;
        assert!(r.is_err(), "a bad chunk ends the stream with an error");
        let good = 20 * 65536 - 1000;
        assert_eq!(out.len(), good);
        assert!(out[..] == movie[..good]);
        server.client.shutdown().await;
    })
    .await
    .unwrap();
}

const BIN: &str = env!("CARGO_BIN_EXE_peerdrop");

/// A child process killed (by its own PID) when the test ends.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `peerdrop send` on loopback, mDNS off; the process and its link.
fn send(path: &Path) -> (Proc, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(BIN)
        .arg("send")
        .arg(path)
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (Proc(child), line.trim().to_owned())
}

/// Runs `peerdrop ARGS` with the link in PEERDROP_LINK, bounded in time.
fn run(args: &[&str], link: &str) -> std::process::Output {
    let mut c = std::process::Command::new(BIN);
    c.args(args).arg("--no-mdns").env("PEERDROP_LINK", link);
    common::daemon::bounded(c)
}

#[test]
fn ls_and_cat_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "share");
    let mut tree = Tree::new();
    let movie = bytes(9, 8 << 20);
    tree.insert("clip.mkv".into(), (false, false, movie.clone()));
    tree.insert("run.sh".into(), (false, true, b"#!/bin/sh\n".to_vec()));
    tree.insert("sub".into(), (true, false, Vec::new()));
    write_tree(&root, &tree);
    let (_sender, link) = send(&root);

    let out = run(&["ls", "--json"], &link);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 2);
    assert_eq!(v["bytes"], (8 << 20) + 10);
    let paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["share", "share/clip.mkv", "share/run.sh", "share/sub"]
    );
    let out = run(&["ls", "--long"], &link);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("x ") && text.contains("share/sub/"), "{text}");

    // cat, timing the first byte (the link is read from the environment).
    use std::io::Read;
    let start = std::time::Instant::now();
    let mut child = std::process::Command::new(BIN)
        .args(["cat", "env", "share/clip.mkv", "--no-mdns"])
        .env("PEERDROP_LINK", &link)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    let ttfb = start.elapsed();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let total = start.elapsed();
    assert!(status.success());
    assert_eq!(first[0], movie[0]);
    assert!(rest[..] == movie[1..], "cat output differs from the file");
    eprintln!(
        "cat on loopback: first byte after {} ms (process start included), 8 MiB in {} ms",
        ttfb.as_millis(),
        total.as_millis()
    );
}

/// Polls the daemon's `list` until its first fetch satisfies `pred`
/// (bounded); returns that fetch's row.
fn wait_fetch(
    d: &Daemon,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let l = d.json(&["list"]);
        let f = &l["fetches"][0];
        if pred(f) {
            return f.clone();
        }
        assert_ne!(f["status"]["state"], "failed", "{f}");
        assert!(std::time::Instant::now() < deadline, "{what}: {l}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon's `fetch --only/--exclude` of the 1,000-file share asks for
/// exactly the chunks of the chosen files and writes exactly those; the
/// selection is kept with the job, so a daemon killed mid-fetch resumes the
/// same part after its restart, keeping what it had verified.
#[test]
fn the_daemon_fetches_part_of_a_share_and_resumes_that_part_after_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = thousand_files(&tmp);
    let key = ShareKey::generate().unwrap();
    let share = share_of(&root, &key);
    let id = share.id();
    let manifest = share.manifest().clone();
    let want = chunks_for(share.source().metadata(), 1 << 14, chosen);
    let chosen_bytes: u64 = share
        .source()
        .metadata()
        .entries()
        .iter()
        .filter(|e| chosen(e.path.as_str()))
        .map(|e| e.size)
        .sum();
    // The file list (1 chunk) and 12 content chunks, then it stalls.
    let counting = Counting::holding(share, 13);
    let server = rt.block_on(start_server("/ip4/127.0.0.1/tcp/0", counting.clone()));
    let link = link_for(&key, id, &[&server]).to_uri_string();
    let bdir = sub(&tmp, "B");
    let out = sub(&tmp, "out");
    let part = ["--only", "tree/d3", "--exclude", "*5?3.bin"];

    let mut b = Daemon::start(&bdir);
    let o = fetch(&bdir, &link, &out, &[&["--detach"][..], &part].concat());
    assert!(o.status.success(), "{}", err(&o));
    // Wait for 64 KiB written: more than the (at most four) boundary chunks
    // of the selection hold, so at least one chunk is kept for the resume.
    wait_fetch(&b, "no progress", |f| {
        f["bytes"].as_u64().unwrap_or(0) >= 64 << 10
    });
    assert!(counting.served.load(Ordering::SeqCst) >= 13);
    // The running job is joined only with the same selection.
    let o = fetch(&bdir, &link, &out, &["--only", "tree/d4", "--detach"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("other --only/--exclude"), "{}", err(&o));
    let o = fetch(&bdir, &link, &out, &["--only", "", "--detach"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("empty or too long"), "{}", err(&o));
    b.kill();
    let first_len = counting.asked().len();
    assert!(final_names_in(&out).is_empty(), "nothing placed yet");

    counting.release();
    let b = Daemon::start(&bdir);
    let row = wait_fetch(&b, "never done", |f| f["status"]["state"] == "done");
    assert_eq!(row["bytes"], chosen_bytes, "{row}");
    assert_eq!(read_tree(&out), expected_part(&root));
    assert_eq!(final_names_in(&out), ["tree"]);
    assert_eq!(names_in(&out), ["tree"], "staging folder removed");
    // Only the chosen chunks, over both runs; the second run asked again
    // for fewer than all of them (what the first verified was kept).
    let content: HashMap<ChunkId, u64> = (0..manifest.content_chunks.len() as u64)
        .map(|i| (manifest.content_chunks[i as usize], i))
        .collect();
    let asked = counting.asked();
    let all: BTreeSet<u64> = asked
        .iter()
        .filter_map(|c| content.get(c).copied())
        .collect();
    assert_eq!(all, want, "exactly the chunks of the chosen files");
    let again = asked[first_len..]
        .iter()
        .filter(|c| content.contains_key(c))
        .count();
    assert!(
        again < want.len(),
        "{again} of {} fetched again",
        want.len()
    );
    eprintln!(
        "daemon fetch --only: {} of {} content chunks, {again} of them asked again after the restart; {chosen_bytes} bytes",
        want.len(),
        manifest.content_chunks.len()
    );
    // A part is not the share: nothing is re-seeded.
    assert_eq!(b.json(&["list"])["shares"], serde_json::json!([]));
    drop(b);
    rt.block_on(server.client.shutdown());
}

/// Issue 13, the daemon's `fetch`: a part, then a wider part with --merge
/// into the same folder asks only for the chunks the new files need, and
/// the result is exactly both parts.
#[test]
fn the_daemon_fetches_more_of_a_share_keeping_the_part_it_has() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = thousand_files(&tmp);
    let key = ShareKey::generate().unwrap();
    let share = share_of(&root, &key);
    let id = share.id();
    let manifest = share.manifest().clone();
    let m = share.source().metadata().clone();
    let counting = Counting::new(share, usize::MAX);
    let server = rt.block_on(start_server("/ip4/127.0.0.1/tcp/0", counting.clone()));
    let link = link_for(&key, id, &[&server]).to_uri_string();
    let bdir = sub(&tmp, "B");
    let out = sub(&tmp, "out");
    let b = Daemon::start(&bdir);

    let o = fetch(&bdir, &link, &out, &["--only", "tree/d5"]);
    assert!(o.status.success(), "{}", err(&o));
    let before = counting.asked().len();
    let o = fetch(
        &bdir,
        &link,
        &out,
        &["--only", "tree/d5", "--only", "tree/d6", "--merge"],
    );
    assert!(o.status.success(), "{}", err(&o));
    let asked = content_indices(&counting.asked()[before..], &manifest);
    let wider: &[&str] = &["tree/d5", "tree/d6"];
    let d5 = range_of(&m, in_folders(&["tree/d5"]));
    assert_eq!(asked, chunks_beyond(&m, 1 << 14, in_folders(wider), d5));
    assert_eq!(read_tree(&out), folders_of(&root, &["d5", "d6"]));
    assert_eq!(names_in(&out), ["tree"]);
    drop(b);
    rt.block_on(server.client.shutdown());
}
