// Request features through the whole engine on the real TinyStories model: stop strings (never leaked, in the
// stream or the final text), stop token ids, top-N logprobs against the reference model's logits, penalties
// and logit_bias against the reference on the changed logits, min_tokens (EOS and stop ids held back, against
// the reference; stop strings not looked for before it), n > 1 (forks equal independent requests with the derived seeds),
// seeded sampling independent of the batch, abort freeing KV blocks at once, and prefix caching on and off giving
// the same tokens. Runs in Node and Chromium.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../../src/engine/llm.js';
import type { ReferenceModel } from '../../src/reference/model.js';
import { applyLogitBias, applyPenalties, greedy, topLogprobs } from '../../src/reference/sampling.js';
import { golden } from '../helpers/shared.js';
import { useGpu } from '../helpers/gpu.js';
import { referenceModel, tinyStories } from '../helpers/model.js';

const g = golden();
const base = g.cases.filter((c) => c.adapter === null);
const c0 = base[0]!;
const gpu = useGpu();
let llm: LLM;
let ref: ReferenceModel;

beforeAll(async () => {
  const tree = await tinyStories();
  llm = await LLM.load(tree, { gpu: gpu(), maxModelLen: 128, maxNumSeqs: 16, blockSize: 4 });
  ref = await referenceModel(tree);
});
afterAll(async () => {
  await llm?.close();
});

/** Reference logits of every position of `ids` (prompt + output) [ids.length, vocab]. */
function refLogits(ids: number[]): Float32Array {
  return ref.forward(ref.newSequence(), ids, 0);
}

describe('stop strings and stop ids', () => {
  it('a stop string ends generation and never appears, in the stream or the result', async () => {
    // "yummy" first appears a few tokens into golden's continuation of c0.
    const stop = 'yummy';
    expect(c0.expected_text).toContain(stop);
    const want = c0.expected_text.slice(0, c0.expected_text.indexOf(stop));
    const s = llm.stream({ promptIds: c0.prompt_ids }, { temperature: 0, maxTokens: 32, stop: ['zebra', stop] });
    let streamed = '';
    for await (const ch of s) streamed += ch.text;
    const out = await s.result;
    expect(streamed).toBe(want);
    expect(out.text).toBe(want);
    expect([out.finishReason, out.stopReason]).toEqual(['stop', stop]);
    // The stop string ended it on the token that completed it: the ids are golden's prefix up to there.
    expect(c0.expected_ids.slice(0, out.tokenIds.length)).toEqual(out.tokenIds);
  });

  it('a stop token id ends generation and is kept in the ids, as vLLM does', async () => {
    const id = c0.expected_ids[5]!;
    const [out] = await llm.generate({ promptIds: c0.prompt_ids }, { temperature: 0, maxTokens: 32, stopTokenIds: [id] });
    const at = c0.expected_ids.indexOf(id);
    expect(out!.tokenIds).toEqual(c0.expected_ids.slice(0, at + 1));
    expect([out!.finishReason, out!.stopReason]).toEqual(['stop', id]);
  });

  it('ignoreEos runs past EOS to maxTokens', async () => {
    const short = g.cases.find((c) => c.adapter === null && c.expected_ids.at(-1) === g.eos_token_id);
    if (!short) return; // every base case runs to max_tokens in this golden file: nothing to check
    const [out] = await llm.generate({ promptIds: short.prompt_ids }, { temperature: 0, maxTokens: short.expected_ids.length + 4, ignoreEos: true });
    expect(out!.tokenIds.slice(0, short.expected_ids.length)).toEqual(short.expected_ids);
    expect(out!.tokenIds).toHaveLength(short.expected_ids.length + 4);
  });
});

describe('logprobs', () => {
  it('sampled and top-N logprobs equal log-softmax of the reference logits at every generated position', async () => {
    const n = 5;
    const [out] = await llm.generate({ promptIds: c0.prompt_ids }, { temperature: 0, maxTokens: 12, logprobs: n });
    const ids = [...c0.prompt_ids, ...out!.tokenIds];
    const logits = refLogits(ids);
    const V = ref.config.vocabSize;
    out!.tokenIds.forEach((tok, j) => {
      const row = logits.subarray((c0.prompt_ids.length - 1 + j) * V, (c0.prompt_ids.length + j) * V);
      const want = topLogprobs(row, n);
      // The model's logits differ from the reference's by f32 summation order (test/model/logits.test.ts allows
      // 2^-12 of the row's largest |logit|); a log-softmax value moves by at most twice that.
      let m = 0;
      for (const v of row) m = Math.max(m, Math.abs(v));
      const tol = 2 * 2 ** -12 * (m + 1);
      expect(out!.topLogprobs![j]!.map((t) => t.id), `position ${j}`).toEqual(want.map((w) => w.id));
      out!.topLogprobs![j]!.forEach((t, k) => expect(Math.abs(t.logprob - want[k]!.logprob)).toBeLessThanOrEqual(tol));
      expect(Math.abs(out!.logprobs[j]! - want[0]!.logprob)).toBeLessThanOrEqual(tol);
      expect(tok).toBe(want[0]!.id);
    });
  });
});

