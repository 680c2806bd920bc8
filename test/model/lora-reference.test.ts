// The adapter loader on both sides of the platform seam (Node and Chromium): each TinyStories adapter, read
// through the platform's file access and validated against the base config, reproduces golden.json's adapter
// cases in the reference model (f32 oracle; every case's top-1/top-2 logit gap is >= 0.004). No node: imports.
import { beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { parseModelConfig } from '../../src/model/config.js';
import { loadLoraAdapter, toReferenceLora } from '../../src/lora/adapter.js';
import { ReferenceModel, type ReferenceLora } from '../../src/reference/model.js';
import { greedy } from '../../src/reference/sampling.js';
import { golden, sharedTree } from '../helpers/shared.js';

const g = golden();
let config: ModelConfig;
let model: ReferenceModel;

beforeAll(async () => {
  const tree = await sharedTree(g.model_path);
  config = parseModelConfig(JSON.parse(await tree.text('config.json')), `${tree.label}/config.json`).config;
  const ckpt = await openCheckpoint(tree);
  model = await ReferenceModel.load(config, ckpt);
  await ckpt.close();
});

describe('PEFT adapters in the reference model', () => {
  const cases = g.cases.filter((c) => c.adapter !== null);
  const lorasByName = new Map<string, ReferenceLora>();

  it('covers all 15 adapter cases', () => {
    expect(cases).toHaveLength(15);
  });

  for (const c of cases) {
    it(`${c.name} / ${c.adapter}: ${c.expected_ids.length} tokens`, async () => {
      if (!lorasByName.has(c.adapter!)) {
        const adapter = await loadLoraAdapter(await sharedTree(g.adapters[c.adapter!]!.path), config);
        lorasByName.set(c.adapter!, toReferenceLora(adapter));
      }
      const seq = model.newSequence(lorasByName.get(c.adapter!)!);
      let logits = model.forward(seq, c.prompt_ids, 0);
      const got: number[] = [];
      while (got.length < c.max_tokens) {
        const next = greedy(logits.subarray(logits.length - config.vocabSize));
        got.push(next);
        if (next === g.eos_token_id) break;
        logits = model.forward(seq, [next], seq.length);
      }
      const first = got.findIndex((id, i) => id !== c.expected_ids[i]);
      if (first >= 0) console.log(`${c.name} / ${c.adapter}: first mismatch at step ${first}: got ${got.slice(first, first + 8)}, expected ${c.expected_ids.slice(first, first + 8)}`);
      expect(got).toEqual(c.expected_ids);
    });
  }
});
