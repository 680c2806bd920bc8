// Micro-benchmarks of single kernels: the streaming ceiling of a plain read kernel and the achieved bandwidth of
// the decode GEMV (matmul with one row) on realistic shapes. Timed as many dispatches in one submit, best of a
// few repetitions, so per-submit costs are amortized and noise is trimmed.

import { readFileSync } from 'node:fs';
import type { Gpu } from '../src/gpu/device.js';
import type { DType } from '../src/io/dtype.js';
import { DTYPE_BYTES } from '../src/io/dtype.js';
import { uploadMatrix } from '../src/gpu/tensors.js';
import type { Paced } from '../src/gpu/pacer.js';
import { WaitPacer } from '../src/gpu/pacer.js';
import { getPlatform } from '../src/platform/platform.js';
import { matmulOp } from '../src/kernels/matmul.js';
import type { Op } from '../src/kernels/op.js';

const READ_WGSL = readFileSync(new URL('./read.wgsl', import.meta.url), 'utf8');

/** Wall time of `reps` dispatches of `op` in one submit, best of `trials`, in ms per dispatch. */
export async function timeOp(gpu: Gpu, encode: (pass: GPUComputePassEncoder) => void, reps: number, trials = 5): Promise<number> {
  let best = Infinity;
  // Sleep through most of each trial where waiting polls (dawn.node), as the runtime does: the polling thread
  // would otherwise compete with a CPU driver's workers.
  const pacer = new WaitPacer(getPlatform().waitPolls);
  const paced: Paced = { key: 0, work: 0, submittedAt: 0, sleptUntil: 0 };
  for (let t = 0; t < trials + 1; t++) {
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (let i = 0; i < reps; i++) encode(pass);
    pass.end();
    const t0 = performance.now();
    gpu.queue.submit([enc.finish()]);
    pacer.submitted(paced, 0, 0);
    await pacer.beforeWait(paced);
    await gpu.queue.onSubmittedWorkDone();
    pacer.done(paced);
    const ms = (performance.now() - t0) / reps;
    if (t > 0) best = Math.min(best, ms); // the first trial warms up
  }
  return best;
}

export async function streamingCeiling(gpu: Gpu, bytes = 64 * 2 ** 20): Promise<{ gbps: number; bytes: number }> {
  const module = gpu.device.createShaderModule({ code: READ_WGSL, label: 'bench.read' });
  const src = gpu.buffer('bench.src', bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
  gpu.queue.writeBuffer(src, 0, new Float32Array(bytes / 4).fill(1));
  const out = gpu.buffer('bench.out', 256 * 4, GPUBufferUsage.STORAGE);
  let best = 0;
  // [workgroups, lanes, unroll]: the best layouts found on lavapipe, and a GPU-friendly one.
  for (const [groups, wg, unroll] of [
    [32, 64, 4],
    [8, 64, 4],
    [32, 256, 4],
    [256, 64, 2],
  ] as const) {
    const pipeline = await gpu.device.createComputePipelineAsync({
      layout: 'auto',
      compute: { module, entryPoint: 'main', constants: { WG: wg, UNROLL: unroll } },
    });
    const bg = gpu.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: src } },
        { binding: 1, resource: { buffer: out } },
      ],
    });
    const ms = await timeOp(
      gpu,
      (pass) => {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bg);
        pass.dispatchWorkgroups(groups);
      },
      10,
    );
    best = Math.max(best, bytes / ms / 1e6);
  }
  src.destroy();
  out.destroy();
  return { gbps: best, bytes };
}

export interface GemvResult {
  shape: string; // N x K (W is [N, K], HF [out, in])
  dtype: DType;
  us: number; // per dispatch
  gbps: number; // weight bytes / time
}

/**
 * Decode GEMV (M = 1) through the real matmul dispatcher. Dispatches rotate over copies of W totalling >= 160 MiB
 * (several times the last-level cache), so every dispatch streams its weights from memory as decoding does.
 */
export async function gemv(gpu: Gpu, N: number, K: number, dtype: DType): Promise<GemvResult> {
  const bytes = new Uint8Array(N * K * DTYPE_BYTES[dtype]);
  // Small finite values in every dtype: 0x3c00 is 1.0 in f16; for f32/bf16 0x3c003c00 is a small normal number.
  new Uint16Array(bytes.buffer).fill(0x3c00);
  const copies = Math.max(1, Math.ceil((160 * 2 ** 20) / bytes.byteLength));
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
  const Ws = Array.from({ length: copies }, (_, i) => uploadMatrix(gpu, `bench.W${N}x${K}#${i}`, bytes, dtype, N, K));
  const x = gpu.buffer('bench.x', Ws[0]!.colsPadded * 4, usage);
  const y = gpu.buffer('bench.y', N * 4, usage);
  const dims = gpu.buffer('bench.dims', 16, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
  gpu.queue.writeBuffer(dims, 0, new Uint32Array([1, 1, 0, 0]));
  const dummy = gpu.buffer('bench.dummy', 16, usage);
  const ops: Op[] = await Promise.all(
    Ws.map((W) => matmulOp(gpu, { label: 'bench.gemv', W, x, y, ldy: N, epilogue: 'store', dims, dummy })),
  );
  const weightBytes = Ws[0]!.parts.reduce((a, p) => a + p.buffer.size, 0);
  const reps = Math.max(copies, Math.min(4 * copies, Math.round(4e8 / weightBytes)));
  let i = 0;
  const ms = await timeOp(gpu, (pass) => ops[i++ % copies]!.encode(pass, { tokens: 1, seqs: 1 }), reps);
  for (const b of [x, y, dims, dummy, ...Ws.flatMap((W) => W.parts.map((p) => p.buffer))]) b.destroy();
  return { shape: `${N}x${K}`, dtype, us: ms * 1000, gbps: weightBytes / ms / 1e6 };
}
