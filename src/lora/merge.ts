// Merging a LoRA adapter into its base: W' = W + s·B·A for every adapted module, written as a new model folder
// (model.safetensors, a cleaned config.json, the tokenizer and generation files). Platform-neutral: files go to a
// MergeSink (a directory in Node's CLI, memory in tests or a browser).
//
// Numerics: W, A and B are widened to f32; each W'[o, i] = W[o, i] + s · Σ_r B[o, r]·A[r, i] is computed in f64
// and rounded once to the output dtype (f32 directly; f16 / bf16 through a round-to-odd f32, which makes the
// two-step rounding equal to one correct rounding since f32 has at least 2 more mantissa bits than either).
// The embedding follows peft's Embedding LoRA (adapter.ts): E'[t, j] = E[t, j] + s · Σ_r B[j, r]·A[r, t].
//
// Tied embeddings: with tie_word_embeddings the model reads both the input embedding and the output projection
// from one matrix E. An unmerged LoRA on embed_tokens changes only the lookup and one on lm_head only the logits,
// so merging either into the shared matrix would change the other too. The merged model is therefore untied when
// the adapter touches either: both `model.embed_tokens.weight` (E + ΔE) and `lm_head.weight` (E + Δhead) are
// written, the alias between them is dropped from the metadata, and config.json gets tie_word_embeddings: false.
//
// Output is one model.safetensors of any size (safetensors offsets are 64-bit); sharding is not done.

import { PolyloraError } from '../errors.js';
import { openCheckpoint, isComputeDType, type SafetensorsCheckpoint } from '../io/checkpoint.js';
import { DTYPE_BYTES, f32ToBf16, f32ToF16, fromFloat32, type DType } from '../io/dtype.js';
import type { SafetensorsDType } from '../io/safetensors.js';
import { layoutSafetensors } from '../io/safetensors-write.js';
import type { FileTree } from '../io/source.js';
import type { ModelConfig } from '../model/config-types.js';
import { parseModelConfig } from '../model/config.js';
import { EMBED_TOKENS, LM_HEAD, resolveWeightNames, validateWeights } from '../model/weights-spec.js';
import { loadLoraAdapter, loraFloat32, type LoraAdapter, type LoraModule } from './adapter.js';

export interface MergeOptions {
  /** Multiplies every module's scale (default 1). */
  scale?: number;
  /** Dtype of every floating-point tensor written; default: each tensor keeps the base's dtype. */
  dtype?: DType;
}

/** One tensor of the merged checkpoint; its bytes are computed when read (one tensor in memory at a time). */
export interface MergedTensor {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  byteLength: number;
  /** True when the adapter changed it. */
  merged: boolean;
  read(): Promise<Uint8Array>;
}

export interface MergedWeights {
  tensors: MergedTensor[];
  /** The base's `__metadata__`, minus the embed/lm_head alias when untied. */
  metadata: Record<string, string>;
  /** The base tied its embeddings and the adapter touched embed_tokens or lm_head: both are written separately. */
  untied: boolean;
  /** The single floating-point dtype of the written tensors, or null when they are mixed. */
  dtype: DType | null;
}

/**
 * Plans W' = W + scale·s·B·A for every module of `adapter` on the (validated) base checkpoint. `adapter` must
 * have been loaded against `config`. Nothing is computed until a tensor is read; the checkpoint must stay open
 * until then.
 */
