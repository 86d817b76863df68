//! Frozen test vectors (tests/vectors/format-v1.json, and
//! tests/vectors/expiry-v2.json for version-2 manifests, which carry an
//! expiry): fixed keys and inputs with their chunk ids, manifest ids and
//! links, and negative vectors, each a store's worth of bytes plus a link
//! with the exact error expected. tests/vectors/locator-v1.json: DHT
//! locators of manifest ids, checked against FORMAT.md 2.2's definition.
//!
//! Two checks: every vector, read from the file, behaves as recorded when run
//! through the whole receive path; and the generator below still produces
//! the file byte for byte, so an accidental format change fails CI. After an
//! intended change (with a version bump), regenerate with
//! `PEERDROP_BLESS=1 cargo test --test vectors`.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use peerdrop::chunk::{hex, unhex, ChunkId, ChunkSize, Stream};
use peerdrop::crypto::{ChunkPosition, ShareKey};
use peerdrop::link::{Hint, Link};
use peerdrop::manifest::{Expiry, Manifest, ManifestId, MAX_EXPIRY};
use peerdrop::meta::{Entry, EntryKind, Metadata, MetadataError, RelPath, Timestamp};
use peerdrop::open::OpenError;
use peerdrop::store::unseal::UnsealError;
use serde_json::{json, Value};

const FILE: &str = "tests/vectors/format-v1.json";
const EXPIRY_FILE: &str = "tests/vectors/expiry-v2.json";
const LOCATOR_FILE: &str = "tests/vectors/locator-v1.json";
const ABOUT: &str = "peerdrop format v1 test vectors; see the introduction of docs/FORMAT.md. Each vector: `key` (hex) and the `link` carrying it; `manifest` (hex), the bytes a store returns for the link's id (tampered in some negative vectors), with `manifest_id` the BLAKE3 of those bytes, not necessarily the link's id; `metadata_chunk_ids` and `content_chunk_ids` as that manifest lists them, or null where it does not decode; `chunks`, chunk id (hex) to sealed chunk (hex), what a store holds; `expect`, the outcome of receiving: `ok`, the files written (`blake3` is the hash of a file's content; modification times are not listed), or `error`, peerdrop's message, with `kind`, the refusal as `Type::Variant` of the error types FORMAT.md names.";
const EXPIRY_ABOUT: &str = "peerdrop manifest version 2 (an expiry) test vectors; see docs/FORMAT.md sections 4.2 and 7.6. The fields are those of format-v1.json. Receiving checks the link's stated expiry (`?expires=`) against the manifest's and the manifest's against the clock, after the manifest is verified and before the key is checked; the expired vectors expired in 2023, the others expire at the last second of 9999.";
const LOCATOR_ABOUT: &str = "peerdrop DHT locator test vectors; see docs/FORMAT.md section 2.2. Each vector: `pin_link`, a link naming `manifest_id` (hex); `locator` (hex), BLAKE3 derive_key with the context \"peerdrop 2026-11-29 v1 dht locator\" over the id's 32 bytes. Providers announce and look up the share in the DHT under these 32 bytes, used as the Kademlia record key as they are.";
const KEY: [u8; 32] = [0x42; 32];

fn key() -> ShareKey {
    ShareKey::from_bytes(KEY).unwrap()
}

fn entry(path: &str, kind: EntryKind, exec: bool, size: u64, secs: i64) -> Entry {
    Entry {
        path: RelPath::new(path).unwrap(),
        kind,
        executable: exec,
        mtime: Timestamp {
            secs,
            nanos: 123_456_789,
        },
        size,
    }
}

/// The base share: a folder with an executable, an empty folder, and a file
/// spanning three 1 KiB chunks. Returns its file list and content.
fn base(z_len: u64) -> (Metadata, Vec<u8>) {
    let a = bytes(1, 10);
    let z = bytes(2, z_len as usize);
    let m = Metadata::from_entries(vec![
        entry("docs", EntryKind::Dir, false, 0, 1_700_000_000),
        entry("docs/a.txt", EntryKind::File, true, 10, 1_700_000_001),
        entry("docs/empty", EntryKind::Dir, false, 0, 1_700_000_002),
        entry("z.bin", EntryKind::File, false, z_len, -86_400),
    ])
    .unwrap();
    (m, [a, z].concat())
}

