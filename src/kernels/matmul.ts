// Dispatcher for shaders/matmul.wgsl (+ the laneSum reduction file the device supports).
//
// Contract, for m < M (M = step tokens, or step rows for the lm_head) and n < N:
//   acc[m, n] = Σ_k x[m, k] · W[n, k]  (+ bias[n])                    f32 accumulation, W widened from its dtype
//   with LoRA: acc[m, n] += Σ_{j < rank_g} B[slot, n, j] · s[m, 8 + g(n)·R + j]  where s[m, 0..5) = (slot, e_0, e_1,
//     e_2, c): e_g = rank_g | DORA_FLAG? as u32 bits, c = the row's scale multiplier, written by the shrink (slot
//     NONE: nothing); g(n) = the member of the fused projection column n belongs to (q/k/v: 0/1/2; gate 0, up 1)
//   DoRA (e_g(n) has DORA_FLAG): acc[m, n] = f · (Σ_k x·W + the LoRA term) + bias[n], f = t0 / sqrt(t1 + 2c·t2 + c²·t3)
//     with (t0, t1, t2, t3) = the f32 words B[dOff + (slot·bRows + n)·4 + i] (B2's for the up projection)
//   'store':  y[m, yOffset + n] = acc[m, n]
//   'add':    y[m, yOffset + n] += acc[m, n]                            (residual connection)
//   'swiglu': y[m, n] = silu(acc[m, n]) · acc_up[m, n]   (acc_up from W2 and B2; no bias)
// x: f32 [M, W.colsPadded] (pad columns zero); y: f32 [M, ldy]. A W split into parts runs one dispatch per part.
// Two layouts: `main` splits K across the lanes (GPUs; any M) and `rows` gives each lane whole columns with x shared
// by subgroup shuffles (CPU devices with 8-lane subgroups, from ROWS_MIN_M rows of x: see Gpu.rowsLayout).

import type { Gpu } from '../gpu/device.js';
import type { DType } from '../io/dtype.js';
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
  mFromRows: 'u32', // 1: M = dims.rows
  nBase: 'u32', // global index of the part's first column
  R: 'u32', // LoRA rank stride of s and slots
  Rp: 'u32', // LoRA B row stride (elements)
  ldS: 'u32', // row stride of s (elements, 8-word header included)
  bRows: 'u32', // B rows per slot
  n1: 'u32', // first global column of member 1, or bRows
  n2: 'u32', // first global column of member 2, or bRows
  dOff: 'u32', // u32 word of the DoRA table in B and B2
  tOff: 'u32', // TERMS: first word of the expanded terms in a row of s
} as const;

const EPILOGUE = { store: 0, add: 1, swiglu: 2 } as const;
/** Register room for s pairs in the shader (SPAIRS_MAX). */
const S_PAIRS_MAX = 8;
/** x rows per workgroup by M: 1 for decode of one sequence, 2 for two, 4 beyond. */
const MT_VARIANTS = [1, 2, 4] as const;
const mtFor = (M: number) => (M === 1 ? 1 : M === 2 ? 2 : 4);
/** x rows per workgroup of the `rows` entry point: 8 up to 8 rows, 16 beyond. */
const ROWS_MT = [8, 16] as const;
/** W rows per lane of the `rows` entry point (per matrix: the SwiGLU tile holds two). */
const ROWS_RL = 4;
const ROWS_RL_GATED = 2;
/** Smallest M that takes the `rows` entry point where the device suits it (below, `main` measured as fast or faster). */
const ROWS_MIN_M = 5;
/**
 * Output columns per workgroup (ROWS; the shader holds ROWS · MT · (1 + gated) <= 128 accumulators per lane).
 * Measured on lavapipe (SmolLM2 shapes, alternating in-process rounds): one or two x rows are fastest with 4 rows (2 for the
 * two-matrix SwiGLU tile); a 4-row tile of x is worth sharing over 32 weight rows for 16-bit weights (16 for
 * SwiGLU) — 8-25 % less time than 16 at M = 16 and 64, lm_head 72 against 85 ms — and over 8 for f32 (4 for
 * SwiGLU), whose x costs half as many loads per weight and whose bigger tiles measured slower.
 */
