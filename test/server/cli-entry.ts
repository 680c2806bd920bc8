// Runs the `polylora` CLI from the sources (what bin/polylora.js runs from dist/), for tests that spawn it:
//   node --import tsx test/server/cli-entry.ts serve <model> ...
import { main } from '../../src/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
