// Parsed adapters in the reference model, beyond the golden cases (test/model/lora-reference.test.ts, both
// platforms): the scale multiplier, and LoRA on lm_head and embed_tokens (which the shared adapters do not use)
// against the same adapter merged into the weights.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, type SafetensorsCheckpoint } from '../../src/io/checkpoint.js';
import type { FileTree } from '../../src/io/source.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { parseModelConfig } from '../../src/model/config.js';
import { EMBED_TOKENS, LM_HEAD } from '../../src/model/weights-spec.js';
import { loadLoraAdapter, toReferenceLora, type LoraAdapter } from '../../src/lora/adapter.js';
import { mergeModelFolder } from '../../src/lora/merge.js';
import { ReferenceModel, type ReferenceLora } from '../../src/reference/model.js';
import { greedy } from '../../src/reference/sampling.js';
import { golden, sharedTree } from '../helpers/shared.js';
import { adapterTree, loraTensors, memorySink, peftConfig } from './fixtures.js';

const g = golden();
let baseTree: FileTree;
let config: ModelConfig;
let model: ReferenceModel;

beforeAll(async () => {
  baseTree = await sharedTree(g.model_path);
  config = parseModelConfig(JSON.parse(await baseTree.text('config.json')), 'config.json').config;
  const ckpt = await openCheckpoint(baseTree);
  model = await ReferenceModel.load(config, ckpt);
  await ckpt.close();
});

/** Greedy decoding with prefill + one-token decode steps; stops after EOS (included) or maxTokens. */
function generate(m: ReferenceModel, prompt: readonly number[], maxTokens: number, lora: ReferenceLora | null): number[] {
  const seq = m.newSequence(lora);
  const vocab = m.config.vocabSize;
  let logits = m.forward(seq, prompt, 0);
  const out: number[] = [];
  while (out.length < maxTokens) {
    const next = greedy(logits.subarray(logits.length - vocab));
    out.push(next);
    if (next === g.eos_token_id) break;
    logits = m.forward(seq, [next], seq.length);
  }
  return out;
}

function firstMismatch(label: string, got: number[], want: number[]): void {
  const first = got.findIndex((id, i) => id !== want[i]);
  if (first >= 0 || got.length !== want.length) {
    console.log(`${label}: first mismatch at step ${first}: got ${got.slice(Math.max(0, first), first + 8)}, expected ${want.slice(Math.max(0, first), first + 8)}`);
  }
}

describe('toReferenceLora', () => {
  it('scaleMultiplier 0 is the base model exactly, and the adapter really changes the logits', async () => {
    const zara = await loadLoraAdapter(await sharedTree(g.adapters.zara!.path), config);
    const prompt = g.cases[0]!.prompt_ids;
    const base = model.forward(model.newSequence(), prompt, 0);
    expect(model.forward(model.newSequence(toReferenceLora(zara, 0)), prompt, 0)).toEqual(base);
    const withLora = model.forward(model.newSequence(toReferenceLora(zara)), prompt, 0);
    expect(Math.max(...withLora.map((v, i) => Math.abs(v - base[i]!)))).toBeGreaterThan(0.1);
  });
});

