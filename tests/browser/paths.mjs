// Prints, for each path in the JSON array on stdin, why the page refuses it
// (the PathError name) or null: tests/web.rs compares that with the CLI.
import { pathProblem } from '../../web/src/format.js';

let input = '';
process.stdin.setEncoding('utf8');
for await (const chunk of process.stdin) input += chunk;
const paths = JSON.parse(input);
const enc = new TextEncoder();
process.stdout.write(JSON.stringify(paths.map((p) => pathProblem(p, enc.encode(p).length))) + '\n');
