// Dispatcher for shaders/rope.wgsl.
//
// Contract, for token t < T at position pos[t], half = hd/2, (c_i, s_i) = rot[pos[t], i], i < half:
//   for each head (q heads then k heads) with x = that head's slice of qkv[t]:
//     x' = qkNorm ? rmsnorm(x) · normWeight : x
//     r[i] = x'[i]·c_i − x'[i+half]·s_i,   r[i+half] = x'[i+half]·c_i + x'[i]·s_i
//   q heads: written back in place; k heads: kcache[slot[t], kvh, :] = r; vcache[slot[t], kvh, :] = v head kvh.

import type { Gpu } from '../gpu/device.js';
import type { GpuVector } from '../gpu/tensors.js';
import { WDTYPE } from '../gpu/tensors.js';
import { paramsBuffer } from './params.js';
import type { Op } from './op.js';
import { bindGroup } from './op.js';

const PARAMS = {
  nh: 'u32', // query heads
  nkv: 'u32', // key/value heads
  hd: 'u32', // head dim (elements)
  ldqkv: 'u32', // row stride of qkv (elements)
  eps: 'f32', // RMSNorm epsilon for q/k norm
} as const;

export interface RopeSpec {
  label: string;
  nh: number;
  nkv: number;
  hd: number;
  ldqkv: number;
  eps: number;
  positions: GPUBuffer;
  slots: GPUBuffer;
  /** f32 [maxPos, hd/2, 2]: cos, sin. */
  rot: GPUBuffer;
  qkv: GPUBuffer;
  kcache: GPUBuffer;
  vcache: GPUBuffer;
  qNorm?: GpuVector;
  kNorm?: GpuVector;
  dummy: GPUBuffer;
}

export async function ropeOp(gpu: Gpu, s: RopeSpec): Promise<Op> {
  const qkNorm = !!(s.qNorm && s.kNorm);
  const pipeline = await gpu.pipeline(['rope', 'dtype'], 'main', {
    QK_NORM: qkNorm ? 1 : 0,
    NORM_WDTYPE: qkNorm ? WDTYPE[s.qNorm!.dtype] : 0,
  });
  const params = paramsBuffer(gpu.device, `${s.label}.params`, PARAMS, {
    nh: s.nh,
    nkv: s.nkv,
    hd: s.hd,
    ldqkv: s.ldqkv,
    eps: s.eps,
  });
  const buffers: Record<number, GPUBuffer> = {
    1: params,
    2: s.positions,
    3: s.slots,
    4: s.rot,
    5: s.qkv,
    6: s.kcache,
    7: s.vcache,
    8: s.qNorm?.buffer ?? s.dummy,
    9: s.kNorm?.buffer ?? s.dummy,
  };
  const bg = bindGroup(gpu.device, pipeline, s.label, buffers);
  const heads = s.nh + s.nkv;
  return {
    label: s.label,
    encode(pass, d) {
      if (d.tokens === 0) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(heads, d.tokens);
    },
  };
}
