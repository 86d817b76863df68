//! The receiver agrees first: what a verified file list says is coming, and
//! the question before anything is written.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use peerdrop::meta::{EntryKind, Metadata};
use peerdrop::net::fetch::Approver;
use serde_json::json;

use crate::cli::output;

/// Most top-level entries and warnings listed before "and N more".
const SHOWN: usize = 10;

/// The approver for `receive`: with `json`, an `offer` event first; when
/// stdin and stderr are a terminal and not `yes`, the question. `None` when
/// there is nothing to do (no terminal, no JSON: proceed as before).
pub fn approver(dest: &Path, yes: bool, json: bool) -> Option<Approver> {
    let ask = !yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !ask && !json {
        return None;
    }
    let dest = dest.to_owned();
    Some(Approver(Arc::new(move |m: &Metadata| {
        let offer = Offer::of(m, &dest);
        if json {
            output::json_line(&offer.json());
        }
        if !ask {
            return true;
        }
        eprint!("{}", offer.text(&dest));
        eprint!("Receive into {}? [y/N] ", dest.display());
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        // At most one short line: a terminal sends it on Enter.
        let _ = std::io::stdin().lock().take(64).read_line(&mut line);
        matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
    })))
}

/// What is coming, in the terms a receiver decides on.
struct Offer {
    files: usize,
    bytes: u64,
    /// Top-level entries: (name, is folder, files inside, bytes inside).
    top: Vec<(String, bool, usize, u64)>,
    /// Paths of entries whose name starts with a dot.
    dot: Vec<String>,
    /// Paths of executable files.
    exec: Vec<String>,
    /// Top-level names already present in the destination.
    existing: Vec<String>,
}

impl Offer {
    fn of(m: &Metadata, dest: &Path) -> Offer {
        let mut top: Vec<(String, bool, usize, u64)> = Vec::new();
        let (mut dot, mut exec) = (Vec::new(), Vec::new());
        for e in m.entries() {
            let path = e.path.as_str();
            let first = path.split('/').next().unwrap_or(path);
            if path == first {
                top.push((first.to_owned(), e.kind == EntryKind::Dir, 0, 0));
            }
            if e.kind == EntryKind::File {
                if let Some(t) = top.iter_mut().rev().find(|t| t.0 == first) {
                    t.2 += 1;
                    t.3 += e.size;
                }
            }
            if path.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
                dot.push(path.to_owned());
            }
            if e.executable {
                exec.push(path.to_owned());
            }
        }
        let existing = top
            .iter()
            .filter(|t| PathBuf::from(dest).join(&t.0).symlink_metadata().is_ok())
            .map(|t| t.0.clone())
            .collect();
        Offer {
            files: m.file_count(),
            bytes: m.content_len(),
            top,
            dot,
            exec,
            existing,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "event": "offer", "files": self.files, "bytes": self.bytes,
            "top": self.top.iter().map(|(n, dir, f, b)| json!({
                "name": n, "kind": if *dir { "dir" } else { "file" }, "files": f, "bytes": b,
            })).collect::<Vec<_>>(),
            "dot_entries": self.dot, "executables": self.exec, "existing": self.existing,
        })
    }

    fn text(&self, dest: &Path) -> String {
        let mut s = format!(
            "peerdrop: the share offers {} file(s), {} in all:\n",
            self.files,
            output::human_bytes(self.bytes)
        );
        for (name, dir, files, bytes) in self.top.iter().take(SHOWN) {
            if *dir {
                s += &format!(
                    "  {name}/  (folder: {files} file(s), {})\n",
                    output::human_bytes(*bytes)
                );
            } else {
                s += &format!("  {name}  ({})\n", output::human_bytes(*bytes));
            }
        }
        more(&mut s, self.top.len());
        let warn = |s: &mut String, list: &[String], what: &str| {
            for p in list.iter().take(SHOWN) {
                *s += &format!("  ! {p}: {what}\n");
            }
            more(s, list.len());
        };
        warn(&mut s, &self.dot, "hidden (its name starts with a dot)");
        warn(&mut s, &self.exec, "executable");
        if self.top.len() > 1 || self.top.first().is_some_and(|t| !t.1) {
            s += &format!(
                "  ! {} entr{} land directly in {}, not inside one new folder\n",
                self.top.len(),
                if self.top.len() == 1 {
                    "y would"
                } else {
                    "ies would"
                },
                dest.display()
            );
        }
        let existing = self.existing.join(", ");
        if !existing.is_empty() {
            s += &format!(
                "  ! already in {}: {existing} (the receive stops there unless --merge for folders, --force for files)\n",
                dest.display()
            );
        }
        s
    }
}

fn more(s: &mut String, n: usize) {
    if n > SHOWN {
        *s += &format!("  … and {} more\n", n - SHOWN);
    }
}
