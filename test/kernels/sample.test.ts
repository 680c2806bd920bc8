// sample (src/kernels/sample.ts, contract at the top of shaders/sample.wgsl) against src/reference/sampling.ts:
// - greedy (temperature <= 0) must equal the reference argmax exactly: ties (lowest index wins, also when the tied
//   values sit in different threads' strides), -Infinity and huge finite logits, V not a multiple of 4 or of the
//   workgroup size;
// - sampling (temperature, top-k, top-p, min-p) on 64 rows per dispatch with different parameters each, against
//   sampleReference with the same uniform u = pcg(seed ^ pcg(counter)) >> 8 / 2^24 (test/helpers/kernels.ts);
// - logprob = log_softmax(raw logits)[token];
// - the hash itself: bit-exact against the CPU copy through rows of equal logits, and the mean/variance of u.
// Fixed seeds.
//
// Why a bracket instead of equality for sampled tokens: the kernel sums in f32, the reference in f64. Inverse CDF
// in index order is monotone in u, so if every normalized prefix sum of the kernel is within δ of the exact one,
// the kernel's token lies between the reference's tokens for u − δ and u + δ (in index order). δ (ε = 2^-24):
//   exp arguments z_i − z_max are formed from two f32 roundings: <= 2ε·max|z| relative change of each weight;
//   WGSL's exp errs by (3 + 2|x|) ulp, which summed over weights e^x relative to their total (>= 1) is
//   <= (3 + 2V/e)·ε; the prefix and the total are f32 sums of <= V terms: Vε each, 2Vε on their ratio; goal = u·total
//   one more ε:   δ = (3V + 8 + 2·max|z|)·ε.
// logprob tolerance: the sum of V exps errs by (V + 1)ε + (3 + 2V/e)ε relative, i.e. that much absolute after log;
// WGSL's log errs by <= 2^-21 absolute near 1 and 3 ulp elsewhere (3ε·ln V); lse and the difference are rounded:
//   tol = (2V + 8 + 3·ln V)·ε + 2^-21 + 2ε·(|lse| + |logprob|).
import { describe, expect, it } from 'vitest';
import { MAX_TOPN, SEQ_SAMPLING_BYTES, sampleOp, writeRowSampling } from '../../src/kernels/sample.js';
import {
  applyLogitBias,
  applyPenalties,
  greedy,
  sampleReference,
  topLogprobs,
  type PenaltyEntry,
  type PenaltyParams,
  type SamplingParams,
} from '../../src/reference/sampling.js';
import { PEN_BIAS_ONLY, PEN_IN_PROMPT, PEN_WORDS } from '../../src/kernels/sample.js';
import { EPS, expectClose, expectExact, pcg, rng, sampleUniform, useKernelHarness } from '../helpers/kernels.js';

const h = useKernelHarness();

interface Row extends SamplingParams {
  seed: number;
  counter: number;
  topN?: number;
  penalties?: { entries: PenaltyEntry[]; params: PenaltyParams };
  bias?: Map<number, number>; // logit_bias, applied before the penalties
}

const GREEDY: Row = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, counter: 0 };

