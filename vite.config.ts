// Vite serves and builds the browser example in examples/browser (`npm run demo`, `npm run build:demo`). During
// development it also serves the shared test data folder (../shared) so the page can load the bundled tiny model.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, searchForWorkspaceRoot } from 'vite';

const repoRoot = dirname(fileURLToPath(import.meta.url));
const sharedDir = process.env.POLYLORA_SHARED ?? resolve(repoRoot, '../shared');

export default defineConfig({
  root: resolve(repoRoot, 'examples/browser'),
  define: { 'import.meta.env.VITE_SHARED_DIR': JSON.stringify(sharedDir) },
  server: { host: '127.0.0.1', fs: { allow: [searchForWorkspaceRoot(repoRoot), sharedDir] } },
  build: { outDir: resolve(repoRoot, 'dist-demo'), emptyOutDir: true, target: 'es2022' },
  optimizeDeps: { include: ['@huggingface/tokenizers', '@huggingface/jinja'] },
});
