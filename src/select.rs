//! Taking part of a share: glob patterns on the share's paths, and what a
//! chosen subset of the file list means for the content stream.
//!
//! A [`Selection`] (`--only`, `--exclude`) picks entries of a verified file
//! list; [`Selection::apply`] turns it into a [`Subset`]: the smaller file
//! list that the output writes (the chosen entries and the folders above
//! them), the content chunks that cover the chosen files, and where each
//! chosen byte of a chunk lands in the smaller list's content stream. A
//! chunk shared with an unchosen neighbour is fetched and verified whole;
//! only its chosen bytes are written.
//!
//! Pattern rules (README, "What you can do with a link"): `*` matches any
//! run of characters except `/`, `?` one character except `/`, `**` as a
//! whole component any number of components (none included). A pattern
//! without `/` is matched against each entry's name, at any depth (like
//! `.gitignore`); one with `/` against the whole path from the top. An
//! entry is chosen when it or a folder above it matches an `--only` pattern
//! (all entries, without any), and neither it nor a folder above it matches
//! an `--exclude` pattern.

use std::ops::Range;

use crate::meta::{Entry, EntryKind, Metadata, MetadataError};

/// Longest pattern accepted, in bytes (paths are bounded too).
pub const MAX_PATTERN_LEN: usize = 4096;

/// Most patterns in one selection.
pub const MAX_PATTERNS: usize = 256;

/// Why a selection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// An empty pattern, or one longer than [`MAX_PATTERN_LEN`].
    #[error("pattern {0:?} is empty or too long")]
    BadPattern(String),
    /// More than [`MAX_PATTERNS`] patterns.
    #[error("at most {MAX_PATTERNS} patterns may be given")]
    TooMany,
    /// Nothing in the share matches.
    #[error("no file or folder of the share matches the given --only/--exclude patterns; list the share with `peerdrop ls LINK`")]
    NothingMatches,
    /// The chosen entries do not form a valid file list (cannot happen for
    /// a verified list; kept so that it never panics).
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// One glob pattern (see the module docs for its rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// `None` for a `**` component.
    parts: Vec<Option<String>>,
    /// Matched against the last component only.
    name_only: bool,
}

impl Pattern {
    /// Parses a pattern; a leading `/` or `./` anchors it at the top.
    pub fn new(s: &str) -> Result<Pattern, SelectError> {
        let trimmed = s.trim_start_matches("./").trim_end_matches('/');
        if trimmed.is_empty() || s.len() > MAX_PATTERN_LEN {
            return Err(SelectError::BadPattern(s.to_owned()));
        }
        let name_only = !s.starts_with("./") && !trimmed.contains('/');
        let trimmed = trimmed.trim_start_matches('/');
        if trimmed.is_empty() {
            return Err(SelectError::BadPattern(s.to_owned()));
        }
        let parts = trimmed
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| (c != "**").then(|| c.to_owned()))
            .collect();
        Ok(Pattern { parts, name_only })
    }

    /// Whether the pattern matches `path` itself (not a folder above it).
    pub fn matches(&self, path: &str) -> bool {
        if self.name_only {
            let name = path.rsplit('/').next().unwrap_or(path);
            return match &self.parts[..] {
                [None] => true,
                [Some(p)] => component_matches(p.as_bytes(), name.as_bytes()),
                _ => false,
            };
        }
        let comps: Vec<&str> = path.split('/').collect();
        parts_match(&self.parts, &comps)
    }
}

/// Whether the pattern components match the path components; `None` (`**`)
/// takes any number of them. Dynamic programming over (pattern, path)
/// positions: quadratic at worst, however many `**` a hostile pattern has.
fn parts_match(parts: &[Option<String>], comps: &[&str]) -> bool {
    // ok[j]: parts[i..] matches comps[j..], for the current i (from the end).
    let n = comps.len();
    let mut ok = vec![false; n + 1];
    ok[n] = true;
    for part in parts.iter().rev() {
        let mut next = vec![false; n + 1];
        for j in (0..=n).rev() {
            next[j] = match part {
                None => ok[j] || (j < n && next[j + 1]),
                Some(p) => {
                    j < n && ok[j + 1] && component_matches(p.as_bytes(), comps[j].as_bytes())
                }
            };
        }
        ok = next;
    }
    ok[0]
}

