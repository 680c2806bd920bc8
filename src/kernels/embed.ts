// Dispatcher for shaders/embed.wgsl.
//
// Contract: for each token t < T, with id = feed[t] == NONE ? ids[t] : prevOut[feed[t]] (a token the previous step
// sampled, not read back yet):  x[t, i] = E[id, i] widened to f32, i < H (x row stride ldx);  ids[t] = id.
// A table split into parts runs one dispatch per part; each writes only the tokens whose id it holds.

import type { Gpu } from '../gpu/device.js';
import type { GpuMatrix } from '../gpu/tensors.js';
import { WDTYPE } from '../gpu/tensors.js';
import { paramsBuffer } from './params.js';
import type { Op } from './op.js';
import { bindGroup } from './op.js';

const PARAMS = {
  H: 'u32', // embedding width (elements)
  Hp: 'u32', // row stride of the table (elements)
  ldx: 'u32', // row stride of x (elements)
  rowStart: 'u32', // first vocabulary id held by the part
  rowCount: 'u32', // ids held by the part
} as const;

export interface EmbedSpec {
  label: string;
  E: GpuMatrix;
  ids: GPUBuffer;
  /** Per token: NONE, or the previous step's sample row whose token it is. */
  feed: GPUBuffer;
  /** The previous step's sampled tokens (the sampler's output buffer). */
  prevOut: GPUBuffer;
  x: GPUBuffer;
  ldx: number;
}

export async function embedOp(gpu: Gpu, s: EmbedSpec): Promise<Op> {
  const pipeline = await gpu.pipeline(['embed', 'dtype'], 'main', { WDTYPE: WDTYPE[s.E.dtype] });
  const bgs = s.E.parts.map((part, i) => {
    const params = paramsBuffer(gpu.device, `${s.label}.params${i}`, PARAMS, {
      H: s.E.cols,
      Hp: s.E.colsPadded,
      ldx: s.ldx,
      rowStart: part.rowStart,
      rowCount: part.rows,
    });
    return bindGroup(gpu.device, pipeline, `${s.label}#${i}`, { 1: params, 2: s.ids, 3: part.buffer, 4: s.x, 5: s.feed, 6: s.prevOut });
  });
  return {
    label: s.label,
    encode(pass, d) {
      if (d.tokens === 0) return;
      pass.setPipeline(pipeline);
      for (const bg of bgs) {
        pass.setBindGroup(0, bg);
        pass.dispatchWorkgroups(d.tokens);
      }
    },
  };
}