/** Runs the sampler on `logits` [S, V] (row stride ld >= V) and returns the tokens and logprobs. */
async function runSampler(
  logits: Float32Array[],
  V: number,
  rows: Row[],
): Promise<{ tokens: Uint32Array; logprobs: Float32Array; topIds: Uint32Array; topLps: Float32Array }> {
  const S = rows.length;
  const ld = V + 5; // any stride >= V; the padding holds values that would win every test if read
  const flat = new Float32Array(S * ld).fill(1e30);
  logits.forEach((l, s) => flat.set(l, s * ld));
  const params = new ArrayBuffer(S * SEQ_SAMPLING_BYTES);
  const f32 = new Float32Array(params);
  const u32 = new Uint32Array(params);
  const pen: number[] = []; // PEN_WORDS per entry: id, count | flags, bias (f32 bits), 0
  const bits = (v: number) => new Uint32Array(new Float32Array([v]).buffer)[0]!;
  rows.forEach((p, s) => {
    const penStart = pen.length / PEN_WORDS;
    const penalized = new Set<number>();
    for (const e of p.penalties?.entries ?? []) {
      pen.push(e.id, e.count | (e.inPrompt ? PEN_IN_PROMPT : 0), bits(p.bias?.get(e.id) ?? 0), 0);
      penalized.add(e.id);
    }
    for (const [id, b] of p.bias ?? []) if (!penalized.has(id)) pen.push(id, PEN_BIAS_ONLY, bits(b), 0);
    writeRowSampling(f32, u32, s, {
      ...p,
      topN: p.topN ?? 0,
      penStart,
      penLen: pen.length / PEN_WORDS - penStart,
      presence: p.penalties?.params.presence ?? 0,
      frequency: p.penalties?.params.frequency ?? 0,
      repetition: p.penalties?.params.repetition ?? 1,
    });
  });
  const tokens = h.storage('tokens', new Uint32Array(S + 1).fill(0xdeadbeef));
  const topIds = h.storage('topIds', new Uint32Array(S * MAX_TOPN));
  const topLps = h.storage('topLogprobs', new Float32Array(S * MAX_TOPN));
  const logprobs = h.storage('logprobs', new Float32Array(S + 1).fill(12345));
  const op = await sampleOp(h.gpu(), {
    label: 'sample',
    vocab: V,
    ld,
    logits: h.storage('logits', flat),
    sampling: h.storage('sampling', new Uint8Array(params)),
    penalties: pen.length ? h.storage('penalties', new Uint32Array(pen)) : h.dummy(),
    tokens,
    logprobs,
    topIds,
    topLogprobs: topLps,
  });
  await h.run(op, { tokens: S + 3, seqs: S });
  const t = await h.readU32(tokens, S + 1);
  const lp = await h.readF32(logprobs, S + 1);
  expect(t[S], 'token past the last row (untouched)').toBe(0xdeadbeef);
  expect(lp[S], 'logprob past the last row (untouched)').toBe(12345);
  return {
    tokens: t.subarray(0, S),
    logprobs: lp.subarray(0, S),
    topIds: await h.readU32(topIds, S * MAX_TOPN),
    topLps: await h.readF32(topLps, S * MAX_TOPN),
  };
}

/** log_softmax(l)[i] in f64, and the log-sum-exp. */
function logSoftmax(l: Float32Array, i: number): { logprob: number; lse: number } {
  let m = -Infinity;
  for (const v of l) m = Math.max(m, v);
  let z = 0;
  for (const v of l) z += Math.exp(v - m);
  const lse = m + Math.log(z);
  return { logprob: l[i]! - lse, lse };
}

function checkLogprobs(logits: Float32Array[], tokens: Uint32Array, got: Float32Array, V: number, what: string): void {
  const want = new Float64Array(tokens.length);
  const tol = new Float64Array(tokens.length);
  tokens.forEach((tok, s) => {
    const { logprob, lse } = logSoftmax(logits[s]!, Math.min(tok, V - 1));
    want[s] = logprob;
    tol[s] = (2 * V + 8 + 3 * Math.log(V)) * EPS + 2 ** -21 + 2 * EPS * (Math.abs(lse) + Math.abs(logprob));
  });
  expectClose(got, want, (i) => tol[i]!, `${what}: logprobs`, (i) => `logprob[row ${i}, token ${tokens[i]}]`);
}

function uniformRow(r: ReturnType<typeof rng>, V: number, spread: number): Float32Array {
  return Float32Array.from({ length: V }, () => r.uniform(-spread, spread));
}

