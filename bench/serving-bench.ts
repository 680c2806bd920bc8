// Serving figures (continuous batching): decode throughput at 1/4/16/64 concurrent sequences and prefill speed /
// time to first token at several prompt lengths on the SmolLM2-135M-shaped synthetic model, the prefix cache's
// effect on time to first token, and single-stream decode against llama.cpp (node-llama-cpp, CPU, one thread) on
// the TinyStories GGUF next to polylora on the same model.

import { existsSync } from 'node:fs';
import type { Gpu } from '../src/gpu/device.js';
import type { DType } from '../src/io/dtype.js';
import { LLM } from '../src/engine/llm.js';
import { SMOLLM2_135M, syntheticModel } from './synthetic.js';
import { benchRounds } from './rounds.js';

const prompt = (n: number, salt = 0) => ({ promptIds: Array.from({ length: n }, (_, i) => 1 + ((i * 7919 + salt * 104729) % 49000)) });

/** Decode tokens/s of `n` sequences: tokens after each one's first, over the time from the last first token to the end. */
async function decodeTps(llm: LLM, n: number, tokens: number): Promise<{ tps: number; msPerStep: number }> {
  const firsts: number[] = [];
  let last = 0;
  let count = 0;
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      let first = true;
      for await (const c of llm.stream(prompt(16, i), { maxTokens: tokens, temperature: 0, ignoreEos: true })) {
        if (!c.tokenIds.length) continue;
        const now = performance.now();
        if (first) {
          firsts.push(now);
          first = false;
        } else {
          count++;
          last = Math.max(last, now);
        }
      }
    }),
  );
  const start = Math.max(...firsts);
  // Tokens produced after every sequence had started: (tokens - 1) each minus those before `start` — approximated
  // by the steps: every sequence runs tokens - 1 decode steps, all together after `start`.
  const ms = last - start;
  return { tps: (n * (tokens - 1)) / (ms / 1000), msPerStep: ms / (tokens - 1) };
}

/** Time to the first token of a `len`-token prompt. */
async function ttft(llm: LLM, p: { promptIds: number[] }): Promise<number> {
  const t = performance.now();
  for await (const c of llm.stream(p, { maxTokens: 1, temperature: 0, ignoreEos: true })) if (c.tokenIds.length) break;
  return performance.now() - t;
}

export async function servingBench(gpu: Gpu, dtype: DType, quick: boolean, log: (m: string) => void) {
  const llm = await LLM.load(syntheticModel(SMOLLM2_135M, dtype), {
    gpu,
    maxModelLen: 2304,
    maxNumSeqs: 64,
    maxNumBatchedTokens: 512,
    kvCacheBytes: 1 << 30,
    onWarning: () => {},
  });
  try {
    const tokens = quick ? 6 : 12;
    await decodeTps(llm, 1, 3); // warm-up
    // Rounds alternate over the concurrency levels and each keeps its best, so a noisy moment on a shared machine
    // hits every level alike instead of skewing the ratios between them.
    const decode: Record<string, { tokens_per_s: number; ms_per_step: number }> = {};
    for (let round = 0; round < benchRounds(quick); round++) {
      for (const n of quick ? [1, 4, 16] : [1, 4, 16, 64]) {
        const r = await decodeTps(llm, n, tokens);
        if (r.tps > (decode[n]?.tokens_per_s ?? 0)) decode[n] = { tokens_per_s: +r.tps.toFixed(1), ms_per_step: +r.msPerStep.toFixed(1) };
        log(`serving: decode x${n} (round ${round + 1}): ${r.tps.toFixed(1)} tok/s (${r.msPerStep.toFixed(1)} ms/step)`);
      }
    }
    const prefill: Record<string, { ttft_ms: number; tokens_per_s: number }> = {};
    for (const len of quick ? [128, 512] : [128, 512, 2048]) {
      const ms = await ttft(llm, prompt(len, 1000 + len));
      prefill[len] = { ttft_ms: +ms.toFixed(0), tokens_per_s: +((len * 1000) / ms).toFixed(1) };
      log(`serving: prefill ${len}: ${ms.toFixed(0)} ms to first token`);
    }
    // Prefix cache: a 1024-token prefix cold, then the same prefix with another ending (the first request's blocks
    // are cached; the second computes only its own tail).
    const prefixLen = quick ? 256 : 1024;
    const base = prompt(prefixLen, 7).promptIds;
    const cold = await ttft(llm, { promptIds: [...base, 11, 12, 13] });
    const warm = await ttft(llm, { promptIds: [...base, 21, 22, 23] });
    log(`serving: prefix ${prefixLen}: cold ${cold.toFixed(0)} ms, warm ${warm.toFixed(0)} ms`);
    return {
      model: 'SmolLM2-135M shapes, random weights',
      dtype,
      decode_by_concurrency: decode,
      prefill_by_prompt_length: prefill,
      prefix_cache: { prefix_tokens: prefixLen, cold_ttft_ms: +cold.toFixed(1), warm_ttft_ms: +warm.toFixed(1), ratio: +(cold / warm).toFixed(2) },
      batch16_speedup: +(decode[16]!.tokens_per_s / decode[1]!.tokens_per_s).toFixed(2),
      batch64_speedup: decode[64] ? +(decode[64].tokens_per_s / decode[1]!.tokens_per_s).toFixed(2) : null,
    };
  } finally {
    await llm.close();
  }
}

