//! Hostile shares and hostile destinations: unsafe paths sealed by a sharer
//! who holds the key, names that collide, and destinations that already hold
//! files, folders or planted symlinks.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use peerdrop::chunk::{ChunkSize, Stream};
use peerdrop::crypto::ShareKey;
use peerdrop::link::Link;
use peerdrop::meta::{Entry, EntryKind, Metadata, RelPath, Timestamp};
use peerdrop::store::output::{staging_name, Output, OutputError, OutputOptions};

/// Encodes a file list without any validation (entries as given).
fn raw_metadata(entries: &[(&str, EntryKind, u64)]) -> Vec<u8> {
    let mut b = b"PDMD\x01\x00\x00\x00".to_vec();
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (p, kind, size) in entries {
        b.push(*kind as u8);
        b.push(0);
        b.extend_from_slice(&(p.len() as u16).to_le_bytes());
        b.extend_from_slice(p.as_bytes());
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&size.to_le_bytes());
    }
    b
}

/// Seals a raw file list (with content of the right length) and receives it.
fn receive_raw(entries: &[(&str, EntryKind, u64)], dest: &Path) -> Result<(), String> {
    let key = ShareKey::generate().unwrap();
    let size = ChunkSize::from_log2(10).unwrap();
    let meta = raw_metadata(entries);
    let total: u64 = entries.iter().map(|e| e.2).sum();
    let content = bytes(1, total as usize);
    let (m, chunks) = seal_raw(
        &key,
        size,
        stream_of(Stream::Metadata, &meta, size),
        stream_of(Stream::Content, &content, size),
    );
    let link = Link::new(m.id(), Vec::new(), Some(key))
        .unwrap()
        .to_uri_string();
    receive(&link, &m.encode(), &chunks, dest, false).map(|_| ())
}

#[test]
fn unsafe_paths_reject_the_whole_share_and_name_the_entry() {
    use EntryKind::{Dir, File};
    let long = "n".repeat(256);
    let deep = vec!["d"; 129].join("/");
    type Case<'a> = (Vec<(&'a str, EntryKind, u64)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("ok.txt", File, 3), ("../escape", File, 3)],
            "\"../escape\" is unsafe: the path has a '.' or '..' component",
        ),
        (
            vec![("/etc/cron.d/x", File, 3)],
            "\"/etc/cron.d/x\" is unsafe: the path is absolute",
        ),
        (
            vec![("C:x", File, 1)],
            "\"C:x\" is unsafe: the path contains ':'",
        ),
        (
            vec![("C:\\Windows", File, 1)],
            "\"C:\\\\Windows\" is unsafe",
        ),
        (
            vec![("a\\..\\b", File, 1)],
            "unsafe: the path contains a backslash",
        ),
        (
            vec![("nul\0byte", File, 1)],
            "\"nul\\0byte\" is unsafe: the path contains a control character",
        ),
        (
            vec![("esc\u{1b}]0;pwned\u{7}", File, 1)],
            "is unsafe: the path contains a control character",
        ),
        (
            vec![("d", Dir, 0), ("d/./x", File, 1)],
            "\"d/./x\" is unsafe",
        ),
        (vec![("", File, 1)], "\"\" is unsafe: the path is empty"),
        (
            vec![("a//b", File, 1)],
            "unsafe: the path has an empty component",
        ),
        (
            vec![("AUX.txt", File, 1)],
            "unsafe: a path component is a name Windows reserves",
        ),
        (
            vec![("trailing.", File, 1)],
            "unsafe: a path component ends with a dot or a space",
        ),
        (
            vec![(&long, File, 1)],
            "unsafe: a path component is longer than 255 bytes",
        ),
        (
            vec![(&deep, File, 1)],
            "unsafe: the path is deeper than 128 folders",
        ),
        (vec![("evil\u{202e}gpj.exe", File, 1)], "bidirectional-text"),
        (
            vec![("CON .txt", File, 1)],
            "unsafe: a path component is a name Windows reserves",
        ),
        (
            vec![("pay\u{200b}pal.txt", File, 1)],
            "unsafe: the path contains an invisible (zero-width or format) character",
        ),
        // Audit F-06: a share that would plant files in another share's
        // staging folder (`.peerdrop-<id>.partial/tree/...`) in the same
        // destination.
        (
            vec![
                (".peerdrop-0123456789abcdef.partial", Dir, 0),
                (".peerdrop-0123456789abcdef.partial/tree", Dir, 0),
                (".peerdrop-0123456789abcdef.partial/tree/run.sh", File, 1),
            ],
            "\".peerdrop-0123456789abcdef.partial\" is unsafe: a path component starts with '.peerdrop-'",
        ),
        (
            vec![("Report", File, 1), ("report", File, 1)],
            "entries \"Report\" and \"report\" collide",
        ),
        (
            vec![("x", File, 1), ("x/y", File, 1)],
            "entry \"x/y\" is inside a folder the share does not list",
        ),
        (
            vec![("orphan/y", File, 1)],
            "entry \"orphan/y\" is inside a folder the share does not list",
        ),
        (
            vec![("b", File, 1), ("a", File, 1)],
            "entry \"a\" is out of order or listed twice",
        ),
        (
            vec![("a", File, 1), ("a", File, 1)],
            "entry \"a\" is out of order or listed twice",
        ),
    ];
    for (entries, want) in cases {
        let dest = tempfile::tempdir().unwrap();
        let err = receive_raw(&entries, dest.path()).unwrap_err();
        assert!(
            err.contains(want),
            "{entries:?}: got {err:?}, want {want:?}"
        );
        // Refused before anything is created, even a staging folder.
        assert_eq!(names_in(dest.path()), Vec::<String>::new());
    }
}

