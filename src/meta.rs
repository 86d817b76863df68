//! Share metadata: the sealed file list, and the rules for hostile paths (pure).
//!
//! The metadata stream lists every file and folder of a share in strictly
//! ascending byte order of its relative path, with each entry's parent folder
//! listed before it. The content stream is the bytes of the files in the same
//! order, so a file's offset is the sum of the sizes before it. Everything in
//! here comes from the sharer and is hostile to the receiver: paths are checked
//! component by component, names that collide on case-insensitive or
//! Unicode-normalising file systems are refused, and every count is bounded
//! before anything is allocated. The same checks run when sealing, so a share
//! that seals is a share that opens on any platform.

use std::collections::HashMap;
use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// First four bytes of the metadata stream.
pub const MAGIC: [u8; 4] = *b"PDMD";
/// The only metadata version this build reads and writes.
pub const VERSION: u8 = 1;
/// Most entries (files and folders) in one share.
pub const MAX_ENTRIES: u32 = 1_000_000;
/// Longest relative path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;
/// Deepest path, in components.
pub const MAX_DEPTH: usize = 128;
/// Bytes of the metadata header: magic, version, three reserved, count.
pub const HEADER_LEN: usize = 12;
/// Encoded size of an entry with an empty path (the smallest possible).
const MIN_ENTRY_LEN: usize = 1 + 1 + 2 + 8 + 4 + 8;

/// Why a relative path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing at all.
    #[error("the path is empty")]
    Empty,
    /// Over [`MAX_PATH_LEN`] bytes.
    #[error("the path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// Over [`MAX_DEPTH`] components.
    #[error("the path is deeper than {MAX_DEPTH} folders")]
    TooDeep,
    /// Starts with `/`.
    #[error("the path is absolute")]
    Absolute,
    /// Two slashes in a row, or a trailing slash.
    #[error("the path has an empty component")]
    EmptyComponent,
    /// A `.` or `..` component.
    #[error("the path has a '.' or '..' component")]
    DotComponent,
    /// A component over [`MAX_COMPONENT_LEN`] bytes.
    #[error("a path component is longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong,
    /// A backslash, which Windows reads as a separator.
    #[error("the path contains a backslash")]
    Backslash,
    /// A colon: drive letters and alternate data streams on Windows.
    #[error("the path contains ':' (a drive letter or a Windows stream name)")]
    Colon,
    /// NUL or another control character.
    #[error("the path contains a control character")]
    Control,
    /// A bidirectional-text override, which can disguise a name on screen.
    #[error("the path contains a bidirectional-text control character")]
    Bidi,
    /// One of `<>"|?*`, which Windows forbids.
    #[error("the path contains a character Windows forbids (one of <>\"|?*)")]
    Forbidden,
    /// A component ending in `.` or space, which Windows silently strips.
    #[error("a path component ends with a dot or a space")]
    TrailingDotOrSpace,
    /// `CON`, `NUL`, `COM1` and the other names Windows reserves.
    #[error("a path component is a name Windows reserves (CON, NUL, COM1, CONIN$, ...)")]
    Reserved,
    /// A zero-width or other invisible format character, which lets two
    /// names that look the same differ on disk.
    #[error("the path contains an invisible (zero-width or format) character")]
    Invisible,
    /// A component starting with `.peerdrop-`, the prefix of the receiver's
    /// own staging folders: a share could otherwise write into another
    /// share's staging folder.
    #[error("a path component starts with '.peerdrop-', which peerdrop reserves for its own staging folders")]
    PeerdropReserved,
}

/// Prefix of every name peerdrop creates next to a share's entries (its
/// staging folders); no entry of a share may start with it, in any case.
pub const RESERVED_PREFIX: &str = ".peerdrop-";

