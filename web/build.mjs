// Builds web/dist from web/src: one bundled, minified script, the HTML and
// the CSS. Deterministic for a given package-lock.json, so .ci/run can check
// that the committed web/dist matches its sources.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';

const here = new URL('.', import.meta.url).pathname;
mkdirSync(`${here}dist`, { recursive: true });
await build({
  entryPoints: [`${here}src/main.js`],
  outfile: `${here}dist/app.js`,
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['es2022'],
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
});
for (const f of ['index.html', 'app.css']) copyFileSync(`${here}src/${f}`, `${here}dist/${f}`);