export function mergeAdapter(base: SafetensorsCheckpoint, config: ModelConfig, adapter: LoraAdapter, options: MergeOptions = {}): MergedWeights {
  const mult = options.scale ?? 1;
  if (!Number.isFinite(mult)) {
    throw new PolyloraError('INVALID_ARGUMENT', 'merge scale must be a finite number', { field: 'scale', found: String(mult) });
  }
  const outDType = (d: SafetensorsDType): SafetensorsDType => (options.dtype !== undefined && isComputeDType(d) ? options.dtype : d);
  const byWeight = new Map<string, LoraModule>();
  for (const m of adapter.modules.values()) {
    if (m.kind === 'linear') byWeight.set(`${m.path}.weight`, m);
  }
  const embedLora = adapter.modules.get('model.embed_tokens');
  const headLora = adapter.modules.get('lm_head');
  const names = resolveWeightNames(config, base);
  const untied = config.tieWordEmbeddings && (embedLora !== undefined || headLora !== undefined);

  const tensors: MergedTensor[] = [];
  const planned = (name: string, source: string, lora: LoraModule | undefined, embedding: boolean): MergedTensor => {
    const info = base.info(source);
    const dtype = outDType(info.dtype) as DType;
    if (lora) checkFits(base, source, info.shape, lora, embedding);
    return {
      name,
      dtype,
      shape: info.shape,
      byteLength: (info.byteLength / DTYPE_BYTES[info.dtype]) * DTYPE_BYTES[dtype],
      merged: lora !== undefined,
      async read() {
        if (!lora && info.dtype === dtype) return base.bytes(source);
        const w = await base.float32(source);
        return lora ? mergeWeight(w, lora, lora.scale * mult, embedding, dtype) : fromFloat32(w, dtype);
      },
    };
  };
  for (const s of base.stored.values()) {
    if (untied && (s.name === EMBED_TOKENS || s.name === LM_HEAD)) continue;
    if (!isComputeDType(s.dtype)) {
      tensors.push({ name: s.name, dtype: s.dtype, shape: s.shape, byteLength: s.byteLength, merged: false, read: () => base.rawBytes(s.name) });
      continue;
    }
    const isEmbed = !config.tieWordEmbeddings && s.name === EMBED_TOKENS;
    tensors.push(planned(s.name, s.name, isEmbed ? embedLora : byWeight.get(s.name), isEmbed));
  }
  const metadata = { ...base.metadata };
  if (untied) {
    tensors.push(planned(EMBED_TOKENS, names.embed, embedLora, true));
    tensors.push(planned(LM_HEAD, names.embed, headLora, false));
    for (const [alias, target] of base.aliases) {
      if ([EMBED_TOKENS, LM_HEAD].includes(alias) || [EMBED_TOKENS, LM_HEAD].includes(target)) delete metadata[alias];
    }
  }
  const applied = new Set(tensors.filter((t) => t.merged).map((t) => t.name));
  for (const m of adapter.modules.values()) {
    const target = m.target === 'embed_tokens' ? EMBED_TOKENS : `${m.path}.weight`;
    if (!applied.has(target)) {
      throw new PolyloraError('WEIGHTS_MISMATCH', 'adapter module has no stored base weight to merge into', {
        file: base.label,
        tensor: target,
        expected: `a stored tensor "${target}"`,
        found: base.aliases.has(target) ? `an alias of "${base.aliases.get(target)}"` : 'nothing',
        hint: 'validate the base with validateWeights and load the adapter against its config before merging',
      });
    }
  }
  const dtypes = new Set(tensors.filter((t) => isComputeDType(t.dtype)).map((t) => t.dtype as DType));
  return { tensors, metadata, untied, dtype: dtypes.size === 1 ? [...dtypes][0]! : null };
}

/** The merged checkpoint as one safetensors file, in pieces: the header, then each tensor's bytes in file order. */
export async function* safetensorsChunks(merged: MergedWeights): AsyncGenerator<Uint8Array> {
  const { prefix, order } = layoutSafetensors(merged.tensors, merged.metadata);
  yield prefix;
  for (const i of order) {
    const t = merged.tensors[i]!;
    const bytes = await t.read();
    if (bytes.byteLength !== t.byteLength) {
      throw new PolyloraError('SAFETENSORS_INVALID', 'merged tensor has the wrong length', { tensor: t.name, expected: `${t.byteLength} bytes`, found: `${bytes.byteLength} bytes` });
    }
    yield bytes;
  }
}