describe('sample: greedy', () => {
  for (const V of [1, 7, 255, 257, 1001, 4099]) {
    it(`argmax with ties, -Infinity and huge logits, V ${V}`, async () => {
      const r = rng(V);
      const rows: Float32Array[] = [];
      rows.push(uniformRow(r, V, 5)); // plain
      const ties = uniformRow(r, V, 5); // the max at several indices, in the same and in different thread strides
      for (const i of [V - 1, 300, 259, 3, 6, 7]) if (i < V) ties[i] = 10;
      rows.push(ties);
      const inf = uniformRow(r, V, 5).map((v, i) => (i % 2 === 0 && i !== V - 1 ? -Infinity : v)); // half masked
      rows.push(inf);
      const huge = uniformRow(r, V, 5);
      huge[0] = -3e38;
      huge[Math.floor(V / 2)] = 3e38;
      rows.push(huge);
      const negHuge = uniformRow(r, V, 1).map((v) => v - 3e38); // all near -3e38 (all equal after rounding)
      negHuge[V - 1] = -2.9e38;
      rows.push(negHuge);
      rows.push(new Float32Array(V).fill(0.5)); // all tied
      const last = uniformRow(r, V, 5);
      last[V - 1] = 6;
      rows.push(last);
      const params = rows.map((_, s) => ({ ...GREEDY, temperature: s % 3 === 2 ? -1 : 0, seed: r.int(2 ** 32), counter: s }));
      const { tokens, logprobs } = await runSampler(rows, V, params);
      expectExact(tokens, rows.map((l) => greedy(l)), `greedy V ${V}: tokens`, (i) => `token[row ${i}]`);
      checkLogprobs(rows, tokens, logprobs, V, `greedy V ${V}`);
    });
  }

  it('a row whose every logit is -Infinity or -FLT_MAX gives token 0, as the reference argmax does', async () => {
    const V = 300;
    const rows = [new Float32Array(V).fill(-Infinity), new Float32Array(V).fill(-3.4028234663852886e38)];
    const { tokens } = await runSampler(rows, V, rows.map(() => GREEDY));
    expectExact(tokens, rows.map((l) => greedy(l)), 'greedy on fully masked rows: tokens', (i) => `token[row ${i}]`);
  });
});

/** 64 rows of different shapes of distribution and different parameters; returns rows and params. */
function samplingBatch(V: number, seed: number): { logits: Float32Array[]; params: Row[] } {
  const r = rng(seed);
  const temperatures = [1, 0.5, 1.7, 0.3, 0.8];
  const topKs = [0, 1, 5, 40, V - 1, V, 300, 2];
  const topPs = [1, 0.9, 0.5, 0.1, 0.99, 0.7];
  const minPs = [0, 0.05, 0.2, 0, 0.01];
  const spreads = [1, 3, 8, 0.1];
  const logits: Float32Array[] = [];
  const params: Row[] = [];
  for (let s = 0; s < 63; s++) {
    const l = uniformRow(r, V, spreads[s % spreads.length]!);
    // Many ties (top-k/top-p edges); `+ 0` turns -0 into +0, which has its own test below.
    if (s % 7 === 3) for (let i = 0; i < V; i++) l[i] = Math.round(l[i]! * 2) / 2 + 0;
    if (s % 11 === 5) for (let i = 0; i < V; i += 3) l[i] = -Infinity; // masked tokens
    logits.push(l);
    params.push({
      temperature: temperatures[s % temperatures.length]!,
      topK: topKs[(s * 3) % topKs.length]!,
      topP: topPs[(s * 5) % topPs.length]!,
      minP: minPs[(s * 7) % minPs.length]!,
      seed: r.int(2 ** 32),
      counter: r.int(100000),
    });
  }
  // The last row repeats the first: the same logits, seed and counter give the same token in any row.
  logits.push(logits[0]!);
  params.push({ ...params[0]! });
  return { logits, params };
}