function rowsFor(mt: number, gated: boolean, dtype: DType): number {
  if (mt < 4) return gated ? 2 : 4;
  if (dtype === 'F32') return gated ? 4 : 8;
  return gated ? 16 : 32;
}

/** The multi-LoRA expand fused into the matmul: slots' B for this projection group. */
export interface MatmulLora {
  dtype: DType; // slots' dtype
  B: GPUBuffer; // [S][bRows][Rp]
  B2?: GPUBuffer; // up projection's B (swiglu)
  bRows: number;
  /** u32 word of the DoRA table (f32 [S][bRows][4]) in B and B2 (LoraSlots' SlotGroup.doraWords). */
  doraWords: number;
  /** Global column boundaries of members 1 and 2 (q/k/v), bRows when absent. */
  n1: number;
  n2: number;
  R: number;
  Rp: number;
  /**
   * Where the shrink left the expanded terms in each s row (ShrinkTerms.tOff), if it did: the epilogue adds those and
   * reads B only for DoRA's table.
   */
  tOff?: number;
  /** Shrink output s: f32 [rows, ldS], each row an 8-word header then the shrunk values. */
  s: GPUBuffer;
  ldS: number;
  /**
   * Rank pairs of s each lane keeps in registers (at most 8, the default); pairs past these are re-read per output
   * column. Tests lower it to cover that path.
   */
  sPairsCached?: number;
}

export interface MatmulSpec {
  label: string;
  W: GpuMatrix;
  /** Up projection for 'swiglu' (same shape, dtype and parts as W). */
  W2?: GpuMatrix;
  bias?: GpuVector;
  x: GPUBuffer;
  y: GPUBuffer;
  ldy: number;
  yOffset?: number;
  epilogue: keyof typeof EPILOGUE;
  /** 'rows' when x holds the sampled rows (lm_head); default 'tokens'. */
  rows?: 'tokens' | 'rows';
  /** Uniform {tokens, rows} of the current step. */
  dims: GPUBuffer;
  /** Stand-in for unused bindings. */
  dummy: GPUBuffer;
  lora?: MatmulLora;
  /**
   * Smallest M that runs the row-per-lane entry point (`rows`). Default: ROWS_MIN_M where the device is a CPU
   * implementation with 8-lane subgroups (Gpu.rowsLayout), else never. Ignored where the device cannot run that
   * layout (Gpu.rowsCapable). Tests set it to cover both layouts.
   */
  rowsMinM?: number;
}

