//! Output safety (audit F-06 – F-09): a share is written only where nothing
//! of its names exists unless the receiver asks to merge, never lands in
//! another share's staging folder or keeps bytes it did not verify, never
//! reaches outside the destination through a folder swapped for a link, and
//! a sender's scan never seals files from outside the shared folder.

mod common;

use std::fs;
use std::path::Path;

use common::daemon::{err, fetch, Daemon, BIN};
use common::*;
use peerdrop::chunk::ChunkSize;
use peerdrop::crypto::ShareKey;
use peerdrop::manifest::ManifestId;
use peerdrop::meta::Metadata;
use peerdrop::seal::{seal, Resealer, SealOptions};
use peerdrop::select::Subset;
use peerdrop::store::output::{staging_name, Output, OutputError, OutputOptions};
use peerdrop::store::resume;
use peerdrop::store::source::Source;

fn merging() -> OutputOptions {
    OutputOptions {
        merge: true,
        ..OutputOptions::default()
    }
}

/// F-07: a share with `.ssh/authorized_keys`, received into a home that
/// already has `.ssh/`, is refused by default (the error names `.ssh` and
/// `--merge`) before anything is written; with merge the file is added and
/// what was there is kept.
#[test]
fn an_existing_top_level_folder_is_written_into_only_with_merge() {
    let (link, share) = share_of(&tree(&[
        (".ssh", None),
        (".ssh/authorized_keys", Some(b"ssh-ed25519 AAAA attacker")),
    ]));
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    fs::create_dir(&ssh).unwrap();
    fs::write(ssh.join("known_hosts"), b"mine").unwrap();

    let e = receive(&link, &share.manifest, &share.chunks, home.path(), false).unwrap_err();
    assert!(
        e.contains(".ssh already exists") && e.contains("--merge"),
        "{e}"
    );
    // --force replaces files; it is not a licence to merge.
    let e = receive(&link, &share.manifest, &share.chunks, home.path(), true).unwrap_err();
    assert!(e.contains("--merge"), "{e}");
    assert_eq!(names_in(home.path()), [".ssh"], "no staging folder left");
    assert_eq!(names_in(&ssh), ["known_hosts"]);

    receive_with(
        &link,
        &share.manifest,
        &share.chunks,
        home.path(),
        &merging(),
    )
    .unwrap();
    assert_eq!(names_in(&ssh), ["authorized_keys", "known_hosts"]);
    assert_eq!(fs::read(ssh.join("known_hosts")).unwrap(), b"mine");
}

/// F-07: merging still never replaces an existing file without --force.
#[test]
fn merge_keeps_existing_files_unless_forced() {
    let (link, share) = share_of(&tree(&[("album", None), ("album/a.txt", Some(b"new"))]));
    let dest = tempfile::tempdir().unwrap();
    fs::create_dir(dest.path().join("album")).unwrap();
    fs::write(dest.path().join("album/a.txt"), b"old").unwrap();
    let e = receive_with(
        &link,
        &share.manifest,
        &share.chunks,
        dest.path(),
        &merging(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("a.txt already exists; pass --force"), "{e}");
    assert_eq!(fs::read(dest.path().join("album/a.txt")).unwrap(), b"old");
    let both = OutputOptions {
        merge: true,
        force: true,
    };
    receive_with(&link, &share.manifest, &share.chunks, dest.path(), &both).unwrap();
    assert_eq!(fs::read(dest.path().join("album/a.txt")).unwrap(), b"new");
}

/// A command run into a destination folder with extra arguments.
type Command<'a> = dyn Fn(&Path, &[&str]) -> std::process::Output + 'a;

fn run(mut c: std::process::Command) -> std::process::Output {
    c.env_remove("PEERDROP_LINK");
    common::daemon::bounded(c)
}

/// F-07 from the command line: `receive`, `fetch` (through the daemon's
/// `merge` field) and `unseal` all refuse an existing top-level folder,
/// naming it and `--merge`, and all merge with `--merge`.
#[test]
fn receive_fetch_and_unseal_refuse_an_existing_folder_without_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "album");
    write_tree(&root, &tree(&[("new.txt", Some(b"from the share"))]));
    let a = Daemon::start(&sub(&tmp, "A"));
    let link = a.share(&root);
    let b = Daemon::start(&sub(&tmp, "B"));
    let store = sub(&tmp, "store");
    let mut seal = std::process::Command::new(BIN);
    seal.arg("seal").arg(&root).arg("--out").arg(&store);
    let sealed = run(seal);
    assert!(sealed.status.success(), "{}", err(&sealed));
    let sealed_link = String::from_utf8(sealed.stdout).unwrap().trim().to_owned();

    let receive = |out: &Path, extra: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.args(["receive", "--no-mdns", "--wait", "20", "-o"])
            .arg(out)
            .args(extra)
            .env("PEERDROP_LINK", &link);
        common::daemon::bounded(c)
    };
    let unseal = |out: &Path, extra: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.args(["unseal", "--from"])
            .arg(&store)
            .arg("-o")
            .arg(out)
            .args(extra)
            .env("PEERDROP_LINK", &sealed_link);
        common::daemon::bounded(c)
    };
    let daemon_fetch = |out: &Path, extra: &[&str]| fetch(&b.dir, &link, out, extra);
    let commands: [(&str, &Command<'_>); 3] = [
        ("receive", &receive),
        ("fetch", &daemon_fetch),
        ("unseal", &unseal),
    ];
    for (name, command) in commands {
        let out = sub(&tmp, &format!("out-{name}"));
        fs::create_dir_all(out.join("album")).unwrap();
        fs::write(out.join("album/mine.txt"), b"mine").unwrap();
        let refused = command(&out, &[]);
        assert_eq!(refused.status.code(), Some(1), "{name}: {}", err(&refused));
        let e = err(&refused);
        assert!(
            e.contains("album already exists") && e.contains("--merge"),
            "{name}: {e}"
        );
        assert_eq!(names_in(&out.join("album")), ["mine.txt"], "{name}");
        let merged = command(&out, &["--merge"]);
        assert!(merged.status.success(), "{name}: {}", err(&merged));
        assert_eq!(
            names_in(&out.join("album")),
            ["mine.txt", "new.txt"],
            "{name}"
        );
        assert_eq!(fs::read(out.join("album/mine.txt")).unwrap(), b"mine");
        assert_eq!(final_names_in(&out), ["album"], "{name}");
    }
}

