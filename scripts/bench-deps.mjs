// `npm run bench` compares against llama.cpp through node-llama-cpp (prebuilt CPU binaries, ~100 MB with its
// platform packages). It is only needed by the benchmark, so it is installed here on first use, without touching
// package.json, instead of slowing down every `npm ci`.
import { spawnSync } from 'node:child_process';

const PACKAGE = 'node-llama-cpp@3.22.1';
try {
  await import('node-llama-cpp');
} catch {
  process.stderr.write(`bench: installing ${PACKAGE} (benchmark-only dependency)\n`);
  const r = spawnSync('npm', ['install', '--no-save', '--no-audit', '--no-fund', PACKAGE], { stdio: 'inherit' });
  if (r.status !== 0) process.stderr.write(`bench: could not install ${PACKAGE}; the llama.cpp comparison will be skipped\n`);
}
