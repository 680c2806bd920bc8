// Continuous batching must not change what a request generates: 64 greedy requests over the base model and the
// three shared adapters, with mixed prompts and lengths, arriving at staggered times (so sequences join and leave
// the batch between steps, prefills run next to decodes, prompts share cached prefixes), each give exactly the
// tokens they give when run alone, and golden.json's tokens where golden has the case. At the end every KV block
// is free again. Runs in Node and Chromium.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../../src/engine/llm.js';
import type { LoRARequest } from '../../src/engine/lora-request.js';
import { golden, type GoldenCase } from '../helpers/shared.js';
import { useGpu } from '../helpers/gpu.js';
import { tinyStories } from '../helpers/model.js';
import { goldenLora } from '../helpers/lora.js';

const g = golden();
const gpu = useGpu();
let llm: LLM;
const adapters = new Map<string, LoRARequest>();

interface Req {
  promptIds: number[];
  adapter: string | null;
  maxTokens: number;
  arrivalMs: number;
  golden?: GoldenCase;
}

/**
 * 64 requests: the 20 golden cases as they are, plus prompts cut from golden prompt + continuation at varied
 * lengths (1 .. 30 tokens, so prefix blocks are shared between some of them), each with a rotating adapter, short and
 * long outputs, and arrival times spread over the first steps.
 */
function requests(): Req[] {
  const names = [null, 'zara', 'pirate', 'robot'];
  const out: Req[] = g.cases.map((c, i) => ({ promptIds: c.prompt_ids, adapter: c.adapter, maxTokens: c.max_tokens, arrivalMs: (i * 7) % 40, golden: c }));
  for (let i = 0; out.length < 64; i++) {
    const c = g.cases[i % g.cases.length]!;
    const full = [...c.prompt_ids, ...c.expected_ids];
    const len = 1 + ((i * 13) % Math.min(30, full.length - 1));
    out.push({ promptIds: full.slice(0, len), adapter: names[(i * 3) % 4]!, maxTokens: 4 + ((i * 5) % 29), arrivalMs: (i * 11) % 60 });
  }
  return out;
}

const params = (r: Req) => ({ temperature: 0, maxTokens: r.maxTokens });
const lora = (r: Req) => (r.adapter ? adapters.get(r.adapter)! : null);

beforeAll(async () => {
  llm = await LLM.load(await tinyStories(), { gpu: gpu(), enableLora: true, maxLoras: 3, maxLoraRank: 16, maxModelLen: 128, maxNumSeqs: 64, maxNumBatchedTokens: 96, blockSize: 4 });
  for (const name of ['zara', 'pirate', 'robot']) adapters.set(name, await goldenLora(name));
});
afterAll(async () => {
  await llm?.close();
});

/** The 64 requests together at staggered times; returns each one's tokens. */
function runTogether(m: LLM, reqs: Req[]): Promise<number[][]> {
  return Promise.all(
    reqs.map(
      (r) =>
        new Promise<number[]>((resolve, reject) => {
          setTimeout(() => {
            m.stream({ promptIds: r.promptIds }, params(r), { lora: lora(r) }).result.then((o) => resolve(o.tokenIds), reject);
          }, r.arrivalMs);
        }),
    ),
  );
}

function differences(reqs: Req[], alone: number[][], together: number[][]): string[] {
  return reqs
    .map((r, i) => ({ i, r, a: alone[i]!, t: together[i]! }))
    .filter((x) => JSON.stringify(x.a) !== JSON.stringify(x.t))
    .map((x) => `request ${x.i} (${x.r.adapter ?? 'base'}, prompt ${x.r.promptIds.length} tokens): alone ${x.a.slice(0, 8)}…, together ${x.t.slice(0, 8)}…`);
}

let alone: number[][] = [];

describe('continuous batching invariance', () => {
  it('64 staggered requests over base + 3 adapters give the tokens they give alone (and golden.json)', async () => {
    const reqs = requests();
    expect(reqs).toHaveLength(64);
    // Alone: one request at a time.
    alone = [];
    for (const r of reqs) {
      const [o] = await llm.generate({ promptIds: r.promptIds }, params(r), { lora: lora(r) });
      alone.push(o!.tokenIds);
    }
    const stepsBefore = llm.stats.steps;
    const maxRowsBefore = llm.stats.maxRowsInStep;
    // Together, at staggered arrival times.
    const together = await runTogether(llm, reqs);
    const diffs = differences(reqs, alone, together);
    expect(diffs, diffs.join('\n')).toEqual([]);
    for (const [i, r] of reqs.entries()) if (r.golden) expect(together[i], `golden ${r.golden.name} / ${r.golden.adapter}`).toEqual(r.golden.expected_ids);
    // They really overlapped: far fewer steps than requests × tokens, and many sequences in some step.
    const steps = llm.stats.steps - stepsBefore;
    expect(steps).toBeLessThan(reqs.reduce((a, r) => a + r.maxTokens, 0) / 4);
    expect(Math.max(llm.stats.maxRowsInStep, maxRowsBefore)).toBeGreaterThan(16);
    // Nothing leaked: every block free (cached prefix blocks count as free), nothing running or waiting.
    const s = llm.stats;
    expect([s.running, s.waiting, s.kvBlocksFree]).toEqual([0, 0, s.kvBlocksTotal]);
    expect(s.prefixCacheHits).toBeGreaterThan(0);
  });

  it('with a KV cache too small for all of them, preempted sequences recompute and still give the same tokens', async () => {
    const reqs = requests();
    // 40 blocks of 4 tokens: a few sequences' worth, so admission waits and decodes preempt (vLLM's recompute).
    const small = await LLM.load(await tinyStories(), {
      gpu: gpu(),
      enableLora: true,
      maxLoras: 3,
      maxLoraRank: 16,
      maxModelLen: 128,
      maxNumSeqs: 64,
      maxNumBatchedTokens: 96,
      blockSize: 4,
      kvCacheBytes: 40 * 4 * 1024, // 1 KiB per token (2 layers × K,V × 4 heads × 16 dims × 4 bytes)
    });
    try {
      expect(small.info.kvCapacityTokens).toBe(160);
      const together = await runTogether(small, reqs);
      const diffs = differences(reqs, alone, together);
      expect(diffs, diffs.join('\n')).toEqual([]);
      const s = small.stats;
      expect(s.preemptions).toBeGreaterThan(0);
      expect([s.running, s.waiting, s.kvBlocksFree]).toEqual([0, 0, s.kvBlocksTotal]);
    } finally {
      await small.close();
    }
  });
});
