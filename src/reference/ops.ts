// The reference ops: plain loops over Float32Array, one function per op, the oracle every GPU kernel is tested
// against. Activations are row-major [n, dim] (n tokens). Precision contract: every reduction (dot product,
// sum of squares, softmax sum, attention-weighted sum) accumulates in f64 (JS numbers) and rounds to f32 once,
// when the result is stored into a Float32Array. A GPU kernel accumulating in f32 therefore differs from these
// results by its own summation error: at most (K - 1) * 2^-24 * sum|terms| for a K-term reduction in sequence
// (typically ~ sqrt(K) * 2^-24 * sum|terms|; less for tree reductions), plus 2^-24 * |result| for the store.

import { PolyloraError } from '../errors.js';

/** A Linear layer as Hugging Face stores it: y = x·Wᵀ + b. */
export interface LinearWeights {
  /** [outFeatures, inFeatures], row-major. */
  weight: Float32Array;
  /** [outFeatures], or null. */
  bias: Float32Array | null;
  outFeatures: number;
  inFeatures: number;
}

/**
 * An unmerged LoRA delta on one Linear: y += scale · (x·Aᵀ)·Bᵀ. `scale` is lora_alpha / r (or / sqrt(r) for
 * rsLoRA), computed by whoever builds this.
 */
export interface LoraDelta {
  /** [rank, inFeatures] (PEFT's lora_A.weight). */
  a: Float32Array;
  /** [outFeatures, rank] (PEFT's lora_B.weight). */
  b: Float32Array;
  rank: number;
  scale: number;
  /** DoRA: each output row j of W + scale·B·A is rescaled to length magnitude[j] (the bias is not). */
  magnitude?: Float32Array;
}

/** Rows of the embedding table [vocab, dim] for `ids` -> [ids.length, dim]. */
export function embedding(table: Float32Array, dim: number, ids: readonly number[]): Float32Array {
  const vocab = table.length / dim;
  const out = new Float32Array(ids.length * dim);
  ids.forEach((id, t) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new PolyloraError('INVALID_ARGUMENT', 'token id out of range', { field: `tokens[${t}]`, expected: `an integer in [0, ${vocab})`, found: String(id) });
    }
    out.set(table.subarray(id * dim, (id + 1) * dim), t * dim);
  });
  return out;
}

/**
 * RMSNorm over the last dimension: y = x / sqrt(mean(x²) + eps) · w, for each of the x.length / w.length rows.
 * Qwen3's per-head q/k norm is the same call with w of length headDim.
 */
export function rmsnorm(x: Float32Array, w: Float32Array, eps: number): Float32Array {
  const dim = w.length;
  const n = x.length / dim;
  const out = new Float32Array(x.length);
  for (let t = 0; t < n; t++) {
    const o = t * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i]! * x[o + i]!;
    // HF: x * rsqrt(mean + eps) in f32, then weight * that.
    const inv = Math.fround(1 / Math.sqrt(Math.fround(ss / dim) + eps));
    for (let i = 0; i < dim; i++) out[o + i] = w[i]! * Math.fround(x[o + i]! * inv);
  }
  return out;
}

/**
 * y = x·Wᵀ + b (+ scale · (x·Aᵀ)·Bᵀ with a LoRA delta), x [n, in] -> y [n, out]. The LoRA shrink x·Aᵀ is
 * rounded to f32 [n, rank] before the expand, as a GPU shrink/expand pair stores it.
 */
export function linear(x: Float32Array, n: number, l: LinearWeights, lora?: LoraDelta | null): Float32Array {
  const { weight: w, bias, outFeatures: out, inFeatures: inF } = l;
  if (x.length !== n * inF) {
    throw new PolyloraError('INVALID_ARGUMENT', 'linear: input size does not match the layer', { expected: `${n} x ${inF}`, found: `${x.length} values` });
  }
  const shrunk = lora ? loraShrink(x, n, inF, lora) : null;
  const dora = lora?.magnitude ? doraFactors(l, lora) : null;
  const y = new Float32Array(n * out);
  for (let t = 0; t < n; t++) {
    const xo = t * inF;
    for (let j = 0; j < out; j++) {
      const wo = j * inF;
      let s = 0;
      for (let i = 0; i < inF; i++) s += x[xo + i]! * w[wo + i]!;
      if (lora && shrunk) {
        let d = 0;
        for (let r = 0; r < lora.rank; r++) d += shrunk[t * lora.rank + r]! * lora.b[j * lora.rank + r]!;
        s += lora.scale * d;
      }
      if (dora) s *= dora[j]!;
      y[t * out + j] = bias ? s + bias[j]! : s;
    }
  }
  return y;
}

