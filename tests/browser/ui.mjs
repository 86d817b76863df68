// Drives the daemon's local web UI in Debian's headless chromium for
// tests/web.rs, and prints one JSON line of what it saw. On daemon A's UI:
// share a path with the form, read the share's link ("Copy link") and its
// QR code, share a file by dropping it. On daemon B's UI: fetch A's link
// into a folder until done, then start a fetch of a link nobody serves and
// cancel it.
//
// Usage: node ui.mjs '{"a": "http://127.0.0.1:P/?token=…", "b": "…",
//   "sharePath": "/abs/file", "shareName": "file", "dropName": "dropped.txt",
//   "dropText": "…", "fetchOut": "/abs/dir", "stuckLink": "peerdrop:1/…",
//   "stuckOut": "/abs/dir", "screenshot": "PATH or null", "timeoutMs": 120000}'
import { launch, watch } from './launch.mjs';

const opts = JSON.parse(process.argv[2]);
const deadline = Date.now() + (opts.timeoutMs ?? 120000);
const left = () => Math.max(1000, deadline - Date.now());

const browser = await launch(opts, { viewport: { width: 1280, height: 900 } });
const context = browser.context;
const result = { console: [], requests: [], steps: [] };
const step = (s) => result.steps.push(s);

async function open(url) {
  const page = await context.newPage();
  watch(page, result);
  await page.goto(url, { timeout: left() });
  await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: left(), polling: 100 });
  return page;
}

// The row of table `table` whose first cell reads `name`, once it is there.
async function rowNamed(page, table, name) {
  const row = page.locator(`#${table} tbody tr`, { has: page.locator('td.name', { hasText: name }) });
  await row.first().waitFor({ timeout: left() });
  return row.first();
}

async function jobState(page, id, want) {
  await page.waitForFunction(
    ([id, want]) => want.includes(document.querySelector(`#jobs tr[data-id="${id}"]`)?.dataset.state),
    [id, want],
    { timeout: left(), polling: 100 },
  );
  return page.evaluate((id) => document.querySelector(`#jobs tr[data-id="${id}"]`).dataset.state, id);
}

async function errorText(page) {
  return page.evaluate(() => (document.getElementById('error').hidden ? null : document.getElementById('error').textContent));
}

try {
  // A: share by path, read the link, draw its QR code.
  const a = await open(opts.a);
  await a.fill('#share-path', opts.sharePath);
  await a.click('#share-form button[type=submit]');
  const row = await rowNamed(a, 'shares', opts.shareName);
  result.shareId = await row.getAttribute('data-id');
  // The share's reply put its link there: cleared, to see the button's.
  await a.evaluate(() => {
    document.getElementById('link-text').value = '';
  });
  await row.locator('button[data-action=link]').click();
  await a.waitForFunction(() => document.getElementById('link-text').value !== '', null, { timeout: left(), polling: 100 });
  result.link = await a.inputValue('#link-text');
  step('shared');
  await row.locator('button[data-action=qr]').click();
  await a.waitForFunction(() => {
    const img = document.getElementById('link-qr');
    return !img.hidden && img.src.startsWith('data:image/svg+xml') && img.complete && img.naturalWidth > 0;
  }, null, { timeout: left(), polling: 100 });
  step('qr');
  // Drop a file onto the drop zone, as a user dragging it from a file manager.
  const dt = await a.evaluateHandle(([name, text]) => {
    const dt = new DataTransfer();
    dt.items.add(new File([text], name, { type: 'text/plain' }));
    return dt;
  }, [opts.dropName, opts.dropText]);
  await a.dispatchEvent('#drop', 'dragover', { dataTransfer: dt });
  await a.dispatchEvent('#drop', 'drop', { dataTransfer: dt });
  const dropped = await rowNamed(a, 'shares', opts.dropName);
  result.droppedId = await dropped.getAttribute('data-id');
  await a.waitForFunction((n) => document.getElementById('uploads').textContent === `shared ${n}`, opts.dropName, { timeout: left(), polling: 100 });
  result.droppedLink = await a.inputValue('#link-text');
  step('dropped');
  result.errorA = await errorText(a);
  if (opts.screenshot) {
    // What a user sees after asking for the first share's QR code.
    await row.locator('button[data-action=qr]').click();
    await a.waitForFunction(() => document.getElementById('link-qr').complete && !document.getElementById('link-qr').hidden, null, { timeout: left(), polling: 100 });
    await a.screenshot({ path: opts.screenshot, fullPage: true });
  }

  // B: fetch A's link until done; then a fetch that cannot find a source, cancelled.
  const b = await open(opts.b);
  await b.fill('#fetch-link', result.link);
  await b.fill('#fetch-out', opts.fetchOut);
  await b.click('#fetch-form button[type=submit]');
  await b.locator(`#jobs tr[data-id="${result.shareId}"]`).waitFor({ timeout: left() });
  result.fetchState = await jobState(b, result.shareId, ['done', 'failed', 'cancelled']);
  step('fetched');
  await b.fill('#fetch-link', opts.stuckLink);
  await b.fill('#fetch-out', opts.stuckOut);
  await b.click('#fetch-form button[type=submit]');
  const stuck = b.locator('#jobs tr[data-state=running], #jobs tr[data-state=queued]');
  await stuck.first().waitFor({ timeout: left() });
  result.stuckId = await stuck.first().getAttribute('data-id');
  result.stuckBefore = await stuck.first().getAttribute('data-state');
  await stuck.first().locator('button[data-action=cancel]').click();
  result.stuckState = await jobState(b, result.stuckId, ['cancelled', 'failed', 'done']);
  step('cancelled');
  result.errorB = await errorText(b);
  if (opts.screenshotB) await b.screenshot({ path: opts.screenshotB, fullPage: true });
} catch (e) {
  result.fatal = String(e?.stack ?? e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + '\n');
