//! Seal → unseal round trips through real files: random trees (proptest),
//! boundary sizes around the chunk size, thousands of tiny files, deep folders,
//! empty shares, and determinism.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;
use peerdrop::chunk::{ChunkSize, Stream};
use peerdrop::crypto::ShareKey;
use peerdrop::manifest::Manifest;
use peerdrop::open::Opener;
use peerdrop::seal::{seal, Resealer, SealOptions};
use peerdrop::store::chunks::ChunkDir;
use peerdrop::store::source::Source;
use peerdrop::store::unseal::{unseal, UnsealOptions};
use proptest::prelude::*;

/// Seals `paths` into a chunk folder and unseals into `dest`; returns the manifest.
fn round_trip(
    paths: &[PathBuf],
    dest: &std::path::Path,
    chunk_log2: Option<u8>,
    threads: usize,
) -> Manifest {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ChunkDir::create(tmp.path()).unwrap();
    let key = ShareKey::generate().unwrap();
    let source = Source::scan(paths).unwrap();
    let sealed = seal(
        &key,
        source.metadata(),
        source.reader(),
        &SealOptions {
            chunk_size: chunk_log2.and_then(ChunkSize::from_log2),
            threads,
            expires: None,
        },
        |c| dir.put(&c.id, c.bytes),
    )
    .unwrap();
    let manifest = Manifest::decode_verified(&sealed.id, &sealed.manifest_bytes).unwrap();
    let opener = Opener::new(manifest.clone(), &key).unwrap();
    let mut src = dir.clone();
    let done = unseal(&opener, &mut src, dest, &UnsealOptions::default(), |_| {}).unwrap();
    assert_eq!(done.bytes, source.metadata().content_len());
    assert_eq!(done.files, source.metadata().file_count());
    assert_eq!(
        final_names_in(dest),
        names_in(dest),
        "staging folder left behind"
    );
    manifest
}

fn assert_same_tree(a: &std::path::Path, b: &std::path::Path) {
    assert_eq!(read_tree(a), read_tree(b));
    // Modification times survive for files, to the nanosecond where the file
    // system keeps them.
    for (rel, (is_dir, _, _)) in read_tree(a) {
        if !is_dir {
            let ta = fs::metadata(a.join(&rel)).unwrap().modified().unwrap();
            let tb = fs::metadata(b.join(&rel)).unwrap().modified().unwrap();
            assert_eq!(ta, tb, "mtime of {rel}");
        }
    }
}

const NAMES: &[&str] = &["a", "b", "c.txt", "d d", "ü", "名前", ".hidden"];
const SIZES: &[usize] = &[0, 1, 1023, 1024, 1025, 2048, 3000];

fn arb_tree() -> impl Strategy<Value = Tree> {
    let entry = (
        prop::collection::vec(prop::sample::select(NAMES), 1..5),
        any::<bool>(),
        prop_oneof![prop::sample::select(SIZES), 0usize..5000],
        any::<bool>(),
        any::<u64>(),
    );
    prop::collection::vec(entry, 0..24).prop_map(|entries| {
        let mut tree = Tree::new();
        'next: for (segs, is_dir, size, exec, seed) in entries {
            // Every proper prefix must be (or become) a folder.
            for i in 1..segs.len() {
                let prefix = segs[..i].join("/");
                match tree.get(&prefix) {
                    Some((false, _, _)) => continue 'next,
                    Some(_) => {}
                    None => {
                        tree.insert(prefix, (true, false, Vec::new()));
                    }
                }
            }
            let path = segs.join("/");
            if tree.contains_key(&path) {
                continue;
            }
            if is_dir {
                tree.insert(path, (true, false, Vec::new()));
            } else {
                tree.insert(path, (false, exec, bytes(seed, size)));
            }
        }
        tree
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(tree in arb_tree(), log2 in 10u8..13, threads in 1usize..3) {
        let tmp = tempfile::tempdir().unwrap();
        let root = sub(&tmp, "src/root");
        fs::create_dir_all(&root).unwrap();
        write_tree(&root, &tree);
        let dest = sub(&tmp, "dest");
        round_trip(std::slice::from_ref(&root), &dest, Some(log2), threads);
        assert_same_tree(&root, &dest.join("root"));
    }
}

#[test]
fn files_around_the_default_chunk_size() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "src/sizes");
    let mib = 1 << 20;
    let mut tree = Tree::new();
    for (i, n) in [0, 1, mib - 1, mib, mib + 1, 3 * mib + 17]
        .into_iter()
        .enumerate()
    {
        tree.insert(format!("f{i}"), (false, i % 2 == 0, bytes(i as u64, n)));
    }
    write_tree(&root, &tree);
    let dest = sub(&tmp, "dest");
    let m = round_trip(std::slice::from_ref(&root), &dest, None, 0);
    assert_eq!(m.chunk_size, ChunkSize::DEFAULT);
    assert_same_tree(&root, &dest.join("sizes"));
}

