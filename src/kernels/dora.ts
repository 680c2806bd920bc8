// Dispatcher for shaders/dora.wgsl: the per-row statistics DoRA needs from the base weights, computed once per
// adapter module on the GPU (the base weights live there, and the work is rows · K · rank).
//
// Contract, for n < rows (rows of W from rowStart) and j < rank:
//   out[n, 0] = Σ_k W[rowStart + n, k]²      out[n, 1 + j] = Σ_k A[j, k] · W[rowStart + n, k]       f32

import type { Gpu } from '../gpu/device.js';
import type { GpuMatrix } from '../gpu/tensors.js';
import { WDTYPE } from '../gpu/tensors.js';
import { paramsBuffer } from './params.js';
import { bindGroup } from './op.js';

const PARAMS = { Kp: 'u32', row0: 'u32', rank: 'u32', outRow0: 'u32' } as const;
const CHUNK = 16; // ranks per workgroup (shader constant)
const MAX_GROUPS = 65535; // WebGPU's default maxComputeWorkgroupsPerDimension

/** Row statistics of W's rows [rowStart, rowStart + rows) against A (f32 [rank, W.colsPadded], pad columns zero): f32 [rows, 1 + rank]. */
export async function doraRowStats(gpu: Gpu, W: GpuMatrix, rowStart: number, rows: number, A: Float32Array, rank: number): Promise<Float32Array> {
  const { lanes, shader } = gpu.laneReduce;
  const Kp = W.colsPadded;
  if (A.length !== rank * Kp) throw new Error(`doraRowStats: A has ${A.length} values, expected ${rank} x ${Kp}`);
  const pipeline = await gpu.pipeline(['dora', 'dtype', shader], 'row_stats', { WDTYPE: WDTYPE[W.dtype], WG: lanes });
  const temp: GPUBuffer[] = [];
  const a = gpu.upload('dora.A', A);
  const out = gpu.buffer('dora.out', rows * (1 + rank) * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
  temp.push(a, out);
  try {
    const enc = gpu.device.createCommandEncoder({ label: 'dora.stats' });
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    for (const part of W.parts) {
      const lo = Math.max(rowStart, part.rowStart);
      const hi = Math.min(rowStart + rows, part.rowStart + part.rows);
      for (let r = lo; r < hi; r += MAX_GROUPS) {
        const params = paramsBuffer(gpu.device, 'dora.params', PARAMS, { Kp, row0: r - part.rowStart, rank, outRow0: r - rowStart });
        temp.push(params);
        pass.setBindGroup(0, bindGroup(gpu.device, pipeline, 'dora.bg', { 0: params, 1: part.buffer, 2: a, 3: out }));
        pass.dispatchWorkgroups(Math.min(MAX_GROUPS, hi - r), Math.ceil(rank / CHUNK));
      }
    }
    pass.end();
    gpu.queue.submit([enc.finish()]);
    return new Float32Array(await gpu.read(out));
  } finally {
    for (const b of temp) b.destroy();
  }
}
