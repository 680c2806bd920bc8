// The reference ops against independent f64 formulas. Sizes are deliberately not multiples of 4; seeds fixed.
// ε = 2^-24 (f32 unit roundoff). The reference accumulates in f64 and rounds when it stores, so each tolerance
// counts the f32 roundings between the two computations, times the magnitudes they touch.
import { describe, expect, it } from 'vitest';
import { add, attention, embedding, linear, type LoraDelta, rmsnorm, silu, siluMul, softmax } from '../../src/reference/ops.js';
import { applyRope, ropeInvFreq } from '../../src/reference/rope.js';

const EPS = 2 ** -24;

/** mulberry32: a small deterministic PRNG; values uniform in [-scale, scale). */
function rng(seed: number): (scale?: number) => number {
  let a = seed >>> 0;
  return (scale = 1) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  };
}

function randArray(r: (s?: number) => number, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => r(scale));
}

/** Fails with the first few mismatches printed: |got - want| <= tol(i). */
function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: (i: number) => number, what: string): void {
  expect(got.length).toBe(want.length);
  const bad: string[] = [];
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    if (!(err <= tol(i))) bad.push(`[${i}] got ${got[i]} want ${want[i]} err ${err.toExponential(2)} tol ${tol(i).toExponential(2)}`);
  }
  if (bad.length) console.log(`${what}: ${bad.length} mismatches, first:\n  ${bad.slice(0, 5).join('\n  ')}`);
  expect(bad.length, what).toBe(0);
}

describe('linear', () => {
  for (const [n, inF, out, rank] of [
    [1, 7, 5, 1],
    [3, 33, 17, 3],
    [5, 130, 67, 8],
  ] as const) {
    it(`y = x·Wᵀ + b + scale·(x·Aᵀ)·Bᵀ matches the merged weight in f64 (n ${n}, in ${inF}, out ${out}, r ${rank})`, () => {
      const r = rng(1000 + inF);
      const x = randArray(r, n * inF);
      const w = randArray(r, out * inF, 0.5);
      const b = randArray(r, out, 0.1);
      const lora: LoraDelta = { a: randArray(r, rank * inF, 0.3), b: randArray(r, out * rank, 0.3), rank, scale: 2 };
      const y = linear(x, n, { weight: w, bias: b, outFeatures: out, inFeatures: inF }, lora);

      // f64: W' = W + scale·B·A, y = x·W'ᵀ + b; tol: f32 roundings of the shrink result, of y, of the sums.
      const want = new Float64Array(n * out);
      const mag = new Float64Array(n * out);
      for (let t = 0; t < n; t++) {
        for (let j = 0; j < out; j++) {
          let s = b[j]!;
          let m = Math.abs(b[j]!);
          for (let i = 0; i < inF; i++) {
            let ba = 0;
            for (let q = 0; q < rank; q++) ba += lora.b[j * rank + q]! * lora.a[q * inF + i]!;
            const wij = w[j * inF + i]! + lora.scale * ba;
            s += x[t * inF + i]! * wij;
            m += Math.abs(x[t * inF + i]!) * (Math.abs(w[j * inF + i]!) + lora.scale * Math.abs(ba));
          }
          want[t * out + j] = s;
          mag[t * out + j] = m;
        }
      }
      // The shrink x·Aᵀ is stored in f32 (one rounding, relative ε, reaching y through scale·|B|·|x·Aᵀ| <= mag)
      // and y is stored once (ε·|y| <= ε·mag): 2ε·mag, doubled for the f64 reassociation and safety.
      expectClose(y, want, (i) => 4 * EPS * mag[i]!, 'linear+lora');

      // Without LoRA the delta is absent: a LoRA with non-zero B must change y.
      const base = linear(x, n, { weight: w, bias: b, outFeatures: out, inFeatures: inF });
      expect(base.some((v, i) => Math.abs(v - y[i]!) > 1e-3)).toBe(true);
    });
  }

  it('refuses an input that does not match the layer', () => {
    expect(() => linear(new Float32Array(10), 2, { weight: new Float32Array(12), bias: null, outFeatures: 3, inFeatures: 4 })).toThrow(/linear: input size/);
  });
});

