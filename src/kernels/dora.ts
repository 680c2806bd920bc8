// The per-row statistics DoRA needs from the base weights, computed once per adapter on the GPU (the base weights
// live there): ‖W_n‖² by shaders/dora.wgsl, and P = A·Wᵀ by the model's own matmul (matmul.wgsl with A as x),
// for every module of an adapter in one submit and one read-back.
//
// Contract, per job (rows [rowStart, rowStart + rows) of W, A f32 [rank, W.colsPadded] with pad columns zero):
//   out[n, 0] = Σ_k W[rowStart + n, k]²      out[n, 1 + j] = Σ_k A[j, k] · W[rowStart + n, k]       f32

import type { Gpu } from '../gpu/device.js';
import type { GpuMatrix } from '../gpu/tensors.js';
import { WDTYPE } from '../gpu/tensors.js';
import { paramsBuffer } from './params.js';
import { bindGroup } from './op.js';
import { matmulOp } from './matmul.js';

const PARAMS = { Kp: 'u32', row0: 'u32', outRow0: 'u32' } as const;
const MAX_GROUPS = 65535; // WebGPU's default maxComputeWorkgroupsPerDimension

export interface DoraStatsJob {
  W: GpuMatrix;
  rowStart: number;
  rows: number;
  /** f32 [rank, W.colsPadded]. */
  A: Float32Array;
  rank: number;
}

/** Row statistics of every job: f32 [rows, 1 + rank] each. */
export async function doraRowStats(gpu: Gpu, jobs: readonly DoraStatsJob[]): Promise<Float32Array[]> {
  const { lanes, shader } = gpu.laneReduce;
  const temp: GPUBuffer[] = [];
  const buffer = (label: string, bytes: number, usage: GPUBufferUsageFlags) => {
    const b = gpu.buffer(label, Math.max(16, bytes), usage);
    temp.push(b);
    return b;
  };
  const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  try {
    const dummy = buffer('dora.dummy', 16, STORAGE);
    const enc = gpu.device.createCommandEncoder({ label: 'dora.stats' });
    const pass = enc.beginComputePass();
    const outs: { norms: GPUBuffer; P: GPUBuffer }[] = [];
    for (const job of jobs) {
      const { W, rank } = job;
      if (job.A.length !== rank * W.colsPadded) throw new Error(`doraRowStats: A has ${job.A.length} values, expected ${rank} x ${W.colsPadded}`);
      // P = A·Wᵀ over all of W's rows (a fused q/k/v matrix included): rank "tokens" through the matmul.
      const x = gpu.upload('dora.A', job.A);
      temp.push(x);
      const P = buffer('dora.P', rank * W.rows * 4, STORAGE);
      const dims = buffer('dora.dims', 16, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
      gpu.queue.writeBuffer(dims, 0, new Uint32Array([rank, rank, 0, 0]));
      const mm = await matmulOp(gpu, { label: 'dora.P', W, x, y: P, ldy: W.rows, epilogue: 'store', dims, dummy });
      mm.encode(pass, { tokens: rank, seqs: 0 });
      // ‖W_n‖² for the job's rows, per part of W they fall in.
      const norms = buffer('dora.norms', job.rows * 4, STORAGE);
      const pipeline = await gpu.pipeline(['dora', 'dtype', shader], 'row_norms', { WDTYPE: WDTYPE[W.dtype], WG: lanes });
      pass.setPipeline(pipeline);
      for (const part of W.parts) {
        const lo = Math.max(job.rowStart, part.rowStart);
        const hi = Math.min(job.rowStart + job.rows, part.rowStart + part.rows);
        for (let r = lo; r < hi; r += MAX_GROUPS) {
          const params = paramsBuffer(gpu.device, 'dora.params', PARAMS, { Kp: W.colsPadded, row0: r - part.rowStart, outRow0: r - job.rowStart });
          temp.push(params);
          pass.setBindGroup(0, bindGroup(gpu.device, pipeline, 'dora.bg', { 0: params, 1: part.buffer, 2: norms }));
          pass.dispatchWorkgroups(Math.min(MAX_GROUPS, hi - r));
        }
      }
      outs.push({ norms, P });
    }
    pass.end();
    // One read-back of everything.
    let size = 0;
    const at = outs.map((o) => {
      const a = { norms: size, P: size + o.norms.size };
      size += o.norms.size + o.P.size;
      return a;
    });
    const staging = buffer('dora.staging', size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    outs.forEach((o, i) => {
      enc.copyBufferToBuffer(o.norms, 0, staging, at[i]!.norms, o.norms.size);
      enc.copyBufferToBuffer(o.P, 0, staging, at[i]!.P, o.P.size);
    });
    gpu.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const all = new Float32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    return jobs.map((job, i) => {
      const { rows, rank, rowStart, W } = job;
      const norms = all.subarray(at[i]!.norms / 4);
      const P = all.subarray(at[i]!.P / 4); // [rank][W.rows]
      const out = new Float32Array(rows * (1 + rank));
      for (let n = 0; n < rows; n++) {
        out[n * (1 + rank)] = norms[n]!;
        for (let j = 0; j < rank; j++) out[n * (1 + rank) + 1 + j] = P[j * W.rows + rowStart + n]!;
      }
      return out;
    });
  } finally {
    for (const b of temp) b.destroy();
  }
}