/// A share sealed in memory, with what the receiving side needs to drive an
/// [`Output`] by hand (as a fetch does).
struct Sealed {
    id: ManifestId,
    metadata: Metadata,
    content: Vec<u8>,
    resealer: Resealer,
}

fn sealed(t: &Tree) -> Sealed {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(tmp.path(), t);
    let paths: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let source = Source::scan(&paths).unwrap();
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut source.reader(), &mut content).unwrap();
    let key = ShareKey::generate().unwrap();
    let opts = SealOptions {
        chunk_size: ChunkSize::from_log2(10),
        threads: 1,
        ..SealOptions::default()
    };
    let s = seal(&key, source.metadata(), &content[..], &opts, |_| Ok(())).unwrap();
    Sealed {
        id: s.id,
        metadata: source.metadata().clone(),
        resealer: Resealer::new(&key, s.manifest).unwrap(),
        content,
    }
}

fn album() -> Tree {
    tree(&[
        ("album", None),
        ("album/a.txt", Some(b"aaa")),
        ("album/sub", None),
        ("album/sub/b.txt", Some(b"bb")),
    ])
}

/// Runs `f` on another thread, failing the test if it takes over 60 s (a
/// FIFO opened without `O_NONBLOCK` would hang it forever).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the output hung")
}

/// Resumes `s` into `dest` as a fetch does: staged content verified by
/// resealing, the rest written, then placed.
fn resume_and_place(dest: &Path, s: &Sealed, opts: &OutputOptions) -> Result<(), OutputError> {
    let out = Output::create(dest, &s.id, s.metadata.clone(), opts)?;
    assert!(out.resumed());
    let mut out = out;
    let subset = Subset::everything(&s.metadata);
    let good = resume::staged_content(&mut out, &s.resealer, &subset)?;
    let size = s.resealer.manifest().chunk_size.bytes();
    for i in subset.chunks(size) {
        if !good.contains(&i) {
            let start = (i * size) as usize;
            let end = (start + size as usize).min(s.content.len());
            out.write_content(start as u64, &s.content[start..end])?;
        }
    }
    out.finish().map(|_| ())
}

/// F-06: what an interrupted run left in its staging folder is a hint only.
/// A staged file longer than its declared size (its first bytes right, so
/// its chunks verify) is cut to that size, and an entry the share does not
/// list (planted next to staged files) never reaches the final tree.
#[test]
fn leftovers_in_the_staging_folder_never_reach_a_final_path() {
    let s = sealed(&album());
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path();
    let mut out =
        Output::create(dest, &s.id, s.metadata.clone(), &OutputOptions::default()).unwrap();
    out.write_content(0, &s.content).unwrap();
    drop(out); // interrupted before placing
    let tree = dest.join(staging_name(&s.id)).join("tree");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(tree.join("album/a.txt"))
        .unwrap();
    std::io::Write::write_all(&mut f, b" and an unverified tail").unwrap();
    fs::write(tree.join("album/run.sh"), b"#!/bin/sh\n").unwrap();
    fs::create_dir(tree.join("album/sub/extra")).unwrap();
    fs::write(tree.join("album/sub/extra/x"), b"x").unwrap();

    let (dest2, s) = (dest.to_owned(), s);
    bounded(move || resume_and_place(&dest2, &s, &OutputOptions::default())).unwrap();
    assert_eq!(read_tree(&dest.join("album")), album_on_disk());
    assert_eq!(names_in(dest), ["album"]);
}

fn album_on_disk() -> Tree {
    let mut t = album();
    t = t
        .into_iter()
        .filter_map(|(p, v)| p.strip_prefix("album/").map(|p| (p.to_owned(), v)))
        .collect();
    t
}