/// A validated relative path: `/`-separated UTF-8 components, each safe to
/// create under a destination folder on Linux, macOS and Windows alike.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    /// Validates `s` as a relative path.
    pub fn new(s: &str) -> Result<RelPath, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let mut depth = 0;
        for c in s.split('/') {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(PathError::TooDeep);
            }
            check_component(c)?;
        }
        Ok(RelPath(s.to_owned()))
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent path, `None` at the top level.
    pub fn parent(&self) -> Option<&str> {
        self.0.rfind('/').map(|i| &self.0[..i])
    }

    /// Key under which two paths collide on a case-insensitive or
    /// normalising file system: compatibility normalisation (NFKC, which maps
    /// `ſ` to `s` and `µ` to `μ`), lower case, then the folds lower-casing
    /// misses (`ς`/`σ`, `ı`/`i`, `ß`/`ss`). Deliberately broader than any one
    /// file system: a false collision refuses a share, a missed one would
    /// write two entries into one file.
    fn fold_key(&self) -> String {
        let lower = self.0.nfkc().collect::<String>().to_lowercase();
        let mut out = String::with_capacity(lower.len());
        for c in lower.chars() {
            match c {
                'ς' => out.push('σ'),
                'ı' => out.push('i'),
                'ß' => out.push_str("ss"),
                c => out.push(c),
            }
        }
        out.nfkc().collect()
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Displays escaped and quoted, so a hostile name cannot drive the terminal.
impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

fn check_component(c: &str) -> Result<(), PathError> {
    if c.is_empty() {
        return Err(PathError::EmptyComponent);
    }
    if c == "." || c == ".." {
        return Err(PathError::DotComponent);
    }
    if c.len() > MAX_COMPONENT_LEN {
        return Err(PathError::ComponentTooLong);
    }
    for ch in c.chars() {
        match ch {
            '\\' => return Err(PathError::Backslash),
            ':' => return Err(PathError::Colon),
            '<' | '>' | '"' | '|' | '?' | '*' => return Err(PathError::Forbidden),
            '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{061c}'
            | '\u{2028}'
            | '\u{2029}' => return Err(PathError::Bidi),
            '\u{00ad}'
            | '\u{034f}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200d}'
            | '\u{2060}'..='\u{2064}'
            | '\u{feff}' => return Err(PathError::Invisible),
            ch if ch.is_control() => return Err(PathError::Control),
            _ => {}
        }
    }
    if c.ends_with('.') || c.ends_with(' ') {
        return Err(PathError::TrailingDotOrSpace);
    }
    if c.len() >= RESERVED_PREFIX.len()
        && c.as_bytes()[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
    {
        return Err(PathError::PeerdropReserved);
    }
    // Windows ignores trailing spaces of the stem too: `CON .txt` is `CON`.
    let stem = c
        .split('.')
        .next()
        .unwrap_or(c)
        .trim_end_matches(' ')
        .to_ascii_uppercase();
    let reserved = matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" | "CLOCK$"
    ) || ((stem.starts_with("COM") || stem.starts_with("LPT"))
        && stem.chars().count() == 4
        && matches!(stem.chars().nth(3), Some('0'..='9' | '¹' | '²' | '³')));
    if reserved {
        return Err(PathError::Reserved);
    }
    Ok(())
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file; its bytes are in the content stream.
    File = 0,
    /// A folder (listed even when empty, so empty folders survive).
    Dir = 1,
}

/// Modification time: seconds and nanoseconds relative to the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Nanoseconds, below 10^9.
    pub nanos: u32,
}

/// One file or folder of a share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where it goes under the destination.
    pub path: RelPath,
    /// File or folder.
    pub kind: EntryKind,
    /// Whether the file is executable (always false for folders).
    pub executable: bool,
    /// Last modification time.
    pub mtime: Timestamp,
    /// Length in bytes (zero for folders).
    pub size: u64,
}

