// Runs every format vector (tests/vectors/format-v1.json, and the
// version-2 manifests of tests/vectors/expiry-v2.json) through the page's
// receive path, as tests/vectors.rs does for the Rust one: the page must
// accept exactly the shares peerdrop accepts, with the same errors. The
// DHT locators of tests/vectors/locator-v1.json are checked against
// FORMAT.md 2.2 with this BLAKE3 (the page itself never uses the DHT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { blake3 } from '@noble/hashes/blake3.js';
import { base32Decode, hex, CONTENT, decodeManifest } from '../src/format.js';
import { verifyManifest, checkKey, openChunk, readMetadata } from '../src/open.js';

const load = (name) => JSON.parse(readFileSync(new URL(`../../tests/vectors/${name}`, import.meta.url), 'utf8')).vectors;
const unhex = (s) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));

async function receive(v) {
  const [body, keyPart] = v.link.split('#');
  // A web link carries no expiry (docs/WEB.md): the page goes by the
  // manifest's alone, so the link's `?expires=` is dropped here.
  const id = base32Decode(body.split('?')[0].split('/')[1]);
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

for (const file of ['format-v1.json', 'expiry-v2.json']) {
  for (const v of load(file)) {
    // Refusals of the link's stated expiry: a web link states none.
    const kind = v.expect.kind ?? '';
    if (kind.startsWith('ExpiryError::Mismatch') || kind.startsWith('ParseError::')) continue;
    test(`${file}: ${v.name}`, async () => {
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
}

test('a version-2 manifest decodes its expiry and is refused once it has passed', () => {
  const v = load('expiry-v2.json').find((x) => x.name === 'expiry-not-stated');
  const bytes = unhex(v.manifest);
  assert.equal(decodeManifest(bytes).expires, 253402300799);
  assert.equal(decodeManifest(unhex(load('format-v1.json')[0].manifest)).expires, null);
  assert.throws(() => decodeManifest(bytes, 253402300799 * 1000), /this share expired at 9999-12-31T23:59:59Z/);
  assert.equal(decodeManifest(bytes, 253402300798 * 1000).expires, 253402300799);
});

test('locator-v1.json: each locator is derive_key of FORMAT.md 2.2 over the manifest id', () => {
  const context = new TextEncoder().encode('peerdrop 2026-11-29 v1 dht locator');
  const vectors = load('locator-v1.json');
  assert.ok(vectors.length >= 3);
  for (const v of vectors) {
    assert.equal(hex(blake3(unhex(v.manifest_id), { context })), v.locator, v.name);
    // The pin link names the id (base32 after the version).
    assert.equal(hex(base32Decode(v.pin_link.split('/')[1])), v.manifest_id, v.name);
  }
});

test('format-v1.json: a file list spanning three metadata chunks is read across them', async () => {
  const v = load('format-v1.json').find((x) => x.name === 'file-list-three-chunks');
  assert.equal(v.metadata_chunk_ids.length, 3);
  const files = await receive(v);
  assert.equal(files.length, 31);
  assert.deepEqual(files, v.expect.ok);
});
