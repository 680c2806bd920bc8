// Dispatcher for shaders/attention.wgsl (+ the laneSum reduction file the device supports).
//
// Contract, for token t < T of sequence s = seqOf[t] at position pos = positions[t], query head h,
// kv head g = h / (nh / nkv), key positions j in [lo, pos] (lo = max(0, pos − window + 1) with a window):
//   o[t, h·hd + d] = Σ_j softmax_j(scale · q[t, h·hd:(h+1)·hd] · K[s, j, g]) · V[s, j, g, d]
// where K/V[s, j] = kcache/vcache[blockTables[s, j / B] · B + j % B]. The keys of this step must already be in
// the cache (rope.wgsl writes them first). T = dims.tokens.

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
  /** The step's uniform {tokens, rows}. */
  dims: GPUBuffer;
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
const MAXH = 16;
const MAXC = 16;
/** Query heads per workgroup, at most. */
const MAX_HPW = 8;
/**
 * Query registers (QT · HPW · CPL vec4s of q, as many of output) a prefill tile may hold. Measured on lavapipe
 * (SmolLM2 shapes, 512-token prefill, ms per layer): QT 1 / 2 / 4 / 6 / 8 at HPW 3, CPL 2 took 57 / 44 / 38–46 /
 * 152 / 133: past 24 the registers spill.
 */
const TILE_REGS = 24;

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
  for (let d = 1; d <= group; d++) if (group % d === 0 && d <= MAX_HPW && d * chunksPerLane <= MAXQ) hpw = d;
  // Tokens per workgroup in steps with prefill (decode-only steps have one token per sequence: QT = 1).
  let qt = 1;
  for (const c of [2, 4]) if (c * hpw <= MAXH && c * hpw * chunksPerLane <= TILE_REGS) qt = c;
  const constants = { WG: lanes, HPW: hpw, CPL: chunksPerLane };
  const single = await gpu.pipeline(['attention', shader], 'main', { ...constants, QT: 1 });
  const tiled = qt > 1 ? await gpu.pipeline(['attention', shader], 'main', { ...constants, QT: qt }) : single;
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
  const entries = {
    0: s.dims,
    1: params,
    2: s.positions,
    3: s.seqOf,
    4: s.blockTables,
    5: s.q,
    6: s.kcache,
    7: s.vcache,
    8: s.o,
  };
  const singleBg = bindGroup(gpu.device, single, s.label, entries);
  const tiledBg = tiled === single ? singleBg : bindGroup(gpu.device, tiled, `${s.label}.tiled`, entries);
  return {
    label: s.label,
    encode(pass, d) {
      if (d.tokens === 0) return;
      const prefill = d.tokens > d.seqs && qt > 1;
      pass.setPipeline(prefill ? tiled : single);
      pass.setBindGroup(0, prefill ? tiledBg : singleBg);
      pass.dispatchWorkgroups(s.nh / hpw, prefill ? Math.ceil(d.tokens / qt) : d.tokens);
    },
  };
}