/// Why a file list is refused. Paths in messages are escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Ends before a complete structure.
    #[error("the file list is truncated")]
    Truncated,
    /// Bytes after the last entry.
    #[error("the file list has trailing bytes after its last entry")]
    TrailingBytes,
    /// Wrong magic bytes.
    #[error("the file list does not start with the peerdrop metadata magic")]
    BadMagic,
    /// Unknown version.
    #[error("file list version {0} is not supported by this peerdrop; upgrade peerdrop")]
    UnsupportedVersion(u8),
    /// Reserved bytes not zero.
    #[error("the file list has non-zero reserved bytes")]
    Reserved,
    /// More than [`MAX_ENTRIES`] entries.
    #[error("the share lists {0} files and folders, the limit is {MAX_ENTRIES}")]
    TooManyEntries(u64),
    /// An entry kind other than file or folder.
    #[error("entry {index} has unknown kind {kind}")]
    BadKind {
        /// Position in the list.
        index: usize,
        /// The byte found.
        kind: u8,
    },
    /// A path that is not UTF-8.
    #[error("entry {index} has a name that is not valid UTF-8")]
    NotUtf8 {
        /// Position in the list.
        index: usize,
    },
    /// A path refused by [`RelPath::new`].
    #[error("refusing the share: entry {path} is unsafe: {reason}")]
    BadPath {
        /// The offending path, escaped.
        path: String,
        /// What is wrong with it.
        reason: PathError,
    },
    /// Flags, size or time that make no sense for the entry.
    #[error("entry {path} has invalid {what}")]
    BadField {
        /// The entry.
        path: RelPath,
        /// Which field.
        what: &'static str,
    },
    /// Out of order or repeated.
    #[error("entry {path} is out of order or listed twice")]
    NotSorted {
        /// The entry.
        path: RelPath,
    },
    /// Parent folder not listed before the entry, or it is a file.
    #[error("entry {path} is inside a folder the share does not list")]
    MissingParent {
        /// The entry.
        path: RelPath,
    },
    /// Two entries that would land on the same file on some file systems.
    #[error("entries {first} and {second} collide (they differ only in case or Unicode form)")]
    Collision {
        /// The earlier entry.
        first: RelPath,
        /// The later entry.
        second: RelPath,
    },
    /// File sizes add up to more than 2^64.
    #[error("the file sizes overflow")]
    SizeOverflow,
}

/// A validated file list.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Metadata {
    entries: Vec<Entry>,
    content_len: u64,
}

