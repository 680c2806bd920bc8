// Multi-LoRA through the whole engine against golden.json: the real TinyStories-656K base with the three real PEFT
// adapters (zara: rank 8 on all seven projections, f32; pirate: rank 4 on q/v, f16; robot: rank 16 rsLoRA, bf16),
// read from the shared folder through the platform's file access. Greedy decoding must reproduce every case token
// for token and text for text (each case's smallest top-1/top-2 logit gap is >= 0.004, far above f32 rounding):
// each case alone, all 20 (base + 3 adapters) in one generate call that really shares its steps, with fewer GPU
// slots than adapters (a request waits for a slot), and with the per-request scale multiplier (0 = the base model).
// Runs in Node and Chromium.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../../src/engine/llm.js';
import type { RequestOutput } from '../../src/engine/request.js';
import { golden, type GoldenCase } from '../helpers/shared.js';
import { useGpu } from '../helpers/gpu.js';
import { tinyStories } from '../helpers/model.js';
import { goldenLora } from '../helpers/lora.js';

const g = golden();
const adapterCases = g.cases.filter((c) => c.adapter !== null);
const gpu = useGpu();

const label = (c: GoldenCase) => `${c.name} / ${c.adapter ?? 'base'}`;
const params = (c: GoldenCase) => ({ temperature: 0, maxTokens: c.max_tokens });
const loraOf = (c: GoldenCase) => (c.adapter ? goldenLora(c.adapter) : null);

/** Token ids, text and finish reason of `out` against case `c`, with the first differing step in the message. */
function expectGolden(out: RequestOutput, c: GoldenCase): void {
  const first = out.tokenIds.findIndex((id, i) => id !== c.expected_ids[i]);
  const where = first >= 0 ? `first difference at step ${first}: got ${out.tokenIds.slice(first, first + 6)}, expected ${c.expected_ids.slice(first, first + 6)}` : '';
  expect(out.tokenIds, `${label(c)}: ${where}`).toEqual(c.expected_ids);
  expect(out.text, label(c)).toBe(c.expected_text);
  expect(out.finishReason, label(c)).toBe(c.expected_ids.at(-1) === g.eos_token_id ? 'stop' : 'length');
}

describe('golden adapter cases, maxLoras 4', () => {
  let llm: LLM;
  beforeAll(async () => {
    llm = await LLM.load(await tinyStories(), { gpu: gpu(), enableLora: true, maxLoras: 4, maxLoraRank: 16, maxModelLen: 128, maxNumSeqs: 32 });
  });
  afterAll(async () => {
    await llm?.close();
  });

  it('golden.json has 5 prompts × (base + zara + pirate + robot)', () => {
    expect(g.cases).toHaveLength(20);
    expect(new Set(g.cases.map((c) => c.adapter))).toEqual(new Set([null, 'zara', 'pirate', 'robot']));
  });

  for (const c of g.cases) {
    it(`${label(c)}: alone`, async () => {
      const lora = await loraOf(c);
      const [out] = await llm.generate({ promptIds: c.prompt_ids }, params(c), { lora });
      expectGolden(out!, c);
    });
  }

  it('all 20 cases (base and 3 adapters) in one generate call share their steps', async () => {
    const outs = await llm.generate(
      g.cases.map((c) => ({ promptIds: c.prompt_ids })),
      g.cases.map(params),
      { lora: await Promise.all(g.cases.map(loraOf)) },
    );
    outs.forEach((o, i) => expectGolden(o, g.cases[i]!));
    // Some step sampled all 20 sequences (the earlier tests ran one sequence at a time): every adapter and the base
    // ran in one step.
    expect(llm.stats.maxRowsInStep).toBe(g.cases.length);
    // Each adapter sits in one GPU slot (loaded once for the whole batch).
    const resident = llm.loraSlots().map((s) => s.name).filter((n) => n !== null);
    expect(new Set(resident)).toEqual(new Set(['zara', 'pirate', 'robot']));
  });

  it('scale multiplier: 0 gives the base model, 1 the adapter, in the same batch', async () => {
    const prompts = g.cases.filter((c) => c.adapter === null);
    // Each prompt with each adapter twice: scale 0 (expect the base case) and scale 1 (expect the adapter case).
    const req: { c: GoldenCase; name: string; scale: number }[] = [];
    for (const base of prompts) {
      for (const name of ['zara', 'pirate', 'robot']) {
        const withAdapter = g.cases.find((c) => c.name === base.name && c.adapter === name)!;
        req.push({ c: base, name, scale: 0 }, { c: withAdapter, name, scale: 1 });
      }
    }
    const outs = await llm.generate(
      req.map((r) => ({ promptIds: r.c.prompt_ids })),
      req.map((r) => params(r.c)),
      { lora: await Promise.all(req.map((r) => goldenLora(r.name, r.scale))) },
    );
    outs.forEach((o, i) => expectGolden(o, req[i]!.c));
  });
});

describe('more adapters than GPU slots (maxLoras 2)', () => {
  let llm: LLM;
  beforeAll(async () => {
    llm = await LLM.load(await tinyStories(), { gpu: gpu(), enableLora: true, maxLoras: 2, maxLoraRank: 16, maxModelLen: 128, maxNumSeqs: 16 });
  });
  afterAll(async () => {
    await llm?.close();
  });

  it('3 adapters in one call: the third waits for a slot and every case still matches', async () => {
    const outs = await llm.generate(
      adapterCases.map((c) => ({ promptIds: c.prompt_ids })),
      adapterCases.map(params),
      { lora: await Promise.all(adapterCases.map(loraOf)) },
    );
    outs.forEach((o, i) => expectGolden(o, adapterCases[i]!));
    // Never more than two adapters' sequences (5 prompts each) in one step, and a slot was reused.
    expect(llm.stats.maxRowsInStep).toBeLessThanOrEqual(10);
    expect(llm.loraSlots()).toHaveLength(2);
    const stats = llm.loraStats!.slots;
    expect(stats.loads).toBe(3);
    expect(stats.evictions).toBe(1);
  });
});