#[test]
fn existing_files_are_kept_unless_forced_and_folders_never_replaced() {
    let (link, share) = share_of(&tree(&[("note.txt", Some(b"new"))]));
    let dest = tempfile::tempdir().unwrap();
    fs::write(dest.path().join("note.txt"), b"old").unwrap();
    let err = receive(&link, &share.manifest, &share.chunks, dest.path(), false).unwrap_err();
    assert!(
        err.contains("note.txt already exists; pass --force"),
        "{err}"
    );
    assert_eq!(fs::read(dest.path().join("note.txt")).unwrap(), b"old");
    assert_eq!(
        names_in(dest.path()),
        ["note.txt"],
        "refused before staging anything"
    );

    receive(&link, &share.manifest, &share.chunks, dest.path(), true).unwrap();
    assert_eq!(fs::read(dest.path().join("note.txt")).unwrap(), b"new");

    let dest = tempfile::tempdir().unwrap();
    fs::create_dir(dest.path().join("note.txt")).unwrap();
    let err = receive(&link, &share.manifest, &share.chunks, dest.path(), true).unwrap_err();
    assert!(
        err.contains("will not be replaced, even with --force"),
        "{err}"
    );
    assert!(dest.path().join("note.txt").is_dir());
}

#[test]
fn planted_symlinks_in_the_destination_are_never_followed() {
    let victim = tempfile::tempdir().unwrap();
    fs::write(victim.path().join("secret"), b"victim").unwrap();
    // The share is a folder "photos" with a file "secret" inside.
    let (link, share) = share_of(&tree(&[
        ("photos", None),
        ("photos/secret", Some(b"attacker")),
    ]));

    let dest = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(victim.path(), dest.path().join("photos")).unwrap();
    for force in [false, true] {
        let err = receive(&link, &share.manifest, &share.chunks, dest.path(), force).unwrap_err();
        assert!(err.contains("photos"), "{err}");
    }
    assert_eq!(fs::read(victim.path().join("secret")).unwrap(), b"victim");

    // A symlink where a file goes is replaced itself (with --force), never
    // written through.
    let (link, share) = share_of(&tree(&[("secret", Some(b"attacker"))]));
    let dest = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(victim.path().join("secret"), dest.path().join("secret")).unwrap();
    let err = receive(&link, &share.manifest, &share.chunks, dest.path(), false).unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    receive(&link, &share.manifest, &share.chunks, dest.path(), true).unwrap();
    assert_eq!(fs::read(victim.path().join("secret")).unwrap(), b"victim");
    assert!(!fs::symlink_metadata(dest.path().join("secret"))
        .unwrap()
        .file_type()
        .is_symlink());

    // A symlink planted at the staging folder's name.
    let dest = tempfile::tempdir().unwrap();
    let staging = dest.path().join(staging_name(&share.id));
    std::os::unix::fs::symlink(victim.path(), &staging).unwrap();
    let err = receive(&link, &share.manifest, &share.chunks, dest.path(), false).unwrap_err();
    assert!(err.contains("in the way"), "{err}");
    assert_eq!(fs::read_dir(victim.path()).unwrap().count(), 1);
}