fn size() -> ChunkSize {
    ChunkSize::from_log2(10).unwrap()
}

fn link_for(m: &Manifest, key: [u8; 32], hints: Vec<Hint>) -> String {
    Link::new(m.id(), hints, Some(ShareKey::from_bytes(key).unwrap()))
        .unwrap()
        .to_uri_string()
}

struct Vector {
    name: &'static str,
    description: &'static str,
    link: String,
    manifest: Vec<u8>,
    chunks: ChunkMap,
}

fn honest(meta: &Metadata, content: &[u8]) -> (Manifest, ChunkMap) {
    honest_raw(&meta.encode(), content)
}

/// Seals an encoded (possibly hostile) file list and content, honestly.
fn honest_raw(meta: &[u8], content: &[u8]) -> (Manifest, ChunkMap) {
    seal_raw(
        &key(),
        size(),
        stream_of(Stream::Metadata, meta, size()),
        stream_of(Stream::Content, content, size()),
    )
}

fn v(name: &'static str, description: &'static str, m: &Manifest, chunks: ChunkMap) -> Vector {
    Vector {
        name,
        description,
        link: link_for(m, KEY, Vec::new()),
        manifest: m.encode(),
        chunks,
    }
}

fn flip(mut b: Vec<u8>, at: usize) -> Vec<u8> {
    b[at] ^= 1;
    b
}

