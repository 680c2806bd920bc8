// Dispatcher for shaders/attention.wgsl (+ the laneSum reduction file the device supports).
//
// Contract, for token t < T of sequence s = seqOf[t] at position pos = positions[t], query head h,
// kv head g = h / (nh / nkv), key positions j in [lo, pos] (lo = max(0, pos − window + 1) with a window):
//   o[t, h·hd + d] = Σ_j softmax_j(scale · q[t, h·hd:(h+1)·hd] · K[s, j, g]) · V[s, j, g, d]
// where K/V[s, j] = kcache/vcache[blockTables[s, j / B] · B + j % B]. The keys of this step must already be in
// the cache (rope.wgsl writes them first).

import type { Gpu } from '../gpu/device.js';
import { paramsBuffer } from './params.js';
import type { Op } from './op.js';
import { bindGroup } from './op.js';

const PARAMS = {
  nh: 'u32', // query heads
  nkv: 'u32', // key/value heads
  hd: 'u32', // head dim (elements)
  ldq: 'u32', // row stride of q (elements)
  ldo: 'u32', // row stride of o (elements)
  blockSize: 'u32', // tokens per KV block
  maxBlocks: 'u32', // row stride of blockTables (blocks)
  window: 'u32', // sliding window (tokens), 0 = none
  scale: 'f32', // softmax scale, 1/sqrt(hd)
} as const;

export interface AttentionSpec {
  label: string;
  nh: number;
  nkv: number;
  hd: number;
  ldq: number;
  ldo: number;
  blockSize: number;
  maxBlocks: number;
  window: number;
  positions: GPUBuffer;
  seqOf: GPUBuffer;
  blockTables: GPUBuffer;
  q: GPUBuffer;
  kcache: GPUBuffer;
  vcache: GPUBuffer;
  o: GPUBuffer;
}

/** Limits of the shader's per-lane registers (attention.wgsl's MAXQ, MAXH, MAXC). */
const MAXQ = 64;
const MAXH = 8;
const MAXC = 16;

export async function attentionOp(gpu: Gpu, s: AttentionSpec): Promise<Op> {
  const { lanes, shader } = gpu.laneReduce;
  const chunksPerLane = Math.ceil(Math.ceil(s.hd / 4) / lanes);
  if (s.nh % s.nkv !== 0 || chunksPerLane > MAXC) {
    throw new Error(`${s.label}: heads ${s.nh} not a multiple of kv heads ${s.nkv}, or head_dim ${s.hd} > ${MAXC * 4 * lanes}`);
  }
  // Query heads per workgroup: the most heads of one kv group (a divisor of the group) that fit the registers, so
  // each K/V row is read once per group of heads.
  const group = s.nh / s.nkv;
  let hpw = 1;
  for (let d = 1; d <= group; d++) if (group % d === 0 && d <= MAXH && d * chunksPerLane <= MAXQ) hpw = d;
  const pipeline = await gpu.pipeline(['attention', shader], 'main', { WG: lanes, HPW: hpw, CPL: chunksPerLane });
  const params = paramsBuffer(gpu.device, `${s.label}.params`, PARAMS, {
    nh: s.nh,
    nkv: s.nkv,
    hd: s.hd,
    ldq: s.ldq,
    ldo: s.ldo,
    blockSize: s.blockSize,
    maxBlocks: s.maxBlocks,
    window: s.window,
    scale: 1 / Math.sqrt(s.hd),
  });
  const bg = bindGroup(gpu.device, pipeline, s.label, {
    1: params,
    2: s.positions,
    3: s.seqOf,
    4: s.blockTables,
    5: s.q,
    6: s.kcache,
    7: s.vcache,
    8: s.o,
  });
  return {
    label: s.label,
    encode(pass, d) {
      if (d.tokens === 0) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(s.nh / hpw, d.tokens);
    },
  };
}
