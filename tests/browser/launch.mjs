// Debian's headless chromium with a fresh profile and the flags that keep
// it off the network, for the browser tests' scripts.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// A browser context; `close()` closes it and removes its profile.
export async function launch(opts, extra = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'pd-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-sync',
    ],
    ...extra,
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

// Records what `page` requests and every console error or warning into
// `result.requests` and `result.console`.
export function watch(page, result) {
  page.on('request', (r) => result.requests.push({ url: r.url(), referer: r.headers()['referer'] ?? null }));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(m.text());
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
}
