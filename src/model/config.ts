// config.json -> ModelConfig: architecture detection, transformers' defaults, rope scaling, and errors that name
// the file and the field. Defaults follow transformers' config classes (LlamaConfig, MistralConfig, Qwen2Config,
// Qwen3Config); where a default differs between architectures it is written next to the architecture below.

import { PolyloraError } from '../errors.js';
import type { Architecture, ModelConfig, RopeScaling } from './config-types.js';

export const SUPPORTED_ARCHITECTURES: readonly Architecture[] = ['llama', 'mistral', 'qwen2', 'qwen3'];

/** `architectures[0]` class names that map onto a supported model_type (used when model_type is absent). */
const ARCH_CLASSES: Record<string, Architecture> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
};

/**
 * Per-architecture defaults, as in transformers:
 * - tie_word_embeddings: false for all four (LlamaConfig, MistralConfig, Qwen2Config and Qwen3Config all default
 *   to False; Qwen2.5-0.5B and SmolLM set it to true explicitly in their config.json).
 * - head_dim: Qwen3Config defaults to 128; the others derive hidden_size / num_attention_heads.
 * - q/k/v bias: always on for qwen2 (not configurable there); `attention_bias` (default false) for llama and
 *   qwen3; never for mistral. o_proj bias: `attention_bias` for llama and qwen3, never for qwen2/mistral.
 * - sliding window: mistral uses `sliding_window` (default 4096) on every layer; qwen2/qwen3 only when
 *   `use_sliding_window` is true, and then only on layers >= `max_window_layers` (default 28).
 */
const DEFAULT_QWEN3_HEAD_DIM = 128;
const DEFAULT_MAX_POSITIONS: Record<Architecture, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768, qwen3: 32768 };
const DEFAULT_MISTRAL_SLIDING_WINDOW = 4096;
const DEFAULT_QWEN_SLIDING_WINDOW = 4096;
const DEFAULT_QWEN_MAX_WINDOW_LAYERS = 28;

export interface ParsedModelConfig {
  config: ModelConfig;
  /** For the user; loading continues. */
  warnings: string[];
  /** `quantization_config.quant_method` ("unknown" when it has none), or null without a quantization_config. */
  quantizationMethod: string | null;
}

/**
 * Parses a model's config.json (already JSON-decoded). `file` names it in errors.
 * Returns the normalized config and warnings for things the caller should tell the user about but that do not
 * stop loading (e.g. a `quantization_config`: whether the weights really are quantized is decided from their
 * dtypes by validateWeights).
 */
export function parseModelConfig(json: unknown, file: string): ParsedModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new PolyloraError('CONFIG_INVALID', 'config is not a JSON object', {
      file,
      found: Array.isArray(json) ? 'an array' : json === null ? 'null' : typeof json,
    });
  }
  const c = new Fields(json as Record<string, unknown>, file);
  const warnings: string[] = [];
  const arch = detectArchitecture(c);

  const hiddenAct = c.optString('hidden_act') ?? 'silu';
  if (hiddenAct !== 'silu') {
    throw new PolyloraError('CONFIG_INVALID', 'unsupported activation', {
      file,
      field: 'hidden_act',
      expected: '"silu"',
      found: JSON.stringify(hiddenAct),
      hint: 'polylora implements SwiGLU MLPs (llama, mistral, qwen2, qwen3)',
    });
  }
  if (c.optBool('mlp_bias') === true) {
    throw new PolyloraError('CONFIG_INVALID', 'MLP biases are not supported', {
      file,
      field: 'mlp_bias',
      expected: 'false or absent',
      found: 'true',
    });
  }

  const hiddenSize = c.posInt('hidden_size');
  const numHeads = c.posInt('num_attention_heads');
  const numLayers = c.posInt('num_hidden_layers');
  const numKvHeads = c.optPosInt('num_key_value_heads') ?? numHeads;
  if (numHeads % numKvHeads !== 0) {
    throw new PolyloraError('CONFIG_INVALID', 'query heads must be a multiple of key/value heads', {
      file,
      field: 'num_key_value_heads',
      expected: `a divisor of num_attention_heads (${numHeads})`,
      found: String(numKvHeads),
    });
  }
  let headDim = c.optPosInt('head_dim');
  if (headDim === undefined) {
    if (arch === 'qwen3') headDim = DEFAULT_QWEN3_HEAD_DIM;
    else if (hiddenSize % numHeads !== 0) {
      throw new PolyloraError('CONFIG_INVALID', 'head_dim is absent and hidden_size is not divisible by the head count', {
        file,
        field: 'head_dim',
        expected: `a head_dim, or hidden_size divisible by num_attention_heads (${numHeads})`,
        found: `hidden_size ${hiddenSize}`,
      });
    } else headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) {
    throw new PolyloraError('CONFIG_INVALID', 'rotary embeddings need an even head dimension', {
      file,
      field: 'head_dim',
      expected: 'an even number',
      found: String(headDim),
    });
  }

  const attentionBiasField = c.optBool('attention_bias') ?? false;
  const attentionBias = arch === 'qwen2' ? true : arch === 'mistral' ? false : attentionBiasField;
  const oProjBias = arch === 'llama' || arch === 'qwen3' ? attentionBiasField : false;

  const { ropeTheta, ropeScaling } = parseRope(c);

  let quantizationMethod: string | null = null;
  if (c.has('quantization_config')) {
    const q = c.raw('quantization_config');
    const method = typeof q === 'object' && q !== null ? (q as Record<string, unknown>)['quant_method'] : undefined;
    quantizationMethod = typeof method === 'string' ? method : 'unknown';
    warnings.push(
      `${file}: has a quantization_config (quant_method "${quantizationMethod}"); ` +
        'loading proceeds only if the tensors themselves are f32/f16/bf16 (e.g. a merged Unsloth export)',
    );
  }

  const config: ModelConfig = {
    arch,
    hiddenSize,
    intermediateSize: c.posInt('intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: c.posInt('vocab_size'),
    rmsNormEps: c.optPosNumber('rms_norm_eps') ?? 1e-6,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: c.optPosInt('max_position_embeddings') ?? DEFAULT_MAX_POSITIONS[arch],
    tieWordEmbeddings: c.optBool('tie_word_embeddings') ?? false,
    attentionBias,
    oProjBias,
    qkNorm: arch === 'qwen3',
    slidingWindow: parseSlidingWindow(c, arch, numLayers),
    bosTokenId: c.optTokenId('bos_token_id'),
    eosTokenIds: c.tokenIds('eos_token_id'),
    torchDtype: c.optString('torch_dtype') ?? c.optString('dtype') ?? null,
  };
  return { config, warnings, quantizationMethod };
}

