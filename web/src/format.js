// The sealed-share format (docs/FORMAT.md), for the page: the web fragment,
// the manifest, chunk positions and the file list with its hostile-path
// rules. Pure functions over bytes; every check runs in the order the Rust
// code runs it, and errors carry the same messages, so the page refuses
// exactly what `peerdrop receive` refuses (web/test/ runs the format vectors).

export class ShareError extends Error {
  // `blame` is 'source' when the server sent wrong bytes, 'link' when the
  // link is wrong, 'share' when the share itself is bad.
  constructor(message, blame = 'share') {
    super(message);
    this.name = 'ShareError';
    this.blame = blame;
  }
}

// ---- base32 (FORMAT.md 7.2): lowercase RFC 4648, no padding, canonical ----

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';

export function base32Decode(s) {
  if ([1, 3, 6].includes(s.length % 8)) return null;
  const out = new Uint8Array(Math.floor((s.length * 5) / 8));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const ch of s) {
    const v = B32.indexOf(ch);
    if (v < 0 || ch.length !== 1) return null;
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >>> bits) & 0xff;
    }
    acc &= (1 << bits) - 1;
  }
  // The unused low bits of the last character must be zero.
  if (acc !== 0) return null;
  return out;
}

export function hex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

// ---- the web fragment (docs/WEB.md): #1/<manifest id>/<key> ----

export function parseFragment(fragment) {
  const f = fragment.startsWith('#') ? fragment.slice(1) : fragment;
  if (f === '') {
    throw new ShareError('this page needs a peerdrop web link: the part after “#” is missing', 'link');
  }
  if (f.length > 200) throw new ShareError('the link is too long to be a peerdrop web link', 'link');
  const parts = f.split('/');
  if (parts[0] !== '1') {
    throw new ShareError(`web link version “${parts[0].slice(0, 8)}” is not supported by this page`, 'link');
  }
  if (parts.length !== 3) throw new ShareError('the link is malformed; was it cut or retyped?', 'link');
  const id = base32Decode(parts[1]);
  if (!id || id.length !== 32) {
    throw new ShareError('the manifest part of the link is not valid base32; was the link cut or retyped?', 'link');
  }
  const key = base32Decode(parts[2]);
  if (!key || key.length !== 32) {
    throw new ShareError('the key part of the link is not valid base32; was the link cut or retyped?', 'link');
  }
  if (key.every((b) => b === 0)) {
    throw new ShareError('the key is all zeros, which peerdrop never generates; the link is damaged or forged', 'link');
  }
  return { id, key };
}

// ---- manifest (FORMAT.md 4) ----

export const HEADER_LEN = 56;
// Version 2 adds the expiry after the version-1 header (FORMAT.md 4.2).
export const HEADER_LEN_EXPIRY = HEADER_LEN + 8;
export const MAX_CHUNKS_PER_STREAM = 1 << 18;
export const MAX_MANIFEST_LEN = HEADER_LEN_EXPIRY + 2 * MAX_CHUNKS_PER_STREAM * 32;
// 9999-12-31T23:59:59Z, the latest expiry a manifest may carry.
export const MAX_EXPIRY = 253402300799;
export const MAX_METADATA_LEN = 64 * 1024 * 1024;
export const CHUNK_OVERHEAD = 28;
export const METADATA = 0;
export const CONTENT = 1;
const STREAM_NAME = ['metadata', 'content'];

function chunkCount(len, size) {
  // BigInt: a hostile manifest may claim up to 2^64 bytes.
  const n = (len + size - 1n) / size;
  return n === 0n ? 1n : n;
}

// An expiry as the CLI shows it: RFC 3339 in UTC, to the second.
export function showExpiry(secs) {
  return new Date(secs * 1000).toISOString().replace('.000Z', 'Z');
}

