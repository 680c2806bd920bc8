// Vite serves and builds the browser demo in examples/demo (`npm run demo`, `npm run build:demo` -> dist-demo/):
// one base model, several LoRA adapters, every adapter answering side by side from one batch. The engine runs in
// a module Web Worker (examples/demo/worker.ts). During development the server also serves the shared test data
// folder (../shared, or $POLYLORA_SHARED) at /@fs/<absolute path>, so the page can load the bundled tiny model and
// adapters; a static build has no such folder and hides those buttons.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, searchForWorkspaceRoot } from 'vite';

const repoRoot = dirname(fileURLToPath(import.meta.url));
const sharedDir = process.env.POLYLORA_SHARED ?? resolve(repoRoot, '../shared');

export default defineConfig(({ command }) => ({
  root: resolve(repoRoot, 'examples/demo'),
  // Relative asset URLs: dist-demo/ works from any sub-path of a static host.
  base: './',
  // The shared folder's path for the dev server's bundled-model buttons; a build gets null (and hides them).
  define: { 'import.meta.env.VITE_SHARED_DIR': command === 'serve' ? JSON.stringify(sharedDir) : 'null' },
  server: { host: '127.0.0.1', fs: { allow: [searchForWorkspaceRoot(repoRoot), sharedDir] } },
  preview: { host: '127.0.0.1' },
  build: { outDir: resolve(repoRoot, 'dist-demo'), emptyOutDir: true, target: 'es2022' },
  // The worker imports the library, which splits into chunks: only ES module workers can load those.
  worker: { format: 'es' },
  // Pre-bundled up front (the worker's imports are not found by the dependency scan of index.html), so the dev
  // server does not re-optimize and reload the page the first time the worker imports them.
  optimizeDeps: { include: ['@huggingface/tokenizers', '@huggingface/jinja', '@huggingface/hub'] },
}));