export async function matmulOp(gpu: Gpu, s: MatmulSpec): Promise<Op> {
  const gated = s.epilogue === 'swiglu';
  if (gated && (!s.W2 || s.W2.parts.length !== s.W.parts.length || s.W2.dtype !== s.W.dtype || s.bias)) {
    throw new Error(`${s.label}: swiglu needs W2 with the same dtype and parts as W, and no bias`);
  }
  const fromRows = s.rows === 'rows';
  const { lanes, shader } = gpu.laneReduce;
  const L = s.lora;
  const params = s.W.parts.map((part, i) =>
    paramsBuffer(gpu.device, `${s.label}.params${i}`, PARAMS, {
      N: part.rows,
      Kp: s.W.colsPadded,
      ldy: s.ldy,
      yOffset: (s.yOffset ?? 0) + part.rowStart,
      mFromRows: fromRows ? 1 : 0,
      nBase: part.rowStart,
      R: L?.R ?? 0,
      Rp: L?.Rp ?? 0,
      ldS: L?.ldS ?? 0,
      bRows: L?.bRows ?? 0,
      n1: L?.n1 ?? 0,
      n2: L?.n2 ?? 0,
      dOff: L?.doraWords ?? 0,
      tOff: L?.tOff ?? 0,
    }),
  );
  // Specialization and bind groups (one per part of W) shared by both entry points.
  const constants = (mt: number, lora: boolean) => ({
    WDTYPE: WDTYPE[s.W.dtype],
    EPILOGUE: EPILOGUE[s.epilogue],
    HAS_BIAS: s.bias ? 1 : 0,
    LORA: lora ? 1 : 0,
    LDTYPE: L ? WDTYPE[L.dtype] : 0,
    TERMS: L?.tOff !== undefined ? 1 : 0,
    MT: mt,
    WG: lanes,
  });
  const bindParts = (pipeline: GPUComputePipeline, lora: boolean, tag: string) =>
    s.W.parts.map((part, i) =>
      bindGroup(gpu.device, pipeline, `${s.label}.${tag}${i}`, {
        0: s.dims,
        1: params[i]!,
        2: s.x,
        3: part.buffer,
        4: s.W2?.parts[i]!.buffer ?? s.dummy,
        5: s.bias?.buffer ?? s.dummy,
        6: s.y,
        7: (lora && L?.s) || s.dummy,
        8: (lora && L?.B) || s.dummy,
        9: (lora && L?.B2) || s.dummy,
      }),
    );
  const build = async (mt: number, lora: boolean) => {
    const rowsPerGroup = rowsFor(mt, gated, s.W.dtype);
    const pipeline = await gpu.pipeline(['matmul', 'dtype', shader], 'main', {
      ...constants(mt, lora),
      ROWS: rowsPerGroup,
      LPAIRS: Math.max(1, Math.ceil((L?.R ?? 0) / (2 * lanes))),
      SPAIRS: Math.min(L?.sPairsCached ?? S_PAIRS_MAX, S_PAIRS_MAX),
    });
    return { pipeline, bgs: bindParts(pipeline, lora, 'bg'), groups: s.W.parts.map((p) => Math.ceil(p.rows / rowsPerGroup)) };
  };
  const rowsMinM = gpu.rowsCapable ? (s.rowsMinM ?? (gpu.rowsLayout ? ROWS_MIN_M : Infinity)) : Infinity;
  const rowsPerLane = gated ? ROWS_RL_GATED : ROWS_RL;
  const buildRows = async (mt: number, lora: boolean) => {
    const pipeline = await gpu.pipeline(['matmul', 'matmul_rows', 'dtype', shader], 'rows', { ...constants(mt, lora), RL: rowsPerLane });
    return { pipeline, bgs: bindParts(pipeline, lora, 'rows.bg'), groups: s.W.parts.map((p) => Math.ceil(p.rows / (rowsPerLane * lanes))) };
  };
  const plain = await Promise.all(MT_VARIANTS.map((mt) => build(mt, false)));
  const withLora = L ? await Promise.all(MT_VARIANTS.map((mt) => build(mt, true))) : plain;
  const rowsPlain = rowsMinM < Infinity ? await Promise.all(ROWS_MT.map((mt) => buildRows(mt, false))) : [];
  const rowsLora = rowsMinM < Infinity && L ? await Promise.all(ROWS_MT.map((mt) => buildRows(mt, true))) : rowsPlain;
  return {
    label: s.label,
    encode(pass, d) {
      const M = fromRows ? d.seqs : d.tokens;
      if (M === 0) return;
      let v;
      let mt;
      if (M >= rowsMinM) {
        const i = M <= ROWS_MT[0] ? 0 : 1;
        mt = ROWS_MT[i];
        v = (d.lora ? rowsLora : rowsPlain)[i]!;
      } else {
        mt = mtFor(M);
        v = (d.lora ? withLora : plain)[MT_VARIANTS.indexOf(mt as 1 | 2 | 4)]!;
      }
      pass.setPipeline(v.pipeline);
      for (let i = 0; i < v.bgs.length; i++) {
        pass.setBindGroup(0, v.bgs[i]!);
        pass.dispatchWorkgroups(v.groups[i]!, Math.ceil(M / mt));
      }
    },
  };
}