describe('elementwise ops', () => {
  it('embedding picks rows and refuses out-of-range ids', () => {
    const table = Float32Array.from({ length: 15 }, (_, i) => i);
    expect([...embedding(table, 3, [4, 0])]).toEqual([12, 13, 14, 0, 1, 2]);
    expect(() => embedding(table, 3, [5])).toThrow(/token id out of range/);
  });

  it('rmsnorm = x / sqrt(mean(x²) + eps) · w', () => {
    const r = rng(7);
    const dim = 37;
    const x = randArray(r, 3 * dim, 3);
    const w = randArray(r, dim);
    const y = rmsnorm(x, w, 1e-5);
    const want: number[] = [];
    for (let t = 0; t < 3; t++) {
      let ss = 0;
      for (let i = 0; i < dim; i++) ss += x[t * dim + i]! ** 2;
      const inv = 1 / Math.sqrt(ss / dim + 1e-5);
      for (let i = 0; i < dim; i++) want.push(x[t * dim + i]! * inv * w[i]!);
    }
    // Four f32 roundings (mean, 1/sqrt, x·inv, ·w), each relative ε of |y|.
    expectClose(y, want, (i) => 4 * EPS * Math.abs(want[i]!) + 1e-30, 'rmsnorm');
  });

  it('silu, siluMul, add, softmax', () => {
    expect(silu(0)).toBe(0);
    expect(silu(2)).toBeCloseTo(2 / (1 + Math.exp(-2)), 12);
    expect([...siluMul(Float32Array.of(0, 2), Float32Array.of(5, 3))]).toEqual([0, Math.fround(Math.fround(silu(2)) * 3)]);
    expect([...add(Float32Array.of(1, 2), Float32Array.of(0.5, -2))]).toEqual([1.5, 0]);
    const p = softmax(Float32Array.of(1000, 1000, 999)); // max-subtracted: no overflow
    const e = Math.exp(-1);
    expectClose(p, [1 / (2 + e), 1 / (2 + e), e / (2 + e)], () => 2 * EPS, 'softmax');
  });
});

describe('RoPE', () => {
  it('inv_freq = theta^(-2i/d) with no scaling, /factor with linear scaling', () => {
    const d = 18;
    const inv = ropeInvFreq(d, 10000, { type: 'none' });
    const want = Array.from({ length: d / 2 }, (_, i) => 10000 ** (-(2 * i) / d));
    // f32 exponent, f32 power, f32 reciprocal: a few ε relative, times ln(theta)·|exponent| <= ln(1e4) ≈ 9.2 for the exponent's rounding.
    expectClose(inv, want, (i) => 16 * EPS * want[i]!, 'inv_freq');
    const lin = ropeInvFreq(d, 10000, { type: 'linear', factor: 4 });
    expectClose(lin, want.map((v) => v / 4), (i) => 16 * EPS * want[i]!, 'linear inv_freq');
  });

  it("llama3 scaling follows transformers' _compute_llama3_parameters (Llama 3.1 parameters)", () => {
    const scaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } as const;
    const d = 128;
    const base = ropeInvFreq(d, 500000, { type: 'none' });
    const got = ropeInvFreq(d, 500000, scaling);
    // The Python, transcribed in f64 on the same f32 base frequencies.
    const lowWavelen = 8192 / 1;
    const highWavelen = 8192 / 4;
    let nHigh = 0;
    let nLow = 0;
    let nMid = 0;
    const want = [...base].map((f) => {
      const wavelen = (2 * Math.PI) / f;
      const llama = wavelen > lowWavelen ? f / 8 : f;
      const smooth = (8192 / wavelen - 1) / (4 - 1);
      const smoothed = ((1 - smooth) * llama) / 8 + smooth * llama;
      const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
      if (medium) nMid++;
      else if (wavelen > lowWavelen) nLow++;
      else nHigh++;
      return medium ? smoothed : llama;
    });
    // All three bands occur for these parameters, so each branch is exercised.
    expect(nHigh).toBeGreaterThan(0);
    expect(nMid).toBeGreaterThan(0);
    expect(nLow).toBeGreaterThan(0);
    expect(got[0]).toBe(base[0]); // highest frequency: unchanged
    expect(got[63]).toBe(Math.fround(base[63]! / 8)); // lowest: divided by factor
    // Up to six f32 roundings in the interpolation, relative ε each.
    expectClose(got, want, (i) => 8 * EPS * want[i]!, 'llama3 inv_freq');
  });

  it('rotates each (i, i + d/2) pair by pos · inv_freq_i', () => {
    const r = rng(3);
    const [n, heads, d, start] = [3, 2, 10, 5];
    const inv = ropeInvFreq(d, 10000, { type: 'none' });
    const x = randArray(r, n * heads * d);
    const y = x.slice();
    applyRope(y, n, heads, d, start, inv);
    const want = new Float64Array(x.length);
    const mag = new Float64Array(x.length);
    for (let t = 0; t < n; t++) {
      for (let h = 0; h < heads; h++) {
        for (let i = 0; i < d / 2; i++) {
          const o = (t * heads + h) * d;
          const angle = Math.fround((start + t) * inv[i]!);
          const [a, b] = [x[o + i]!, x[o + i + d / 2]!];
          want[o + i] = a * Math.cos(angle) - b * Math.sin(angle);
          want[o + i + d / 2] = b * Math.cos(angle) + a * Math.sin(angle);
          mag[o + i] = mag[o + i + d / 2] = Math.hypot(a, b);
        }
      }
    }
    // cos/sin stored in f32, two f32 products and the sum: 4ε of the pair's length.
    expectClose(y, want, (i) => 4 * EPS * mag[i]!, 'rope');
  });

  it('q·k after RoPE depends only on the distance between positions', () => {
    const r = rng(11);
    const d = 64;
    const inv = ropeInvFreq(d, 10000, { type: 'none' });
    const q = randArray(r, d);
    const k = randArray(r, d);
    const dotAt = (pq: number, pk: number): number => {
      const qq = q.slice();
      const kk = k.slice();
      applyRope(qq, 1, 1, d, pq, inv);
      applyRope(kk, 1, 1, d, pk, inv);
      return qq.reduce((s, v, i) => s + v * kk[i]!, 0);
    };
    const norm = (v: Float32Array): number => Math.hypot(...v);
    const ref = dotAt(7, 3);
    const maxPos = 103;
    // The angle pos·inv_freq is rounded to f32 (error <= ε·pos since inv_freq <= 1), at both positions, plus a few
    // roundings per product: (4·maxPos + 8)·ε·|q|·|k|.
    const tol = (4 * maxPos + 8) * EPS * norm(q) * norm(k);
    for (const shift of [1, 20, 96]) expect(Math.abs(dotAt(7 + shift, 3 + shift) - ref)).toBeLessThanOrEqual(tol);
    expect(Math.abs(dotAt(8, 3) - ref)).toBeGreaterThan(tol); // a different distance does change it
  });
});

