// The reference forward pass against golden.json: greedy continuations of the real TinyStories-656K checkpoint
// from an independent numpy implementation (agreeing with llama.cpp). Every case's smallest top-1/top-2 logit
// gap is >= 0.004, far above f32 rounding, so an f32 oracle must reproduce every token.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, type SafetensorsCheckpoint } from '../../src/io/checkpoint.js';
import { parseModelConfig } from '../../src/model/config.js';
import { validateWeights } from '../../src/model/weights-spec.js';
import { ReferenceModel, type ReferenceLora } from '../../src/reference/model.js';
import type { LoraDelta } from '../../src/reference/ops.js';
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

/**
 * A PEFT adapter as ReferenceLora, read directly here (the real adapter loader lives in src/lora/): tensors
 * `base_model.model.<module>.lora_{A,B}.weight`, scale lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA.
 */
async function loadPeft(path: string): Promise<ReferenceLora> {
  const tree = await sharedTree(path);
  const cfg = JSON.parse(await tree.text('adapter_config.json')) as { r: number; lora_alpha: number; use_rslora?: boolean };
  const scale = cfg.use_rslora ? cfg.lora_alpha / Math.sqrt(cfg.r) : cfg.lora_alpha / cfg.r;
  const ad = await openCheckpoint(tree, { file: 'adapter_model.safetensors' });
  const lora = new Map<string, LoraDelta>();
  for (const name of ad.tensors.keys()) {
    const m = /^base_model\.model\.(.+)\.lora_A\.weight$/.exec(name);
    if (!m) continue;
    const a = ad.tensors.get(name)!;
    lora.set(m[1]!, { a: await ad.float32(name), b: await ad.float32(`base_model.model.${m[1]}.lora_B.weight`), rank: a.shape[0]!, scale });
  }
  await ad.close();
  expect(lora.size).toBeGreaterThan(0);
  return lora;
}

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
  for (const c of g.cases) {
    it(`${c.name} / ${c.adapter ?? 'base'}: ${c.expected_ids.length} tokens`, async () => {
      const lora = c.adapter === null ? null : await loadPeft(g.adapters[c.adapter]!.path);
      const got = generate(c.prompt_ids, c.max_tokens, g.eos_token_id, lora);
      const first = got.findIndex((id, i) => id !== c.expected_ids[i]);
      if (first >= 0 || got.length !== c.expected_ids.length) {
        console.log(`${c.name} / ${c.adapter ?? 'base'}: first mismatch at step ${first}: got ${got.slice(Math.max(0, first), first + 8)}, expected ${c.expected_ids.slice(Math.max(0, first), first + 8)}`);
      }
      expect(got).toEqual(c.expected_ids);
    });
  }
});
