// The page: reads the web link's fragment, fetches the manifest and chunks
// from the node that served it (by id: ciphertext only), verifies and
// decrypts everything here, and offers a Save button once every byte has
// authenticated. Nothing is saved from a share that fails any check.

import { downloadZip } from 'client-zip';
import { ShareError, parseFragment, hex, MAX_MANIFEST_LEN, METADATA, CONTENT } from './format.js';
import { human } from './human.js';
import { verifyManifest, checkKey, openChunk, readMetadata, sealedLen } from './open.js';

const $ = (id) => document.getElementById(id);
const PARALLEL = 4; // requests in flight; browsers allow 6 per host
const TRIES = 6; // per request, on 503 or a network error
const REQUEST_TIMEOUT_MS = 60000;
const SHOWN_ENTRIES = 500;

const stop = new AbortController();

function status(text) {
  $('status').textContent = text;
}

// GET `url`, reading at most `max` bytes; retries a busy or unreachable
// server a few times, with a deadline on each try.
async function get(url, max) {
  let wait = 250;
  for (let attempt = 1; ; attempt++) {
    const timer = new AbortController();
    const t = setTimeout(() => timer.abort(), REQUEST_TIMEOUT_MS);
    const onStop = () => timer.abort();
    stop.signal.addEventListener('abort', onStop);
    try {
      const r = await fetch(url, { signal: timer.signal, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' });
      if (r.status === 503 && attempt < TRIES) {
        await r.body?.cancel();
      } else if (!r.ok) {
        const why = r.status === 404 ? 'the sender no longer shares this (or the link is for another share)' : `the sender answered ${r.status}`;
        throw new ShareError(`${why}; ask for a new link`, 'source');
      } else {
        return await readBounded(r, max);
      }
    } catch (e) {
      if (e instanceof ShareError || stop.signal.aborted || attempt >= TRIES) {
        if (e instanceof ShareError || stop.signal.aborted) throw e;
        throw new ShareError('cannot reach the sender; check that this device is on the same network and the sender is still running', 'source');
      }
    } finally {
      clearTimeout(t);
      stop.signal.removeEventListener('abort', onStop);
    }
    await new Promise((ok) => setTimeout(ok, wait));
    wait *= 2;
  }
}

async function readBounded(r, max) {
  const declared = Number(r.headers.get('content-length') ?? '0');
  if (declared > max) {
    await r.body?.cancel();
    throw new ShareError(`the sender sent ${declared} bytes where at most ${max} were expected`, 'source');
  }
  const reader = r.body.getReader();
  const parts = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > max) {
      await reader.cancel();
      throw new ShareError(`the sender sent more than the ${max} bytes expected`, 'source');
    }
    parts.push(value);
  }
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function showFiles(entries) {
  const list = $('files');
  list.replaceChildren();
  for (const e of entries.slice(0, SHOWN_ENTRIES)) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'name';
    // textContent, never HTML: names come from the share.
    name.textContent = e.dir ? `${e.path}/` : e.path;
    const size = document.createElement('span');
    size.className = 'size';
    size.textContent = e.dir ? '' : human(e.size);
    li.append(name, size);
    list.append(li);
  }
  if (entries.length > SHOWN_ENTRIES) {
    const li = document.createElement('li');
    li.textContent = `… and ${entries.length - SHOWN_ENTRIES} more`;
    list.append(li);
  }
}

// Fetches, verifies and decrypts the content stream; returns it as Blobs in
// stream order (a browser keeps large Blobs on disk, not in page memory).
async function fetchContent(manifest, aead, idHex, onProgress) {
  const count = manifest.ids[CONTENT].length;
  const parts = new Array(count);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < count && !stop.signal.aborted) {
      const i = next++;
      const bytes = await get(`/v1/chunk/${idHex}/${hex(manifest.ids[CONTENT][i])}`, sealedLen(manifest, CONTENT, i));
      const plain = openChunk(manifest, aead, CONTENT, i, bytes);
      parts[i] = new Blob([plain]);
      done += plain.length;
      onProgress(done);
    }
  };
  const workers = Array.from({ length: Math.min(PARALLEL, count) }, worker);
  try {
    await Promise.all(workers);
  } catch (e) {
    stop.abort();
    throw e;
  }
  return new Blob(parts);
}

