// Dispatcher for shaders/rmsnorm.wgsl (+ the laneSum reduction file the device supports).
//
// Contract: for each row r < R (R = step tokens, or step seqs for 'gather'):
//   src = r ('rows') or rows[r] ('gather');  inv = 1 / sqrt(Σ_{i<H} x[src, i]² / H + eps)
//   y[r, i] = x[src, i] · inv · w[i]   for i < H        (x, y: f32 with row stride ld; y columns >= H untouched)

import type { Gpu } from '../gpu/device.js';
import type { GpuVector } from '../gpu/tensors.js';
import { WDTYPE } from '../gpu/tensors.js';
import { paramsBuffer } from './params.js';
import type { Op } from './op.js';
import { bindGroup } from './op.js';

const PARAMS = {
  H: 'u32', // normalized width (elements)
  ld: 'u32', // row stride of x and y (elements)
  eps: 'f32',
} as const;

export interface RmsNormSpec {
  label: string;
  w: GpuVector;
  x: GPUBuffer;
  y: GPUBuffer;
  ld: number;
  eps: number;
  /** Present: gather mode, one output row per sequence from x[rows[s]]. */
  rows?: GPUBuffer;
}

export async function rmsnormOp(gpu: Gpu, s: RmsNormSpec): Promise<Op> {
  const entry = s.rows ? 'gather' : 'main';
  const { lanes, shader } = gpu.laneReduce;
  const pipeline = await gpu.pipeline(['rmsnorm', 'dtype', shader], entry, { WDTYPE: WDTYPE[s.w.dtype], WG: lanes });
  const params = paramsBuffer(gpu.device, `${s.label}.params`, PARAMS, { H: s.w.length, ld: s.ld, eps: s.eps });
  const buffers: Record<number, GPUBuffer> = { 1: params, 2: s.x, 3: s.w.buffer, 4: s.y };
  if (s.rows) buffers[5] = s.rows;
  const bg = bindGroup(gpu.device, pipeline, s.label, buffers);
  const gather = !!s.rows;
  return {
    label: s.label,
    encode(pass, d) {
      const R = gather ? d.seqs : d.tokens;
      if (R === 0) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(R);
    },
  };
}
