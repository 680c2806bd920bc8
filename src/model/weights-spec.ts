// Which tensors a model of a given config must have (Hugging Face names and shapes), and the load-time check of
// a checkpoint against that list: missing, mis-shaped, unexpected and quantized tensors are refused with the
// tensor's name, both shapes and a hint.

import { PolyloraError, type ErrorDetails } from '../errors.js';
import type { Checkpoint } from '../io/checkpoint-types.js';
import { isComputeDType, type SafetensorsCheckpoint } from '../io/checkpoint.js';
import type { ModelConfig } from './config-types.js';

export interface ExpectedTensor {
  /** Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  name: string;
  /** Row-major; a Linear weight is [out, in]. */
  shape: number[];
  /** May be absent (lm_head.weight of a model with tied embeddings). */
  optional?: boolean;
}

/** The linear projections of one decoder layer, by their HF module name under `model.layers.{i}.`. */
export const LINEAR_MODULES = [
  'self_attn.q_proj',
  'self_attn.k_proj',
  'self_attn.v_proj',
  'self_attn.o_proj',
  'mlp.gate_proj',
  'mlp.up_proj',
  'mlp.down_proj',
] as const;
export type LinearModule = (typeof LINEAR_MODULES)[number];

/** [out, in] of a layer's linear projection. */
export function linearShape(config: ModelConfig, module: LinearModule): [number, number] {
  const { hiddenSize: h, intermediateSize: f, numHeads, numKvHeads, headDim } = config;
  switch (module) {
    case 'self_attn.q_proj':
      return [numHeads * headDim, h];
    case 'self_attn.k_proj':
    case 'self_attn.v_proj':
      return [numKvHeads * headDim, h];
    case 'self_attn.o_proj':
      return [h, numHeads * headDim];
    case 'mlp.gate_proj':
    case 'mlp.up_proj':
      return [f, h];
    case 'mlp.down_proj':
      return [h, f];
  }
}

/** True when the module carries a bias vector of length out. */
export function linearHasBias(config: ModelConfig, module: LinearModule): boolean {
  if (module === 'self_attn.q_proj' || module === 'self_attn.k_proj' || module === 'self_attn.v_proj') return config.attentionBias;
  if (module === 'self_attn.o_proj') return config.oProjBias;
  return false;
}

export const EMBED_TOKENS = 'model.embed_tokens.weight';
export const LM_HEAD = 'lm_head.weight';
export const FINAL_NORM = 'model.norm.weight';

export function layerPrefix(layer: number): string {
  return `model.layers.${layer}.`;
}

/** Every tensor the forward pass reads, in file order (embedding, layers, final norm, lm_head). */
export function expectedTensors(config: ModelConfig): ExpectedTensor[] {
  const { hiddenSize: h, vocabSize, headDim } = config;
  const out: ExpectedTensor[] = [{ name: EMBED_TOKENS, shape: [vocabSize, h] }];
  for (let i = 0; i < config.numLayers; i++) {
    const p = layerPrefix(i);
    out.push({ name: `${p}input_layernorm.weight`, shape: [h] });
    for (const m of LINEAR_MODULES) {
      const shape = linearShape(config, m);
      out.push({ name: `${p}${m}.weight`, shape });
      if (linearHasBias(config, m)) out.push({ name: `${p}${m}.bias`, shape: [shape[0]] });
    }
    if (config.qkNorm) {
      out.push({ name: `${p}self_attn.q_norm.weight`, shape: [headDim] });
      out.push({ name: `${p}self_attn.k_norm.weight`, shape: [headDim] });
    }
    out.push({ name: `${p}post_attention_layernorm.weight`, shape: [h] });
  }
  out.push({ name: FINAL_NORM, shape: [h] });
  out.push(config.tieWordEmbeddings ? { name: LM_HEAD, shape: [vocabSize, h], optional: true } : { name: LM_HEAD, shape: [vocabSize, h] });
  return out;
}

/**
 * Where the embedding and the output projection are read from. With tied embeddings both are the embedding
 * matrix; a tied checkpoint that stores only `lm_head.weight` (and no alias for the embedding) is read from
 * there. Call after validateWeights.
 */
export function resolveWeightNames(config: ModelConfig, ckpt: Checkpoint): { embed: string; lmHead: string } {
  if (!config.tieWordEmbeddings) return { embed: EMBED_TOKENS, lmHead: LM_HEAD };
  const embed = ckpt.tensors.has(EMBED_TOKENS) ? EMBED_TOKENS : LM_HEAD;
  return { embed, lmHead: embed };
}

/** Buffers some exporters save that the forward pass recomputes; present or not, they are ignored. */
const HARMLESS = [/^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/, /^model\.rotary_emb\.inv_freq$/];

/** Tensor-name endings that only quantized checkpoints have (GPTQ/AWQ, bitsandbytes, fp8/compressed-tensors). */
const QUANTIZED_SUFFIXES = ['.qweight', '.qzeros', '.scales', '.g_idx', '.absmax', '.quant_map', '.nested_absmax', '.nested_quant_map', '.SCB', '.weight_scale', '.weight_scale_inv', '.input_scale', '.weight_packed'];
const QUANTIZED_INFIX = '.quant_state.';