// Zip timestamps are DOS times: 1980 to 2107.
function zipDate(ms) {
  const lo = Date.UTC(1980, 0, 1, 12);
  const hi = Date.UTC(2107, 11, 31);
  return new Date(Number.isFinite(ms) ? Math.min(Math.max(ms, lo), hi) : lo);
}

async function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.rel = 'noopener';
  document.body.append(a);
  a.click();
  a.remove();
  // The download holds its own reference; the URL may go after it starts.
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function save(meta, content) {
  const entries = meta.entries;
  if (entries.length === 1 && !entries[0].dir) {
    await saveBlob(content.slice(0, Number(entries[0].size), 'application/octet-stream'), entries[0].path);
    return entries[0].path;
  }
  const top = new Set(entries.map((e) => e.path.split('/')[0]));
  const name = `${top.size === 1 ? [...top][0] : 'peerdrop'}.zip`;
  const files = entries.map((e) =>
    e.dir
      ? { name: `${e.path}/`, lastModified: zipDate(e.mtimeMs) }
      : {
          name: e.path,
          lastModified: zipDate(e.mtimeMs),
          input: content.slice(Number(e.offset), Number(e.offset + e.size)),
          mode: e.executable ? 0o755 : 0o644,
        },
  );
  status('Building the zip…');
  const zip = await downloadZip(files).blob();
  await saveBlob(new Blob([zip], { type: 'application/zip' }), name);
  return name;
}

function fail(e) {
  stop.abort();
  const msg = e instanceof ShareError ? e.message : `unexpected error: ${e?.message ?? e}`;
  $('error').textContent = `${msg}. Nothing was saved.`;
  $('error').hidden = false;
  $('save').hidden = true;
  $('bar').hidden = true;
  status('Receiving failed.');
  document.body.dataset.state = 'error';
}

async function run() {
  const { id, key } = parseFragment(location.hash);
  const idHex = hex(id);
  status('Fetching the file list…');
  const manifest = verifyManifest(id, await get(`/v1/manifest/${idHex}`, MAX_MANIFEST_LEN));
  const aead = checkKey(manifest, key);
  key.fill(0);
  const meta = await readMetadata(manifest, aead, (stream, i) =>
    get(`/v1/chunk/${idHex}/${hex(manifest.ids[stream][i])}`, sealedLen(manifest, METADATA, i)),
  );
  showFiles(meta.entries);
  const total = manifest.streamLen[CONTENT];
  const files = meta.entries.filter((e) => !e.dir).length;
  status(`Receiving ${files} file${files === 1 ? '' : 's'}, ${human(total)}…`);
  const started = performance.now();
  const bar = $('bar');
  const content = await fetchContent(manifest, aead, idHex, (n) => {
    bar.value = total ? n / total : 1;
    const s = (performance.now() - started) / 1000;
    $('detail').textContent = `${human(n)} of ${human(total)} · ${human(s > 0 ? n / s : 0)}/s`;
  });
  const ms = performance.now() - started;
  bar.value = 1;
  document.body.dataset.ms = ms.toFixed(0);
  document.body.dataset.bytes = String(total);
  $('detail').textContent = `${human(total)} verified in ${(ms / 1000).toFixed(1)} s (${human(total / Math.max(ms / 1000, 0.001))}/s)`;
  status(`Received and verified ${files} file${files === 1 ? '' : 's'}.`);
  const button = $('save');
  button.textContent = meta.entries.length === 1 && !meta.entries[0].dir ? `Save ${meta.entries[0].path}` : 'Save as zip';
  button.hidden = false;
  document.body.dataset.state = 'ready';
  button.addEventListener('click', async () => {
    try {
      button.disabled = true;
      const name = await save(meta, content);
      status(`Saved ${name}.`);
      document.body.dataset.state = 'saved';
    } catch (e) {
      fail(e);
    } finally {
      button.disabled = false;
    }
  });
}

run().catch(fail);