const GGUF = '../shared/models/tinystories-656k-gguf/TinyStories-656K-Q8_0.gguf';
const TINY = '../shared/models/tinystories-656k';

/** Single-stream greedy decode tokens/s of llama.cpp (CPU, 1 thread) and polylora on the same TinyStories model. */
export async function vsLlamaCpp(gpu: Gpu, quick: boolean, log: (m: string) => void) {
  const n = quick ? 100 : 300;
  const ids = [1, 80, 147, 201, 282, 215, 286];
  let llamaTps: number | null = null;
  let note = '';
  if (existsSync(GGUF)) {
    try {
      // Installed on first `npm run bench` by scripts/bench-deps.mjs (not a package.json dependency).
      const { getLlama } = await import('node-llama-cpp' as string);
      const llama = await getLlama({ gpu: false, build: 'never' });
      const model = await llama.loadModel({ modelPath: GGUF });
      const ctx = await model.createContext({ contextSize: 512, threads: 1 });
      const seq = ctx.getSequence();
      let first = 0;
      let count = 0;
      // The GGUF is the same model, so the same token ids (node-llama-cpp's Token is a branded number).
      for await (const _ of seq.evaluate(ids as never, { temperature: 0 })) {
        if (!first) first = performance.now();
        if (++count >= n) break;
      }
      llamaTps = ((count - 1) * 1000) / (performance.now() - first);
      await ctx.dispose();
      await model.dispose();
      await llama.dispose();
    } catch (e) {
      note = `node-llama-cpp unavailable: ${(e as Error).message}`;
    }
  } else {
    note = `${GGUF} not found`;
  }
  const llm = await LLM.load(TINY, { gpu, maxNumSeqs: 1, maxModelLen: 512 });
  let tps: number;
  try {
    await llm.generate({ promptIds: ids }, { maxTokens: 8, temperature: 0, ignoreEos: true });
    let first = 0;
    let count = 0;
    for await (const c of llm.stream({ promptIds: ids }, { maxTokens: n, temperature: 0, ignoreEos: true })) {
      if (!c.tokenIds.length) continue;
      if (!first) first = performance.now();
      count++;
    }
    tps = ((count - 1) * 1000) / (performance.now() - first);
  } finally {
    await llm.close();
  }
  log(`vs llama.cpp: polylora ${tps.toFixed(0)} tok/s, llama.cpp ${llamaTps?.toFixed(0) ?? 'n/a'} tok/s`);
  return {
    model: 'TinyStories-656K (polylora: f32 safetensors on WebGPU; llama.cpp: Q8_0 GGUF, CPU, 1 thread)',
    tokens: n,
    polylora_tokens_per_s: +tps.toFixed(1),
    llamacpp_tokens_per_s: llamaTps === null ? null : +llamaTps.toFixed(1),
    ratio: llamaTps === null ? null : +(tps / llamaTps).toFixed(3),
    note: note || undefined,
  };
}