// Checks and parses manifest bytes already known to hash to the link's id
// (the caller checks the id first, FORMAT.md 4.1 step 2). A share whose
// expiry has passed at `nowMs` is refused, as the CLI refuses it (7.6).
export function decodeManifest(bytes, nowMs = Date.now()) {
  const len = bytes.length;
  if (len > MAX_MANIFEST_LEN) throw new ShareError(`manifest too large: ${len} bytes, the limit is ${MAX_MANIFEST_LEN}`, 'source');
  const short = (min) => new ShareError(`manifest truncated: ${len} bytes, a manifest has at least ${min}`, 'source');
  if (len < 5) throw short(HEADER_LEN);
  if (!(bytes[0] === 0x50 && bytes[1] === 0x44 && bytes[2] === 0x4d && bytes[3] === 0x46)) {
    throw new ShareError('not a peerdrop manifest (bad magic bytes)');
  }
  if (bytes[4] !== 1 && bytes[4] !== 2) {
    throw new ShareError(`manifest version ${bytes[4]} is not supported by this peerdrop (supports 1 and 2); upgrade peerdrop`);
  }
  const headerLen = bytes[4] === 2 ? HEADER_LEN_EXPIRY : HEADER_LEN;
  if (len < headerLen) throw short(headerLen);
  const log2 = bytes[5];
  if (log2 < 10 || log2 > 26) throw new ShareError(`manifest declares an invalid chunk size 2^${log2}`);
  if (bytes[6] !== 0 || bytes[7] !== 0) throw new ShareError('manifest has non-zero reserved bytes');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let expires = null;
  if (headerLen === HEADER_LEN_EXPIRY) {
    const e = view.getBigUint64(56, true);
    if (e === 0n || e > BigInt(MAX_EXPIRY)) throw new ShareError(`manifest declares an invalid expiry ${e} (seconds since 1970)`);
    expires = Number(e);
  }
  const metadataLen = view.getBigUint64(40, true);
  const contentLen = view.getBigUint64(48, true);
  if (metadataLen > BigInt(MAX_METADATA_LEN)) {
    throw new ShareError(`manifest declares ${metadataLen} bytes of metadata, the limit is ${MAX_METADATA_LEN}`);
  }
  const size = 1n << BigInt(log2);
  const m = chunkCount(metadataLen, size);
  const c = chunkCount(contentLen, size);
  for (const [count, stream] of [[m, 'metadata'], [c, 'content']]) {
    if (count > BigInt(MAX_CHUNKS_PER_STREAM)) {
      throw new ShareError(`manifest declares ${count} ${stream} chunks, the limit is ${MAX_CHUNKS_PER_STREAM}`);
    }
  }
  const expected = headerLen + 32 * (Number(m) + Number(c));
  if (len !== expected) throw new ShareError(`manifest is ${len} bytes but its declared sizes need ${expected}`);
  const ids = [[], []];
  const seen = new Set();
  for (let i = 0; i < Number(m) + Number(c); i++) {
    const id = bytes.subarray(headerLen + 32 * i, headerLen + 32 * (i + 1));
    const stream = i < Number(m) ? METADATA : CONTENT;
    const index = stream === METADATA ? i : i - Number(m);
    const h = hex(id);
    if (seen.has(h)) throw new ShareError(`manifest lists ${STREAM_NAME[stream]} chunk ${index} twice`);
    seen.add(h);
    ids[stream].push(id);
  }
  if (expires !== null && nowMs >= expires * 1000) {
    throw new ShareError(`this share expired at ${showExpiry(expires)}; its sharer set it to stop then (ask them for a new link)`);
  }
  return {
    chunkSize: Number(size),
    commitment: bytes.subarray(8, 40),
    // Below 2^44 after the count checks: safe as Numbers.
    streamLen: [Number(metadataLen), Number(contentLen)],
    ids,
    expires,
  };
}

// The plaintext length of chunk `index` of `stream` (FORMAT.md 3.4).
export function plaintextLen(manifest, stream, index) {
  const len = manifest.streamLen[stream];
  const start = index * manifest.chunkSize;
  return Math.max(0, Math.min(manifest.chunkSize, len - start));
}

// The 19 bytes of associated data (FORMAT.md 3.1).
export function associatedData(stream, index, isLast, len) {
  const ad = new Uint8Array(19);
  const v = new DataView(ad.buffer);
  ad[0] = 1;
  ad[1] = stream;
  ad[2] = isLast ? 1 : 0;
  v.setBigUint64(3, BigInt(index), true);
  v.setBigUint64(11, BigInt(len), true);
  return ad;
}

export function chunkError(kind, stream, index, extra = {}) {
  const name = STREAM_NAME[stream];
  switch (kind) {
    case 'length':
      return new ShareError(`${name} chunk ${index} is ${extra.len} bytes, the manifest says ${extra.expected}; the source sent wrong data`, 'source');
    case 'id':
      return new ShareError(`the data received for ${name} chunk ${index} does not match its id; the source sent corrupt or wrong data`, 'source');
    default:
      return new ShareError(`${name} chunk ${index} failed authentication: the share is corrupt or was forged`);
  }
}