#[test]
fn a_single_file_exactly_one_chunk_and_one_byte_either_side() {
    for n in [1023usize, 1024, 1025] {
        let tmp = tempfile::tempdir().unwrap();
        let f = sub(&tmp, "one.bin");
        fs::write(&f, bytes(n as u64, n)).unwrap();
        let dest = sub(&tmp, "dest");
        let m = round_trip(std::slice::from_ref(&f), &dest, Some(10), 2);
        assert_eq!(m.content_chunks.len(), n.div_ceil(1024));
        assert_eq!(
            fs::read(dest.join("one.bin")).unwrap(),
            fs::read(&f).unwrap()
        );
    }
}

#[test]
fn thousands_of_tiny_files_pack_into_few_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "src/many");
    let mut tree = Tree::new();
    for d in 0..20 {
        tree.insert(format!("d{d:02}"), (true, false, Vec::new()));
        for f in 0..150 {
            let n = (d * 150 + f) % 17;
            tree.insert(
                format!("d{d:02}/f{f:03}"),
                (false, false, bytes(f as u64, n)),
            );
        }
    }
    write_tree(&root, &tree);
    let dest = sub(&tmp, "dest");
    let m = round_trip(std::slice::from_ref(&root), &dest, None, 0);
    assert_eq!(
        m.content_chunks.len(),
        1,
        "3000 tiny files fit one 1 MiB chunk"
    );
    assert_same_tree(&root, &dest.join("many"));
}

#[test]
fn deep_folders_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "src/deep");
    let rel: Vec<String> = (0..100).map(|i| format!("{i}")).collect();
    let leaf = root.join(rel.join("/"));
    fs::create_dir_all(&leaf).unwrap();
    fs::write(leaf.join("bottom.txt"), b"deep").unwrap();
    let dest = sub(&tmp, "dest");
    round_trip(std::slice::from_ref(&root), &dest, Some(10), 2);
    assert_same_tree(&root, &dest.join("deep"));
}

#[test]
fn empty_shares_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    // A share with no bytes at all: one empty folder.
    let empty_dir = sub(&tmp, "src/nothing");
    fs::create_dir_all(&empty_dir).unwrap();
    let dest = sub(&tmp, "dest1");
    let m = round_trip(std::slice::from_ref(&empty_dir), &dest, None, 0);
    assert_eq!(m.content_len, 0);
    assert_eq!(
        m.content_chunks.len(),
        1,
        "an empty stream is one empty final chunk"
    );
    assert!(dest.join("nothing").is_dir());
    // One empty file.
    let empty_file = sub(&tmp, "src/zero.bin");
    fs::write(&empty_file, b"").unwrap();
    let dest = sub(&tmp, "dest2");
    round_trip(&[empty_file], &dest, None, 0);
    assert_eq!(fs::read(dest.join("zero.bin")).unwrap(), b"");
}

#[test]
fn several_paths_become_top_level_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "src/notes.txt");
    let d = sub(&tmp, "src/photos");
    fs::create_dir_all(&d).unwrap();
    fs::write(&f, b"notes").unwrap();
    fs::write(d.join("p.jpg"), bytes(1, 5000)).unwrap();
    let dest = sub(&tmp, "dest");
    round_trip(&[f, d.clone()], &dest, Some(10), 2);
    assert_eq!(final_names_in(&dest), ["notes.txt", "photos"]);
    assert_same_tree(&d, &dest.join("photos"));
}