describe('attention', () => {
  for (const [numHeads, numKvHeads, window] of [
    [6, 2, null],
    [3, 3, null],
    [4, 1, 3],
  ] as const) {
    it(`causal GQA ${numHeads}/${numKvHeads} heads, window ${window} = softmax(q·k/√d)·v per head, brute force`, () => {
      const r = rng(numHeads * 10 + numKvHeads);
      const [d, startPos, n] = [5, 4, 3];
      const total = startPos + n;
      const q = randArray(r, n * numHeads * d);
      const keys = Array.from({ length: total }, () => randArray(r, numKvHeads * d));
      const values = Array.from({ length: total }, () => randArray(r, numKvHeads * d));
      const got = attention(q, keys, values, { n, startPos, numHeads, numKvHeads, headDim: d, slidingWindow: window });

      // Brute force: kv heads repeated (HF repeat_kv: query head h reads kv head h // (numHeads / numKvHeads)),
      // an explicit mask, a plain softmax.
      const want = new Float64Array(got.length);
      let maxV = 0;
      for (const v of values) for (const x of v) maxV = Math.max(maxV, Math.abs(x));
      for (let t = 0; t < n; t++) {
        const pos = startPos + t;
        for (let h = 0; h < numHeads; h++) {
          const kvh = Math.floor((h * numKvHeads) / numHeads);
          const s = keys.map((k, j) => {
            const visible = j <= pos && (window === null || pos - j < window);
            if (!visible) return -Infinity;
            let dot = 0;
            for (let i = 0; i < d; i++) dot += q[(t * numHeads + h) * d + i]! * k[kvh * d + i]!;
            return dot / Math.sqrt(d);
          });
          const m = Math.max(...s);
          const e = s.map((v) => Math.exp(v - m));
          const z = e.reduce((a, b) => a + b, 0);
          for (let i = 0; i < d; i++) {
            want[(t * numHeads + h) * d + i] = e.reduce((acc, p, j) => acc + (p / z) * values[j]![kvh * d + i]!, 0);
          }
        }
      }
      // Both in f64; one f32 rounding of the output, which is a convex combination of values: ε·max|v|, doubled.
      expectClose(got, want, () => 2 * EPS * maxV, 'attention');
    });
  }
});
