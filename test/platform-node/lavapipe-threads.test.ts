// The Node platform runs lavapipe with two compute threads per core unless LP_NUM_THREADS says otherwise
// (src/platform/node.ts: smaller shares of each dispatch, which the OS spreads over the cores). Each case is a
// fresh process, since Mesa reads the variable once, when it creates its device.
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const CHILD = fileURLToPath(new URL('./lavapipe-threads.child.ts', import.meta.url));

function child(lpNumThreads: string | undefined): { env: string | null; llvmpipeThreads: number; description: string } {
  const env = { ...process.env };
  delete env.LP_NUM_THREADS;
  if (lpNumThreads !== undefined) env.LP_NUM_THREADS = lpNumThreads;
  const r = spawnSync(process.execPath, ['--import', 'tsx', CHILD], { env, encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
}

it('sets LP_NUM_THREADS to twice the cores (at most 32, the Mesa limit) when unset, and Mesa runs that many threads', () => {
  const want = Math.min(2 * availableParallelism(), 32);
  const r = child(undefined);
  expect(r.env).toBe(String(want));
  // On lavapipe (what the tests run on without a GPU) its threads show it took the value; other drivers have none.
  expect(r.llvmpipeThreads).toBe(r.description.includes('llvmpipe') ? want : 0);
});

it('keeps an LP_NUM_THREADS that is already set', () => {
  const r = child('3');
  expect(r.env).toBe('3');
  expect(r.llvmpipeThreads).toBe(r.description.includes('llvmpipe') ? 3 : 0);
});
