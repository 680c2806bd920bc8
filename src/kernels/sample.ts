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

/** Bytes per sequence in the sampling-parameter buffer: struct SeqSampling in sample.wgsl. */
export const SEQ_SAMPLING_BYTES = 32;

/** Writes sequence `s`'s sampling parameters into `f32`/`u32` views of the parameter buffer's CPU copy. */
export function writeSeqSampling(
  f32: Float32Array,
  u32: Uint32Array,
  s: number,
  v: { temperature: number; topK: number; topP: number; minP: number; seed: number; counter: number },
): void {
  const o = (s * SEQ_SAMPLING_BYTES) / 4;
  f32[o] = v.temperature;
  u32[o + 1] = v.topK >>> 0;
  f32[o + 2] = v.topP;
  f32[o + 3] = v.minP;
  u32[o + 4] = v.seed >>> 0;
  u32[o + 5] = v.counter >>> 0;
}

export interface SampleSpec {
  label: string;
  vocab: number;
  ld: number;
  logits: GPUBuffer;
  sampling: GPUBuffer;
  tokens: GPUBuffer;
  logprobs: GPUBuffer;
}

export async function sampleOp(gpu: Gpu, s: SampleSpec): Promise<Op> {
  const pipeline = await gpu.pipeline('sample', 'main');
  const params = paramsBuffer(gpu.device, `${s.label}.params`, PARAMS, { V: s.vocab, ld: s.ld });
  const bg = bindGroup(gpu.device, pipeline, s.label, {
    1: params,
    2: s.logits,
    3: s.sampling,
    4: s.tokens,
    5: s.logprobs,
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