describe('LoRA on lm_head and embed_tokens (tied TinyStories base) against the merged weights', () => {
  // r 4 on the embedding (A [4, 2048], B [128, 4]), r 3 on lm_head (A [3, 128], B [2048, 3]), r 2 on layer 1's q_proj.
  const ranks = { 'model.embed_tokens': 4, lm_head: 3, 'model.layers.1.self_attn.q_proj': 2 };
  const emb = loraTensors({ module: 'model.embed_tokens', rank: 4, inFeatures: 2048, outFeatures: 128, embedding: true, seed: 11 });
  const head = loraTensors({ module: 'lm_head', rank: 3, inFeatures: 128, outFeatures: 2048, seed: 12 });
  const q1 = loraTensors({ module: 'model.layers.1.self_attn.q_proj', rank: 2, inFeatures: 128, outFeatures: 128, seed: 13 });
  const cfg = peftConfig({ target_modules: ['embed_tokens', 'lm_head', 'q_proj'], r: 4, lora_alpha: 2, rank_pattern: ranks, base_model_name_or_path: 'raincandy-u/TinyStories-656K' });
  let adapter: LoraAdapter;
  let merged: ReferenceModel;
  let mergedCkpt: SafetensorsCheckpoint;
  let mergedConfigJson: Record<string, unknown>;

  beforeAll(async () => {
    const tree = adapterTree(cfg, [...emb.tensors, ...head.tensors, ...q1.tensors], 'mem/head-embed');
    adapter = await loadLoraAdapter(tree, config);
    const out = memorySink();
    const report = await mergeModelFolder(baseTree, tree, out.sink);
    expect(report.untied).toBe(true);
    mergedConfigJson = JSON.parse(out.files['config.json'] as string) as Record<string, unknown>;
    const mergedConfig = parseModelConfig(mergedConfigJson, 'merged/config.json').config;
    mergedCkpt = await openCheckpoint(out.tree());
    merged = await ReferenceModel.load(mergedConfig, mergedCkpt);
  });
  afterAll(async () => {
    await mergedCkpt?.close();
  });

  it('parses both with their scales (alpha 2 / r)', () => {
    expect(adapter.modules.get('model.embed_tokens')).toMatchObject({ rank: 4, scale: 0.5, kind: 'embedding' });
    expect(adapter.modules.get('lm_head')).toMatchObject({ rank: 3, scale: 2 / 3 });
  });

  it('unties the merged model: both matrices stored, no alias, tie_word_embeddings false', async () => {
    expect(mergedConfigJson.tie_word_embeddings).toBe(false);
    expect(mergedCkpt.stored.has(EMBED_TOKENS)).toBe(true);
    expect(mergedCkpt.stored.has(LM_HEAD)).toBe(true);
    expect(mergedCkpt.aliases.size).toBe(0);
  });

  it('merged rows follow peft: embedding E[t] + s·(Aᵀ[t] @ Bᵀ), lm_head W + s·(B @ A), each rounded once from f64', async () => {
    const base = await openCheckpoint(baseTree);
    const E = await base.float32(LM_HEAD); // TinyStories stores the tied matrix as lm_head.weight
    await base.close();
    const embMerged = await mergedCkpt.float32(EMBED_TOKENS);
    const headMerged = await mergedCkpt.float32(LM_HEAD);
    const H = 128;
    const [sE, sH] = [0.5, 2 / 3];
    for (const t of [0, 1, 7, 2047]) {
      for (let j = 0; j < H; j++) {
        let d = 0; // (Aᵀ[t] @ Bᵀ)[j] = Σ_r A[r, t]·B[j, r]
        for (let r = 0; r < 4; r++) d += emb.a[r * 2048 + t]! * emb.b[j * 4 + r]!;
        expect(embMerged[t * H + j]).toBe(Math.fround(E[t * H + j]! + sE * d));
      }
    }
    for (const o of [0, 5, 2047]) {
      for (let i = 0; i < H; i++) {
        let d = 0; // (B @ A)[o, i]
        for (let r = 0; r < 3; r++) d += head.b[o * 3 + r]! * head.a[r * H + i]!;
        expect(headMerged[o * H + i]).toBe(Math.fround(E[o * H + i]! + sH * d));
      }
    }
  });

  it('unmerged LoRA in the reference model matches the merged model', () => {
    const lora = toReferenceLora(adapter);
    for (const c of g.cases.filter((x) => x.adapter === null)) {
      const base = model.forward(model.newSequence(), c.prompt_ids, 0);
      const unmerged = model.forward(model.newSequence(lora), c.prompt_ids, 0);
      const viaMerge = merged.forward(merged.newSequence(), c.prompt_ids, 0);
      const maxAbs = Math.max(...unmerged.map(Math.abs));
      // The two differ only by f32 rounding: each merged weight is rounded once (2^-24 relative) where the unmerged
      // path rounds its rank-r shrink instead; both feed f64-accumulated dot products, so the logits move by a few
      // 2^-24 · max|logit| (measured: at most 2.1 of them over these prompts). 64 of them leaves room for other
      // prompts while staying far below the adapter's own effect (checked next: > 1000 x tol).
      const tol = 2 ** -24 * 64 * maxAbs;
      let worst = 0;
      unmerged.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - viaMerge[i]!))));
      const effect = Math.max(...unmerged.map((v, i) => Math.abs(v - base[i]!)));
      expect(worst, `${c.name}: max |unmerged - merged| ${worst} vs tol ${tol}`).toBeLessThanOrEqual(tol);
      expect(effect, `${c.name}: the adapter must change the logits far beyond the tolerance`).toBeGreaterThan(1000 * tol);
    }
  });

  it('greedy continuations agree between the unmerged and the merged model', () => {
    const lora = toReferenceLora(adapter);
    for (const c of g.cases.filter((x) => x.adapter === null)) {
      const a = generate(model, c.prompt_ids, 24, lora);
      const b = generate(merged, c.prompt_ids, 24, null);
      firstMismatch(c.name, a, b);
      expect(a).toEqual(b);
    }
  });

  it('the embedding LoRA alone changes only the lookup, the lm_head LoRA only the logits', () => {
    const only = (path: string): ReferenceLora => new Map([[path, toReferenceLora(adapter).get(path)!]]);
    const prompt = g.cases[0]!.prompt_ids;
    const tr = (lora: ReferenceLora | null) => {
      const first: Float32Array[] = [];
      const logits = model.forward(model.newSequence(lora), prompt, 0, (point, layer, values) => {
        if (point === 'attn_in' && layer === 0) first.push(values.slice());
      });
      return { attnIn: first[0]!, logits };
    };
    const base = tr(null);
    const e = tr(only('model.embed_tokens'));
    const h = tr(only('lm_head'));
    expect(e.attnIn).not.toEqual(base.attnIn);
    expect(h.attnIn).toEqual(base.attnIn);
    expect(h.logits).not.toEqual(base.logits);
  });
});
