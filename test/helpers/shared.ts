// Access to the project's shared test data (../shared beside the checkout, or $POLYLORA_SHARED) from both test
// projects. vitest.config.ts provides its absolute path (and golden.json, parsed); Node opens it as a directory,
// the browser as /@fs/<absolute path> on the Vitest server (server.fs.allow lists the folder). Files are read in
// place, never copied into the repo. No `node:` imports here: this module also runs in Chromium.
import { inject } from 'vitest';
import type { FileTree } from '../../src/io/source.js';
import { getPlatform } from '../../src/platform/platform.js';

/** Values vitest.config.ts hands to every test file (`provide`) and test/helpers/*-server.ts adds (globalSetup). */
declare module 'vitest' {
  export interface ProvidedContext {
    /** Absolute path of the shared data folder. */
    sharedDir: string;
    /** reference/golden.json, parsed; null when the file is missing. */
    golden: Golden | null;
    /** Which side of the platform seam this test project installs. */
    platform: 'node' | 'browser';
    /** false in the node-no-subgroups project: devices are created without the subgroups feature. */
    subgroups?: boolean;
  }
}

export const SHARED_DIR: string = inject('sharedDir');

/** Absolute filesystem path of `rel` inside the shared folder (in the browser only useful in messages). */
export function sharedPath(rel: string): string {
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
  return [SHARED_DIR.replace(/\/+$/, ''), ...parts].join('/');
}

/** What getPlatform().openLocal() takes for `rel`: the path in Node, its /@fs/ URL on the Vitest server in the browser. */
export function sharedLocation(rel: string): string {
  return getPlatform().name === 'browser' ? `/@fs${sharedPath(rel)}` : sharedPath(rel);
}

export function sharedTree(rel: string): Promise<FileTree> {
  return getPlatform().openLocal(sharedLocation(rel));
}

export interface GoldenCase {
  name: string;
  prompt_text: string;
  prompt_ids: number[];
  adapter: string | null;
  max_tokens: number;
  expected_ids: number[];
  expected_text: string;
  min_logit_gap: number;
}
export interface Golden {
  model: string;
  model_path: string;
  eos_token_id: number;
  adapters: Record<string, { path: string }>;
  cases: GoldenCase[];
}

export function golden(): Golden {
  const g = inject('golden');
  if (!g) {
    throw new Error(`${sharedPath('reference/golden.json')} not found (set POLYLORA_SHARED to the shared data folder)`);
  }
  return g;
}
