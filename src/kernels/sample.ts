// Dispatcher for shaders/sample.wgsl: one token per sequence from its logits row, chosen on the GPU.
// The full contract (greedy, temperature, top-k, top-p, min-p, seeded inverse CDF) is written at the top of the
// shader and implemented identically by src/reference/sampling.ts.

import type { Gpu } from '../gpu/device.js';
import { paramsBuffer } from './params.js';
import type { Op } from './op.js';
import { bindGroup } from './op.js';

const PARAMS = {
  V: 'u32', // vocabulary size (elements)
  ld: 'u32', // row stride of logits (elements)
} as const;

/** Bytes per row in the sampling-parameter buffer: struct SeqSampling in sample.wgsl (16 words). */
export const SEQ_SAMPLING_BYTES = 64;
/** Top logprobs per row the kernel can report (MAX_TOPN in sample.wgsl). */
export const MAX_TOPN = 20;
/**
 * A row's penalty list holds one entry per token it changes, PEN_WORDS u32 each: (token id, count | flags, logit bias
 * as f32 bits, 0). Flags in the count word: PEN_IN_PROMPT, the token occurs in the prompt (repetition penalty);
 * PEN_BIAS_ONLY, the entry only carries a logit bias (no penalty applies to the token).
 */
export const PEN_WORDS = 4;
export const PEN_IN_PROMPT = 0x80000000;
export const PEN_BIAS_ONLY = 0x40000000;
/** Most logit_bias entries per request (so a step's list has a bound). */
export const MAX_LOGIT_BIAS = 1024;

export interface RowSampling {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  seed: number;
  counter: number; // tokens generated so far by the row's sequence
  topN?: number; // top logprobs to report (default 0)
  presence?: number; // default 0
  frequency?: number; // default 0
  repetition?: number; // default 1 (off)
  penStart?: number; // first entry of the row's penalty list
  penLen?: number; // default 0 (no penalty entries)
  /** Scoring row: report this token's logprob (and the top-N) instead of sampling; default none. */
  score?: number;
}

/** RowSampling.score when the row samples. */
export const NO_SCORE = 0xffffffff;

/** Writes row `r`'s sampling parameters into `f32`/`u32` views of the parameter buffer's CPU copy. */
export function writeRowSampling(f32: Float32Array, u32: Uint32Array, r: number, v: RowSampling): void {
  const o = (r * SEQ_SAMPLING_BYTES) / 4;
  f32[o] = v.temperature;
  u32[o + 1] = v.topK >>> 0;
  f32[o + 2] = v.topP;
  f32[o + 3] = v.minP;
  u32[o + 4] = v.seed >>> 0;
  u32[o + 5] = v.counter >>> 0;
  u32[o + 6] = (v.topN ?? 0) >>> 0;
  u32[o + 7] = (v.penLen ?? 0) >>> 0;
  f32[o + 8] = v.presence ?? 0;
  f32[o + 9] = v.frequency ?? 0;
  f32[o + 10] = v.repetition ?? 1;
  u32[o + 11] = (v.penStart ?? 0) >>> 0;
  u32[o + 12] = (v.score ?? NO_SCORE) >>> 0;
}

export interface SampleSpec {
  label: string;
  vocab: number;
  ld: number;
  logits: GPUBuffer;
  sampling: GPUBuffer;
  /** Penalty and logit-bias entries, PEN_WORDS u32 each. */
  penalties: GPUBuffer;
  tokens: GPUBuffer;
  logprobs: GPUBuffer;
  /** u32 / f32 [rows, MAX_TOPN]. */
  topIds: GPUBuffer;
  topLogprobs: GPUBuffer;
}

export async function sampleOp(gpu: Gpu, s: SampleSpec): Promise<Op> {
  // Threads per row: 256 on GPUs; 64 on CPU implementations (lavapipe, SwiftShader: subgroups of at most 8 lanes),
  // where each barrier switches every subgroup of the workgroup and fewer, longer threads measured 2-3x faster.
  const WG = gpu.info.subgroupMaxSize > 0 && gpu.info.subgroupMaxSize <= 8 ? 64 : 256;
  const pipeline = await gpu.pipeline('sample', 'main', { WG });
  const params = paramsBuffer(gpu.device, `${s.label}.params`, PARAMS, { V: s.vocab, ld: s.ld });
  const bg = bindGroup(gpu.device, pipeline, s.label, {
    1: params,
    2: s.logits,
    3: s.sampling,
    4: s.tokens,
    5: s.logprobs,
    6: s.penalties,
    7: s.topIds,
    8: s.topLogprobs,
  });
  return {
    label: s.label,
    encode(pass, d) {
      if (d.seqs === 0) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(d.seqs);
    },
  };
}
