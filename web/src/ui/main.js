// The daemon's local web UI: every action is one of the daemon's control
// requests (docs/CONTROL.md), sent as JSON to /api/control on loopback with
// the UI token; shares, jobs and peers are polled from `list` and `status`,
// one request pair at a time, once a second at most.

import { human } from '../human.js';

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get('token') ?? '';
const POLL_MS = 1000;
const REQUEST_TIMEOUT_MS = 30000;
// Uploads are sent one at a time; the daemon bounds their size.
const UPLOAD_TIMEOUT_MS = 60 * 60 * 1000;
const SHARE_TIMEOUT_MS = 30 * 60 * 1000;

let status = null;
// An error from an action stays until the next action; one from polling
// goes once the daemon answers again.
let errorFrom = null;

function showError(text, from) {
  errorFrom = from;
  $('error').textContent = text;
  $('error').hidden = false;
}

function clearError(from) {
  if (errorFrom === from || from === 'action') {
    errorFrom = null;
    $('error').hidden = true;
  }
}

async function post(path, body, type, timeoutMs = REQUEST_TIMEOUT_MS) {
  const r = await fetch(path, {
    method: 'POST',
    headers: { 'X-Peerdrop-Token': token, 'Content-Type': type },
    body,
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(text || `the daemon answered ${r.status}`);
  return text;
}

// One control request; its final line, or an Error with the daemon's text.
async function control(request, timeoutMs = REQUEST_TIMEOUT_MS) {
  const reply = JSON.parse(await post('/api/control', JSON.stringify({ version: 1, ...request }), 'application/json', timeoutMs));
  if (!reply.ok) throw new Error(reply.error);
  return reply;
}

// Runs an action of the user's, showing its failure.
async function act(what, f) {
  try {
    clearError('action');
    await f();
  } catch (e) {
    showError(`${what}: ${e.message}`, 'action');
  }
  pollSoon();
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function button(label, action, data, danger = false) {
  return el('button', { type: 'button', className: danger ? 'danger' : '', textContent: label, dataset: { action, ...data } });
}

function short(id) {
  return id.slice(0, 16);
}

function renderNode(s) {
  const rows = [
    ['peer id', s.peer_id],
    ['reachable', { public: 'yes, from outside', private: 'no: through relays', unknown: 'not known yet' }[s.reachability] ?? s.reachability],
    ['listening', s.listen[0] ?? 'nowhere'],
    ['browsers', s.web ? `http://${s.web}/` : 'not served (web = false)'],
    ['LAN peers', String(s.lan_peers)],
    ['uploaded', human(s.uploaded_bytes)],
    ['queued', String(s.queued)],
  ];
  $('node').replaceChildren(...rows.map(([k, v]) => el('div', {}, el('dt', { textContent: k }), el('dd', { textContent: v }))));
  $('peers-count').textContent = `(${s.connected.length})`;
  const peers = s.connected.map((p) => el('li', { textContent: `${p.peer} ${p.addr} (${p.relayed ? 'relayed' : 'direct'})` }));
  $('peers').replaceChildren(...(peers.length ? peers : [el('li', { className: 'empty', textContent: 'no peer connected' })]));
}

function renderShares(list) {
  $('shares-count').textContent = `(${list.shares.length})`;
  const rows = list.shares.map((s) =>
    el(
      'tr',
      { dataset: { id: s.id } },
      el('td', { className: 'name', textContent: s.names.join(', ') || short(s.id), title: s.id }),
      el('td', { className: 'num', textContent: String(s.files) }),
      el('td', { className: 'num', textContent: human(s.bytes) }),
      el('td', { className: `state-${s.state}`, textContent: s.origin === 'pinned' ? `${s.state} (pin)` : s.state }),
      el(
        'td',
        { className: 'actions' },
        ...(s.origin === 'pinned' ? [] : [button('Copy link', 'link', { id: s.id }), button('QR', 'qr', { id: s.id })]),
        button('Unshare', 'unshare', { id: s.id }, true),
      ),
    ),
  );
  $('shares').tBodies[0].replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { className: 'empty', colSpan: 5, textContent: 'nothing shared yet' }))]));
}

