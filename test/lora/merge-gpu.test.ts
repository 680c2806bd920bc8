// Merged models on the GPU: `polylora merge` of each TinyStories adapter, loaded from its folder with LLM.load,
// reproduces golden.json's continuations for that adapter token for token and text for text (the merges are f32,
// and every case's top-1/top-2 logit gap is >= 0.004, far above the f32 accumulation error of the GPU path).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mergeCommand } from '../../src/cli/merge.js';
import { LLM } from '../../src/engine/llm.js';
import { useGpu } from '../helpers/gpu.js';
import { golden, sharedPath } from '../helpers/shared.js';

const g = golden();
const gpu = useGpu();
let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'polylora-merge-gpu-'));
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
});
afterAll(async () => {
  vi.restoreAllMocks();
  await rm(tmp, { recursive: true, force: true });
});

describe('merged adapters on the GPU', () => {
  for (const name of Object.keys(g.adapters)) {
    const cases = g.cases.filter((c) => c.adapter === name);
    it(`${name}: LLM.load(merged folder) reproduces its ${cases.length} golden cases in one batch`, async () => {
      const out = join(tmp, name);
      await mergeCommand(['--model', sharedPath(g.model_path), '--lora', sharedPath(g.adapters[name]!.path), '--out', out]);
      const llm = await LLM.load(out, { gpu: gpu(), maxModelLen: 128, maxNumSeqs: 8, onWarning: () => {} });
      try {
        const outs = await llm.generate(
          cases.map((c) => ({ promptIds: c.prompt_ids })),
          cases.map((c) => ({ temperature: 0, maxTokens: c.max_tokens })),
        );
        outs.forEach((o, i) => {
          const c = cases[i]!;
          const first = o.tokenIds.findIndex((id, j) => id !== c.expected_ids[j]);
          if (first >= 0) console.log(`${c.name} / ${name}: first mismatch at step ${first}: got ${o.tokenIds.slice(first, first + 8)}, expected ${c.expected_ids.slice(first, first + 8)}`);
          expect(o.tokenIds, `${c.name} / ${name}`).toEqual(c.expected_ids);
          expect(o.text, `${c.name} / ${name}`).toBe(c.expected_text);
        });
      } finally {
        await llm.close();
      }
    });
  }
});
