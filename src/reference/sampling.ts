// Reference token selection: the contract the GPU sampler implements exactly.

import { argmax } from './ops.js';

/** Greedy decoding: the index of the largest logit, the lowest index on ties. */
export function greedy(logits: Float32Array): number {
  return argmax(logits);
}

export interface SamplingParams {
  /** <= 0 = greedy (argmax); otherwise logits are divided by it. */
  temperature: number;
  /** Keep the k most likely tokens (ties with the k-th kept); 0 or less = off. */
  topK: number;
  /** Nucleus mass in (0, 1]; 1 = off. */
  topP: number;
  /** Keep tokens with p >= minP · p_max; 0 = off. */
  minP: number;
}

/**
 * Samples one token from one row of logits [vocab] with a caller-supplied uniform u in [0, 1).
 *
 * Contract (the GPU sampler must give the same token for the same logits and u):
 * 1. temperature <= 0 -> greedy(logits), u unused. Otherwise z_i = logits_i / temperature.
 * 2. top-k (topK > 0 and < vocab): let z_k be the k-th largest z; keep i with z_i >= z_k (ties kept).
 * 3. top-p (topP < 1): with p_i = softmax over the kept z, sort kept p descending and find the smallest m whose
 *    prefix mass is >= topP; t = the m-th largest p; keep i with p_i >= t (ties at the boundary kept).
 * 4. min-p (minP > 0): keep i with p_i >= minP · max p (equivalently z_i >= z_max + ln(minP)).
 *    Order as in transformers' warpers: temperature, top-k, top-p, min-p.
 * 5. Inverse CDF over the kept set in token-index order with weights w_i = exp(z_i - z_max):
 *    the first kept i whose running sum of w exceeds u · sum(w); if rounding leaves none, the last kept index
 *    with w_i > 0 (a token of probability 0, e.g. logit -Infinity, is never returned).
 * Sums are f64 here; a GPU in f32 can differ only when u · sum lands within rounding of a boundary.
 */
export function sampleReference(logits: Float32Array, params: SamplingParams, u: number): number {
  if (params.temperature <= 0) return greedy(logits);
  const vocab = logits.length;
  const z = new Float64Array(vocab);
  let zMax = -Infinity;
  for (let i = 0; i < vocab; i++) {
    z[i] = logits[i]! / params.temperature;
    if (z[i]! > zMax) zMax = z[i]!;
  }
  const keep = new Uint8Array(vocab).fill(1);

  if (params.topK > 0 && params.topK < vocab) {
    const zk = [...z].sort((a, b) => b - a)[params.topK - 1]!;
    for (let i = 0; i < vocab; i++) if (z[i]! < zk) keep[i] = 0;
  }

  const w = new Float64Array(vocab);
  const weigh = (): number => {
    let sum = 0;
    for (let i = 0; i < vocab; i++) sum += w[i] = keep[i] ? Math.exp(z[i]! - zMax) : 0;
    return sum;
  };
  let sum = weigh();

  if (params.topP < 1) {
    const sorted = [...w].filter((_, i) => keep[i]).sort((a, b) => b - a);
    const target = params.topP * sum;
    let mass = 0;
    let threshold = sorted[sorted.length - 1]!;
    for (const p of sorted) {
      mass += p;
      if (mass >= target) {
        threshold = p;
        break;
      }
    }
    for (let i = 0; i < vocab; i++) if (w[i]! < threshold) keep[i] = 0;
    sum = weigh();
  }

  if (params.minP > 0) {
    // z_max is always kept (top-k and top-p keep the largest), so p_max ∝ exp(0) = 1.
    for (let i = 0; i < vocab; i++) if (w[i]! < params.minP) keep[i] = 0;
    sum = weigh();
  }

  const target = u * sum;
  let run = 0;
  let last = 0;
  for (let i = 0; i < vocab; i++) {
    if (!keep[i] || w[i] === 0) continue;
    run += w[i]!;
    last = i;
    if (run > target) return i;
  }
  return last;
}

/** A token's penalty state: how often it occurs in the output, and whether it occurs in the prompt. */
export interface PenaltyEntry {
  id: number;
  count: number;
  inPrompt: boolean;
}

export interface PenaltyParams {
  presence: number;
  frequency: number;
  repetition: number;
}

/**
 * vLLM's penalties on one row of logits (a new array): first the repetition penalty on every token of the prompt
 * or output (l > 0 ? l / rep : l · rep), then l -= frequency · count + presence · (count > 0) with the output
 * counts. Computed in f32 like the kernel (one rounding per operation).
 */
export function applyPenalties(logits: Float32Array, entries: readonly PenaltyEntry[], p: PenaltyParams): Float32Array {
  const out = logits.slice();
  for (const e of entries) {
    let v = out[e.id]!;
    if (p.repetition !== 1) v = Math.fround(v > 0 ? v / p.repetition : v * p.repetition);
    v = Math.fround(v - Math.fround(p.frequency * e.count));
    if (e.count > 0) v = Math.fround(v - p.presence);
    out[e.id] = v;
  }
  return out;
}

/** logit_bias on one row of logits (a new array): l += bias for the listed tokens, in f32 like the kernel. */
export function applyLogitBias(logits: Float32Array, bias: ReadonlyMap<number, number>): Float32Array {
  const out = logits.slice();
  for (const [id, b] of bias) out[id] = Math.fround(out[id]! + b);
  return out;
}

/** The n most likely tokens of a row (value descending, lower index first on ties) with their log-softmax. */
export function topLogprobs(logits: Float32Array, n: number): { id: number; logprob: number }[] {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let z = 0;
  for (const v of logits) z += Math.exp(v - max);
  const lse = max + Math.log(z);
  const order = [...logits.keys()].sort((a, b) => logits[b]! - logits[a]! || a - b);
  return order.slice(0, n).map((id) => ({ id, logprob: logits[id]! - lse }));
}
