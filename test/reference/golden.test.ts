// The reference forward pass against golden.json: greedy continuations of the real TinyStories-656K checkpoint
// from an independent numpy implementation (agreeing with llama.cpp). Every case's smallest top-1/top-2 logit
// gap is >= 0.004, far above f32 rounding, so an f32 oracle must reproduce every token.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, type SafetensorsCheckpoint } from '../../src/io/checkpoint.js';
import { parseModelConfig } from '../../src/model/config.js';
import { validateWeights } from '../../src/model/weights-spec.js';
import { ReferenceModel, type ReferenceLora } from '../../src/reference/model.js';
import { greedy } from '../../src/reference/sampling.js';
import { golden, sharedTree } from '../helpers/shared.js';

const g = golden();
let ckpt: SafetensorsCheckpoint;
let model: ReferenceModel;

beforeAll(async () => {
  const tree = await sharedTree(g.model_path);
  const { config } = parseModelConfig(JSON.parse(await tree.text('config.json')), `${tree.label}/config.json`);
  ckpt = await openCheckpoint(tree);
  validateWeights(config, ckpt);
  model = await ReferenceModel.load(config, ckpt);
});
afterAll(async () => {
  await ckpt?.close();
});

/** Greedy decoding with prefill + one-token decode steps; stops after EOS (included) or maxTokens. */
function generate(prompt: readonly number[], maxTokens: number, eos: number, lora: ReferenceLora | null = null): number[] {
  const seq = model.newSequence(lora);
  const vocab = model.config.vocabSize;
  let logits = model.forward(seq, prompt, 0);
  const out: number[] = [];
  while (out.length < maxTokens) {
    const next = greedy(logits.subarray(logits.length - vocab));
    out.push(next);
    if (next === eos) break;
    logits = model.forward(seq, [next], seq.length);
  }
  return out;
}

describe('golden greedy continuations', () => {
  // Adapter cases: test/model/lora-reference.test.ts (through the real PEFT loader).
  for (const c of g.cases.filter((x) => x.adapter === null)) {
    it(`${c.name} / base: ${c.expected_ids.length} tokens`, async () => {
      const got = generate(c.prompt_ids, c.max_tokens, g.eos_token_id);
      const first = got.findIndex((id, i) => id !== c.expected_ids[i]);
      if (first >= 0 || got.length !== c.expected_ids.length) {
        console.log(`${c.name} / base: first mismatch at step ${first}: got ${got.slice(Math.max(0, first), first + 8)}, expected ${c.expected_ids.slice(Math.max(0, first), first + 8)}`);
      }
      expect(got).toEqual(c.expected_ids);
    });
  }
});
