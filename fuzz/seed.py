#!/usr/bin/env python3
"""Seeds an empty fuzz corpus from tests/vectors/format-v1.json (and
expiry-v2.json for manifests).

Usage: seed.py TARGET DIR. Links, manifests and chunks come from the
vectors; file lists and frames are built here by the layouts of
docs/FORMAT.md and docs/PROTOCOL.md (the vectors hold file lists only
encrypted).
"""
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "tests", "vectors", "format-v1.json")
EXPIRY_VECTORS = os.path.join(HERE, "..", "tests", "vectors", "expiry-v2.json")


def file_list(entries):
    out = b"PDMD" + bytes([1, 0, 0, 0]) + struct.pack("<I", len(entries))
    for kind, exe, path, secs, nanos, size in entries:
        p = path.encode()
        out += bytes([kind, exe]) + struct.pack("<H", len(p)) + p
        out += struct.pack("<qIQ", secs, nanos, size)
    return out


def frame(body):
    return struct.pack(">I", len(body)) + body


def seeds(target, vectors):
    if target == "link":
        for v in vectors:
            yield v["link"].encode()
            yield v["link"].split("#")[0].encode()
    elif target == "manifest":
        # Version 1 and, with an expiry, version 2 (FORMAT.md 4.2).
        with open(EXPIRY_VECTORS) as f:
            expiry = json.load(f)["vectors"]
        for v in vectors + expiry:
            yield bytes.fromhex(v["manifest"])
    elif target == "meta":
        n = 123456789
        yield file_list([
            (1, 0, "docs", 1700000000, n, 0),
            (0, 1, "docs/a.txt", 1700000001, n, 10),
            (1, 0, "docs/empty", 1700000002, n, 0),
            (0, 0, "z.bin", -86400, n, 2500),
        ])
        yield file_list([(0, 0, "empty.txt", 0, 0, 0)])
        yield file_list([(1, 0, "nothing", 0, 0, 0)])
        yield file_list([])
    elif target == "wire":
        share, chunk = bytes([1] * 32), bytes([2] * 32)
        requests = [
            bytes([0]) + share,
            bytes([1]) + share,
            bytes([2]) + share + chunk,
            bytes([3]) + share,
        ]
        # Requests as a server reads them (leading 0), one stream of all.
        yield bytes([0]) + b"".join(frame(r) for r in requests)
        for r in requests:
            yield bytes([0]) + frame(r)
        answers = [
            bytes([0, 251]) + struct.pack("<H", 184),  # Manifest { len }
            bytes([1, 251]) + struct.pack("<H", 1052),  # Chunk { len }
            bytes([2, 0]),  # Have(All)
            bytes([2, 1, 3, 0b101, 0xFF, 0x01]),  # Have(Bitmap)
            bytes([3]), bytes([4]), bytes([5]),  # NotFound, Stale, Ack
            bytes([6, 251]) + struct.pack("<H", 10000),  # Busy { retry_ms }
        ]
        yield bytes([1]) + b"".join(frame(a) for a in answers)
        for a in answers:
            yield bytes([1]) + frame(a)
    elif target == "open_chunk":
        # Selector: bit 0 metadata, bit 1 not the last chunk, bit 2 a wrong
        # id, bits 3.. the index (see fuzz_targets/open_chunk.rs).
        v = next(v for v in vectors if v["name"] == "tree")
        chunks = v["chunks"]
        meta = v["metadata_chunk_ids"][0]
        yield bytes([1]) + bytes.fromhex(chunks[meta])
        content = v["content_chunk_ids"]
        for i, cid in enumerate(content):
            last = i == len(content) - 1
            sel = (i << 3) | (0 if last else 2)
            yield bytes([sel]) + bytes.fromhex(chunks[cid])
    else:
        raise SystemExit(f"unknown target {target}")


def main():
    target, out = sys.argv[1], sys.argv[2]
    with open(VECTORS) as f:
        vectors = json.load(f)["vectors"]
    os.makedirs(out, exist_ok=True)
    n = 0
    for s in seeds(target, vectors):
        name = hashlib.sha1(s).hexdigest()
        with open(os.path.join(out, name), "wb") as f:
            f.write(s)
        n += 1
    print(f"{target}: seeded {n} inputs from tests/vectors")


if __name__ == "__main__":
    main()
