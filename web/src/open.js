// Verify-then-decrypt, as src/open.rs does: the manifest against the link's
// id, the key against the manifest's commitment, every chunk against its
// BLAKE3 id and its length, then ChaCha20-Poly1305 with the chunk's
// position as associated data. The primitives come from the audited @noble
// packages; nothing here is a primitive of its own.

import { blake3 } from '@noble/hashes/blake3.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import {
  ShareError, MAX_MANIFEST_LEN, CHUNK_OVERHEAD, METADATA, CONTENT,
  decodeManifest, decodeMetadata, plaintextLen, associatedData, chunkError,
} from './format.js';

const enc = new TextEncoder();
const CTX_AEAD = enc.encode('peerdrop 2026-11-29 v1 chunk aead key');
const CTX_COMMITMENT = enc.encode('peerdrop 2026-11-29 v1 key commitment');

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

// FORMAT.md 4.1: size before hashing, then the id, then the fields.
export function verifyManifest(id, bytes) {
  if (bytes.length > MAX_MANIFEST_LEN) {
    throw new ShareError(`manifest too large: ${bytes.length} bytes, the limit is ${MAX_MANIFEST_LEN}`, 'source');
  }
  if (!equal(blake3(bytes), id)) {
    throw new ShareError('the manifest does not match the id in the link; the peer sent wrong data', 'source');
  }
  return decodeManifest(bytes);
}

// FORMAT.md 2.1: checked before any chunk is fetched. Returns the chunk
// AEAD key; the share key itself is not needed after this.
export function checkKey(manifest, key) {
  const commitment = blake3(key, { context: CTX_COMMITMENT });
  if (!equal(commitment, manifest.commitment)) {
    throw new ShareError('wrong key: the key in the link does not belong to this share; check that the link was copied whole', 'link');
  }
  return blake3(key, { context: CTX_AEAD });
}

// The sealed length chunk `index` of `stream` must have.
export function sealedLen(manifest, stream, index) {
  return plaintextLen(manifest, stream, index) + CHUNK_OVERHEAD;
}

// Verifies and decrypts one chunk; returns its plaintext.
export function openChunk(manifest, aeadKey, stream, index, bytes) {
  const len = plaintextLen(manifest, stream, index);
  if (bytes.length !== len + CHUNK_OVERHEAD) {
    throw chunkError('length', stream, index, { len: bytes.length, expected: len + CHUNK_OVERHEAD });
  }
  if (!equal(blake3(bytes), manifest.ids[stream][index])) throw chunkError('id', stream, index);
  const isLast = index === manifest.ids[stream].length - 1;
  const ad = associatedData(stream, index, isLast, len);
  try {
    return chacha20poly1305(aeadKey, bytes.subarray(0, 12), ad).decrypt(bytes.subarray(12));
  } catch {
    throw chunkError('corrupt', stream, index);
  }
}

// Fetches (with `fetchChunk(stream, index)`), verifies and decodes the file
// list, and checks it against the manifest's content length.
export async function readMetadata(manifest, aeadKey, fetchChunk) {
  const total = manifest.streamLen[METADATA];
  const plain = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < manifest.ids[METADATA].length; i++) {
    const p = openChunk(manifest, aeadKey, METADATA, i, await fetchChunk(METADATA, i));
    plain.set(p, at);
    at += p.length;
  }
  const meta = decodeMetadata(plain);
  const declared = BigInt(manifest.streamLen[CONTENT]);
  if (meta.contentLen !== declared) {
    throw new ShareError(`the file list describes ${meta.contentLen} bytes of content but the manifest declares ${declared}; the share is corrupt`);
  }
  return meta;
}