describe('prompt logprobs', () => {
  it('score every prompt token against the reference, also for a prompt longer than the scoring rows of a step', async () => {
    // 100 prompt tokens: more than the 64 scoring rows one step has, so the prompt is scored over several steps.
    const long = [...c0.prompt_ids, ...c0.expected_ids, ...base[1]!.expected_ids, ...base[2]!.expected_ids].slice(0, 100);
    for (const prompt of [c0.prompt_ids, long]) {
      const [out] = await llm.generate({ promptIds: prompt }, { temperature: 0, maxTokens: 2, promptLogprobs: 3 });
      const pl = out!.promptLogprobs!;
      expect(pl).toHaveLength(prompt.length);
      expect(pl[0]).toBeNull();
      const logits = refLogits(prompt);
      const V = ref.config.vocabSize;
      for (let i = 1; i < prompt.length; i++) {
        const row = logits.subarray((i - 1) * V, i * V);
        const want = topLogprobs(row, 3);
        let m = 0;
        let lse = -Infinity;
        for (const v of row) m = Math.max(m, Math.abs(v));
        let mx = -Infinity;
        for (const v of row) mx = Math.max(mx, v);
        let z = 0;
        for (const v of row) z += Math.exp(v - mx);
        lse = mx + Math.log(z);
        // Same bound as the generated-token logprobs above: twice the logits' tolerance.
        const tol = 2 * 2 ** -12 * (m + 1);
        expect(Math.abs(pl[i]!.logprob - (row[prompt[i]!]! - lse)), `prompt token ${i}`).toBeLessThanOrEqual(tol);
        expect(pl[i]!.top.map((t) => t.id), `prompt token ${i}: top 3`).toEqual(want.map((w) => w.id));
      }
      // Generation after scoring is unchanged.
      const [plain] = await llm.generate({ promptIds: prompt }, { temperature: 0, maxTokens: 2 });
      expect(out!.tokenIds).toEqual(plain!.tokenIds);
    }
  });
});

describe('penalties', () => {
  it('greedy with presence/frequency/repetition penalties follows the reference on penalized logits', async () => {
    const p = { presence: 0.4, frequency: 0.3, repetition: 1.3 };
    const [out] = await llm.generate(
      { promptIds: c0.prompt_ids },
      { temperature: 0, maxTokens: 24, presencePenalty: p.presence, frequencyPenalty: p.frequency, repetitionPenalty: p.repetition },
    );
    // Reference: penalties over prompt (repetition) and output counts, greedy on the penalized row.
    const seq = ref.newSequence();
    const V = ref.config.vocabSize;
    let logits = ref.forward(seq, c0.prompt_ids, 0);
    const counts = new Map<number, number>();
    const want: number[] = [];
    for (let j = 0; j < 24; j++) {
      const ids = new Set([...c0.prompt_ids, ...counts.keys()]);
      const entries = [...ids].map((id) => ({ id, count: counts.get(id) ?? 0, inPrompt: c0.prompt_ids.includes(id) }));
      const tok = greedy(applyPenalties(logits.subarray(logits.length - V), entries, p));
      want.push(tok);
      counts.set(tok, (counts.get(tok) ?? 0) + 1);
      if (tok === g.eos_token_id) break;
      logits = ref.forward(seq, [tok], seq.length);
    }
    expect(out!.tokenIds).toEqual(want);
    // And the penalties did something on this prompt.
    expect(out!.tokenIds).not.toEqual(c0.expected_ids.slice(0, out!.tokenIds.length));
  });
});

