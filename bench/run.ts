// `npm run bench`: performance figures as one JSON document on stdout (progress on stderr). Ratios are measured
// within this one run, so they hold on noisy machines; absolute numbers are for this machine only.
//
// Sections: device; streaming ceiling of a plain read kernel; decode GEMV bandwidth on realistic shapes in
// f32/f16/bf16; decode tokens/s at batch 1 on a SmolLM2-135M-shaped synthetic model against its roofline
// (weight bytes per token / ceiling). `summary` holds the named figures that issues track.

import { setPlatform } from '../src/platform/platform.js';
import { nodePlatform } from '../src/platform/node.js';
import { Gpu } from '../src/gpu/device.js';
import type { DType } from '../src/io/dtype.js';
import { LLM } from '../src/engine/llm.js';
import { gemv, streamingCeiling, type GemvResult } from './gpu-bench.js';
import { SMOLLM2_135M, syntheticModel } from './synthetic.js';
import { loraBench } from './lora-bench.js';
import { servingBench, vsLlamaCpp } from './serving-bench.js';
import { benchRounds } from './rounds.js';

setPlatform(nodePlatform);
const log = (m: string) => process.stderr.write(`bench: ${m}\n`);
const quick = process.argv.includes('--quick');
/** `--only gemv,decode,lora,serving`: run just those sections (for A/B work; the summary then has gaps). */
const onlyArg = process.argv.indexOf('--only');
const only = onlyArg > 0 ? new Set(process.argv[onlyArg + 1]!.split(',')) : null;
const want = (section: string) => !only || only.has(section);

const GEMV_SHAPES: [number, number][] = [
  [576, 1536],
  [1536, 576],
  [49152, 576],
  [2048, 8192],
  [8192, 2048],
];
const DTYPES: DType[] = ['F32', 'F16', 'BF16'];
/** Alternating rounds of the ceiling, GEMV and decode measurements (each figure keeps its best). */
const ROUNDS = benchRounds(quick);

/** Single-stream decode of the synthetic model: ms per token over `n` greedy tokens after a warm-up. */
async function decodeBench(gpu: Gpu, dtype: DType): Promise<{ msPerToken: number; weightBytes: number }> {
  const llm = await LLM.load(syntheticModel(SMOLLM2_135M, dtype), { gpu, maxModelLen: 512, maxNumSeqs: 16 });
  try {
    const n = quick ? 16 : 48;
    const prompt = { promptIds: Array.from({ length: 16 }, (_, i) => 1 + i * 7) };
    await llm.generate(prompt, { maxTokens: 4, temperature: 0, ignoreEos: true }); // warm-up: pipelines, first use
    const stamps: number[] = [];
    for await (const c of llm.stream(prompt, { maxTokens: n, temperature: 0, ignoreEos: true })) {
      if (c.tokenIds.length) stamps.push(performance.now());
    }
    return { msPerToken: (stamps.at(-1)! - stamps[0]!) / (stamps.length - 1), weightBytes: llm.info.weightBytes };
  } finally {
    await llm.close();
  }
}

async function main() {
  const gpu = await Gpu.create();
  const t0 = performance.now();
  try {
    // Rounds alternate the ceiling, the GEMVs and the decode runs, and every figure keeps its best: on a shared VM
    // speed drifts by 2x over minutes, and a ratio of two figures taken minutes apart would measure the drift.
    let ceiling = 0;
    const bestGemv = new Map<string, GemvResult>();
    const bestDecode = new Map<DType, { msPerToken: number; weightBytes: number }>();
    for (let round = 0; round < ROUNDS; round++) {
      const c = await streamingCeiling(gpu);
      ceiling = Math.max(ceiling, c.gbps);
      log(`ceiling ${c.gbps.toFixed(2)} GB/s (round ${round + 1})`);
      for (const dtype of want('gemv') ? DTYPES : []) {
        for (const [N, K] of GEMV_SHAPES) {
          const r = await gemv(gpu, N, K, dtype);
          const key = `${r.shape} ${dtype}`;
          if (r.gbps > (bestGemv.get(key)?.gbps ?? 0)) bestGemv.set(key, r);
          log(`gemv ${key}: ${r.gbps.toFixed(2)} GB/s (round ${round + 1})`);
        }
      }
      for (const dtype of want('decode') ? (['BF16', 'F32'] as DType[]) : []) {
        const d = await decodeBench(gpu, dtype);
        if (d.msPerToken < (bestDecode.get(dtype)?.msPerToken ?? Infinity)) bestDecode.set(dtype, d);
        log(`decode ${dtype}: ${(1000 / d.msPerToken).toFixed(1)} tok/s (round ${round + 1})`);
      }
    }
    const gemvs = [...bestGemv.values()].map((r) => ({ ...r, us: +r.us.toFixed(1), gbps: +r.gbps.toFixed(2), ceiling_ratio: +(r.gbps / ceiling).toFixed(3) }));
    const decode = [...bestDecode].map(([dtype, d]) => {
      const tps = 1000 / d.msPerToken;
      const rooflineTps = (ceiling * 1e9) / d.weightBytes;
      return {
        model: 'SmolLM2-135M shapes, random weights',
        dtype,
        weight_bytes_per_token: d.weightBytes,
        ms_per_token: +d.msPerToken.toFixed(3),
        tokens_per_s: +tps.toFixed(1),
        roofline_tokens_per_s: +rooflineTps.toFixed(1),
        roofline_ratio: +(tps / rooflineTps).toFixed(3),
      };
    });
    log('multi-LoRA');
    const lora = want('lora') ? await loraBench(gpu, 'BF16', quick, log) : undefined;
    log('serving');
    const serving = want('serving') ? await servingBench(gpu, 'BF16', quick, log) : undefined;
    const llamacpp = want('llamacpp') ? await vsLlamaCpp(gpu, quick, log) : undefined;
    const f32 = gemvs.filter((g) => g.dtype === 'F32');
    const worstF32 = f32.length ? Math.min(...f32.map((g) => g.ceiling_ratio)) : undefined;
    const report = {
      device: {
        description: gpu.info.description || `${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.device}`.trim(),
        vendor: gpu.info.vendor,
        architecture: gpu.info.architecture,
        features: gpu.info.features,
        subgroup_size: [gpu.info.subgroupMinSize, gpu.info.subgroupMaxSize],
        max_storage_binding_bytes: gpu.info.maxStorageBufferBindingSize,
        // lavapipe's thread count (src/platform/node.ts sets twice the cores when unset; other drivers ignore it)
        lp_num_threads: process.env.LP_NUM_THREADS,
      },
      streaming_ceiling_gbps: +ceiling.toFixed(2),
      rounds: ROUNDS,
      gemv: gemvs,
      decode_batch1: decode,
      lora,
      serving,
      vs_llamacpp: llamacpp,
      summary: {
        gemv_ceiling_ratio: worstF32,
        decode_roofline_ratio: decode.find((d) => d.dtype === 'BF16')?.roofline_ratio,
        lora_mixed_vs_base: lora?.mixed_vs_base,
        lora_vs_naive: lora?.batched_vs_naive,
        lora_slot_load_ms: lora?.slot_write_ms,
        lora_dora_vs_lora: lora?.dora_vs_lora,
        batch16_speedup: serving?.batch16_speedup,
        batch64_speedup: serving?.batch64_speedup,
        prefix_cache_ttft_ratio: serving?.prefix_cache.ratio,
        vs_llamacpp_tps_ratio: llamacpp?.ratio,
      },
      seconds: +((performance.now() - t0) / 1000).toFixed(1),
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } finally {
    gpu.destroy();
  }
}

await main();
