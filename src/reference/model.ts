// The reference forward pass: a whole llama / mistral / qwen2 / qwen3 decoder in straight loops over f32 weights,
// with a per-sequence KV cache. Slow on purpose; it is what every GPU path's logits and greedy tokens are checked
// against. Precision: see ops.ts (f64 accumulation, f32 storage).

import { PolyloraError } from '../errors.js';
import type { Checkpoint } from '../io/checkpoint-types.js';
import type { ModelConfig } from '../model/config-types.js';
import { FINAL_NORM, LINEAR_MODULES, type LinearModule, layerPrefix, linearHasBias, linearShape, resolveWeightNames, checkTensorShapes } from '../model/weights-spec.js';
import { add, attention, embedding, linear, type LinearWeights, type LoraDelta, rmsnorm, siluMul } from './ops.js';
import { applyRope, ropeInvFreq } from './rope.js';

/** One decoder layer's weights, all f32. */
interface LayerWeights {
  inputNorm: Float32Array; // [hidden]
  postAttnNorm: Float32Array; // [hidden]
  qNorm: Float32Array | null; // [headDim], qwen3
  kNorm: Float32Array | null; // [headDim], qwen3
  linears: Record<LinearModule, LinearWeights>;
}

/**
 * LoRA deltas for one sequence, keyed by HF module path without `.weight`, e.g.
 * `model.layers.0.self_attn.q_proj`, `lm_head`, `model.embed_tokens`. Modules without an entry run the base
 * weights only. The `model.embed_tokens` delta follows peft's Embedding: a [rank, vocab], b [hidden, rank], and
 * token t's embedding row gains scale · b·a[:, t] (see loraEmbedding).
 */
export type ReferenceLora = ReadonlyMap<string, LoraDelta>;

/** Module paths of the LoRA targets outside the decoder layers. */
const EMBED_LORA = 'model.embed_tokens';
const LM_HEAD_LORA = 'lm_head';

/**
 * Intermediate activations forward() can report, for locating where a GPU path first departs from the reference.
 * Shapes for n new tokens: `attn_in`, `attn_out` (after o_proj), `mlp_in`, `mlp_out` (after down_proj), `residual`
 * (the layer's output) and `final_norm` are [n, hidden]; `q` [n, numHeads·headDim] and `k`, `v`
 * [n, numKvHeads·headDim] after q/k norm and RoPE; `attn` the attention output [n, numHeads·headDim] before o_proj;
 * `mlp_act` silu(gate)·up [n, intermediate]. `layer` is -1 for `final_norm`.
 */
export type ActivationPoint = 'attn_in' | 'q' | 'k' | 'v' | 'attn' | 'attn_out' | 'mlp_in' | 'mlp_act' | 'mlp_out' | 'residual' | 'final_norm';
export type ActivationTrace = (point: ActivationPoint, layer: number, values: Float32Array) => void;

/** One sequence's state: its KV cache and the adapter it runs with. */
export class ReferenceSequence {
  /** keys[layer][pos] and values[layer][pos]: [numKvHeads·headDim] each, K after RoPE (and k_norm). */
  readonly keys: Float32Array[][];
  readonly values: Float32Array[][];

  constructor(
    numLayers: number,
    readonly lora: ReferenceLora | null,
  ) {
    this.keys = Array.from({ length: numLayers }, () => []);
    this.values = Array.from({ length: numLayers }, () => []);
  }

  /** Number of positions cached. */
  get length(): number {
    return this.keys[0]?.length ?? 0;
  }
}

export class ReferenceModel {
  private constructor(
    readonly config: ModelConfig,
    private readonly embed: Float32Array, // [vocab, hidden]
    private readonly layers: LayerWeights[],
    private readonly finalNorm: Float32Array, // [hidden]
    private readonly lmHead: LinearWeights, // [vocab, hidden]
    private readonly invFreq: Float32Array, // [headDim / 2]
  ) {}

  /** Checks the tensors' shapes against the config, then reads every weight widened to f32. */
  static async load(config: ModelConfig, ckpt: Checkpoint): Promise<ReferenceModel> {
    checkTensorShapes(config, ckpt);
    const names = resolveWeightNames(config, ckpt);
    const embed = await ckpt.float32(names.embed);
    const layers: LayerWeights[] = [];
    for (let i = 0; i < config.numLayers; i++) {
      const p = layerPrefix(i);
      const linears = {} as Record<LinearModule, LinearWeights>;
      for (const m of LINEAR_MODULES) {
        const [outFeatures, inFeatures] = linearShape(config, m);
        linears[m] = {
          weight: await ckpt.float32(`${p}${m}.weight`),
          bias: linearHasBias(config, m) ? await ckpt.float32(`${p}${m}.bias`) : null,
          outFeatures,
          inFeatures,
        };
      }
      layers.push({
        inputNorm: await ckpt.float32(`${p}input_layernorm.weight`),
        postAttnNorm: await ckpt.float32(`${p}post_attention_layernorm.weight`),
        qNorm: config.qkNorm ? await ckpt.float32(`${p}self_attn.q_norm.weight`) : null,
        kNorm: config.qkNorm ? await ckpt.float32(`${p}self_attn.k_norm.weight`) : null,
        linears,
      });
    }
    const lmHead: LinearWeights = {
      weight: names.lmHead === names.embed ? embed : await ckpt.float32(names.lmHead),
      bias: null,
      outFeatures: config.vocabSize,
      inFeatures: config.hiddenSize,
    };
    const invFreq = ropeInvFreq(config.headDim, config.ropeTheta, config.ropeScaling);
    return new ReferenceModel(config, embed, layers, await ckpt.float32(FINAL_NORM), lmHead, invFreq);
  }