/// F-06: a staged entry that is a FIFO, a symlink or a folder where the
/// share has a file neither hangs the run nor is written through: it is
/// replaced by the verified file.
#[test]
fn special_files_in_the_staging_folder_are_replaced_not_followed() {
    let s = sealed(&album());
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"victim").unwrap();
    let out = Output::create(&dest, &s.id, s.metadata.clone(), &OutputOptions::default()).unwrap();
    drop(out);
    let tree = dest.join(staging_name(&s.id)).join("tree");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tree.join("album/a.txt"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), tree.join("album/sub/b.txt")).unwrap();

    let (dest2, s) = (dest.clone(), s);
    bounded(move || resume_and_place(&dest2, &s, &OutputOptions::default())).unwrap();
    assert_eq!(read_tree(&dest.join("album")), album_on_disk());
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"victim");
}

/// F-08: a folder the share is merged into, swapped for a link to a folder
/// outside the destination between the plan and the renames: nothing lands
/// outside, and the run fails naming the folder.
#[test]
fn a_merged_folder_swapped_for_a_link_before_placing_redirects_nothing() {
    let s = sealed(&tree(&[
        ("photos", None),
        ("photos/new.jpg", Some(b"jpeg")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let (dest, outside) = (tmp.path().join("dest"), tmp.path().join("outside"));
    fs::create_dir_all(dest.join("photos")).unwrap();
    fs::create_dir(&outside).unwrap();
    let mut out = Output::create(&dest, &s.id, s.metadata.clone(), &merging()).unwrap();
    out.write_content(0, &s.content).unwrap();
    // The local attacker's swap, at the last moment.
    fs::rename(dest.join("photos"), tmp.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("photos")).unwrap();
    let e = out.finish().unwrap_err().to_string();
    assert!(e.contains("photos") && e.contains("no longer"), "{e}");
    assert_eq!(names_in(&outside), Vec::<String>::new());
    assert_eq!(names_in(&tmp.path().join("moved")), Vec::<String>::new());
}

/// F-08: a staged subfolder swapped for a link mid-transfer: the next write
/// into it fails, naming it, and nothing is written outside.
#[test]
fn a_staged_folder_swapped_for_a_link_mid_transfer_redirects_no_write() {
    let s = sealed(&album());
    let tmp = tempfile::tempdir().unwrap();
    let (dest, outside) = (tmp.path().join("dest"), tmp.path().join("outside"));
    fs::create_dir(&outside).unwrap();
    let mut out =
        Output::create(&dest, &s.id, s.metadata.clone(), &OutputOptions::default()).unwrap();
    out.write_content(0, &s.content[..3]).unwrap(); // album/a.txt
    let staged = dest.join(staging_name(&s.id)).join("tree/album/sub");
    fs::rename(&staged, tmp.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, &staged).unwrap();
    let e = out
        .write_content(3, &s.content[3..])
        .unwrap_err()
        .to_string();
    assert!(e.contains("album/sub") && e.contains("no longer"), "{e}");
    assert_eq!(names_in(&outside), Vec::<String>::new());
    drop(out);
    assert_eq!(final_names_in(&dest), Vec::<String>::new());
}

/// F-08: the destination itself swapped for a link once the run has begun:
/// everything goes into the folder that was opened, none of it outside.
#[test]
fn the_destination_swapped_for_a_link_keeps_writing_where_it_began() {
    let s = sealed(&album());
    let tmp = tempfile::tempdir().unwrap();
    let (dest, outside) = (tmp.path().join("dest"), tmp.path().join("outside"));
    fs::create_dir(&outside).unwrap();
    let mut out =
        Output::create(&dest, &s.id, s.metadata.clone(), &OutputOptions::default()).unwrap();
    out.write_content(0, &s.content[..3]).unwrap();
    let moved = tmp.path().join("moved");
    fs::rename(&dest, &moved).unwrap();
    std::os::unix::fs::symlink(&outside, &dest).unwrap();
    out.write_content(3, &s.content[3..]).unwrap();
    out.finish().unwrap();
    assert_eq!(names_in(&outside), Vec::<String>::new());
    assert_eq!(read_tree(&moved.join("album")), album_on_disk());
    assert_eq!(names_in(&moved), ["album"]);
}

/// F-06, the sender's side: a staging folder inside a shared folder is
/// left out (and reported), and one named as a path to share is refused,
/// so an honest sender never makes a share its receivers refuse.
#[test]
fn a_sender_leaves_staging_folders_out() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sub(&tmp, "docs");
    write_tree(
        &root,
        &tree(&[
            ("a.txt", Some(b"a")),
            (".peerdrop-0123456789abcdef.partial/tree/b.txt", Some(b"b")),
        ]),
    );
    let source = Source::scan(std::slice::from_ref(&root)).unwrap();
    let names: Vec<&str> = source
        .metadata()
        .entries()
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(names, ["docs", "docs/a.txt"]);
    assert_eq!(source.skipped().len(), 1);
    assert!(source.skipped()[0].reason.contains("unfinished"));
    let e = Source::scan(&[root.join(".peerdrop-0123456789abcdef.partial")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("staging folder"), "{e}");
}