function detectArchitecture(c: Fields): Architecture {
  const modelType = c.optString('model_type');
  const archs = c.raw('architectures');
  const archClass = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : undefined;
  if (modelType !== undefined && (SUPPORTED_ARCHITECTURES as readonly string[]).includes(modelType)) {
    return modelType as Architecture;
  }
  if (modelType === undefined && archClass !== undefined && ARCH_CLASSES[archClass] !== undefined) {
    return ARCH_CLASSES[archClass]!;
  }
  const found = modelType !== undefined ? `model_type "${modelType}"` : archClass !== undefined ? `architectures ["${archClass}"]` : 'neither model_type nor architectures';
  throw new PolyloraError('ARCH_UNSUPPORTED', 'unsupported model architecture', {
    file: c.file,
    field: modelType !== undefined ? 'model_type' : 'architectures',
    expected: `one of ${SUPPORTED_ARCHITECTURES.join(', ')} (${Object.keys(ARCH_CLASSES).join(', ')})`,
    found,
  });
}

/**
 * rope_theta (default 10000) and rope_scaling. Also reads transformers v5's `rope_parameters`
 * ({rope_type, rope_theta, ...scaling fields}), which replaces both.
 */
function parseRope(c: Fields): { ropeTheta: number; ropeScaling: RopeScaling } {
  const params = c.raw('rope_parameters');
  const scalingField = params !== undefined && params !== null ? 'rope_parameters' : 'rope_scaling';
  const scaling = c.raw(scalingField);
  let ropeTheta = c.optPosNumber('rope_theta') ?? 10000;
  if (scaling === undefined || scaling === null) return { ropeTheta, ropeScaling: { type: 'none' } };
  if (typeof scaling !== 'object' || Array.isArray(scaling)) {
    throw new PolyloraError('CONFIG_INVALID', 'rope scaling must be an object or null', {
      file: c.file,
      field: scalingField,
      found: JSON.stringify(scaling),
    });
  }
  const s = new Fields(scaling as Record<string, unknown>, c.file, `${scalingField}.`);
  if (scalingField === 'rope_parameters') ropeTheta = s.optPosNumber('rope_theta') ?? ropeTheta;
  const kind = s.optString('rope_type') ?? s.optString('type') ?? 'default';
  switch (kind) {
    case 'default':
      return { ropeTheta, ropeScaling: { type: 'none' } };
    case 'linear':
      return { ropeTheta, ropeScaling: { type: 'linear', factor: s.posNumber('factor') } };
    case 'llama3': {
      const lowFreqFactor = s.posNumber('low_freq_factor');
      const highFreqFactor = s.posNumber('high_freq_factor');
      if (highFreqFactor <= lowFreqFactor) {
        throw new PolyloraError('CONFIG_INVALID', 'llama3 rope scaling needs high_freq_factor > low_freq_factor', {
          file: c.file,
          field: `${scalingField}.high_freq_factor`,
          expected: `> ${lowFreqFactor}`,
          found: String(highFreqFactor),
        });
      }
      return {
        ropeTheta,
        ropeScaling: {
          type: 'llama3',
          factor: s.posNumber('factor'),
          lowFreqFactor,
          highFreqFactor,
          originalMaxPositionEmbeddings: s.posInt('original_max_position_embeddings'),
        },
      };
    }
    default:
      throw new PolyloraError('CONFIG_INVALID', 'unsupported rope scaling', {
        file: c.file,
        field: `${scalingField}.${s.has('rope_type') ? 'rope_type' : 'type'}`,
        expected: '"default", "linear" or "llama3"',
        found: JSON.stringify(kind),
      });
  }
}