fn generate() -> Vec<Vector> {
    let mut out = Vec::new();
    let (meta, content) = base(2500);

    // Positive vectors, sealed by the library itself.
    let share = seal_mem(&key(), &meta, &content, 10, 1);
    let m = Manifest::decode(&share.manifest).unwrap();
    out.push(v(
        "tree",
        "a folder with an executable file, an empty folder, and a 2500-byte file (1 KiB chunks)",
        &m,
        share.chunks.clone(),
    ));
    let hint = Hint {
        // An identity-multihash peer id and /ip4/127.0.0.1/tcp/4001.
        peer: [vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20], vec![7; 32]].concat(),
        addrs: vec![vec![0x04, 127, 0, 0, 1, 0x06, 0x0f, 0xa1]],
    };
    out.push(Vector {
        link: link_for(&m, KEY, vec![hint]),
        ..v(
            "tree-with-hint",
            "the same share, with one peer hint in the link",
            &m,
            share.chunks.clone(),
        )
    });
    let empty_file =
        Metadata::from_entries(vec![entry("empty.txt", EntryKind::File, false, 0, 0)]).unwrap();
    let s = seal_mem(&key(), &empty_file, b"", 10, 1);
    out.push(v(
        "empty-file",
        "one empty file: the content stream is one empty final chunk",
        &Manifest::decode(&s.manifest).unwrap(),
        s.chunks,
    ));
    let empty_dir =
        Metadata::from_entries(vec![entry("nothing", EntryKind::Dir, false, 0, 0)]).unwrap();
    let s = seal_mem(&key(), &empty_dir, b"", 10, 1);
    out.push(v(
        "empty-folder",
        "a share with no bytes at all: one empty folder",
        &Manifest::decode(&s.manifest).unwrap(),
        s.chunks,
    ));

    // Negative vectors.
    let (hm, hc) = honest(&meta, &content);
    assert_eq!(
        hm.encode(),
        share.manifest,
        "the raw sealer agrees with the library"
    );
    out.push(Vector {
        link: link_for(&hm, [0x43; 32], Vec::new()),
        ..v(
            "wrong-key",
            "a well-formed link with another key",
            &hm,
            hc.clone(),
        )
    });
    out.push(Vector {
        manifest: flip(hm.encode(), 60),
        ..v(
            "manifest-flipped-byte",
            "the store returns the manifest with one bit flipped",
            &hm,
            hc.clone(),
        )
    });
    let with_chunk = |id: ChunkId, bytes: Vec<u8>| {
        let mut c = hc.clone();
        c.insert(id, bytes);
        c
    };
    let c = |i: usize| hm.content_chunks[i];
    out.push(v(
        "metadata-chunk-flipped-byte",
        "the store returns metadata chunk 0 with one bit flipped",
        &hm,
        with_chunk(
            hm.metadata_chunks[0],
            flip(hc[&hm.metadata_chunks[0]].clone(), 20),
        ),
    ));
    out.push(v(
        "content-chunk-flipped-byte",
        "the store returns content chunk 1 with one bit flipped",
        &hm,
        with_chunk(c(1), flip(hc[&c(1)].clone(), 500)),
    ));
    out.push(v(
        "content-chunk-truncated",
        "the store returns content chunk 2 one byte short",
        &hm,
        with_chunk(c(2), hc[&c(2)][..hc[&c(2)].len() - 1].to_vec()),
    ));
    out.push(v(
        "content-chunk-trailing-bytes",
        "the store returns content chunk 2 with a byte appended",
        &hm,
        with_chunk(c(2), [hc[&c(2)].clone(), vec![0]].concat()),
    ));

    // Malicious sharers (they hold the key and publish their own manifest).
    let mb = meta.encode();
    let meta_raw = || {
        (
            mb.len() as u64,
            honest_chunks(Stream::Metadata, &mb, size()),
        )
    };
    {
        let (short_meta, _) = base(2038);
        let smb = short_meta.encode();
        let mut chunks = honest_chunks(Stream::Content, &content, size());
        chunks.truncate(2);
        let (m, cm) = seal_raw(
            &key(),
            size(),
            stream_of(Stream::Metadata, &smb, size()),
            (2048, chunks),
        );
        out.push(v(
            "missing-final-chunk",
            "the stream stops after a chunk that was sealed as not final",
            &m,
            cm,
        ));
    }
    {
        let mut chunks = honest_chunks(Stream::Content, &content, size());
        chunks[0].pos.is_last = true;
        let (m, cm) = seal_raw(&key(), size(), meta_raw(), (content.len() as u64, chunks));
        out.push(v(
            "two-final-chunks",
            "chunk 0 is sealed as final as well as chunk 2",
            &m,
            cm,
        ));
    }
    {
        let mut chunks = honest_chunks(Stream::Content, &content, size());
        chunks.swap(0, 1);
        let (m, cm) = seal_raw(&key(), size(), meta_raw(), (content.len() as u64, chunks));
        out.push(v(
            "swapped-chunks",
            "content chunks 0 and 1 are listed in each other's place",
            &m,
            cm,
        ));
    }
    {
        let mut chunks = honest_chunks(Stream::Content, &content, size());
        chunks[0].pos.stream = Stream::Metadata;
        let (m, cm) = seal_raw(&key(), size(), meta_raw(), (content.len() as u64, chunks));
        out.push(v(
            "chunk-from-other-stream",
            "content chunk 0 was sealed as a metadata chunk",
            &m,
            cm,
        ));
    }
    {
        let (m, cm) = honest(&meta, &content);
        let mut bytes = m.encode();
        bytes.extend_from_slice(&[9; 32]);
        out.push(crafted_vector(
            "trailing-chunk-after-final",
            "the manifest lists one more chunk id than its lengths need",
            bytes,
            &cm,
        ));
    }
    let crafted = |name, description, patch: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = hm.encode();
        patch(&mut bytes);
        crafted_vector(name, description, bytes, &hc)
    };
    out.push(crafted(
        "oversized-content-claim",
        "the manifest claims 2^62 bytes of content",
        &|b| b[48..56].copy_from_slice(&(1u64 << 62).to_le_bytes()),
    ));
    out.push(crafted(
        "oversized-metadata-claim",
        "the manifest claims 2^40 bytes of metadata",
        &|b| b[40..48].copy_from_slice(&(1u64 << 40).to_le_bytes()),
    ));
    out.push(crafted(
        "unknown-manifest-version",
        "manifest version 3 (1 is without an expiry, 2 with one)",
        &|b| b[4] = 3,
    ));
    {
        // A file list claiming 900,000 entries in a few bytes.
        let mut bomb = mb.clone();
        bomb[8..12].copy_from_slice(&900_000u32.to_le_bytes());
        let (m, cm) = honest_raw(&bomb, &content);
        out.push(v(
            "entry-count-bomb",
            "the file list claims 900,000 entries but holds 4",
            &m,
            cm,
        ));
    }
    {
        // "../evil", sealed with a valid key: the path check must refuse it.
        let mut raw = Vec::new();
        raw.extend_from_slice(b"PDMD\x01\x00\x00\x00");
        raw.extend_from_slice(&1u32.to_le_bytes());
        raw.extend_from_slice(&[0, 0]);
        raw.extend_from_slice(&7u16.to_le_bytes());
        raw.extend_from_slice(b"../evil");
        raw.extend_from_slice(&[0; 12]);
        raw.extend_from_slice(&4u64.to_le_bytes());
        let (m, cm) = honest_raw(&raw, b"evil");
        out.push(v("path-traversal", "a file named ../evil", &m, cm));
    }
    {
        let (short_meta, _) = base(2490);
        let smb = short_meta.encode();
        let (m, cm) = honest_raw(&smb, &content);
        out.push(v(
            "content-length-mismatch",
            "file sizes add up to 2500 but the manifest declares 2510",
            &m,
            cm,
        ));
    }
    {
        let eb = empty_file.encode();
        let chunk = RawChunk {
            plaintext: Vec::new(),
            pos: ChunkPosition {
                stream: Stream::Content,
                index: 0,
                is_last: false,
            },
        };
        let (m, cm) = seal_raw(
            &key(),
            size(),
            stream_of(Stream::Metadata, &eb, size()),
            (0, vec![chunk]),
        );
        out.push(v(
            "empty-share-not-final",
            "an empty file whose only chunk is not sealed as final",
            &m,
            cm,
        ));
    }
    out.extend(generate_long_list());
    out
}