/// `*` and `?` within one component; iterative with one backtrack point, so
/// linear in practice and never exponential on hostile names.
fn component_matches(p: &[u8], s: &[u8]) -> bool {
    let s: Vec<char> = String::from_utf8_lossy(s).chars().collect();
    let p: Vec<char> = String::from_utf8_lossy(p).chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Which entries of a share to take: `--only` and `--exclude` patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    only: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl Selection {
    /// A selection from pattern strings; both empty takes everything.
    pub fn new(only: &[String], exclude: &[String]) -> Result<Selection, SelectError> {
        if only.len() + exclude.len() > MAX_PATTERNS {
            return Err(SelectError::TooMany);
        }
        let parse = |v: &[String]| -> Result<Vec<Pattern>, SelectError> {
            v.iter().map(|s| Pattern::new(s)).collect()
        };
        Ok(Selection {
            only: parse(only)?,
            exclude: parse(exclude)?,
        })
    }

    /// Whether this takes every entry whatever the share holds.
    pub fn is_everything(&self) -> bool {
        self.only.is_empty() && self.exclude.is_empty()
    }

    /// Whether `path` or a folder above it matches one of `patterns`.
    fn hits(patterns: &[Pattern], path: &str) -> bool {
        let mut prefixes = path.match_indices('/').map(|(i, _)| &path[..i]);
        patterns.iter().any(|p| p.matches(path))
            || prefixes.any(|d| patterns.iter().any(|p| p.matches(d)))
    }

    /// Whether the entry at `path` is chosen by the patterns alone (a folder
    /// may also be taken because something inside it is).
    pub fn chooses(&self, path: &str) -> bool {
        (self.only.is_empty() || Self::hits(&self.only, path)) && !Self::hits(&self.exclude, path)
    }

    /// The part of `metadata` this selection takes.
    pub fn apply(&self, metadata: &Metadata) -> Result<Subset, SelectError> {
        let entries = metadata.entries();
        let mut take: Vec<bool> = entries
            .iter()
            .map(|e| self.chooses(e.path.as_str()))
            .collect();
        if !take.iter().any(|t| *t) {
            return Err(SelectError::NothingMatches);
        }
        // The folders above every chosen entry. Entries are sorted, so a
        // parent comes before its children: walk backwards, marking parents.
        let index: std::collections::HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();
        for i in (0..entries.len()).rev() {
            if take[i] {
                if let Some(&p) = entries[i].path.parent().and_then(|p| index.get(p)) {
                    take[p] = true;
                }
            }
        }
        let mut chosen: Vec<Entry> = Vec::new();
        let mut pieces = Vec::new();
        let (mut from, mut to) = (0u64, 0u64);
        for (e, t) in entries.iter().zip(&take) {
            if *t {
                chosen.push(e.clone());
                if e.kind == EntryKind::File && e.size > 0 {
                    pieces.push(Piece {
                        from,
                        len: e.size,
                        to,
                    });
                    to += e.size;
                }
            }
            from += e.size;
        }
        let everything = take.iter().all(|t| *t);
        Ok(Subset {
            metadata: Metadata::from_entries(chosen)?,
            pieces: merge(pieces),
            everything,
        })
    }
}

/// Joins pieces that follow each other in both streams.
fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match out.last_mut() {
            Some(l) if l.from + l.len == p.from && l.to + l.len == p.to => l.len += p.len,
            _ => out.push(p),
        }
    }
    out
}

/// A run of chosen content: `len` bytes at `from` in the share's content
/// stream go to `to` in the subset's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Offset in the share's content stream.
    pub from: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset in the subset's content stream.
    pub to: u64,
}

/// The chosen part of a share (see [`Selection::apply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subset {
    metadata: Metadata,
    /// In content order, non-overlapping, merged where contiguous.
    pieces: Vec<Piece>,
    everything: bool,
}

impl Subset {
    /// The whole share.
    pub fn everything(metadata: &Metadata) -> Subset {
        let len = metadata.content_len();
        Subset {
            metadata: metadata.clone(),
            pieces: if len > 0 {
                vec![Piece {
                    from: 0,
                    len,
                    to: 0,
                }]
            } else {
                Vec::new()
            },
            everything: true,
        }
    }

    /// Whether every entry of the share is taken.
    pub fn is_everything(&self) -> bool {
        self.everything
    }