/**
 * DoRA's per-row factor magnitude[j] / ‖W[j, :] + scale · (B·A)[j, :]‖₂ (peft's DoraLinearLayer, the norm over each
 * output row's inputs), straight from the definition in f64.
 */
export function doraFactors(l: LinearWeights, lora: LoraDelta): Float64Array {
  const { weight: w, outFeatures: out, inFeatures: inF } = l;
  const { a, b, rank, scale, magnitude } = lora;
  const f = new Float64Array(out);
  for (let j = 0; j < out; j++) {
    let ss = 0;
    for (let i = 0; i < inF; i++) {
      let ba = 0;
      for (let r = 0; r < rank; r++) ba += b[j * rank + r]! * a[r * inF + i]!;
      const v = w[j * inF + i]! + scale * ba;
      ss += v * v;
    }
    f[j] = magnitude![j]! / Math.sqrt(ss);
  }
  return f;
}

/** LoRA shrink: x [n, in] · Aᵀ -> [n, rank]. */
export function loraShrink(x: Float32Array, n: number, inF: number, lora: LoraDelta): Float32Array {
  const { a, rank } = lora;
  const out = new Float32Array(n * rank);
  for (let t = 0; t < n; t++) {
    for (let r = 0; r < rank; r++) {
      let s = 0;
      for (let i = 0; i < inF; i++) s += x[t * inF + i]! * a[r * inF + i]!;
      out[t * rank + r] = s;
    }
  }
  return out;
}

/** x·sigmoid(x), as torch's SiLU. */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** SwiGLU gate: silu(gate) · up, elementwise. */
export function siluMul(gate: Float32Array, up: Float32Array): Float32Array {
  const out = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = Math.fround(silu(gate[i]!)) * up[i]!;
  return out;
}

/** Residual add: a + b, elementwise, into a new array. */
export function add(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! + b[i]!;
  return out;
}

/** Softmax of one row (max-subtracted), f64 sum. */
export function softmax(x: Float32Array): Float32Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i]! > max) max = x[i]!;
  const e = new Float64Array(x.length);
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += e[i] = Math.exp(x[i]! - max);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = e[i]! / sum;
  return out;
}

/**
 * Causal grouped-query attention for n new tokens at positions startPos .. startPos+n-1.
 * q: [n, numHeads·headDim] (RoPE applied). keys/values: one row [numKvHeads·headDim] per cached position
 * 0 .. startPos+n-1 (the new tokens' rows included). Query head h reads kv head floor(h / (numHeads/numKvHeads)),
 * as HF's repeat_kv. Token at position p attends to positions max(0, p - window + 1) .. p (window = null: all).
 * Scores are q·k / sqrt(headDim). Returns [n, numHeads·headDim].
 */
export function attention(
  q: Float32Array,
  keys: readonly Float32Array[],
  values: readonly Float32Array[],
  shape: { n: number; startPos: number; numHeads: number; numKvHeads: number; headDim: number; slidingWindow: number | null },
): Float32Array {
  const { n, startPos, numHeads, numKvHeads, headDim: d, slidingWindow } = shape;
  const group = numHeads / numKvHeads;
  const scale = 1 / Math.sqrt(d);
  const out = new Float32Array(n * numHeads * d);
  const scores = new Float64Array(startPos + n);
  const acc = new Float64Array(d);
  for (let t = 0; t < n; t++) {
    const pos = startPos + t;
    const first = slidingWindow === null ? 0 : Math.max(0, pos - slidingWindow + 1);
    for (let h = 0; h < numHeads; h++) {
      const qo = (t * numHeads + h) * d;
      const ko = Math.floor(h / group) * d;
      let max = -Infinity;
      for (let j = first; j <= pos; j++) {
        const k = keys[j]!;
        let s = 0;
        for (let i = 0; i < d; i++) s += q[qo + i]! * k[ko + i]!;
        scores[j] = s * scale;
        if (scores[j]! > max) max = scores[j]!;
      }
      let sum = 0;
      for (let j = first; j <= pos; j++) sum += scores[j] = Math.exp(scores[j]! - max);
      acc.fill(0);
      for (let j = first; j <= pos; j++) {
        const v = values[j]!;
        const p = scores[j]! / sum;
        for (let i = 0; i < d; i++) acc[i] += p * v[ko + i]!;
      }
      out.set(acc, qo);
    }
  }
  return out;
}

/** Index of the largest value; the lowest index wins ties. NaN never wins. */
export function argmax(x: Float32Array): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < x.length; i++) {
    if (x[i]! > bestV) {
      bestV = x[i]!;
      best = i;
    }
  }
  return best;
}