function parseSlidingWindow(c: Fields, arch: Architecture, numLayers: number): number | null {
  if (arch === 'llama') return null;
  if (arch === 'mistral') {
    if (c.has('sliding_window') && c.raw('sliding_window') === null) return null;
    return c.optPosInt('sliding_window') ?? DEFAULT_MISTRAL_SLIDING_WINDOW;
  }
  // qwen2 / qwen3
  if (c.optBool('use_sliding_window') !== true) return null;
  const window = c.has('sliding_window') && c.raw('sliding_window') === null ? null : (c.optPosInt('sliding_window') ?? DEFAULT_QWEN_SLIDING_WINDOW);
  if (window === null) return null;
  const maxWindowLayers = c.optNonNegInt('max_window_layers') ?? DEFAULT_QWEN_MAX_WINDOW_LAYERS;
  if (maxWindowLayers >= numLayers) return null; // no layer reaches the sliding-window range
  if (maxWindowLayers === 0) return window; // every layer slides
  throw new PolyloraError('CONFIG_INVALID', 'mixed full / sliding-window attention layers are not supported', {
    file: c.file,
    field: 'max_window_layers',
    expected: `0 (all layers slide) or >= num_hidden_layers (${numLayers})`,
    found: String(maxWindowLayers),
  });
}

/** Typed access to one JSON object's fields; every error names the file and the (prefixed) field. */
class Fields {
  constructor(
    private readonly obj: Record<string, unknown>,
    readonly file: string,
    private readonly prefix = '',
  ) {}

  has(key: string): boolean {
    return this.obj[key] !== undefined;
  }

  raw(key: string): unknown {
    return this.obj[key];
  }

  private bad(key: string, expected: string, found: unknown, what = 'invalid value'): PolyloraError {
    return new PolyloraError('CONFIG_INVALID', what, {
      file: this.file,
      field: this.prefix + key,
      expected,
      found: found === undefined ? 'nothing (field missing)' : JSON.stringify(found),
    });
  }

  posInt(key: string): number {
    const v = this.obj[key];
    if (v === undefined || v === null) throw this.bad(key, 'a positive integer', undefined, 'required field missing');
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw this.bad(key, 'a positive integer', v);
    return v;
  }

  optPosInt(key: string): number | undefined {
    const v = this.obj[key];
    return v === undefined || v === null ? undefined : this.posInt(key);
  }

  optNonNegInt(key: string): number | undefined {
    const v = this.obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw this.bad(key, 'a non-negative integer', v);
    return v;
  }

  posNumber(key: string): number {
    const v = this.obj[key];
    if (v === undefined || v === null) throw this.bad(key, 'a positive number', undefined, 'required field missing');
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw this.bad(key, 'a positive number', v);
    return v;
  }

  optPosNumber(key: string): number | undefined {
    const v = this.obj[key];
    return v === undefined || v === null ? undefined : this.posNumber(key);
  }

  optBool(key: string): boolean | undefined {
    const v = this.obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw this.bad(key, 'true or false', v);
    return v;
  }

  optString(key: string): string | undefined {
    const v = this.obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw this.bad(key, 'a string', v);
    return v;
  }

  optTokenId(key: string): number | null {
    const v = this.obj[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw this.bad(key, 'a token id (integer >= 0)', v);
    return v;
  }

  /** A token id or a list of them (eos_token_id); absent or null gives []. */
  tokenIds(key: string): number[] {
    const v = this.obj[key];
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    for (const id of list) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw this.bad(key, 'a token id or a list of token ids', v);
    }
    return list as number[];
  }
}