/// Only when asked (audit F-07; tests/output_safety.rs has the refusal).
#[test]
fn an_existing_folder_is_merged_into_with_merge() {
    let (link, share) = share_of(&tree(&[("photos", None), ("photos/new.jpg", Some(b"new"))]));
    let dest = tempfile::tempdir().unwrap();
    fs::create_dir(dest.path().join("photos")).unwrap();
    fs::write(dest.path().join("photos/old.jpg"), b"old").unwrap();
    let merge = OutputOptions {
        merge: true,
        ..OutputOptions::default()
    };
    receive_with(&link, &share.manifest, &share.chunks, dest.path(), &merge).unwrap();
    assert_eq!(
        fs::read(dest.path().join("photos/old.jpg")).unwrap(),
        b"old"
    );
    assert_eq!(
        fs::read(dest.path().join("photos/new.jpg")).unwrap(),
        b"new"
    );
    assert_eq!(final_names_in(dest.path()), names_in(dest.path()));
}

#[test]
fn two_writers_of_one_share_into_one_folder_are_refused() {
    let dest = tempfile::tempdir().unwrap();
    let meta = Metadata::from_entries(vec![Entry {
        path: RelPath::new("f").unwrap(),
        kind: EntryKind::File,
        executable: false,
        mtime: Timestamp::default(),
        size: 1,
    }])
    .unwrap();
    let id = peerdrop::manifest::ManifestId([3; 32]);
    let first = Output::create(dest.path(), &id, meta.clone(), &OutputOptions::default()).unwrap();
    let second = Output::create(dest.path(), &id, meta.clone(), &OutputOptions::default());
    assert!(matches!(second, Err(OutputError::Busy(_))));
    drop(first);
    // The staging folder of the first run is reused once it is released.
    // Released means every copy of the lock's descriptor closed: a child
    // another test thread forks meanwhile holds one until its exec.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut again = loop {
        match Output::create(dest.path(), &id, meta.clone(), &OutputOptions::default()) {
            Err(OutputError::Busy(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            r => break r.unwrap(),
        }
    };
    again.write_content(0, b"x").unwrap();
    again.finish().unwrap();
    assert_eq!(fs::read(dest.path().join("f")).unwrap(), b"x");
    assert_eq!(names_in(dest.path()), ["f"]);
}

#[test]
fn too_little_free_space_is_refused_up_front() {
    // Needs a small file system of our own: a tmpfs, mounted as root.
    if unsafe_is_root().not() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: could not mount a tmpfs");
        return;
    }
    let _guard = Unmount(mnt.path());
    let (link, share) = share_of(&tree(&[("big", Some(&bytes(4, 100_000)))]));
    let err = receive(&link, &share.manifest, &share.chunks, mnt.path(), false).unwrap_err();
    assert!(err.contains("not enough free space"), "{err}");
    assert_eq!(names_in(mnt.path()), Vec::<String>::new());
}

trait Not {
    fn not(self) -> bool;
}
impl Not for bool {
    fn not(self) -> bool {
        !self
    }
}

fn unsafe_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