/// A folder of 30 files whose file list (2,230 bytes) spans three 1 KiB
/// metadata chunks, entries straddling the chunk boundaries. Returns the
/// list and the content (file `i` holds `7 * i` bytes).
fn long_list() -> (Metadata, Vec<u8>) {
    let mut entries = vec![entry("list", EntryKind::Dir, false, 0, 1_700_000_000)];
    let mut content = Vec::new();
    for i in 0..30u64 {
        let data = bytes(100 + i, 7 * i as usize);
        entries.push(entry(
            &format!("list/file-{i:02}-named-long-enough-to-fill-chunks.txt"),
            EntryKind::File,
            i % 3 == 0,
            data.len() as u64,
            1_700_000_000 + i as i64,
        ));
        content.extend_from_slice(&data);
    }
    (Metadata::from_entries(entries).unwrap(), content)
}

/// Vectors whose file list spans several metadata chunks: the decoder must
/// read the stream's concatenated plaintext, in order, up to a final chunk.
fn generate_long_list() -> Vec<Vector> {
    let mut out = Vec::new();
    let (meta, content) = long_list();
    let mb = meta.encode();
    // As the description says: three chunks, the last one partial.
    assert_eq!(mb.len(), 2230);
    assert_eq!(size().chunk_count(mb.len() as u64), 3);
    let share = seal_mem(&key(), &meta, &content, 10, 1);
    let m = Manifest::decode(&share.manifest).unwrap();
    out.push(v(
        "file-list-three-chunks",
        "a folder of 30 files whose file list (2230 bytes) spans three metadata chunks",
        &m,
        share.chunks,
    ));
    let content_raw = || stream_of(Stream::Content, &content, size());
    {
        let mut chunks = honest_chunks(Stream::Metadata, &mb, size());
        chunks.swap(0, 1);
        let (m, cm) = seal_raw(&key(), size(), (mb.len() as u64, chunks), content_raw());
        out.push(v(
            "file-list-chunks-swapped",
            "metadata chunks 0 and 1 are listed in each other's place",
            &m,
            cm,
        ));
    }
    {
        let mut chunks = honest_chunks(Stream::Metadata, &mb, size());
        chunks.truncate(2);
        let (m, cm) = seal_raw(&key(), size(), (2048, chunks), content_raw());
        out.push(v(
            "file-list-final-chunk-missing",
            "the metadata stream stops after chunk 1, which was sealed as not final",
            &m,
            cm,
        ));
    }
    {
        let (m, cm) = seal_raw(
            &key(),
            size(),
            stream_of(Stream::Metadata, &mb[..2048], size()),
            content_raw(),
        );
        out.push(v(
            "file-list-cut-at-chunk-boundary",
            "the file list's first 2048 bytes, sealed honestly as a whole stream",
            &m,
            cm,
        ));
    }
    out
}