describe('sample: temperature, top-k, top-p, min-p', () => {
  for (const [V, seed] of [[1001, 1], [4099, 2], [257, 3]] as const) {
    it(`64 rows with different parameters, V ${V}: token within the reference's [u − δ, u + δ] bracket`, async () => {
      const { logits, params } = samplingBatch(V, seed);
      const { tokens, logprobs } = await runSampler(logits, V, params);
      const lines: string[] = [];
      params.forEach((p, s) => {
        let zmax = 0;
        for (const v of logits[s]!) if (Number.isFinite(v)) zmax = Math.max(zmax, Math.abs(v / p.temperature));
        const delta = (3 * V + 8 + 2 * zmax) * EPS;
        const u = sampleUniform(p.seed, p.counter);
        const lo = sampleReference(logits[s]!, p, Math.max(0, u - delta));
        const hi = sampleReference(logits[s]!, p, Math.min(1 - 2 ** -24, u + delta));
        const tok = tokens[s]!;
        if (!(tok >= lo && tok <= hi)) {
          lines.push(`row ${s} (T ${p.temperature}, topK ${p.topK}, topP ${p.topP}, minP ${p.minP}, u ${u}): got ${tok} want [${lo}, ${hi}]` +
            ` (reference at u: ${sampleReference(logits[s]!, p, u)})`);
        }
      });
      expect(lines, `${lines.length} of ${params.length} rows outside the bracket:\n  ${lines.slice(0, 8).join('\n  ')}`).toEqual([]);
      expect(tokens[63], 'repeated row').toBe(tokens[0]);
      checkLogprobs(logits, tokens, logprobs, V, `sampling V ${V}`);
    });
  }
});

describe('sample: signed zeros', () => {
  it('top-k keeps logits of -0.0 tied with +0.0 (l_i >= the k-th largest compares values, -0 == +0)', async () => {
    // Half the logits +0, half -0, the rest far below: with topK 1 every zero ties with the largest and is kept,
    // so the token is the reference's pick among all zeros, whatever their sign.
    const V = 64;
    const l = new Float32Array(V).fill(-20);
    for (let i = 0; i < 40; i++) l[i] = i % 2 ? -0 : 0;
    const params: Row[] = Array.from({ length: 16 }, (_, s) => ({ temperature: 1, topK: 1, topP: 1, minP: 0, seed: 1000 + s, counter: s }));
    const { tokens } = await runSampler(params.map(() => l), V, params);
    const want = params.map((p) => sampleReference(l, p, sampleUniform(p.seed, p.counter)));
    expectExact(tokens, want, 'top-k 1 over ±0 ties: tokens', (i) => `token[row ${i}, u ${sampleUniform(params[i]!.seed, params[i]!.counter)}]`);
  });
});