describe('logit_bias', () => {
  /**
   * Greedy reference on logits changed by `bias` (then penalties, vLLM's order), with the raw logprobs. Stops where
   * the reference's top-2 gap is under twice the GPU's logit tolerance (2^-12 of the row's largest |logit|, see
   * logits.test.ts): past such a near-tie either token is right.
   */
  function biasedReference(prompt: number[], steps: number, bias: Map<number, number>, p?: { presence: number; frequency: number; repetition: number }) {
    const seq = ref.newSequence();
    const V = ref.config.vocabSize;
    let logits = ref.forward(seq, prompt, 0);
    const counts = new Map<number, number>();
    const ids: number[] = [];
    const logprobs: number[] = [];
    const tols: number[] = [];
    for (let j = 0; j < steps; j++) {
      const raw = logits.subarray(logits.length - V);
      let row = applyLogitBias(raw, bias);
      if (p) {
        const seen = new Set([...prompt, ...counts.keys()]);
        row = applyPenalties(row, [...seen].map((id) => ({ id, count: counts.get(id) ?? 0, inPrompt: prompt.includes(id) })), p);
      }
      let m = 0;
      for (const v of raw) m = Math.max(m, Math.abs(v));
      const tol = 2 * 2 ** -12 * (m + 1);
      const tok = greedy(row);
      const second = greedy(row.map((v, i) => (i === tok ? -Infinity : v)));
      if (row[tok]! - row[second]! < 2 * tol) break;
      ids.push(tok);
      const top = topLogprobs(raw, 1)[0]!; // its logprob is raw[top.id] - lse
      logprobs.push(raw[tok]! - (raw[top.id]! - top.logprob));
      tols.push(tol);
      counts.set(tok, (counts.get(tok) ?? 0) + 1);
      if (tok === g.eos_token_id) break;
      logits = ref.forward(seq, [tok], seq.length);
    }
    return { ids, logprobs, tols };
  }

  it('greedy follows the reference on biased logits, alone and with penalties, batched with an unbiased request', async () => {
    // Ban golden's first token, push a few others up and down; keys as strings too, as they come from JSON.
    const bias = new Map<number, number>([[c0.expected_ids[0]!, -100], [c0.expected_ids[2]!, -3], [c0.expected_ids[6]!, 2.5], [101, 3], [202, 4]]);
    const asJson = Object.fromEntries([...bias].map(([k, v]) => [String(k), v])) as unknown as Record<number, number>;
    const pen = { presence: 0.4, frequency: 0.3, repetition: 1.3 };
    const steps = 20;
    const outs = await llm.generate(
      [{ promptIds: c0.prompt_ids }, { promptIds: c0.prompt_ids }, { promptIds: c0.prompt_ids }],
      [
        { temperature: 0, maxTokens: steps, logitBias: bias, ignoreEos: true },
        { temperature: 0, maxTokens: steps, logitBias: asJson, presencePenalty: pen.presence, frequencyPenalty: pen.frequency, repetitionPenalty: pen.repetition, ignoreEos: true },
        { temperature: 0, maxTokens: 32 },
      ],
    );
    for (const [k, out] of outs.slice(0, 2).entries()) {
      const want = biasedReference(c0.prompt_ids, steps, bias, k === 1 ? pen : undefined);
      expect(want.ids.length, `request ${k}: reference tokens before a near-tie`).toBeGreaterThanOrEqual(8);
      expect(out!.tokenIds.slice(0, want.ids.length), `request ${k}`).toEqual(want.ids);
      // Logprobs are the model's own (before the bias), within the logits' tolerance.
      want.logprobs.forEach((lp, j) => expect(Math.abs(out!.logprobs[j]! - lp), `request ${k} logprob ${j}`).toBeLessThanOrEqual(want.tols[j]!));
      expect(out!.tokenIds[0]).not.toBe(c0.expected_ids[0]);
    }
    // The unbiased request in the same batch is untouched.
    expect(outs[2]!.tokenIds).toEqual(c0.expected_ids);
  });

  it('values are clamped to [-100, 100] (vLLM); a bad key or value is an error naming it', async () => {
    const t = c0.expected_ids[4]!;
    const [huge] = await llm.generate({ promptIds: c0.prompt_ids }, { temperature: 0, maxTokens: 3, logitBias: { [t]: 1e9 } });
    const [hundred] = await llm.generate({ promptIds: c0.prompt_ids }, { temperature: 0, maxTokens: 3, logitBias: { [t]: 100 } });
    expect(huge!.tokenIds).toEqual([t, t, t]);
    expect(huge!.logprobs).toEqual(hundred!.logprobs);
    const V = ref.config.vocabSize;
    await expect(llm.generate({ promptIds: c0.prompt_ids }, { logitBias: { [V]: 1 } })).rejects.toThrow(new RegExp(`logitBias\\[${V}\\].*\\[0, ${V}\\)`));
    await expect(llm.generate({ promptIds: c0.prompt_ids }, { logitBias: { 5: Number.NaN } })).rejects.toThrow(/logitBias\[5\].*finite/);
    await expect(llm.generate({ promptIds: c0.prompt_ids }, { logitBias: { ['x' as unknown as number]: 1 } })).rejects.toThrow(/logitBias\[x\]/);
  });
});