// ---- the file list (FORMAT.md 6) ----

export const MAX_ENTRIES = 1000000;
const MAX_PATH_LEN = 4096;
const MAX_DEPTH = 128;
const MAX_COMPONENT_LEN = 255;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8enc = new TextEncoder();

// Rust's `{:?}` of a string, close enough that a hostile name shows escaped.
export function quote(s) {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0);
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\0') out += '\\0';
    else if (/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(ch)) out += `\\u{${cp.toString(16)}}`;
    else out += ch;
  }
  return out + '"';
}

const PATH_ERRORS = {
  Empty: 'the path is empty',
  TooLong: `the path is longer than ${MAX_PATH_LEN} bytes`,
  TooDeep: `the path is deeper than ${MAX_DEPTH} folders`,
  Absolute: 'the path is absolute',
  EmptyComponent: 'the path has an empty component',
  DotComponent: "the path has a '.' or '..' component",
  ComponentTooLong: `a path component is longer than ${MAX_COMPONENT_LEN} bytes`,
  Backslash: 'the path contains a backslash',
  Colon: "the path contains ':' (a drive letter or a Windows stream name)",
  Control: 'the path contains a control character',
  Bidi: 'the path contains a bidirectional-text control character',
  Forbidden: 'the path contains a character Windows forbids (one of <>"|?*)',
  TrailingDotOrSpace: 'a path component ends with a dot or a space',
  Reserved: 'a path component is a name Windows reserves (CON, NUL, COM1, CONIN$, ...)',
  Invisible: 'the path contains an invisible (zero-width or format) character',
  PeerdropReserved: "a path component starts with '.peerdrop-', which peerdrop reserves for its own staging folders",
};

// Zero-width and other invisible format characters (look-alike names).
const INVISIBLE = new Set([0x00ad, 0x034f, 0x180e, 0x200b, 0x200c, 0x200d, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xfeff]);
const RESERVED_PREFIX = '.peerdrop-';

const BIDI = new Set([0x061c, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x2028, 0x2029]);

// FORMAT.md 6.3: the reason `path` is refused, or null. `byteLen` is its
// UTF-8 length.
export function pathProblem(path, byteLen) {
  if (path === '') return 'Empty';
  if (byteLen > MAX_PATH_LEN) return 'TooLong';
  if (path.startsWith('/')) return 'Absolute';
  let depth = 0;
  for (const c of path.split('/')) {
    depth += 1;
    if (depth > MAX_DEPTH) return 'TooDeep';
    const p = componentProblem(c);
    if (p) return p;
  }
  return null;
}

function componentProblem(c) {
  if (c === '') return 'EmptyComponent';
  if (c === '.' || c === '..') return 'DotComponent';
  if (utf8enc.encode(c).length > MAX_COMPONENT_LEN) return 'ComponentTooLong';
  for (const ch of c) {
    const cp = ch.codePointAt(0);
    if (ch === '\\') return 'Backslash';
    if (ch === ':') return 'Colon';
    if ('<>"|?*'.includes(ch)) return 'Forbidden';
    if (BIDI.has(cp)) return 'Bidi';
    if (INVISIBLE.has(cp)) return 'Invisible';
    // Rust's char::is_control is general category Cc.
    if (cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f)) return 'Control';
  }
  if (c.endsWith('.') || c.endsWith(' ')) return 'TrailingDotOrSpace';
  const upper = (x) => x.replace(/[a-z]/g, (l) => l.toUpperCase());
  if (upper(c).startsWith(upper(RESERVED_PREFIX))) return 'PeerdropReserved';
  // Windows ignores trailing spaces of the stem too: `CON .txt` is `CON`.
  const stem = upper(c.split('.')[0].replace(/ +$/, ''));
  const chars = [...stem];
  const reserved =
    ['CON', 'PRN', 'AUX', 'NUL', 'CONIN$', 'CONOUT$', 'CLOCK$'].includes(stem) ||
    ((stem.startsWith('COM') || stem.startsWith('LPT')) && chars.length === 4 && /^[0-9¹²³]$/u.test(chars[3]));
  return reserved ? 'Reserved' : null;
}