    /// The file list the output writes: the chosen entries and the folders
    /// above them.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The chosen runs of content.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Content chunk indices (of `chunk_size` bytes) holding any chosen
    /// byte, in order.
    pub fn chunks(&self, chunk_size: u64) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for p in &self.pieces {
            let first = p.from / chunk_size;
            let last = (p.from + p.len - 1) / chunk_size;
            let start = match out.last() {
                Some(&l) if l >= first => l + 1,
                _ => first,
            };
            out.extend(start..=last);
        }
        out
    }

    /// Where the chosen bytes of the `len` content bytes at `offset` go:
    /// (offset in the subset's stream, range within those bytes).
    pub fn map(&self, offset: u64, len: usize) -> impl Iterator<Item = (u64, Range<usize>)> + '_ {
        let end = offset + len as u64;
        let first = self.pieces.partition_point(|p| p.from + p.len <= offset);
        self.pieces[first..]
            .iter()
            .take_while(move |p| p.from < end)
            .map(move |p| {
                let a = p.from.max(offset);
                let b = (p.from + p.len).min(end);
                (
                    p.to + (a - p.from),
                    (a - offset) as usize..(b - offset) as usize,
                )
            })
    }

    /// Whether all `len` bytes at `offset` are chosen (so a chunk there can
    /// be checked from the subset's bytes alone).
    pub fn covers(&self, offset: u64, len: usize) -> bool {
        self.map(offset, len).map(|(_, r)| r.len()).sum::<usize>() == len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{RelPath, Timestamp};

    fn entry(path: &str, size: Option<u64>) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: if size.is_some() {
                EntryKind::File
            } else {
                EntryKind::Dir
            },
            executable: false,
            mtime: Timestamp::default(),
            size: size.unwrap_or(0),
        }
    }

    fn share() -> Metadata {
        Metadata::from_entries(vec![
            entry("a.txt", Some(10)),
            entry("docs", None),
            entry("docs/x.md", Some(5)),
            entry("docs/y.jpg", Some(20)),
            entry("docs/deep", None),
            entry("docs/deep/z.jpg", Some(7)),
            entry("empty", None),
        ])
        .unwrap()
    }

    fn paths(s: &Subset) -> Vec<&str> {
        s.metadata()
            .entries()
            .iter()
            .map(|e| e.path.as_str())
            .collect()
    }

    fn sel(only: &[&str], exclude: &[&str]) -> Selection {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Selection::new(&v(only), &v(exclude)).unwrap()
    }

    #[test]
    fn globs_follow_the_documented_rules() {
        let m = |p: &str, s: &str| Pattern::new(p).unwrap().matches(s);
        assert!(m("*.jpg", "docs/deep/z.jpg"));
        assert!(m("*.jpg", "y.jpg"));
        assert!(!m("*.jpg", "y.jpeg"));
        assert!(m("docs/*.jpg", "docs/y.jpg"));
        assert!(!m("docs/*.jpg", "docs/deep/z.jpg"));
        assert!(m("docs/**/*.jpg", "docs/deep/z.jpg"));
        assert!(m("docs/**/*.jpg", "docs/y.jpg"));
        assert!(m("/a.txt", "a.txt"));
        assert!(m("./a.txt", "a.txt"));
        assert!(!m("./a.txt", "docs/a.txt"));
        assert!(m("**/deep/**", "docs/deep/z.jpg"));
        assert!(m("docs/**", "docs"));
        assert!(!m("/a.txt", "docs/a.txt"));
        assert!(m("?.txt", "a.txt"));
        assert!(!m("?.txt", "ab.txt"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**", "docs/x"));
        assert!(m("ünï*", "ünïcode"));
        for bad in ["", "/", "./", &"x".repeat(MAX_PATTERN_LEN + 1)] {
            assert!(Pattern::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_hostile_name_does_not_blow_up_the_matcher() {
        let p = Pattern::new(&"*a".repeat(50)).unwrap();
        let name = "a".repeat(4000) + "b";
        let t = std::time::Instant::now();
        assert!(!p.matches(&name));
        let p = Pattern::new(&"**/".repeat(1000)).unwrap();
        let deep = vec!["a"; 128].join("/") + "/b";
        assert!(p.matches(&deep));
        assert!(!Pattern::new(&("**/".repeat(1000) + "c"))
            .unwrap()
            .matches(&deep));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn chosen_entries_come_with_their_folders_and_excludes_win() {
        let m = share();
        let s = sel(&["*.jpg"], &[]).apply(&m).unwrap();
        assert_eq!(
            paths(&s),
            ["docs", "docs/deep", "docs/deep/z.jpg", "docs/y.jpg"]
        );
        assert!(!s.is_everything());
        let s = sel(&["docs"], &["deep"]).apply(&m).unwrap();
        assert_eq!(paths(&s), ["docs", "docs/x.md", "docs/y.jpg"]);
        let s = sel(&["empty"], &[]).apply(&m).unwrap();
        assert_eq!(paths(&s), ["empty"]);
        assert!(s.pieces().is_empty());
        assert!(sel(&[], &[]).apply(&m).unwrap().is_everything());
        assert_eq!(
            sel(&["*.pdf"], &[]).apply(&m),
            Err(SelectError::NothingMatches)
        );
        assert_eq!(
            sel(&[], &["**"]).apply(&m),
            Err(SelectError::NothingMatches)
        );
    }

    #[test]
    fn chunks_and_offsets_of_the_chosen_bytes() {
        // Content: a.txt 0..10, x.md 10..15, y.jpg 15..35, z.jpg 35..42.
        let m = share();
        let s = sel(&["*.jpg"], &[]).apply(&m).unwrap();
        // Sorted order: docs/deep/z.jpg comes before docs/x.md.
        let order: Vec<_> = m.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(order[3], "docs/deep/z.jpg");
        // a.txt 0..10, z.jpg 10..17, x.md 17..22, y.jpg 22..42.
        assert_eq!(
            s.pieces(),
            [
                Piece {
                    from: 10,
                    len: 7,
                    to: 0
                },
                Piece {
                    from: 22,
                    len: 20,
                    to: 7
                }
            ]
        );
        assert_eq!(s.chunks(8), [1, 2, 3, 4, 5]);
        assert_eq!(s.chunks(16), [0, 1, 2]);
        let got: Vec<_> = s.map(16, 16).collect();
        assert_eq!(got, [(6, 0..1), (7, 6..16)]);
        assert!(!s.covers(16, 16));
        assert!(s.covers(24, 8));
        let all = Subset::everything(&m);
        assert_eq!(all.chunks(16), [0, 1, 2]);
        assert_eq!(all.map(32, 10).collect::<Vec<_>>(), [(32, 0..10)]);
    }
}