const TORCH_DTYPE: Record<DType, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * The merged model's config.json: the base's, without quantization_config, with torch_dtype (and transformers
 * v5's `dtype`, when present) set to the written dtype, and tie_word_embeddings false when untied.
 */
export function mergedConfigJson(baseConfig: Readonly<Record<string, unknown>>, merged: MergedWeights): Record<string, unknown> {
  const out: Record<string, unknown> = { ...baseConfig };
  delete out.quantization_config;
  if (merged.dtype !== null) {
    out.torch_dtype = TORCH_DTYPE[merged.dtype];
    if ('dtype' in out) out.dtype = TORCH_DTYPE[merged.dtype];
  }
  if (merged.untied) out.tie_word_embeddings = false;
  return out;
}

/** Files of a model folder that are copied unchanged into the merged folder, when the base has them. */
export const COPIED_MODEL_FILES: readonly string[] = [
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'added_tokens.json',
  'chat_template.jinja',
  'chat_template.json',
];

/** Where a merged folder's files go. `writeFile` is called once per file. */
export interface MergeSink {
  writeFile(name: string, data: Uint8Array | string | AsyncIterable<Uint8Array>): Promise<void>;
}

export interface MergeReport {
  /** The adapter as loaded (its warnings included). */
  adapter: LoraAdapter;
  /** Names of the tensors the adapter changed. */
  mergedTensors: string[];
  untied: boolean;
  /** Files written, in order. */
  files: string[];
  /** Base config and adapter warnings. */
  warnings: string[];
}

/**
 * Reads the base folder and the adapter folder, validates both (base weights with validateWeights, adapter
 * against the base's config), and writes the merged model folder into `sink`: model.safetensors, config.json,
 * and the COPIED_MODEL_FILES the base has. `baseName` (default: the base folder's label) is compared loosely with
 * the adapter's base_model_name_or_path; `adapterName` (default: from the adapter folder's label) names it in the report.
 */
export async function mergeModelFolder(
  baseTree: FileTree,
  adapterTree: FileTree,
  sink: MergeSink,
  options: MergeOptions & { baseName?: string; adapterName?: string } = {},
): Promise<MergeReport> {
  const configFile = `${baseTree.label}/config.json`;
  let raw: unknown;
  try {
    raw = JSON.parse(await baseTree.text('config.json'));
  } catch (e) {
    if (e instanceof PolyloraError) throw e;
    throw new PolyloraError('CONFIG_INVALID', 'not valid JSON', { file: configFile, found: (e as Error).message });
  }
  const { config, warnings, quantizationMethod } = parseModelConfig(raw, configFile);
  const ckpt = await openCheckpoint(baseTree);
  try {
    validateWeights(config, ckpt, quantizationMethod);
    const adapter = await loadLoraAdapter(adapterTree, config, { baseModelName: options.baseName ?? baseTree.label, name: options.adapterName });
    const merged = mergeAdapter(ckpt, config, adapter, options);
    const files: string[] = [];
    await sink.writeFile('model.safetensors', safetensorsChunks(merged));
    files.push('model.safetensors');
    await sink.writeFile('config.json', `${JSON.stringify(mergedConfigJson(raw as Record<string, unknown>, merged), null, 2)}\n`);
    files.push('config.json');
    for (const f of COPIED_MODEL_FILES) {
      if (!(await baseTree.has(f))) continue;
      const src = await baseTree.open(f);
      try {
        await sink.writeFile(f, await src.read(0, src.size));
      } finally {
        await src.close();
      }
      files.push(f);
    }
    return {
      adapter,
      mergedTensors: merged.tensors.filter((t) => t.merged).map((t) => t.name),
      untied: merged.untied,
      files,
      warnings: [...warnings, ...adapter.warnings],
    };
  } finally {
    await ckpt.close();
  }
}

/** The base weight's shape must be what the adapter was validated against (guards a config / checkpoint mix-up). */
function checkFits(base: SafetensorsCheckpoint, name: string, shape: readonly number[], lora: LoraModule, embedding: boolean): void {
  const want = embedding ? [lora.inFeatures, lora.outFeatures] : [lora.outFeatures, lora.inFeatures];
  if (shape.length !== 2 || shape[0] !== want[0] || shape[1] !== want[1]) {
    throw new PolyloraError('WEIGHTS_MISMATCH', 'base weight does not fit the adapter module', {
      file: base.label,
      tensor: name,
      expected: `[${want.join(', ')}] (from ${lora.a.name})`,
      found: `[${shape.join(', ')}]`,
      hint: 'load the adapter against the config of this checkpoint',
    });
  }
}

/**
 * W + s·ΔW, each element summed in f64 and rounded once into `dtype`; W [rows, cols] row-major. Linear: W [out, in],
 * ΔW[o, i] = Σ_r B[o, r]·A[r, i]. Embedding: W [vocab, hidden], ΔW[t, j] = Σ_r B[j, r]·A[r, t] (A [r, vocab],
 * B [hidden, r]). DoRA (Linear only): each row W[o] + s·ΔW[o] is then rescaled to length magnitude[o], as peft's
 * merge does. Memory: the output and one row.
 */
function mergeWeight(w: Float32Array, lora: LoraModule, s: number, embedding: boolean, dtype: DType): Uint8Array {
  const a = loraFloat32(lora.a); // [rank, in]
  const b = loraFloat32(lora.b); // [out, rank]
  const { rank, inFeatures, outFeatures } = lora;
  const out = outputArray(dtype, w.length);
  const store = rounder(dtype);
  const row = new Float64Array(inFeatures);
  for (let o = 0; o < outFeatures; o++) {
    let ss = 0;
    for (let i = 0; i < inFeatures; i++) {
      let d = 0;
      for (let r = 0; r < rank; r++) d += b[o * rank + r]! * a[r * inFeatures + i]!;
      row[i] = w[embedding ? i * outFeatures + o : o * inFeatures + i]! + s * d;
      ss += row[i]! * row[i]!;
    }
    const f = lora.magnitude ? lora.magnitude[o]! / Math.sqrt(ss) : 1;
    for (let i = 0; i < inFeatures; i++) out[embedding ? i * outFeatures + o : o * inFeatures + i] = store(row[i]! * f);
  }
  return new Uint8Array(out.buffer);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** x rounded to f32 with round-to-odd: exact values stay, inexact ones get an odd last mantissa bit. */
function roundToOddF32(x: number): number {
  const f = Math.fround(x);
  if (f === x || !Number.isFinite(f)) return f;
  if (f === 0) return x > 0 ? 2 ** -149 : -(2 ** -149);
  f32[0] = f;
  if ((u32[0]! & 1) === 0) u32[0] = u32[0]! + (Math.abs(x) > Math.abs(f) ? 1 : -1);
  return f32[0]!;
}

/**
 * One correct rounding (to nearest even) of an f64 value into `dtype`: for F32 the value itself (a Float32Array
 * store rounds it), for F16 / BF16 the 16-bit pattern, through a round-to-odd f32.
 */
function rounder(dtype: DType): (x: number) => number {
  if (dtype === 'F32') return (x) => x;
  const conv = dtype === 'BF16' ? f32ToBf16 : f32ToF16;
  return (x) => conv(roundToOddF32(x));
}

function outputArray(dtype: DType, n: number): Float32Array | Uint16Array {
  return dtype === 'F32' ? new Float32Array(n) : new Uint16Array(n);
}

/** f64 values -> little-endian bytes of `dtype`, each correctly rounded (to nearest even) exactly once. */
export function roundOnce(x: Float64Array, dtype: DType): Uint8Array {
  const out = outputArray(dtype, x.length);
  const store = rounder(dtype);
  for (let i = 0; i < x.length; i++) out[i] = store(x[i]!);
  return new Uint8Array(out.buffer);
}
