// Three test projects run the same test bodies on both sides of the platform seam:
//   node    — every test/**/*.test.ts, in forked Node processes (Dawn via the `webgpu` package on Vulkan).
//   node-no-subgroups — the kernel and golden-model files again, on a device without the subgroups feature.
//   browser — the test files under BROWSER_TEST_DIRS, in headless Chromium (WebGPU on SwiftShader).
// Convention: a test file runs in both environments when it lives under one of BROWSER_TEST_DIRS; such a file
// (and everything it imports) must not import `node:*` modules and must read shared data only through
// test/helpers/shared.ts. Node-only tests (fs, Hub download, HTTP server, CLI) live anywhere else; a file named
// *.browser.test.ts under those directories runs in Chromium only (what needs a page, e.g. a real file input).
import { dirname, resolve } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { searchForWorkspaceRoot } from 'vite';
import { playwright } from '@vitest/browser-playwright';
import type { Golden } from './test/helpers/shared.js';

const BROWSER_TEST_DIRS = ['test/gpu', 'test/kernels', 'test/model', 'test/platform'];

const repoRoot = dirname(fileURLToPath(import.meta.url));
const sharedDir = process.env.POLYLORA_SHARED ?? resolve(repoRoot, '../shared');

/** reference/golden.json, parsed here so that test/helpers/shared.ts can hand it out synchronously in both projects. */
function readGolden(): Golden | null {
  const file = resolve(sharedDir, 'reference/golden.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Golden) : null;
}

export default defineConfig({
  server: {
    // The browser project reads ../shared through the Vitest server as /@fs/<absolute path> (HEAD and Range work).
    fs: { allow: [searchForWorkspaceRoot(repoRoot), sharedDir] },
  },
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // One GPU device per process and 2 cores: run test files one after another.
    fileParallelism: false,
    provide: { sharedDir, golden: readGolden() },
    globalSetup: ['test/helpers/range-server.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'node',
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.browser.test.ts'],
          setupFiles: ['test/setup.node.ts'],
          pool: 'forks',
          provide: { platform: 'node' },
          // The two projects run one after the other, node first: on 2 cores, lavapipe and SwiftShader at the same
          // time would slow both down and make timings meaningless. (Vitest puts groupOrder 0 with one worker last.)
          sequence: { groupOrder: 1 },
        },
      },
      {
        extends: true,
        test: {
          // The kernels, the golden models and DoRA (its row-statistics kernel) again on a device created without
          // the subgroups feature, so the workgroup-memory reductions that Firefox, Safari and older Chrome get are
          // tested too (both Dawn on lavapipe and Chromium on SwiftShader have subgroups).
          name: 'node-no-subgroups',
          include: ['test/kernels/**/*.test.ts', 'test/model/golden.test.ts', 'test/model/lora-golden.test.ts', 'test/model/dora.test.ts'],
          setupFiles: ['test/setup.node.ts'],
          pool: 'forks',
          provide: { platform: 'node', subgroups: false },
          sequence: { groupOrder: 2 },
        },
      },
      {
        extends: true,
        // Pre-bundled up front, so Vite does not re-optimize and reload the page mid-run when a test first imports them.
        optimizeDeps: { include: ['@huggingface/tokenizers', '@huggingface/jinja'] },
        test: {
          name: 'browser',
          include: BROWSER_TEST_DIRS.map((d) => `${d}/**/*.test.ts`),
          setupFiles: ['test/setup.browser.ts'],
          provide: { platform: 'browser' },
          sequence: { groupOrder: 3 },
          browser: {
            enabled: true,
            headless: true,
            screenshotFailures: false,
            provider: playwright({
              launchOptions: {
                // Debian's chromium (scripts/setup.sh installs it); Playwright downloads no browser here.
                executablePath: process.env.POLYLORA_CHROMIUM ?? '/usr/bin/chromium',
                args: [
                  // The one flag WebGPU needs: without it headless Chromium on Linux has navigator.gpu but
                  // requestAdapter() returns null; with it, it returns SwiftShader (Vulkan on the CPU). Adding
                  // --use-angle=swiftshader, --use-webgpu-adapter=swiftshader or --enable-features=Vulkan changes
                  // nothing here, so they are left out.
                  '--enable-unsafe-webgpu',
                  '--no-sandbox', // CI runs as root, where Chromium's sandbox refuses to start
                  // No network beyond the Vitest server: on a closed network Chromium otherwise keeps retrying.
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--no-first-run', '--disable-quic',
                ],
              },
            }),
            instances: [{ browser: 'chromium' }],
          },
        },
      },
    ],
  },
});
