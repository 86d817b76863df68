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
use peerdrop::store::output::OutputOptions;

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