describe('sample: random numbers', () => {
  it("the kernel's uniform equals pcg(seed ^ pcg(counter)) >> 8 / 2^24 (top 12 bits, equal logits, V 4096)", async () => {
    // Equal weights: prefix sums are exact integers in f32 and u·V is exact, so the token is floor(u·4096).
    const V = 4096;
    const r = rng(77);
    const S = 256;
    const flat = new Float32Array(V).fill(0.25);
    const params: Row[] = Array.from({ length: S }, (_, s) => ({
      temperature: 1,
      topK: 0,
      topP: 1,
      minP: 0,
      seed: s < 4 ? [0, 1, 0xffffffff, 0x80000000][s]! : r.int(2 ** 32),
      counter: s < 128 ? s : r.int(2 ** 32),
    }));
    const { tokens } = await runSampler(params.map(() => flat), V, params);
    const want = params.map((p) => Math.floor(sampleUniform(p.seed, p.counter) * V));
    expectExact(tokens, want, 'floor(u·V)', (i) => `token[row ${i}, seed ${params[i]!.seed}, counter ${params[i]!.counter}]`);
  });

  it("pcg (Math.imul) equals a BigInt transcription of sample.wgsl's pcg", () => {
    // An independent BigInt transcription of the WGSL function (u32 arithmetic as explicit mod 2^32).
    const ref = (v: number) => {
      const state = BigInt.asUintN(32, BigInt(v) * 747796405n + 2891336453n);
      const word = BigInt.asUintN(32, ((state >> ((state >> 28n) + 4n)) ^ state) * 277803737n);
      return Number((word >> 22n) ^ word);
    };
    for (const v of [0, 1, 2, 12345, 0x7fffffff, 0x80000000, 0xffffffff]) expect(pcg(v), `pcg(${v})`).toBe(ref(v));
  });

  it('u over 100,000 counters: mean 1/2, variance 1/12, and 16 equal bins (for two seeds)', () => {
    const n = 100_000;
    for (const seed of [0, 0x9e3779b9]) {
      let sum = 0;
      let sq = 0;
      const bins = new Array<number>(16).fill(0);
      for (let c = 0; c < n; c++) {
        const u = sampleUniform(seed, c);
        expect(u >= 0 && u < 1).toBe(true);
        sum += u;
        sq += (u - 0.5) ** 2;
        bins[Math.floor(u * 16)]!++;
      }
      // Standard errors: mean sqrt(1/12/n); sample variance sqrt((1/80 − 1/144)/n). Allow 5 of them.
      expect(Math.abs(sum / n - 0.5), `mean (seed ${seed})`).toBeLessThan(5 * Math.sqrt(1 / 12 / n));
      expect(Math.abs(sq / n - 1 / 12), `variance (seed ${seed})`).toBeLessThan(5 * Math.sqrt((1 / 80 - 1 / 144) / n));
      // χ² with 15 degrees of freedom: P(χ² > 50) < 2e-5.
      const e = n / 16;
      const chi2 = bins.reduce((a, b) => a + (b - e) ** 2 / e, 0);
      expect(chi2, `χ² of 16 bins (seed ${seed})`).toBeLessThan(50);
    }
  });
});

/**
 * Rows whose logits the kernel changes in place before choosing (penalties, biases): greedy rows must pick the
 * argmax of `final[s]` exactly, sampled rows a token within the bracket for u ± δ (see the top of the file).
 */
function mismatches(rows: Row[], tokens: Uint32Array, V: number, final: Float32Array[]): string[] {
  const lines: string[] = [];
  rows.forEach((p, s) => {
    const row = final[s]!;
    if (p.temperature <= 0) {
      if (tokens[s] !== greedy(row)) lines.push(`row ${s} greedy: got ${tokens[s]} want ${greedy(row)}`);
      return;
    }
    let zmax = 0;
    for (const v of row) zmax = Math.max(zmax, Math.abs(v / p.temperature));
    const delta = (3 * V + 8 + 2 * zmax) * EPS;
    const u = sampleUniform(p.seed, p.counter);
    const lo = sampleReference(row, p, Math.max(0, u - delta));
    const hi = sampleReference(row, p, Math.min(1 - 2 ** -24, u + delta));
    if (!(tokens[s]! >= lo && tokens[s]! <= hi)) lines.push(`row ${s} sampled: got ${tokens[s]} want [${lo}, ${hi}]`);
  });
  return lines;
}

/**
 * The raw log-softmax of each row's token, and its tolerance: the log-softmax bound (top of the file) plus
 * `undo(s, tok)`, what recovering the raw logit from the changed one may cost.
 */
function rawLogprobs(logits: Float32Array[], tokens: Uint32Array, V: number, undo: (s: number, tok: number) => number) {
  const want = new Float64Array(tokens.length);
  const tol = new Float64Array(tokens.length);
  tokens.forEach((tok, s) => {
    const l = logits[s]!;
    let m = -Infinity;
    for (const v of l) m = Math.max(m, v);
    let z = 0;
    for (const v of l) z += Math.exp(v - m);
    const lse = m + Math.log(z);
    want[s] = l[tok]! - lse;
    tol[s] = (2 * V + 8 + 3 * Math.log(V)) * EPS + 2 ** -21 + 2 * EPS * (Math.abs(lse) + Math.abs(want[s]!)) + undo(s, tok);
  });
  return { want, tol };
}