// FORMAT.md 6.4: NFKC, lower case, three more folds, NFKC again.
export function foldKey(path) {
  const lower = path.normalize('NFKC').toLowerCase();
  let out = '';
  for (const ch of lower) {
    if (ch === 'ς') out += 'σ';
    else if (ch === 'ı') out += 'i';
    else if (ch === 'ß') out += 'ss';
    else out += ch;
  }
  return out.normalize('NFKC');
}

// Byte order of UTF-8 strings (Rust's str ordering): compare code points,
// not UTF-16 units, which order astral characters differently.
function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

// Decodes and validates the file list (FORMAT.md 6.1, 6.2). Entries:
// { path, dir, executable, mtimeMs, size, offset }.
export function decodeMetadata(bytes) {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const truncated = () => new ShareError('the file list is truncated');
  const need = (n) => {
    if (bytes.length - at < n) throw truncated();
  };
  need(4);
  if (!(bytes[0] === 0x50 && bytes[1] === 0x44 && bytes[2] === 0x4d && bytes[3] === 0x44)) {
    throw new ShareError('the file list does not start with the peerdrop metadata magic');
  }
  at = 4;
  need(1);
  if (bytes[4] !== 1) throw new ShareError(`file list version ${bytes[4]} is not supported by this peerdrop; upgrade peerdrop`);
  at = 5;
  need(3);
  if (bytes[5] || bytes[6] || bytes[7]) throw new ShareError('the file list has non-zero reserved bytes');
  at = 8;
  need(4);
  const count = v.getUint32(8, true);
  at = 12;
  if (count > MAX_ENTRIES) throw new ShareError(`the share lists ${count} files and folders, the limit is ${MAX_ENTRIES}`);
  if (count > Math.floor((bytes.length - at) / 24)) throw truncated();
  const raw = [];
  for (let index = 0; index < count; index++) {
    need(1);
    const kind = bytes[at];
    if (kind > 1) throw new ShareError(`entry ${index} has unknown kind ${kind}`);
    need(4);
    const flags = bytes[at + 1];
    const plen = v.getUint16(at + 2, true);
    at += 4;
    need(plen);
    const pbytes = bytes.subarray(at, at + plen);
    let path;
    try {
      path = utf8.decode(pbytes);
    } catch {
      throw new ShareError(`entry ${index} has a name that is not valid UTF-8`);
    }
    const problem = pathProblem(path, plen);
    if (problem) throw new ShareError(`refusing the share: entry ${quote(path)} is unsafe: ${PATH_ERRORS[problem]}`);
    at += plen;
    need(20);
    const secs = v.getBigInt64(at, true);
    const nanos = v.getUint32(at + 8, true);
    const size = v.getBigUint64(at + 12, true);
    at += 20;
    if (flags > 1) throw new ShareError(`entry ${quote(path)} has invalid flags`);
    raw.push({ path, pbytes, dir: kind === 1, executable: flags === 1, secs, nanos, size });
  }
  if (at !== bytes.length) throw new ShareError('the file list has trailing bytes after its last entry');
  const kinds = new Map();
  const folded = new Map();
  let total = 0n;
  const entries = [];
  for (let i = 0; i < raw.length; i++) {
    const e = raw[i];
    const q = quote(e.path);
    if (i > 0 && compareBytes(raw[i - 1].pbytes, e.pbytes) >= 0) throw new ShareError(`entry ${q} is out of order or listed twice`);
    if (e.nanos >= 1e9) throw new ShareError(`entry ${q} has invalid modification time`);
    if (e.dir && (e.size !== 0n || e.executable)) throw new ShareError(`entry ${q} has invalid folder attributes`);
    const slash = e.path.lastIndexOf('/');
    if (slash >= 0 && kinds.get(e.path.slice(0, slash)) !== 'dir') {
      throw new ShareError(`entry ${q} is inside a folder the share does not list`);
    }
    const key = foldKey(e.path);
    if (folded.has(key)) {
      throw new ShareError(`entries ${quote(folded.get(key))} and ${q} collide (they differ only in case or Unicode form)`);
    }
    folded.set(key, e.path);
    kinds.set(e.path, e.dir ? 'dir' : 'file');
    const offset = total;
    total += e.size;
    if (total >= 1n << 64n) throw new ShareError('the file sizes overflow');
    entries.push({
      path: e.path,
      dir: e.dir,
      executable: e.executable,
      mtimeMs: Number(e.secs) * 1000 + Math.floor(e.nanos / 1e6),
      size: e.size,
      offset,
    });
  }
  return { entries, contentLen: total };
}