describe('min_tokens', () => {
  it('holds a stop token id (and EOS) back until min_tokens, following the reference; then the stop id ends it', async () => {
    const stopId = c0.expected_ids[5]!;
    const minTokens = 8;
    const [out] = await llm.generate({ promptIds: c0.prompt_ids }, { temperature: 0, maxTokens: 32, minTokens, stopTokenIds: [stopId] });
    // Reference: greedy with -inf on EOS and the stop id for the first minTokens tokens, then the stop rules.
    const seq = ref.newSequence();
    const V = ref.config.vocabSize;
    let logits = ref.forward(seq, c0.prompt_ids, 0);
    const want: number[] = [];
    for (let j = 0; j < 32; j++) {
      const row = logits.slice(logits.length - V);
      if (j < minTokens) row[stopId] = row[g.eos_token_id] = -Infinity;
      const tok = greedy(row);
      want.push(tok);
      if (j >= minTokens && (tok === stopId || tok === g.eos_token_id)) break;
      logits = ref.forward(seq, [tok], seq.length);
    }
    expect(out!.tokenIds).toEqual(want);
    expect(out!.tokenIds.slice(0, 5)).toEqual(c0.expected_ids.slice(0, 5));
    expect(out!.tokenIds[5]).not.toBe(stopId);
    expect(out!.tokenIds.length).toBeGreaterThan(minTokens);
  });

  it('EOS cannot end the output early; stop strings are not looked for before min_tokens', async () => {
    // logit_bias +100 on EOS would end the output at once; min_tokens holds EOS back (its -inf wins over the bias), so
    // the first 6 tokens are golden's (nothing else changed) and the 7th is EOS.
    const eosBias = { temperature: 0, maxTokens: 12, logitBias: { [g.eos_token_id]: 100 } };
    const [now] = await llm.generate({ promptIds: c0.prompt_ids }, eosBias);
    expect(now!.tokenIds).toEqual([g.eos_token_id]);
    const [out] = await llm.generate({ promptIds: c0.prompt_ids }, { ...eosBias, minTokens: 6 });
    expect(out!.tokenIds).toEqual([...c0.expected_ids.slice(0, 6), g.eos_token_id]);
    expect(out!.finishReason).toBe('stop');
    // "yummy" appears a few tokens into c0's golden text: with min_tokens past the whole output it is not a stop.
    const [all] = await llm.generate({ promptIds: c0.prompt_ids }, { temperature: 0, maxTokens: 32, minTokens: 32, stop: ['yummy'] });
    expect(all!.tokenIds).toEqual(c0.expected_ids);
    expect(all!.text).toBe(c0.expected_text);
    await expect(llm.generate({ promptIds: c0.prompt_ids }, { maxTokens: 4, minTokens: 5 })).rejects.toThrow(/minTokens/);
  });
});

