// ReferenceModel's KV cache and architecture variants. Prefill, chunked prefill, decode and rewind must give the
// same logits: the reference computes each token's row with the same operations in the same order whether it
// arrives in a batch or alone (per-row loops, keys read from the cache in position order), so the results are
// bit-identical and the tolerance is 0 — any difference is a cache or position bug, not rounding.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, openSafetensors, type SafetensorsCheckpoint } from '../../src/io/checkpoint.js';
import { writeSafetensors } from '../../src/io/safetensors-write.js';
import { memorySource } from '../../src/io/source.js';
import { parseModelConfig } from '../../src/model/config.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { expectedTensors, validateWeights } from '../../src/model/weights-spec.js';
import { ReferenceModel, type ReferenceSequence } from '../../src/reference/model.js';
import { golden, sharedTree } from '../helpers/shared.js';

/** Index and values of the first differing element, or null. */
function firstDiff(a: Float32Array, b: Float32Array): string | null {
  if (a.length !== b.length) return `lengths ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return `[${i}] ${a[i]} vs ${b[i]}`;
  return null;
}

/** Logits of `ids` fed in chunks of the given sizes (the last size repeats), rows concatenated. */
function runChunked(model: ReferenceModel, seq: ReferenceSequence, ids: readonly number[], sizes: number[]): Float32Array {
  const vocab = model.config.vocabSize;
  const out = new Float32Array(ids.length * vocab);
  let pos = 0;
  for (let c = 0; pos < ids.length; c++) {
    const n = Math.min(sizes[Math.min(c, sizes.length - 1)]!, ids.length - pos);
    out.set(model.forward(seq, ids.slice(pos, pos + n), pos), pos * vocab);
    pos += n;
  }
  return out;
}

describe('TinyStories-656K: prefill vs incremental decode', () => {
  let ckpt: SafetensorsCheckpoint;
  let model: ReferenceModel;
  const c = golden().cases.find((x) => x.adapter === null)!;
  const ids = [...c.prompt_ids, ...c.expected_ids]; // a real greedy path, 39 tokens

  beforeAll(async () => {
    const tree = await sharedTree(golden().model_path);
    const { config } = parseModelConfig(JSON.parse(await tree.text('config.json')), 'config.json');
    ckpt = await openCheckpoint(tree);
    model = await ReferenceModel.load(config, ckpt);
  });
  afterAll(async () => {
    await ckpt?.close();
  });

  it('one full forward = prompt prefill + one-token decode steps = chunks of 5 (bit-identical)', () => {
    const full = model.forward(model.newSequence(), ids, 0);
    const stepwise = runChunked(model, model.newSequence(), ids, [c.prompt_ids.length, 1]);
    const chunks = runChunked(model, model.newSequence(), ids, [5]);
    expect(firstDiff(full, stepwise)).toBeNull();
    expect(firstDiff(full, chunks)).toBeNull();
  });

  it('rewinding to an earlier startPos drops the cached suffix', () => {
    const vocab = model.config.vocabSize;
    const seq = model.newSequence();
    const full = model.forward(seq, ids, 0);
    expect(seq.length).toBe(ids.length);
    // Re-run the last 10 tokens, then branch at position 20 with different tokens and come back.
    const again = model.forward(seq, ids.slice(-10), ids.length - 10);
    expect(firstDiff(again, full.subarray((ids.length - 10) * vocab))).toBeNull();
    model.forward(seq, [5, 6, 7], 20);
    expect(seq.length).toBe(23);
    const back = model.forward(seq, ids.slice(20), 20);
    expect(firstDiff(back, full.subarray(20 * vocab))).toBeNull();
    expect(() => model.forward(seq, [1], ids.length + 1)).toThrow(/startPos/);
  });

  it('trace reports every activation with its shape; k rows are what the cache holds', () => {
    const cfg = model.config;
    const seen = new Map<string, number>();
    const seq = model.newSequence();
    const n = 6;
    let k0: Float32Array | null = null;
    model.forward(seq, ids.slice(0, n), 0, (point, layer, values) => {
      seen.set(`${point}@${layer}`, values.length / n);
      if (point === 'k' && layer === 0) k0 = values.slice();
    });
    const q = cfg.numHeads * cfg.headDim;
    const kv = cfg.numKvHeads * cfg.headDim;
    const h = cfg.hiddenSize;
    const perLayer = { attn_in: h, q, k: kv, v: kv, attn: q, attn_out: h, mlp_in: h, mlp_act: cfg.intermediateSize, mlp_out: h, residual: h };
    const want = new Map<string, number>([['final_norm@-1', h]]);
    for (let l = 0; l < cfg.numLayers; l++) for (const [p, w] of Object.entries(perLayer)) want.set(`${p}@${l}`, w);
    expect(new Map([...seen].sort())).toEqual(new Map([...want].sort()));
    for (let t = 0; t < n; t++) expect([...seq.keys[0]![t]!]).toEqual([...k0!.subarray(t * kv, (t + 1) * kv)]);
  });

  it('a bad token id is refused before the cache changes', () => {
    const seq = model.newSequence();
    model.forward(seq, ids.slice(0, 4), 0);
    expect(() => model.forward(seq, [3, model.config.vocabSize], 2)).toThrow(/token id out of range/);
    expect(seq.length).toBe(4);
  });

  it('the position matters: the same tokens at other positions give other logits', () => {
    const a = model.forward(model.newSequence(), ids.slice(0, 8), 0);
    const seq = model.newSequence();
    model.forward(seq, [1, 1, 1], 0);
    const b = model.forward(seq, ids.slice(0, 8), 3);
    expect(firstDiff(a, b)).not.toBeNull();
  });
});

/**
 * A small random model of any architecture, stored as an in-memory safetensors checkpoint. Each tensor's values
 * depend only on its name and `seed`, so two architectures share the values of the tensors they share.
 * `edit` may change values before they are stored.
 */
async function syntheticModel(
  json: Record<string, unknown>,
  seed: number,
  edit?: (name: string, values: Float32Array) => void,
): Promise<{ config: ModelConfig; ckpt: SafetensorsCheckpoint; model: ReferenceModel }> {
  const { config } = parseModelConfig(json, 'synthetic/config.json');
  const tensors = expectedTensors(config)
    .filter((t) => !t.optional)
    .map((t) => {
      let a = seed >>> 0;
      for (const ch of t.name) a = (Math.imul(a ^ ch.charCodeAt(0), 16777619) + 1) >>> 0;
      const rand = (): number => {
        a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
        return a / 4294967296 - 0.5;
      };
      const n = t.shape.reduce((x, y) => x * y, 1);
      const isNorm = t.shape.length === 1 && !t.name.endsWith('.bias');
      const v = Float32Array.from({ length: n }, () => (isNorm ? 1 + 0.2 * rand() : 0.4 * rand()));
      edit?.(t.name, v);
      return { name: t.name, dtype: 'F32' as const, shape: t.shape, data: new Uint8Array(v.buffer) };
    });
  const ckpt = await openSafetensors(memorySource('synthetic/model.safetensors', writeSafetensors(tensors)));
  validateWeights(config, ckpt);
  return { config, ckpt, model: await ReferenceModel.load(config, ckpt) };
}

const small = { hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 6, num_key_value_heads: 2, vocab_size: 50, rms_norm_eps: 1e-6 };
const ids = Array.from({ length: 13 }, (_, i) => (i * 17 + 3) % 50);

async function logitsOf(json: Record<string, unknown>, edit?: (name: string, values: Float32Array) => void): Promise<Float32Array> {
  const { ckpt, model } = await syntheticModel(json, 42, edit);
  const out = model.forward(model.newSequence(), ids, 0);
  await ckpt.close();
  return out;
}

describe('architecture variants on small random models', () => {
  for (const [name, json] of [
    ['qwen2 (q/k/v bias)', { ...small, model_type: 'qwen2' }],
    ['qwen3 (q/k norm, head_dim 6 != hidden/heads)', { ...small, model_type: 'qwen3', head_dim: 6 }],
    ['llama (attention_bias on o_proj too, llama3 rope)', { ...small, model_type: 'llama', attention_bias: true, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } }],
    ['mistral (sliding window 4)', { ...small, model_type: 'mistral', sliding_window: 4 }],
  ] as const) {
    it(`${name}: prefill = decode steps, bit-identical`, async () => {
      const { ckpt, model } = await syntheticModel(json, 42);
      const full = model.forward(model.newSequence(), ids, 0);
      const steps = runChunked(model, model.newSequence(), ids, [4, 1]);
      expect(firstDiff(full, steps)).toBeNull();
      expect(full.every(Number.isFinite)).toBe(true);
      await ckpt.close();
    });
  }

  it('sliding window: a token more than layers·(window-1) positions back has no influence', async () => {
    const window = 3;
    const { config, ckpt, model } = await syntheticModel({ ...small, model_type: 'mistral', sliding_window: window }, 7);
    const reach = config.numLayers * (window - 1); // each layer looks window-1 positions further back
    const seqIds = ids.slice(0, reach + 3);
    const changed = [(seqIds[0]! + 1) % 50, ...seqIds.slice(1)];
    const a = model.forward(model.newSequence(), seqIds, 0);
    const b = model.forward(model.newSequence(), changed, 0);
    const v = config.vocabSize;
    // Position `reach` still sees position 0 (through the layers); later ones must not.
    expect(firstDiff(a.subarray(reach * v, (reach + 1) * v), b.subarray(reach * v, (reach + 1) * v))).not.toBeNull();
    expect(firstDiff(a.subarray((reach + 1) * v), b.subarray((reach + 1) * v))).toBeNull();
    await ckpt.close();
  });

  it('qwen2 = llama plus q/k/v biases: zero biases give the llama logits exactly, others do not', async () => {
    const llama = await logitsOf({ ...small, model_type: 'llama' });
    const zeroBias = await logitsOf({ ...small, model_type: 'qwen2' }, (name, v) => name.endsWith('.bias') && v.fill(0));
    const withBias = await logitsOf({ ...small, model_type: 'qwen2' });
    expect(firstDiff(zeroBias, llama)).toBeNull();
    expect(firstDiff(withBias, llama)).not.toBeNull();
  });

  it('qwen3 q/k norms: doubling q_proj and k_proj changes nothing (it would in llama)', async () => {
    // With eps ~0 every step of RMSNorm(2x) is exactly RMSNorm(x) in f32 (powers of two scale exactly).
    const double = (name: string, v: Float32Array): void => {
      if (/\.(q|k)_proj\.weight$/.test(name)) for (let i = 0; i < v.length; i++) v[i]! *= 2;
    };
    const qwen3 = { ...small, model_type: 'qwen3', head_dim: 6, rms_norm_eps: 1e-30 };
    expect(firstDiff(await logitsOf(qwen3, double), await logitsOf(qwen3))).toBeNull();
    const llama = { ...small, model_type: 'llama', rms_norm_eps: 1e-30 };
    expect(firstDiff(await logitsOf(llama, double), await logitsOf(llama))).not.toBeNull();
  });
});
