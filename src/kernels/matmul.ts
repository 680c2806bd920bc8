// Dispatcher for shaders/matmul.wgsl.
//
// Contract, for m < M (M = step tokens, or step seqs for the lm_head) and n < N:
//   acc[m, n] = Σ_k x[m, k] · W[n, k]  (+ bias[n])           f32 accumulation, W widened from its dtype
//   'store':  y[m, yOffset + n] = acc[m, n]
//   'add':    y[m, yOffset + n] += acc[m, n]                 (residual connection)
//   'swiglu': y[m, n] = silu(acc[m, n]) · (Σ_k x[m, k] · W2[n, k] (+ bias2[n]))
// x: f32 [M, W.colsPadded] (pad columns zero); y: f32 [M, ldy]. A W split into parts runs one dispatch per part.

import type { Gpu } from '../gpu/device.js';
import type { GpuMatrix, GpuVector } from '../gpu/tensors.js';
import { WDTYPE } from '../gpu/tensors.js';
import { paramsBuffer } from './params.js';
import type { Op } from './op.js';
import { bindGroup } from './op.js';

const PARAMS = {
  N: 'u32', // output columns of this part
  Kp: 'u32', // padded reduction length (elements)
  ldy: 'u32', // y row stride (elements)
  yOffset: 'u32', // first y column (elements)
  mFromSeqs: 'u32', // 1: M = dims.seqs
  biasOffset: 'u32', // first bias element (elements)
} as const;

const EPILOGUE = { store: 0, add: 1, swiglu: 2 } as const;
const ROWS = 4; // output columns per workgroup (shader constant)
const TM_BATCH = 4; // x rows per workgroup when M > 1

export interface MatmulSpec {
  label: string;
  W: GpuMatrix;
  /** Up projection for 'swiglu' (same shape, dtype and parts as W). */
  W2?: GpuMatrix;
  bias?: GpuVector;
  bias2?: GpuVector;
  x: GPUBuffer;
  y: GPUBuffer;
  ldy: number;
  yOffset?: number;
  epilogue: keyof typeof EPILOGUE;
  /** 'seqs' when the rows are the sampled rows (lm_head); default 'tokens'. */
  rows?: 'tokens' | 'seqs';
  /** Uniform {tokens, seqs} of the current step. */
  dims: GPUBuffer;
  /** Stand-in for unused bindings. */
  dummy: GPUBuffer;
}

export async function matmulOp(gpu: Gpu, s: MatmulSpec): Promise<Op> {
  if (s.epilogue === 'swiglu' && (!s.W2 || s.W2.parts.length !== s.W.parts.length || s.W2.dtype !== s.W.dtype)) {
    throw new Error(`${s.label}: swiglu needs W2 with the same dtype and parts as W`);
  }
  const fromSeqs = s.rows === 'seqs';
  const constants = (tm: number) => ({
    WDTYPE: WDTYPE[s.W.dtype],
    EPILOGUE: EPILOGUE[s.epilogue],
    HAS_BIAS: s.bias ? 1 : 0,
    TM: tm,
  });
  const variants = await Promise.all(
    [1, TM_BATCH].map(async (tm) => {
      const pipeline = await gpu.pipeline('matmul', 'main', constants(tm));
      const parts = s.W.parts.map((part, i) => {
        const params = paramsBuffer(gpu.device, `${s.label}.params${i}`, PARAMS, {
          N: part.rows,
          Kp: s.W.colsPadded,
          ldy: s.ldy,
          yOffset: (s.yOffset ?? 0) + part.rowStart,
          mFromSeqs: fromSeqs ? 1 : 0,
          biasOffset: part.rowStart,
        });
        const bg = bindGroup(gpu.device, pipeline, `${s.label}.bg${i}`, {
          0: s.dims,
          1: params,
          2: s.x,
          3: part.buffer,
          4: s.bias?.buffer ?? s.dummy,
          5: s.y,
          6: s.W2?.parts[i]!.buffer ?? s.dummy,
          7: s.bias2?.buffer ?? s.dummy,
        });
        return { bg, groups: Math.ceil(part.rows / ROWS) };
      });
      return { tm, pipeline, parts };
    }),
  );
  return {
    label: s.label,
    encode(pass, d) {
      const M = fromSeqs ? d.seqs : d.tokens;
      if (M === 0) return;
      const v = M === 1 ? variants[0]! : variants[1]!;
      pass.setPipeline(v.pipeline);
      for (const part of v.parts) {
        pass.setBindGroup(0, part.bg);
        pass.dispatchWorkgroups(part.groups, Math.ceil(M / v.tm));
      }
    },
  };
}
