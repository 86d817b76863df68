// Runs every format vector (tests/vectors/format-v1.json) through the page's
// receive path, as tests/vectors.rs does for the Rust one: the page must
// accept exactly the shares peerdrop accepts, with the same errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { blake3 } from '@noble/hashes/blake3.js';
import { base32Decode, hex, CONTENT } from '../src/format.js';
import { verifyManifest, checkKey, openChunk, readMetadata } from '../src/open.js';

const file = new URL('../../tests/vectors/format-v1.json', import.meta.url);
const { vectors } = JSON.parse(readFileSync(file, 'utf8'));
const unhex = (s) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));

async function receive(v) {
  const [body, keyPart] = v.link.split('#');
  const id = base32Decode(body.split('/')[1]);
  const key = base32Decode(keyPart);
  const manifest = verifyManifest(id, unhex(v.manifest));
  const aead = checkKey(manifest, key);
  const get = (stream, i) => {
    const c = v.chunks[hex(manifest.ids[stream][i])];
    if (c === undefined) throw new Error(`vector lacks chunk ${stream}/${i}`);
    return unhex(c);
  };
  const meta = await readMetadata(manifest, aead, get);
  const content = [];
  for (let i = 0; i < manifest.ids[CONTENT].length; i++) content.push(openChunk(manifest, aead, CONTENT, i, get(CONTENT, i)));
  const all = Buffer.concat(content);
  return meta.entries.map((e) => {
    if (e.dir) return { kind: 'dir', path: e.path };
    const bytes = all.subarray(Number(e.offset), Number(e.offset + e.size));
    return { blake3: hex(blake3(bytes)), executable: e.executable, kind: 'file', path: e.path, size: Number(e.size) };
  });
}

for (const v of vectors) {
  test(v.name, async () => {
    if (v.expect.ok) {
      assert.deepEqual(await receive(v), v.expect.ok);
    } else {
      await assert.rejects(receive(v), (e) => {
        assert.equal(e.message, v.expect.error);
        return true;
      });
    }
  });
}