  /** A fresh sequence with an empty KV cache, optionally running a LoRA adapter. */
  newSequence(lora: ReferenceLora | null = null): ReferenceSequence {
    return new ReferenceSequence(this.config.numLayers, lora);
  }

  /**
   * Runs `tokenIds` at positions startPos .. startPos+n-1 and returns their logits [n, vocab].
   * Prefill: a fresh sequence with startPos 0. Decode: one token at startPos = seq.length. A startPos below
   * seq.length first drops the cached positions >= startPos (re-running a suffix). `trace`, if given, sees every
   * intermediate activation (the arrays are the model's own: read or copy them, never modify).
   */
  forward(seq: ReferenceSequence, tokenIds: readonly number[], startPos: number, trace?: ActivationTrace): Float32Array {
    const cfg = this.config;
    if (!Number.isInteger(startPos) || startPos < 0 || startPos > seq.length) {
      throw new PolyloraError('INVALID_ARGUMENT', 'startPos must continue the cached sequence', { field: 'startPos', expected: `an integer in [0, ${seq.length}]`, found: String(startPos) });
    }
    const n = tokenIds.length;
    const { hiddenSize: hidden, numHeads, numKvHeads, headDim, rmsNormEps: eps } = cfg;
    const kvDim = numKvHeads * headDim;
    let x = embedding(this.embed, hidden, tokenIds); // [n, hidden]; checks the ids before the cache changes
    const embedLora = seq.lora?.get(EMBED_LORA);
    if (embedLora) x = loraEmbedding(this.embed, hidden, tokenIds, embedLora);
    for (let l = 0; l < cfg.numLayers; l++) {
      seq.keys[l]!.length = startPos;
      seq.values[l]!.length = startPos;
    }
    for (let l = 0; l < cfg.numLayers; l++) {
      const w = this.layers[l]!;
      const lora = (m: LinearModule): LoraDelta | null => seq.lora?.get(`${layerPrefix(l)}${m}`) ?? null;
      const report = (point: ActivationPoint, values: Float32Array): Float32Array => {
        trace?.(point, l, values);
        return values;
      };

      const h = report('attn_in', rmsnorm(x, w.inputNorm, eps));
      let q = linear(h, n, w.linears['self_attn.q_proj'], lora('self_attn.q_proj')); // [n, numHeads·headDim]
      let k = linear(h, n, w.linears['self_attn.k_proj'], lora('self_attn.k_proj')); // [n, kvDim]
      const v = report('v', linear(h, n, w.linears['self_attn.v_proj'], lora('self_attn.v_proj'))); // [n, kvDim]
      if (w.qNorm && w.kNorm) {
        q = rmsnorm(q, w.qNorm, eps); // per head: rows of headDim
        k = rmsnorm(k, w.kNorm, eps);
      }
      applyRope(q, n, numHeads, headDim, startPos, this.invFreq);
      applyRope(k, n, numKvHeads, headDim, startPos, this.invFreq);
      report('q', q);
      report('k', k);
      for (let t = 0; t < n; t++) {
        seq.keys[l]!.push(k.slice(t * kvDim, (t + 1) * kvDim));
        seq.values[l]!.push(v.slice(t * kvDim, (t + 1) * kvDim));
      }
      const att = report('attn', attention(q, seq.keys[l]!, seq.values[l]!, { n, startPos, numHeads, numKvHeads, headDim, slidingWindow: cfg.slidingWindow }));
      x = add(x, report('attn_out', linear(att, n, w.linears['self_attn.o_proj'], lora('self_attn.o_proj'))));

      const h2 = report('mlp_in', rmsnorm(x, w.postAttnNorm, eps));
      const gate = linear(h2, n, w.linears['mlp.gate_proj'], lora('mlp.gate_proj'));
      const up = linear(h2, n, w.linears['mlp.up_proj'], lora('mlp.up_proj'));
      const act = report('mlp_act', siluMul(gate, up));
      x = report('residual', add(x, report('mlp_out', linear(act, n, w.linears['mlp.down_proj'], lora('mlp.down_proj')))));
    }
    const normed = rmsnorm(x, this.finalNorm, eps);
    trace?.('final_norm', -1, normed);
    return linear(normed, n, this.lmHead, seq.lora?.get(LM_HEAD_LORA) ?? null);
  }
}

/**
 * Embedding rows with peft's embedding LoRA, [ids.length, dim]: row t = table[id] + scale · Σ_r b[:, r]·a[r, id],
 * with a [rank, vocab] and b [dim, rank] (peft: F.embedding(ids, aᵀ) @ bᵀ · scale). The shrink is a gather, so
 * exact; each output sums in f64 and rounds to f32 once. Call after embedding() has checked the ids.
 */
function loraEmbedding(table: Float32Array, dim: number, ids: readonly number[], lora: LoraDelta): Float32Array {
  const vocab = table.length / dim;
  const { a, b, rank, scale } = lora;
  const out = new Float32Array(ids.length * dim);
  ids.forEach((id, t) => {
    for (let j = 0; j < dim; j++) {
      let d = 0;
      for (let r = 0; r < rank; r++) d += b[j * rank + r]! * a[r * vocab + id]!;
      out[t * dim + j] = table[id * dim + j]! + scale * d;
    }
  });
  return out;
}