describe('sample: penalties and top logprobs', () => {
  /** Penalty entries for row s: some prompt-only tokens, some output tokens with counts, the row's max among them. */
  function entries(r: ReturnType<typeof rng>, V: number, l: Float32Array): PenaltyEntry[] {
    const ids = r.shuffle([...Array(V).keys()]).slice(0, Math.min(V, 40));
    ids.push(greedy(l)); // the unpenalized winner is penalized too, so greedy must move
    return [...new Set(ids)].map((id, i) => ({ id, count: i % 3 === 0 ? 0 : 1 + (i % 4), inPrompt: i % 3 !== 1 }));
  }

  for (const V of [257, 1001]) {
    it(`greedy and sampled rows with presence/frequency/repetition penalties match the reference on penalized logits, V ${V}`, async () => {
      const r = rng(900 + V);
      const logits: Float32Array[] = [];
      const rows: Row[] = [];
      const combos: PenaltyParams[] = [
        { presence: 0.5, frequency: 0, repetition: 1 },
        { presence: 0, frequency: 0.7, repetition: 1 },
        { presence: 0, frequency: 0, repetition: 1.3 },
        { presence: -0.4, frequency: 0.3, repetition: 0.8 },
        { presence: 2, frequency: 2, repetition: 2 },
      ];
      for (let s = 0; s < 20; s++) {
        const l = uniformRow(r, V, 4);
        logits.push(l);
        const params = combos[s % combos.length]!;
        const sampled = s % 2 === 1;
        rows.push({
          temperature: sampled ? 0.9 : 0,
          topK: sampled && s % 4 === 1 ? 30 : 0,
          topP: sampled && s % 4 === 3 ? 0.8 : 1,
          minP: 0,
          seed: r.int(2 ** 32),
          counter: s,
          penalties: { entries: entries(r, V, l), params },
        });
      }
      const { tokens, logprobs } = await runSampler(logits, V, rows);
      const final = rows.map((p, s) => applyPenalties(logits[s]!, p.penalties!.entries, p.penalties!.params));
      const lines = mismatches(rows, tokens, V, final);
      expect(lines, lines.join('\n')).toEqual([]);
      // Logprobs are of the raw distribution (before penalties). Undoing a penalty in f32 to recover the raw logit
      // costs a few more roundings: 4 ulp of the logit on top of the log-softmax tolerance.
      const { want, tol } = rawLogprobs(logits, tokens, V, (s, tok) => 4 * EPS * (Math.abs(logits[s]![tok]!) + 4));
      expectClose(logprobs, want, (i) => tol[i]!, 'penalized rows: raw logprobs', (i) => `logprob[row ${i}]`);
    });
  }

  for (const V of [257, 1001]) {
    it(`logit_bias (alone and with penalties on some of its tokens) matches the reference, V ${V}`, async () => {
      const r = rng(4100 + V);
      const logits: Float32Array[] = [];
      const rows: Row[] = [];
      const params: PenaltyParams = { presence: 0.5, frequency: 0.4, repetition: 1.3 };
      for (let s = 0; s < 24; s++) {
        const l = uniformRow(r, V, 4);
        logits.push(l);
        // -100 on the unbiased winner (so greedy must move), small biases on 30 tokens, and on every fourth row
        // +100 on a random token (which must then win).
        const bias = new Map<number, number>([[greedy(l), -100]]);
        for (const id of r.shuffle([...Array(V).keys()]).slice(0, 30)) if (!bias.has(id)) bias.set(id, (r.int(2001) - 1000) / 250);
        if (s % 4 === 3) bias.set(r.int(V), 100);
        const sampled = s % 2 === 1;
        rows.push({
          temperature: sampled ? 0.8 : 0,
          topK: sampled && s % 6 === 1 ? 20 : 0,
          topP: sampled && s % 6 === 5 ? 0.9 : 1,
          minP: 0,
          seed: r.int(2 ** 32),
          counter: s,
          bias,
          // Every third row also penalizes tokens, some of them biased too (one entry carries both).
          penalties: s % 3 === 0 ? { entries: entries(r, V, l).concat([...bias.keys()].slice(0, 5).map((id) => ({ id, count: 2, inPrompt: true }))), params } : undefined,
        });
        if (rows[s]!.penalties) rows[s]!.penalties!.entries = [...new Map(rows[s]!.penalties!.entries.map((e) => [e.id, e])).values()];
      }
      const { tokens, logprobs } = await runSampler(logits, V, rows);
      const final = rows.map((p, s) => {
        const biased = applyLogitBias(logits[s]!, p.bias!);
        return p.penalties ? applyPenalties(biased, p.penalties.entries, p.penalties.params) : biased;
      });
      const lines = mismatches(rows, tokens, V, final);
      expect(lines, lines.join('\n')).toEqual([]);
      rows.forEach((p, s) => {
        const forced = [...p.bias!].find(([, b]) => b === 100)?.[0];
        if (forced !== undefined && !p.penalties) expect(tokens[s], `row ${s}: the +100 token wins`).toBe(forced);
        expect(tokens[s], `row ${s}: the -100 token loses`).not.toBe(greedy(logits[s]!));
      });
      // Logprobs stay those of the raw logits. Recovering the raw logit undoes up to 8 f32 operations (bias, the
      // penalties), each rounding by at most ε·(2(|l| + |bias|) + 10) (the largest magnitude along the way with these
      // parameters), and undoing the repetition division doubles it: 16ε·(2(|l| + |bias|) + 10) on top of the
      // log-softmax tolerance.
      const { want, tol } = rawLogprobs(logits, tokens, V, (s, tok) => {
        const b = Math.abs(rows[s]!.bias!.get(tok) ?? 0);
        return 16 * EPS * (2 * (Math.abs(logits[s]![tok]!) + b) + 10);
      });
      expectClose(logprobs, want, (i) => tol[i]!, 'biased rows: raw logprobs', (i) => `logprob[row ${i}]`);
    });
  }

  it('top-N logprobs are the N most likely raw tokens (lower index first on ties), penalties or not', async () => {
    const V = 1001;
    const r = rng(77);
    const logits: Float32Array[] = [];
    const rows: Row[] = [];
    for (let s = 0; s < 12; s++) {
      const l = uniformRow(r, V, 3);
      if (s % 3 === 0) for (let i = 0; i < V; i++) l[i] = Math.round(l[i]! * 2) / 2 + 0; // many ties
      logits.push(l);
      rows.push({
        temperature: s % 2 ? 0.7 : 0,
        topK: 0,
        topP: 1,
        minP: 0,
        seed: s,
        counter: s,
        topN: [1, 5, 20, 3][s % 4]!,
        penalties: s % 4 === 2 ? { entries: entries(r, V, l), params: { presence: 1, frequency: 1, repetition: 1.5 } } : undefined,
      });
    }
    const { topIds, topLps } = await runSampler(logits, V, rows);
    rows.forEach((p, s) => {
      const want = topLogprobs(logits[s]!, p.topN!);
      const gotIds = [...topIds.subarray(s * MAX_TOPN, s * MAX_TOPN + p.topN!)];
      expect(gotIds, `row ${s}: top ${p.topN} ids`).toEqual(want.map((w) => w.id));
      const tolLp = (2 * V + 8 + 3 * Math.log(V)) * EPS + 2 ** -21 + 2 * EPS * 20;
      expectClose(
        topLps.subarray(s * MAX_TOPN, s * MAX_TOPN + p.topN!),
        Float64Array.from(want.map((w) => w.logprob)),
        () => tolLp,
        `row ${s}: top logprobs`,
      );
    });
  });
});
