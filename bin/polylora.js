#!/usr/bin/env node
// The `polylora` command. Runs the compiled CLI in dist/ (`npm run build` makes it).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('polylora: dist/ is missing; run `npm run build` in the package folder first\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
