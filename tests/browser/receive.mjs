// Opens a peerdrop web link in Debian's headless chromium, saves what the
// page offers, and prints one JSON line: the page's final state, its error
// text, timings, and what was downloaded. Driven by tests/web.rs.
//
// Usage: node receive.mjs '{"url": "...", "out": "DIR", "timeoutMs": 120000,
//                           "screenshot": "PATH", "phone": true}'
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const opts = JSON.parse(process.argv[2]);
const deadline = Date.now() + (opts.timeoutMs ?? 120000);
const left = () => Math.max(1000, deadline - Date.now());

// A fresh profile, and the flags that keep chromium off the network.
const profile = mkdtempSync(join(tmpdir(), 'pd-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: opts.chromium ?? '/usr/bin/chromium',
  headless: true,
  acceptDownloads: true,
  downloadsPath: opts.out,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync',
  ],
  viewport: opts.phone ? { width: 390, height: 844 } : { width: 1280, height: 800 },
  deviceScaleFactor: opts.phone ? 2 : 1,
  isMobile: !!opts.phone,
  hasTouch: !!opts.phone,
});
const result = { state: null, error: null, ms: null, bytes: null, downloads: [], requests: [], console: [] };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('request', (r) => result.requests.push({ url: r.url(), referer: r.headers()['referer'] ?? null }));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(m.text());
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
  const downloads = [];
  page.on('download', (d) => downloads.push(d));
  await page.goto(opts.url, { timeout: left() });
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: left(), polling: 100 });
  result.state = await page.evaluate(() => document.body.dataset.state);
  if (result.state === 'ready') {
    result.ms = Number(await page.evaluate(() => document.body.dataset.ms));
    result.bytes = Number(await page.evaluate(() => document.body.dataset.bytes));
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: left() }), page.click('#save')]);
    const path = join(opts.out, download.suggestedFilename());
    await download.saveAs(path);
    result.downloads.push({ name: download.suggestedFilename(), path, failure: await download.failure() });
    await page.waitForFunction(() => ['saved', 'error'].includes(document.body.dataset.state), null, { timeout: left(), polling: 100 });
    result.state = await page.evaluate(() => document.body.dataset.state);
  }
  result.error = await page.evaluate(() => (document.getElementById('error').hidden ? null : document.getElementById('error').textContent));
  // Anything the page tried to save, finished or not.
  for (const d of downloads.slice(result.downloads.length)) result.downloads.push({ name: d.suggestedFilename(), path: null });
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: false });
} catch (e) {
  result.fatal = String(e?.stack ?? e);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + '\n');