impl Metadata {
    /// Sorts `entries` into canonical order and validates them.
    pub fn from_entries(mut entries: Vec<Entry>) -> Result<Metadata, MetadataError> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Metadata::validated(entries)
    }

    fn validated(entries: Vec<Entry>) -> Result<Metadata, MetadataError> {
        if entries.len() as u64 > MAX_ENTRIES as u64 {
            return Err(MetadataError::TooManyEntries(entries.len() as u64));
        }
        let mut kinds: HashMap<&str, EntryKind> = HashMap::with_capacity(entries.len());
        let mut folded: HashMap<String, &RelPath> = HashMap::with_capacity(entries.len());
        let mut content_len = 0u64;
        for (i, e) in entries.iter().enumerate() {
            if i > 0 && entries[i - 1].path >= e.path {
                return Err(MetadataError::NotSorted {
                    path: e.path.clone(),
                });
            }
            let bad = |what| MetadataError::BadField {
                path: e.path.clone(),
                what,
            };
            if e.mtime.nanos >= 1_000_000_000 {
                return Err(bad("modification time"));
            }
            if e.kind == EntryKind::Dir && (e.size != 0 || e.executable) {
                return Err(bad("folder attributes"));
            }
            if let Some(parent) = e.path.parent() {
                if kinds.get(parent) != Some(&EntryKind::Dir) {
                    return Err(MetadataError::MissingParent {
                        path: e.path.clone(),
                    });
                }
            }
            if let Some(first) = folded.insert(e.path.fold_key(), &e.path) {
                return Err(MetadataError::Collision {
                    first: first.clone(),
                    second: e.path.clone(),
                });
            }
            kinds.insert(e.path.as_str(), e.kind);
            content_len = content_len
                .checked_add(e.size)
                .ok_or(MetadataError::SizeOverflow)?;
        }
        Ok(Metadata {
            entries,
            content_len,
        })
    }

    /// Entries in canonical (content stream) order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Total size of all files: the length of the content stream.
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// Number of regular files.
    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .count()
    }

    /// The canonical encoding (FORMAT.md, "Metadata").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_LEN
                + self
                    .entries
                    .iter()
                    .map(|e| MIN_ENTRY_LEN + e.path.0.len())
                    .sum::<usize>(),
        );
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.push(e.kind as u8);
            out.push(e.executable as u8);
            out.extend_from_slice(&(e.path.0.len() as u16).to_le_bytes());
            out.extend_from_slice(e.path.0.as_bytes());
            out.extend_from_slice(&e.mtime.secs.to_le_bytes());
            out.extend_from_slice(&e.mtime.nanos.to_le_bytes());
            out.extend_from_slice(&e.size.to_le_bytes());
        }
        out
    }

    /// Decodes and validates a file list. Iterative, bounded, no recursion.
    pub fn decode(bytes: &[u8]) -> Result<Metadata, MetadataError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(MetadataError::BadMagic);
        }
        let version = r.take(1)?[0];
        if version != VERSION {
            return Err(MetadataError::UnsupportedVersion(version));
        }
        if r.take(3)? != [0, 0, 0] {
            return Err(MetadataError::Reserved);
        }
        let count = r.u32()?;
        if count > MAX_ENTRIES {
            return Err(MetadataError::TooManyEntries(count as u64));
        }
        if count as usize > r.0.len() / MIN_ENTRY_LEN {
            return Err(MetadataError::Truncated);
        }
        let mut entries = Vec::with_capacity(count as usize);
        for index in 0..count as usize {
            let kind = match r.take(1)?[0] {
                0 => EntryKind::File,
                1 => EntryKind::Dir,
                kind => return Err(MetadataError::BadKind { index, kind }),
            };
            let flags = r.take(1)?[0];
            let len = u16::from_le_bytes(r.take(2)?.try_into().expect("2 bytes")) as usize;
            let raw =
                std::str::from_utf8(r.take(len)?).map_err(|_| MetadataError::NotUtf8 { index })?;
            let path = RelPath::new(raw).map_err(|reason| MetadataError::BadPath {
                path: format!("{raw:?}"),
                reason,
            })?;
            let secs = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
            let nanos = r.u32()?;
            let size = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
            if flags > 1 {
                return Err(MetadataError::BadField {
                    path,
                    what: "flags",
                });
            }
            entries.push(Entry {
                path,
                kind,
                executable: flags == 1,
                mtime: Timestamp { secs, nanos },
                size,
            });
        }
        if !r.0.is_empty() {
            return Err(MetadataError::TrailingBytes);
        }
        Metadata::validated(entries)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MetadataError> {
        if self.0.len() < n {
            return Err(MetadataError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, MetadataError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str, size: u64) -> Entry {
        Entry {
            path: RelPath::new(p).unwrap(),
            kind: EntryKind::File,
            executable: false,
            mtime: Timestamp::default(),
            size,
        }
    }

    fn dir(p: &str) -> Entry {
        Entry {
            kind: EntryKind::Dir,
            ..file(p, 0)
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        let long = "a".repeat(256);
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("a/../b", PathError::DotComponent),
            ("..", PathError::DotComponent),
            ("./a", PathError::DotComponent),
            ("a//b", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            ("C:\\x", PathError::Colon),
            ("C:x", PathError::Colon),
            ("a\\b", PathError::Backslash),
            ("\\\\server\\share", PathError::Backslash),
            ("a\0b", PathError::Control),
            ("a\nb", PathError::Control),
            ("a\u{1b}[31mb", PathError::Control),
            ("evil\u{202e}txt.exe", PathError::Bidi),
            ("what?", PathError::Forbidden),
            ("trailing.", PathError::TrailingDotOrSpace),
            ("trailing ", PathError::TrailingDotOrSpace),
            ("CON", PathError::Reserved),
            ("nul.txt", PathError::Reserved),
            ("lpt¹", PathError::Reserved),
            ("com9.log", PathError::Reserved),
            // F-17: the console devices, and stems Windows trims.
            ("CONIN$", PathError::Reserved),
            ("conout$.txt", PathError::Reserved),
            ("CLOCK$", PathError::Reserved),
            ("CON .txt", PathError::Reserved),
            ("d/NUL  .x", PathError::Reserved),
            ("aux   .tar.gz", PathError::Reserved),
            // F-17: invisible characters that make look-alike names.
            ("zero\u{200b}width", PathError::Invisible),
            ("a\u{200c}b", PathError::Invisible),
            ("a\u{200d}b", PathError::Invisible),
            ("word\u{2060}joiner", PathError::Invisible),
            ("\u{feff}bom", PathError::Invisible),
            ("mongolian\u{180e}vs", PathError::Invisible),
            ("soft\u{ad}hyphen", PathError::Invisible),
            // F-06: a share's entries never land in a staging folder.
            (
                ".peerdrop-0123456789abcdef.partial",
                PathError::PeerdropReserved,
            ),
            ("d/.PeerDrop-x", PathError::PeerdropReserved),
            (&long, PathError::ComponentTooLong),
            (&deep, PathError::TooDeep),
        ];
        for (p, want) in cases {
            assert_eq!(RelPath::new(p), Err(*want), "{p:?}");
        }
        for ok in [
            "a",
            "a/b.txt",
            "console",
            "com10",
            ".hidden",
            "CONSOLE$",
            "con_x.txt",
            ".peerdrop",
            "peerdrop-x",
            "x.peerdrop-y",
            "ünïcödé/名前",
        ] {
            RelPath::new(ok).unwrap();
        }
    }

    #[test]
    fn collisions_and_structure_are_refused() {
        let err = Metadata::from_entries(vec![file("A", 1), file("a", 1)]).unwrap_err();
        assert!(matches!(err, MetadataError::Collision { .. }), "{err}");
        // "é" precomposed and decomposed.
        let err =
            Metadata::from_entries(vec![file("caf\u{e9}", 1), file("cafe\u{301}", 1)]).unwrap_err();
        assert!(matches!(err, MetadataError::Collision { .. }), "{err}");
        for (a, b) in [
            ("s", "ſ"),
            ("σ.txt", "ς.txt"),
            ("µ", "μ"),
            ("i", "ı"),
            ("strasse", "straße"),
        ] {
            let err = Metadata::from_entries(vec![file(a, 1), file(b, 1)]).unwrap_err();
            assert!(
                matches!(err, MetadataError::Collision { .. }),
                "{a} {b}: {err}"
            );
        }
        let err = Metadata::from_entries(vec![file("x", 1), file("x/y", 1)]).unwrap_err();
        assert!(matches!(err, MetadataError::MissingParent { .. }), "{err}");
        let err = Metadata::from_entries(vec![file("d/y", 1)]).unwrap_err();
        assert!(matches!(err, MetadataError::MissingParent { .. }), "{err}");
        let err = Metadata::from_entries(vec![file("a", 1), file("a", 2)]).unwrap_err();
        assert!(matches!(err, MetadataError::NotSorted { .. }), "{err}");
    }

    #[test]
    fn round_trip_and_hostile_encodings() {
        let m =
            Metadata::from_entries(vec![dir("d"), file("d/x", 5), file("a.txt", 0), dir("d/e")])
                .unwrap();
        assert_eq!(m.content_len(), 5);
        let paths: Vec<_> = m.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "d", "d/e", "d/x"]);
        let bytes = m.encode();
        assert_eq!(Metadata::decode(&bytes).unwrap(), m);

        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Metadata::decode(&trailing),
            Err(MetadataError::TrailingBytes)
        );
        assert_eq!(
            Metadata::decode(&bytes[..bytes.len() - 1]),
            Err(MetadataError::Truncated)
        );
        let mut bomb = bytes.clone();
        bomb[8..12].copy_from_slice(&(MAX_ENTRIES).to_le_bytes());
        assert_eq!(Metadata::decode(&bomb), Err(MetadataError::Truncated));
        bomb[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Metadata::decode(&bomb),
            Err(MetadataError::TooManyEntries(u32::MAX as u64))
        );
        // A hostile path is named in the error, escaped.
        let evil = {
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC);
            b.extend_from_slice(&[VERSION, 0, 0, 0, 1, 0, 0, 0]);
            b.extend_from_slice(&[0, 0, 5, 0]);
            b.extend_from_slice(b"../\x1bx");
            b.extend_from_slice(&[0; 20]);
            b
        };
        let err = Metadata::decode(&evil).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing the share: entry \"../\\u{1b}x\" is unsafe: the path has a '.' or '..' component"
        );
    }
}