/// The context string of docs/FORMAT.md section 2.2, copied from the doc
/// rather than the code, so the vectors check the doc too.
const LOCATOR_CONTEXT: &str = "peerdrop 2026-11-29 v1 dht locator";

/// DHT locators (FORMAT.md 2.2): the base share's manifest id and two
/// extreme ones, each with the pin link that names it.
fn generate_locator() -> Vec<Value> {
    let (meta, content) = base(2500);
    let tree = Manifest::decode(&seal_mem(&key(), &meta, &content, 10, 1).manifest)
        .unwrap()
        .id();
    [
        (
            "tree",
            "the manifest id of format-v1.json's `tree` share",
            tree,
        ),
        ("zero-id", "an all-zero manifest id", ManifestId([0; 32])),
        ("ff-id", "an all-0xff manifest id", ManifestId([0xff; 32])),
    ]
    .into_iter()
    .map(|(name, description, id)| {
        json!({
            "name": name,
            "description": description,
            "pin_link": Link::new(id, Vec::new(), None).unwrap().to_uri_string(),
            "manifest_id": id.to_string(),
            "locator": hex(&id.locator()),
        })
    })
    .collect()
}

/// A vector whose manifest is `bytes` (crafted, possibly invalid), with a
/// link to exactly those bytes.
fn crafted_vector(
    name: &'static str,
    description: &'static str,
    bytes: Vec<u8>,
    chunks: &ChunkMap,
) -> Vector {
    Vector {
        name,
        description,
        link: Link::new(
            peerdrop::manifest::ManifestId::of(&bytes),
            Vec::new(),
            Some(key()),
        )
        .unwrap()
        .to_uri_string(),
        manifest: bytes,
        chunks: chunks.clone(),
    }
}

/// A link to `m` stating `expires`.
fn link_stating(m: &Manifest, expires: Option<Expiry>) -> String {
    Link::new(m.id(), Vec::new(), Some(key()))
        .unwrap()
        .with_expiry(expires)
        .to_uri_string()
}

