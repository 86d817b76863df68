// Builds web/dist from web/src: for the receive page and for the daemon's
// UI, one bundled, minified script each, the HTML and the CSS.
// Deterministic for a given package-lock.json, so .ci/run can check that
// the committed web/dist matches its sources.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';

const here = new URL('.', import.meta.url).pathname;
mkdirSync(`${here}dist`, { recursive: true });
const bundle = (entry, out) =>
  build({
    entryPoints: [`${here}src/${entry}`],
    outfile: `${here}dist/${out}`,
    bundle: true,
    format: 'esm',
    minify: true,
    target: ['es2022'],
    legalComments: 'eof',
    charset: 'utf8',
    logLevel: 'warning',
  });
// The receive page (served to browsers on the LAN).
await bundle('main.js', 'app.js');
for (const f of ['index.html', 'app.css']) copyFileSync(`${here}src/${f}`, `${here}dist/${f}`);
// The daemon's local UI (served on loopback, behind its token).
await bundle('ui/main.js', 'ui.js');
copyFileSync(`${here}src/ui/index.html`, `${here}dist/ui.html`);
copyFileSync(`${here}src/ui/ui.css`, `${here}dist/ui.css`);