describe('sampling, n > 1, batching', () => {
  it('a seed gives the same tokens alone and in a batch with other requests', async () => {
    const params = { temperature: 0.9, topP: 0.95, maxTokens: 20, seed: 1234 };
    const [alone] = await llm.generate({ promptIds: c0.prompt_ids }, params);
    const outs = await llm.generate(
      base.map((c) => ({ promptIds: c.prompt_ids })),
      base.map((_c, i) => (i === 2 ? params : { temperature: 1, maxTokens: 10 + i, seed: i })),
    );
    const [again] = await llm.generate({ promptIds: c0.prompt_ids }, params);
    expect(again!.tokenIds).toEqual(alone!.tokenIds);
    // Request 2 of the batch has c2's prompt: compare it with c2 alone under the same params.
    const [c2alone] = await llm.generate({ promptIds: base[2]!.prompt_ids }, params);
    expect(outs[2]!.tokenIds).toEqual(c2alone!.tokenIds);
  });

  it('n = 4 completions fork after one prefill and equal independent requests with the derived seeds', async () => {
    const seed = 77;
    const hitsBefore = llm.stats.prefixCacheHits;
    const [out] = await llm.generate({ promptIds: c0.prompt_ids }, { temperature: 1, maxTokens: 16, n: 4, seed });
    expect(out!.outputs).toHaveLength(4);
    expect(out!.tokenIds).toEqual(out!.outputs![0]!.tokenIds);
    for (let i = 0; i < 4; i++) {
      const s = i === 0 ? seed : (seed + Math.imul(i, 0x9e3779b9)) >>> 0;
      const [alone] = await llm.generate({ promptIds: c0.prompt_ids }, { temperature: 1, maxTokens: 16, seed: s });
      expect(out!.outputs![i]!.tokenIds, `completion ${i}`).toEqual(alone!.tokenIds);
    }
    // Different seeds: not all the same.
    expect(new Set(out!.outputs!.map((o) => JSON.stringify(o.tokenIds))).size).toBeGreaterThan(1);
    expect(llm.stats.prefixCacheHits).toBeGreaterThanOrEqual(hitsBefore);
    expect(llm.stats.kvBlocksFree).toBe(llm.stats.kvBlocksTotal);
  });

  it('n larger than maxNumSeqs: the forks that do not fit wait and compute the prompt themselves', async () => {
    const small = await LLM.load(await tinyStories(), { gpu: gpu(), maxModelLen: 64, maxNumSeqs: 2, blockSize: 4 });
    try {
      const seed = 5;
      const [out] = await small.generate({ promptIds: c0.prompt_ids }, { temperature: 1, maxTokens: 10, n: 5, seed });
      expect(out!.outputs).toHaveLength(5);
      for (let i = 0; i < 5; i++) {
        const s = i === 0 ? seed : (seed + Math.imul(i, 0x9e3779b9)) >>> 0;
        const [alone] = await small.generate({ promptIds: c0.prompt_ids }, { temperature: 1, maxTokens: 10, seed: s });
        expect(out!.outputs![i]!.tokenIds, `completion ${i}`).toEqual(alone!.tokenIds);
      }
      expect(small.stats.maxRowsInStep).toBe(2);
      expect(small.stats.kvBlocksFree).toBe(small.stats.kvBlocksTotal);
    } finally {
      await small.close();
    }
  });

  it('greedy n = 3 gives three copies of golden', async () => {
    const [out] = await llm.generate({ promptIds: c0.prompt_ids }, { temperature: 0, maxTokens: c0.max_tokens, n: 3 });
    for (const o of out!.outputs!) expect(o.tokenIds).toEqual(c0.expected_ids);
  });
});

describe('abort and the KV pool', () => {
  it('aborting a stream mid-generation frees its blocks at once; others finish with golden tokens', async () => {
    const s = llm.stream({ promptIds: c0.prompt_ids }, { temperature: 0, maxTokens: 100, ignoreEos: true });
    const other = llm.generate({ promptIds: base[1]!.prompt_ids }, { temperature: 0, maxTokens: base[1]!.max_tokens });
    let n = 0;
    for await (const ch of s) {
      n += ch.tokenIds.length;
      if (n >= 5) break; // leaving the loop aborts the request
    }
    const out = await s.result;
    expect(out.finishReason).toBe('abort');
    expect(out.tokenIds.length).toBeLessThan(100);
    expect((await other)[0]!.tokenIds).toEqual(base[1]!.expected_ids);
    expect(llm.stats.kvBlocksFree).toBe(llm.stats.kvBlocksTotal);
    expect([llm.stats.running, llm.stats.waiting]).toEqual([0, 0]);
  });

  it('a repeated prompt is served from the prefix cache, with the same tokens as with caching off', async () => {
    const long = [...c0.prompt_ids, ...c0.expected_ids.slice(0, 24)];
    const before = llm.stats.prefixCacheHits;
    const [a] = await llm.generate({ promptIds: long }, { temperature: 0, maxTokens: 8 });
    const [b] = await llm.generate({ promptIds: long }, { temperature: 0, maxTokens: 8 });
    expect(b!.tokenIds).toEqual(a!.tokenIds);
    // The second run reused every full block before the last prompt token: floor((31 - 1) / 4) · 4 = 28 tokens.
    expect(llm.stats.prefixCacheHits - before).toBeGreaterThanOrEqual(Math.floor((long.length - 1) / 4) * 4);
    const off = await LLM.load(await tinyStories(), { gpu: gpu(), maxModelLen: 128, maxNumSeqs: 4, blockSize: 4, enablePrefixCaching: false });
    try {
      const [c] = await off.generate({ promptIds: long }, { temperature: 0, maxTokens: 8 });
      const [d] = await off.generate({ promptIds: long }, { temperature: 0, maxTokens: 8 });
      expect([c!.tokenIds, d!.tokenIds]).toEqual([a!.tokenIds, a!.tokenIds]);
      expect(off.stats.prefixCacheHits).toBe(0);
    } finally {
      await off.close();
    }
  });
});