function jobRow(kind, j) {
  const st = j.status.state;
  const bar = el('progress', { max: Math.max(1, j.total), value: j.bytes });
  const live = st === 'queued' || st === 'running';
  return el(
    'tr',
    { dataset: { id: j.id, kind, state: st } },
    el('td', { textContent: kind }),
    el('td', { className: 'num', textContent: short(j.id), title: j.id }),
    el('td', { className: 'name', textContent: j.out ?? '(pin: ciphertext only)' }),
    el('td', { className: 'num' }, bar, ` ${human(j.bytes)} / ${j.total ? human(j.total) : '?'}`),
    el('td', { className: `state-${st}`, textContent: st, title: j.status.error ?? '' }),
    el(
      'td',
      { className: 'actions' },
      ...(live ? [button('Cancel', 'cancel', { id: j.id, kind }, true)] : []),
      ...(st === 'failed' || st === 'cancelled' ? [button('Retry', 'retry', { id: j.id, kind })] : []),
    ),
  );
}

function renderJobs(list) {
  const rows = [...list.fetches.map((f) => jobRow('fetch', f)), ...list.pins.map((p) => jobRow('pin', p))];
  $('jobs-count').textContent = `(${rows.length})`;
  $('jobs').tBodies[0].replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { className: 'empty', colSpan: 6, textContent: 'no fetch or pin' }))]));
}

// The web link of read link `link`, when the daemon serves browsers: the
// manifest id and key, as they are in the link, after the `#`.
function webLink(link) {
  const m = /^peerdrop:1\/([a-z2-7]{52})(?:\/[a-z2-7]*)?#([a-z2-7]{52})$/.exec(link);
  return status?.web && m ? `http://${status.web}/#1/${m[1]}/${m[2]}` : null;
}

async function showLink(link, qr) {
  const shown = webLink(link) ?? link;
  $('link-box').hidden = false;
  $('link-text').value = shown;
  $('link-text').select();
  const img = $('link-qr');
  if (qr) {
    const svg = await post('/api/qr', shown, 'text/plain; charset=utf-8');
    img.src = `data:image/svg+xml;base64,${btoa(svg)}`;
    img.hidden = false;
  } else {
    img.hidden = true;
    // Best effort, not waited for: the link is shown and selected anyway.
    navigator.clipboard?.writeText(shown)?.catch(() => {});
  }
}

let pollTimer = null;
let polling = false;

async function poll() {
  clearTimeout(pollTimer);
  if (polling) return;
  polling = true;
  try {
    const [list, st] = await Promise.all([control({ cmd: 'list' }), control({ cmd: 'status' })]);
    status = st;
    renderNode(st);
    renderShares(list);
    renderJobs(list);
    document.body.dataset.state = 'ready';
    clearError('poll');
  } catch (e) {
    showError(`cannot reach the daemon: ${e.message}`, 'poll');
  } finally {
    polling = false;
    pollTimer = setTimeout(poll, POLL_MS);
  }
}

function pollSoon() {
  if (!polling) poll();
}

async function upload(files) {
  for (const f of files) {
    $('uploads').textContent = `uploading ${f.name} (${human(f.size)})…`;
    const reply = JSON.parse(await post(`/api/upload?name=${encodeURIComponent(f.name)}`, f, 'application/octet-stream', UPLOAD_TIMEOUT_MS));
    if (!reply.ok) throw new Error(reply.error);
    $('uploads').textContent = `shared ${f.name}`;
    await showLink(reply.link, false);
  }
}

function wire() {
  $('share-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const path = $('share-path').value.trim();
    act('share', async () => {
      // The daemon reads every file once before it answers.
      const r = await control({ cmd: 'share', paths: [path] }, SHARE_TIMEOUT_MS);
      $('share-path').value = '';
      await showLink(r.link, false);
    });
  });
  $('fetch-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const link = $('fetch-link').value.trim();
    const out = $('fetch-out').value.trim();
    const pin = $('fetch-pin').checked;
    act(pin ? 'pin' : 'fetch', async () => {
      if (pin) {
        // A pin link: the key stays here (the daemon refuses one anyway).
        await control({ cmd: 'pin', link: link.split('#')[0], detach: true });
      } else {
        if (!out) throw new Error('give the folder to write into');
        await control({ cmd: 'fetch', link, out, detach: true });
      }
      $('fetch-link').value = '';
    });
  });
  for (const table of ['shares', 'jobs']) {
    $(table).addEventListener('click', (e) => {
      const b = e.target.closest('button[data-action]');
      if (!b) return;
      const { action, id, kind } = b.dataset;
      act(action, async () => {
        if (action === 'link' || action === 'qr') {
          const r = await control({ cmd: 'link', id });
          await showLink(r.link, action === 'qr');
        } else if (action === 'unshare') {
          await control({ cmd: 'unshare', id });
        } else {
          await control({ cmd: action, id, kind });
        }
      });
    });
  }
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const files = [...(e.dataTransfer?.files ?? [])];
    if (files.length) act('upload', () => upload(files));
  });
}

wire();
poll();
