// Building PEFT adapters in memory for the LoRA tests: a small base config, seeded random LoRA matrices, tensors
// named as peft's save_pretrained names them, and an in-memory MergeSink.
import { fromFloat32, toFloat32, type DType } from '../../src/io/dtype.js';
import type { TensorToWrite } from '../../src/io/safetensors-write.js';
import { writeSafetensors } from '../../src/io/safetensors-write.js';
import { memoryTree, type FileTree } from '../../src/io/source.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { parseModelConfig } from '../../src/model/config.js';
import type { MergeSink } from '../../src/lora/merge.js';

/**
 * A llama base of 2 layers small enough to write adapters for by hand: hidden 8, intermediate 12, 2 query heads /
 * 1 KV head of 4, vocab 16. [out, in]: q/o [8, 8], k/v [4, 8], gate/up [12, 8], down [8, 12], lm_head [16, 8].
 */
export function tinyConfig(overrides: Record<string, unknown> = {}): ModelConfig {
  const json = {
    model_type: 'llama',
    hidden_size: 8,
    intermediate_size: 12,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    vocab_size: 16,
    tie_word_embeddings: false,
    ...overrides,
  };
  return parseModelConfig(json, 'tiny/config.json').config;
}

/** A plain adapter_config.json, as peft 0.x writes it, with `overrides` applied. */
export function peftConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    alpha_pattern: {},
    base_model_name_or_path: 'org/tiny',
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: 8,
    lora_dropout: 0,
    modules_to_save: null,
    peft_type: 'LORA',
    r: 4,
    rank_pattern: {},
    target_modules: ['q_proj', 'v_proj'],
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: false,
    ...overrides,
  };
}

/** mulberry32: a fixed-seed uniform generator in [0, 1). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` values uniform in [-scale, scale), rounded to `dtype` (so they survive a round trip through the file exactly). */
export function randomValues(n: number, seed: number, scale = 0.5, dtype: DType = 'F32'): Float32Array {
  const next = rng(seed);
  const x = Float32Array.from({ length: n }, () => (2 * next() - 1) * scale);
  return dtype === 'F32' ? x : toFloat32(fromFloat32(x, dtype), dtype);
}

export interface LoraSpec {
  /** Module path, e.g. `model.layers.0.self_attn.q_proj`, `lm_head`, `model.embed_tokens`. */
  module: string;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  /** embed_tokens naming (lora_embedding_A/B, no `.weight`). */
  embedding?: boolean;
  /** The `.default` segment peft writes when an adapter name is kept. */
  adapterName?: string;
  dtype?: DType;
  seed?: number;
  /** Replace A [rank, in] by these values. */
  a?: Float32Array;
  b?: Float32Array;
  /** Shape overrides, to build wrong files. */
  aShape?: number[];
  bShape?: number[];
}

/** lora_A / lora_B tensors of one module, named as peft saves them. Returns the tensors and the f32 values written. */
export function loraTensors(spec: LoraSpec): { tensors: TensorToWrite[]; a: Float32Array; b: Float32Array } {
  const dtype = spec.dtype ?? 'F32';
  const seed = spec.seed ?? 1;
  const aShape = spec.aShape ?? [spec.rank, spec.inFeatures];
  const bShape = spec.bShape ?? [spec.outFeatures, spec.rank];
  const a = spec.a ?? randomValues(aShape[0]! * aShape[1]!, seed, 0.5, dtype);
  const b = spec.b ?? randomValues(bShape[0]! * bShape[1]!, seed + 1000, 0.5, dtype);
  const seg = spec.adapterName ? `.${spec.adapterName}` : '';
  const name = (role: 'A' | 'B'): string =>
    spec.embedding ? `base_model.model.${spec.module}.lora_embedding_${role}${seg}` : `base_model.model.${spec.module}.lora_${role}${seg}.weight`;
  return {
    tensors: [
      { name: name('A'), dtype, shape: aShape, data: fromFloat32(a, dtype) },
      { name: name('B'), dtype, shape: bShape, data: fromFloat32(b, dtype) },
    ],
    a,
    b,
  };
}

/** An adapter folder in memory: adapter_config.json (+ adapter_model.safetensors unless `weights` is null). */
export function adapterTree(config: Record<string, unknown>, tensors: TensorToWrite[] | null, label = 'mem/tiny-adapter', extra: Record<string, Uint8Array | string> = {}): FileTree {
  const files: Record<string, Uint8Array | string> = { 'adapter_config.json': JSON.stringify(config), ...extra };
  if (tensors) files['adapter_model.safetensors'] = writeSafetensors(tensors, { format: 'pt' });
  return memoryTree(label, files);
}

/** The seven projections' [out, in] for tinyConfig(). */
export const TINY_SHAPES: Record<string, [number, number]> = {
  'self_attn.q_proj': [8, 8],
  'self_attn.k_proj': [4, 8],
  'self_attn.v_proj': [4, 8],
  'self_attn.o_proj': [8, 8],
  'mlp.gate_proj': [12, 8],
  'mlp.up_proj': [12, 8],
  'mlp.down_proj': [8, 12],
};

/** Tensors of rank `rank` for `modules` (names in TINY_SHAPES) in every layer of `layers`. */
export function tinyLoras(modules: string[], layers: number[], rank: number, dtype: DType = 'F32'): TensorToWrite[] {
  const out: TensorToWrite[] = [];
  let seed = 1;
  for (const l of layers) {
    for (const m of modules) {
      const [outFeatures, inFeatures] = TINY_SHAPES[m]!;
      out.push(...loraTensors({ module: `model.layers.${l}.${m}`, rank, inFeatures, outFeatures, dtype, seed: seed++ }).tensors);
    }
  }
  return out;
}

/** A MergeSink that keeps every file in memory; `tree()` opens them as a model folder. */
export function memorySink(label = 'mem/merged'): { sink: MergeSink; files: Record<string, Uint8Array | string>; tree(): FileTree } {
  const files: Record<string, Uint8Array | string> = {};
  return {
    files,
    sink: {
      async writeFile(name, data) {
        if (typeof data === 'string' || data instanceof Uint8Array) {
          files[name] = data;
          return;
        }
        const chunks: Uint8Array[] = [];
        for await (const c of data) chunks.push(c.slice());
        const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
        let at = 0;
        for (const c of chunks) {
          out.set(c, at);
          at += c.byteLength;
        }
        files[name] = out;
      },
    },
    tree: () => memoryTree(label, files),
  };
}