const shapeStr = (s: readonly number[]): string => `[${s.join(', ')}]`;

interface Problem {
  what: string;
  d: ErrorDetails;
}

/** One WEIGHTS_MISMATCH error for the first problem; its message counts and names a few of the others. */
function throwProblems(problems: readonly Problem[]): void {
  if (problems.length === 0) return;
  const { what, d } = problems[0]!;
  const rest = problems.slice(1);
  const more = rest.length ? ` (and ${rest.length} more: ${rest.slice(0, 3).map((p) => p.d.tensor).join(', ')}${rest.length > 3 ? ', ...' : ''})` : '';
  throw new PolyloraError('WEIGHTS_MISMATCH', what + more, d);
}

function configHint(config: ModelConfig): string {
  return `maybe wrong base model? config.json says ${config.arch}, hidden_size ${config.hiddenSize}, ${config.numLayers} layers, ${config.numHeads}/${config.numKvHeads} heads of ${config.headDim}, vocab ${config.vocabSize}`;
}

function shapeProblems(config: ModelConfig, ckpt: Checkpoint): Problem[] {
  const problems: Problem[] = [];
  const hint = configHint(config);
  for (const t of expectedTensors(config)) {
    const found = ckpt.tensors.get(t.name);
    if (!found) {
      const tiedFromHead = t.name === EMBED_TOKENS && config.tieWordEmbeddings && ckpt.tensors.has(LM_HEAD);
      if (t.optional || tiedFromHead) continue;
      problems.push({ what: 'tensor missing from the checkpoint', d: { file: ckpt.label, tensor: t.name, expected: `shape ${shapeStr(t.shape)}`, found: 'nothing', hint } });
    } else if (found.shape.length !== t.shape.length || found.shape.some((d, i) => d !== t.shape[i])) {
      problems.push({ what: 'tensor has the wrong shape', d: { file: found.file, tensor: t.name, expected: shapeStr(t.shape), found: shapeStr(found.shape), hint } });
    }
  }
  return problems;
}

/**
 * Every tensor the forward pass reads is present (as F32/F16/BF16) with its exact shape. Throws
 * WEIGHTS_MISMATCH naming the first problem. What ReferenceModel.load checks; validateWeights checks more.
 */
export function checkTensorShapes(config: ModelConfig, ckpt: Checkpoint): void {
  throwProblems(shapeProblems(config, ckpt));
}

/**
 * The load-time check of a checkpoint against expectedTensors(config). In this order:
 * 1. quantized checkpoints are refused: quantization tensors by name (*.qweight, *.scales, *.absmax, ...) or
 *    stored tensors that are not F32/F16/BF16 (I8, U8, I32, F8_*, ...);
 * 2. every required tensor present with its exact shape;
 * 3. nothing unexpected, except buffers the forward pass recomputes (rotary inv_freq).
 * Throws WEIGHTS_MISMATCH naming the first problem (the message counts the others). `quantizationMethod` is
 * parseModelConfig's, for the message: with a quantization_config but plain float tensors (a merged export),
 * this passes and the config's warning is all.
 */
export function validateWeights(config: ModelConfig, ckpt: SafetensorsCheckpoint, quantizationMethod: string | null = null): void {
  const quantNamed = [...ckpt.stored.values()].filter((t) => QUANTIZED_SUFFIXES.some((s) => t.name.endsWith(s)) || t.name.includes(QUANTIZED_INFIX));
  const notFloat = [...ckpt.stored.values()].filter((t) => !isComputeDType(t.dtype));
  if (quantNamed.length > 0 || notFloat.length > 0) {
    const first = quantNamed[0] ?? notFloat[0]!;
    const dtypes = [...new Set(notFloat.map((t) => t.dtype))];
    const found = [
      quantNamed.length ? `${quantNamed.length} quantization tensors (e.g. "${quantNamed[0]!.name}")` : '',
      notFloat.length ? `${notFloat.length} tensors of dtype ${dtypes.join('/')} (e.g. "${notFloat[0]!.name}")` : '',
      quantizationMethod ? `config.json quant_method "${quantizationMethod}"` : '',
    ].filter(Boolean);
    throw new PolyloraError('WEIGHTS_MISMATCH', 'this is a quantized checkpoint', {
      file: first.file,
      tensor: first.name,
      expected: 'plain F32/F16/BF16 weights',
      found: found.join('; '),
      hint: 'polylora does not run quantized checkpoints; use the unquantized model (or a merged f16/bf16 export)',
    });
  }

  const problems = shapeProblems(config, ckpt);
  const known = new Set(expectedTensors(config).map((t) => t.name));
  for (const [name, info] of ckpt.tensors) {
    if (known.has(name) || HARMLESS.some((re) => re.test(name))) continue;
    problems.push({
      what: 'unexpected tensor in the checkpoint',
      d: {
        file: info.file,
        tensor: name,
        expected: `only the tensors of a ${config.arch} model with ${config.numLayers} layers`,
        found: `${info.dtype} ${shapeStr(info.shape)}`,
        hint: /^model\.layers\.\d+\./.test(name) ? configHint(config) : 'maybe wrong base model, or an architecture variant polylora does not implement?',
      },
    });
  }
  throwProblems(problems);
}
