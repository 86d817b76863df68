// Opens a peerdrop web link in Debian's headless chromium, saves what the
// page offers, and prints one JSON line: the page's final state, its error
// text, timings, and what was downloaded. Driven by tests/web.rs.
//
// Usage: node receive.mjs '{"url": "...", "out": "DIR", "timeoutMs": 120000,
//                           "screenshot": "PATH", "phone": true}'
import { join } from 'node:path';
import { launch, watch } from './launch.mjs';

const opts = JSON.parse(process.argv[2]);
const deadline = Date.now() + (opts.timeoutMs ?? 120000);
const left = () => Math.max(1000, deadline - Date.now());

const browser = await launch(opts, {
  acceptDownloads: true,
  downloadsPath: opts.out,
  viewport: opts.phone ? { width: 390, height: 844 } : { width: 1280, height: 800 },
  deviceScaleFactor: opts.phone ? 2 : 1,
  isMobile: !!opts.phone,
  hasTouch: !!opts.phone,
});
const context = browser.context;
const result = { state: null, error: null, ms: null, bytes: null, downloads: [], requests: [], console: [] };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  watch(page, result);
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
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + '\n');
