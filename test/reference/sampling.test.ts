// The reference sampler's contract (src/reference/sampling.ts), on small hand-computed distributions.
import { describe, expect, it } from 'vitest';
import { greedy, sampleReference, type SamplingParams } from '../../src/reference/sampling.js';

const plain: SamplingParams = { temperature: 1, topK: 0, topP: 1, minP: 0 };
/** Logits whose softmax is exactly proportional to `weights`. */
const logitsOf = (weights: number[]): Float32Array => Float32Array.from(weights, (w) => (w > 0 ? Math.log(w) : -Infinity));

/** Which token each u of a fine uniform grid picks: the empirical distribution with no randomness. */
function histogram(logits: Float32Array, params: SamplingParams, steps = 10_000): number[] {
  const h = new Array<number>(logits.length).fill(0);
  for (let s = 0; s < steps; s++) h[sampleReference(logits, params, (s + 0.5) / steps)]!++;
  return h.map((c) => c / steps);
}

/** A token's share of the grid is its probability within one grid step at each of its two CDF boundaries. */
function expectDistribution(h: number[], want: number[], steps = 10_000): void {
  expect(h.length).toBe(want.length);
  h.forEach((f, i) => expect(Math.abs(f - want[i]!), `token ${i}: ${f} vs ${want[i]}`).toBeLessThanOrEqual(2 / steps));
}

describe('greedy', () => {
  it('takes the largest logit, the lowest index on ties', () => {
    expect(greedy(Float32Array.of(1, 5, 3, 5))).toBe(1);
    expect(greedy(Float32Array.of(-2, -1, -1))).toBe(1);
  });
  it('temperature <= 0 is greedy whatever u is', () => {
    for (const u of [0, 0.5, 0.999]) expect(sampleReference(Float32Array.of(1, 5, 3, 5), { ...plain, temperature: 0 }, u)).toBe(1);
  });
});

describe('sampleReference', () => {
  const p = logitsOf([1, 2, 3, 4]); // probabilities 0.1, 0.2, 0.3, 0.4

  it('inverse CDF in index order: the first token whose running mass exceeds u', () => {
    expect([0, 0.0999, 0.1001, 0.2999, 0.3001, 0.5999, 0.6001, 0.9999].map((u) => sampleReference(p, plain, u))).toEqual([0, 0, 1, 1, 2, 2, 3, 3]);
  });

  it('a uniform grid of u reproduces softmax(logits / temperature)', () => {
    const h = histogram(p, { ...plain, temperature: 0.5 });
    const w = [1, 4, 9, 16]; // p^(1/0.5) = p², normalized
    const z = w.reduce((a, b) => a + b, 0);
    expectDistribution(h, w.map((v) => v / z));
  });

  it('top-k keeps the k largest, ties with the k-th included', () => {
    expectDistribution(histogram(p, { ...plain, topK: 2 }), [0, 0, 3 / 7, 4 / 7]);
    const tied = logitsOf([1, 3, 3, 2]);
    const h = histogram(tied, { ...plain, topK: 1 });
    expect(h).toEqual([0, 0.5, 0.5, 0]);
  });

  it('top-p keeps the smallest prefix with mass >= p, and every token tied with its last one', () => {
    // Sorted: 0.4, 0.3 (mass 0.7 >= 0.5): threshold 0.3 keeps tokens 2 and 3.
    expectDistribution(histogram(p, { ...plain, topP: 0.5 }), [0, 0, 3 / 7, 4 / 7]);
    // p = 0.75 needs a third token: 0.4 + 0.3 + 0.2.
    expectDistribution(histogram(p, { ...plain, topP: 0.75 }), [0, 2 / 9, 3 / 9, 4 / 9]);
    // Four equal tokens and p = 0.3: the boundary token ties with all others, so all stay.
    expect(histogram(logitsOf([1, 1, 1, 1]), { ...plain, topP: 0.3 })).toEqual([0.25, 0.25, 0.25, 0.25]);
  });

  it('min-p keeps p >= minP · p_max', () => {
    // p_max 0.4, minP 0.45: keeps p >= 0.18 -> tokens 1, 2, 3 renormalized over 0.9.
    expectDistribution(histogram(p, { ...plain, minP: 0.45 }), [0, 2 / 9, 3 / 9, 4 / 9]);
    // minP 0.6: keeps p >= 0.24 -> tokens 2, 3.
    expectDistribution(histogram(p, { ...plain, minP: 0.6 }), [0, 0, 3 / 7, 4 / 7]);
  });

  it('applies top-k, then top-p on the renormalized survivors, then min-p', () => {
    // top-k 3 -> 0.2, 0.3, 0.4 (/0.9); top-p 0.5 -> 0.444 + 0.333 >= 0.5 keeps 2 and 3; min-p 0.8 -> 0.3 < 0.32 drops 2.
    expect(histogram(p, { temperature: 1, topK: 3, topP: 0.5, minP: 0.8 })).toEqual([0, 0, 0, 1]);
    // Without min-p the same top-k/top-p keep two tokens.
    expectDistribution(histogram(p, { temperature: 1, topK: 3, topP: 0.5, minP: 0 }), [0, 0, 3 / 7, 4 / 7]);
  });

  it('never returns a token whose logit is -Infinity, even at u close to 1', () => {
    expect(sampleReference(logitsOf([1, 1, 0]), plain, 0.999999)).toBe(1);
  });
});
