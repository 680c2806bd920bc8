// The whole model on the GPU against golden.json: greedy decoding of the real TinyStories-656K checkpoint must
// reproduce, token for token and text for text, every base-model case computed by an independent implementation
// (which also agrees with llama.cpp). Each case's smallest top-1/top-2 logit gap is >= 0.004, far above f32
// rounding, so an f32-accumulating implementation has no excuse for a different token. Runs in Node and Chromium.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../../src/engine/llm.js';
import { golden } from '../helpers/shared.js';
import { useGpu } from '../helpers/gpu.js';
import { tinyStories } from '../helpers/model.js';

const g = golden();
const cases = g.cases.filter((c) => c.adapter === null);
const gpu = useGpu();
let llm: LLM;

beforeAll(async () => {
  llm = await LLM.load(await tinyStories(), { gpu: gpu(), maxModelLen: 128, maxNumSeqs: 8 });
});
afterAll(async () => {
  await llm?.close();
});

describe('golden greedy continuations (base model)', () => {
  it('has base cases to check', () => {
    expect(cases.length).toBeGreaterThan(0);
  });

  for (const c of cases) {
    it(`${c.name}: alone`, async () => {
      const [out] = await llm.generate({ promptIds: c.prompt_ids }, { temperature: 0, maxTokens: c.max_tokens });
      expect(out!.tokenIds).toEqual(c.expected_ids);
      expect(out!.text).toBe(c.expected_text);
      expect(out!.finishReason).toBe(c.expected_ids.at(-1) === g.eos_token_id ? 'stop' : 'length');
    });
  }

  it('all cases in one batch give the same tokens', async () => {
    const before = llm.stats.maxRowsInStep;
    const outs = await llm.generate(
      cases.map((c) => ({ promptIds: c.prompt_ids })),
      cases.map((c) => ({ temperature: 0, maxTokens: c.max_tokens })),
    );
    outs.forEach((o, i) => expect(o.tokenIds, cases[i]!.name).toEqual(cases[i]!.expected_ids));
    // They really shared steps: some step sampled every one of them.
    expect(Math.max(before, llm.stats.maxRowsInStep)).toBe(cases.length);
  });

  it('text prompts encode to the golden prompt ids', () => {
    for (const c of cases) expect(llm.encode(c.prompt_text), c.name).toEqual(c.prompt_ids);
  });
});