/// Version-2 manifests: the base share with an expiry. The chunks do not
/// depend on the manifest, so every vector reuses the version-1 chunks.
fn generate_expiry() -> Vec<Vector> {
    let mut out = Vec::new();
    let (meta, content) = base(2500);
    let (v1, chunks) = honest(&meta, &content);
    let far = Expiry::from_unix(MAX_EXPIRY).unwrap();
    let past = Expiry::from_unix(1_700_000_000).unwrap();
    let with = |e: Option<Expiry>| Manifest {
        expires: e,
        ..v1.clone()
    };
    let vector = |name, description, m: &Manifest, link: Option<Expiry>| Vector {
        name,
        description,
        link: link_stating(m, link),
        manifest: m.encode(),
        chunks: chunks.clone(),
    };
    let m = with(Some(far));
    out.push(vector(
        "expires-9999",
        "the base share of format-v1.json expiring at 9999-12-31T23:59:59Z, stated in the link",
        &m,
        Some(far),
    ));
    out.push(vector(
        "expiry-not-stated",
        "the same manifest, with a link that states no expiry (the manifest decides)",
        &m,
        None,
    ));
    let old = with(Some(past));
    out.push(vector(
        "expired",
        "expired at 2023-11-14T22:13:20Z, stated in the link",
        &old,
        Some(past),
    ));
    out.push(vector(
        "expired-not-stated",
        "expired at 2023-11-14T22:13:20Z, with a link that states no expiry",
        &old,
        None,
    ));
    out.push(vector(
        "expiry-mismatch",
        "the link states 2100-01-01T00:00:00Z, the manifest 9999-12-31T23:59:59Z",
        &m,
        Some(Expiry::from_unix(4_102_444_800).unwrap()),
    ));
    out.push(vector(
        "expiry-stated-manifest-v1",
        "the link states an expiry but the manifest is version 1, which has none",
        &v1,
        Some(far),
    ));
    let crafted =
        |name, description, bytes: Vec<u8>| crafted_vector(name, description, bytes, &chunks);
    let patched = |at: usize, v: &[u8]| {
        let mut b = m.encode();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    out.push(crafted(
        "expiry-zero",
        "a version-2 manifest whose expiry is 0",
        patched(56, &0u64.to_le_bytes()),
    ));
    out.push(crafted(
        "expiry-after-9999",
        "a version-2 manifest whose expiry is one second after 9999-12-31T23:59:59Z",
        patched(56, &(MAX_EXPIRY + 1).to_le_bytes()),
    ));
    out.push(crafted(
        "expiry-header-truncated",
        "a version-2 manifest cut to 60 bytes, inside its expiry",
        m.encode()[..60].to_vec(),
    ));
    {
        let mut b = v1.encode();
        b[4] = 2;
        out.push(crafted(
            "version-1-body-as-version-2",
            "a version-1 manifest with its version byte set to 2",
            b,
        ));
    }
    out.push(Vector {
        link: link_stating(&m, Some(far)).replace("?expires=253402300799", "?expires=0"),
        ..vector(
            "link-expiry-zero",
            "the link states an expiry of 0, which no manifest carries",
            &m,
            None,
        )
    });
    out
}

/// The name of the variant `debug` (an error's `Debug` text) starts with.
fn variant(debug: String) -> String {
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The machine-readable kind of a refusal: `Type::Variant` of the innermost
/// error the format defines (the names docs/FORMAT.md uses), with the path
/// rule for a refused path: `ManifestError::LengthMismatch`,
/// `MetadataError::BadPath(PathError::DotComponent)`.
fn kind(e: &ReceiveError) -> String {
    let open = |e: &OpenError| match e {
        OpenError::Metadata(MetadataError::BadPath { reason, .. }) => {
            format!(
                "MetadataError::BadPath(PathError::{})",
                variant(format!("{reason:?}"))
            )
        }
        OpenError::Metadata(m) => format!("MetadataError::{}", variant(format!("{m:?}"))),
        e => format!("OpenError::{}", variant(format!("{e:?}"))),
    };
    match e {
        ReceiveError::Link(e) => format!("ParseError::{}", variant(format!("{e:?}"))),
        ReceiveError::Manifest(e) => format!("ManifestError::{}", variant(format!("{e:?}"))),
        ReceiveError::Expiry(e) => format!("ExpiryError::{}", variant(format!("{e:?}"))),
        ReceiveError::Open(e) | ReceiveError::Unseal(UnsealError::Open(e)) => open(e),
        ReceiveError::Unseal(e) => format!("UnsealError::{}", variant(format!("{e:?}"))),
    }
}

fn outcome(v: &Vector, dest: &Path) -> Value {
    match receive_typed(&v.link, &v.manifest, &v.chunks, dest, false) {
        Err(e) => json!({ "error": e.to_string(), "kind": kind(&e) }),
        Ok(_) => {
            let files: Vec<Value> = read_tree(dest)
                .into_iter()
                .map(|(path, (is_dir, exec, data))| {
                    if is_dir {
                        json!({ "path": path, "kind": "dir" })
                    } else {
                        json!({
                            "path": path,
                            "kind": "file",
                            "executable": exec,
                            "size": data.len(),
                            "blake3": hex(blake3::hash(&data).as_bytes()),
                        })
                    }
                })
                .collect();
            json!({ "ok": files })
        }
    }
}

fn to_json(v: &Vector, expect: Value) -> Value {
    let m = Manifest::decode(&v.manifest).ok();
    let mut chunks: Vec<(String, String)> = v
        .chunks
        .iter()
        .map(|(id, b)| (id.to_string(), hex(b)))
        .collect();
    chunks.sort();
    json!({
        "name": v.name,
        "description": v.description,
        "key": hex(&KEY),
        "link": v.link,
        "manifest_id": hex(blake3::hash(&v.manifest).as_bytes()),
        "manifest": hex(&v.manifest),
        "metadata_chunk_ids": m.as_ref().map(|m| m.metadata_chunks.iter().map(|c| c.to_string()).collect::<Vec<_>>()),
        "content_chunk_ids": m.as_ref().map(|m| m.content_chunks.iter().map(|c| c.to_string()).collect::<Vec<_>>()),
        "chunks": chunks.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<serde_json::Map<_, _>>(),
        "expect": expect,
    })
}

fn from_json(j: &Value) -> Vector {
    let s = |k: &str| j[k].as_str().unwrap().to_owned();
    Vector {
        name: "",
        description: "",
        link: s("link"),
        manifest: unhex(&s("manifest")).unwrap(),
        chunks: j["chunks"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, b)| {
                let id: [u8; 32] = unhex(id).unwrap().try_into().unwrap();
                (ChunkId(id), unhex(b.as_str().unwrap()).unwrap())
            })
            .collect(),
    }
}

/// Every vector of `file`, run through the receive path, behaves as
/// recorded; there are at least `min` of them.
fn behave_as_recorded(file: &str, min: usize) {
    let file: Value =
        serde_json::from_str(&fs::read_to_string(file).expect("vectors file")).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert!(vectors.len() >= min);
    for j in vectors {
        let v = from_json(j);
        let dest = tempfile::tempdir().unwrap();
        let got = outcome(&v, dest.path());
        assert_eq!(got, j["expect"], "vector {}", j["name"]);
        if got.get("error").is_some() {
            // Every refusal carries its kind, so a second implementation
            // can match it without copying peerdrop's messages.
            let kind = j["expect"]["kind"].as_str().unwrap_or_default();
            assert!(
                kind.contains("Error::"),
                "vector {}: kind {kind:?}",
                j["name"]
            );
            // A failed share leaves nothing at a final path.
            assert_eq!(
                final_names_in(dest.path()),
                Vec::<String>::new(),
                "vector {}",
                j["name"]
            );
        }
    }
}

/// The generator still produces `file` byte for byte.
fn is_frozen(file: &str, about: &str, vectors: Vec<Vector>) {
    let vectors: Vec<Value> = vectors
        .iter()
        .map(|v| {
            let dest = tempfile::tempdir().unwrap();
            to_json(v, outcome(v, dest.path()))
        })
        .collect();
    is_frozen_json(file, about, vectors);
}

/// `file` holds exactly `about` and `vectors` (re-blessed under
/// `PEERDROP_BLESS`).
fn is_frozen_json(file: &str, about: &str, vectors: Vec<Value>) {
    let text = serde_json::to_string_pretty(&json!({
        "about": about,
        "vectors": vectors,
    }))
    .unwrap()
        + "\n";
    if std::env::var_os("PEERDROP_BLESS").is_some() {
        fs::create_dir_all("tests/vectors").unwrap();
        fs::write(file, &text).unwrap();
    }
    let stored = fs::read_to_string(file).expect("vectors file (generate with PEERDROP_BLESS=1)");
    assert!(stored == text, "the format changed: {file} no longer matches what this code produces; if intended, bump the format version and re-bless");
}

#[test]
fn vectors_behave_as_recorded() {
    behave_as_recorded(FILE, 20);
}

#[test]
fn the_format_is_frozen() {
    is_frozen(FILE, ABOUT, generate());
}

#[test]
fn expiry_vectors_behave_as_recorded() {
    behave_as_recorded(EXPIRY_FILE, 10);
}

#[test]
fn the_expiry_format_is_frozen() {
    is_frozen(EXPIRY_FILE, EXPIRY_ABOUT, generate_expiry());
}

#[test]
fn locator_vectors_follow_the_spec() {
    let file: Value =
        serde_json::from_str(&fs::read_to_string(LOCATOR_FILE).expect("vectors file")).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 3);
    for j in vectors {
        let s = |k: &str| j[k].as_str().unwrap().to_owned();
        let id: [u8; 32] = unhex(&s("manifest_id")).unwrap().try_into().unwrap();
        let link: Link = s("pin_link").parse().unwrap();
        assert_eq!(*link.manifest_id(), ManifestId(id), "vector {}", j["name"]);
        assert!(
            link.key().is_none(),
            "a pin link is enough to find providers"
        );
        let locator = hex(&ManifestId(id).locator());
        assert_eq!(locator, s("locator"), "vector {}", j["name"]);
        // The doc's definition, computed here, agrees with the code's.
        assert_eq!(
            hex(&blake3::derive_key(LOCATOR_CONTEXT, &id)),
            locator,
            "vector {}",
            j["name"]
        );
        assert_ne!(locator, s("manifest_id"), "the locator hides the id");
    }
}

#[test]
fn the_locator_is_frozen() {
    is_frozen_json(LOCATOR_FILE, LOCATOR_ABOUT, generate_locator());
}