#[test]
fn sealing_is_deterministic_across_runs_and_thread_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "src/det");
    let mut tree = Tree::new();
    tree.insert("x".into(), (false, false, bytes(9, 100_000)));
    tree.insert("y".into(), (false, true, bytes(10, 5)));
    write_tree(&root, &tree);
    let key = ShareKey::from_bytes([5; 32]).unwrap();
    let source = Source::scan(std::slice::from_ref(&root)).unwrap();
    let ids: Vec<_> = [1, 2, 2]
        .into_iter()
        .map(|threads| {
            seal(
                &key,
                source.metadata(),
                source.reader(),
                &SealOptions {
                    chunk_size: ChunkSize::from_log2(12),
                    threads,
                    expires: None,
                },
                |_| Ok(()),
            )
            .unwrap()
            .id
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn resealing_from_the_files_gives_the_same_chunks_until_a_file_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "src/served");
    let mut tree = Tree::new();
    tree.insert("a".into(), (false, false, bytes(1, 3000)));
    tree.insert("b".into(), (false, false, bytes(2, 2000)));
    write_tree(&root, &tree);
    let key = ShareKey::generate().unwrap();
    let source = Source::scan(std::slice::from_ref(&root)).unwrap();
    let share = seal_mem(
        &key,
        source.metadata(),
        &{
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut source.reader(), &mut v).unwrap();
            v
        },
        10,
        2,
    );
    let manifest = Manifest::decode(&share.manifest).unwrap();
    let resealer = Resealer::new(&key, manifest.clone()).unwrap();
    assert!(Resealer::new(&ShareKey::generate().unwrap(), manifest.clone()).is_none());
    let read = |i: u64| {
        let mut buf = vec![0; manifest.plaintext_len(Stream::Content, i)];
        source.read_range(i * 1024, &mut buf).unwrap();
        buf
    };
    for i in 0..manifest.content_chunks.len() as u64 {
        let chunk = resealer.reseal(Stream::Content, i, &read(i)).unwrap();
        assert_eq!(&chunk, &share.chunks[&manifest.content_chunks[i as usize]]);
    }
    // Change one byte of "b" (content offset 3000 + 100 → chunk 3).
    let mut b = fs::read(root.join("b")).unwrap();
    b[100] ^= 1;
    fs::write(root.join("b"), &b).unwrap();
    assert!(resealer.reseal(Stream::Content, 0, &read(0)).is_ok());
    let err = resealer.reseal(Stream::Content, 3, &read(3)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "content chunk 3 no longer matches the share: the shared files changed since sealing"
    );
}

#[test]
fn a_file_that_changes_while_sealing_fails_the_seal() {
    let tmp = tempfile::tempdir().unwrap();
    let f = sub(&tmp, "grows.log");
    fs::write(&f, bytes(3, 5000)).unwrap();
    let source = Source::scan(std::slice::from_ref(&f)).unwrap();
    let key = ShareKey::generate().unwrap();
    for (len, says) in [
        (6000, "changed while it was being shared"),
        (10, "shrank while it was being shared"),
    ] {
        fs::write(&f, bytes(3, len)).unwrap();
        let err = seal(
            &key,
            source.metadata(),
            source.reader(),
            &SealOptions::default(),
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(err.to_string().contains(says), "{len} bytes: {err}");
    }
}

#[test]
fn symlinks_inside_folders_are_skipped_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "src/withlink");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("real"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
    let source = Source::scan(std::slice::from_ref(&root)).unwrap();
    assert_eq!(source.skipped().len(), 1);
    assert_eq!(source.skipped()[0].path, root.join("link"));
    let names: Vec<_> = source
        .metadata()
        .entries()
        .iter()
        .map(|e| e.path.as_str().to_owned())
        .collect();
    assert_eq!(names, ["withlink", "withlink/real"]);
}

#[test]
fn unportable_and_colliding_names_are_refused_at_seal_time() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "src/bad");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("Readme"), b"1").unwrap();
    fs::write(root.join("README"), b"2").unwrap();
    let err = Source::scan(std::slice::from_ref(&root)).unwrap_err();
    assert!(err.to_string().contains("collide"), "{err}");
    fs::remove_file(root.join("README")).unwrap();
    fs::write(root.join("a:b"), b"2").unwrap();
    let err = Source::scan(std::slice::from_ref(&root)).unwrap_err();
    assert!(err.to_string().contains("rename it first"), "{err}");
}
