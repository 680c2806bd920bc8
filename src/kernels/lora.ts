// Dispatchers for shaders/lora.wgsl (+ lora_rows.wgsl, the row-per-lane shrink): the multi-LoRA shrink (the expand
// is fused into matmul.ts, or on CPU devices done by the row-per-lane shrink: ShrinkTerms), the RMSNorm + shrink
// pair that q/k/v and gate/up need (one dispatch on CPU devices), and the embedding LoRA (gather + expand into the
// embedded rows).
//
// Contract (shrink), for each row t < M (M = step tokens, or step rows for lm_head) and member g < G:
//   s[t, 0] = slot = slotOf[t];  s[t, 1 + g] = e_g = ranks[slot, rankBase + g]  (u32 bits: rank_g | DORA_FLAG)
//   s[t, 4] = mult[t] (f32; only for rows with a slot)
//   s[t, 8 + g·R + j] = mult[t] · Σ_k x[t, k] · A[slot, g, j, k]                               j < rank_g
// and with `terms` (row-per-lane layout only) also the expand, for every row with a slot and every B row n of member g:
//   s[t, tOff + o(g) + n] = Σ_{j < rank_g} B_g[slot, n, j] · s[t, 8 + g·R + j]   (0 where rank_g = 0)
// (ShrinkTerms says which rows and buffers; the matmul then adds these terms instead of reading B: MatmulLora.tOff.)
// Contract (embedding), for each token t with slot = slotOf[t] != NONE and rank = ranks[slot, rankBase]:
//   x[t, n] += Σ_{j < rank} B[slot, n, j] · mult[t] · A[slot, j, ids[t]]                     n < hidden
// (PEFT's Embedding LoRA: F.embedding(ids, Aᵀ) @ Bᵀ · scale, with the scale folded into B.)
// Nothing is dispatched in a step without adapters (StepDims.lora false).

import type { Gpu } from '../gpu/device.js';
import { WDTYPE } from '../gpu/tensors.js';
import type { LoraSlots, SlotGroup } from '../lora/gpu-slots.js';
import { paramsBuffer } from './params.js';
import type { Op, StepDims } from './op.js';
import { rmsnormOp, type RmsNormSpec } from './rmsnorm.js';
import { bindGroup } from './op.js';

const PARAMS = {
  Kp: 'u32', // padded input width: row stride of x and A (elements)
  R: 'u32', // rank stride of the slots (max rank)
  G: 'u32', // members in the group
  ldS: 'u32', // row stride of s (elements, 8-word header included)
  rankBase: 'u32', // the group's first entry in a slot's rank row
  rankStride: 'u32', // rank entries per slot
  N: 'u32', // expand: output columns; embed gather: row stride of A (padded vocabulary)
  ldy: 'u32', // expand: row stride of y (elements)
  Rp: 'u32', // expand: row stride of B (elements)
} as const;

const NORM_PARAMS = { H: 'u32', eps: 'f32' } as const;
const TERM_PARAMS = { tOff: 'u32', bRows: 'u32', n1: 'u32', n2: 'u32', split: 'u32' } as const;

/** Words before the values in each row of s: slot, three ranks entries, the row's scale multiplier, 3 unused. */
export const S_HEADER = 8;
/** A rows per shrink workgroup (shader constants): K-split layout, row-per-lane layout (2 per lane). */
const ROWS = 4;
const ROWS_RL = 16;

export interface ShrinkSpec {
  label: string;
  slots: LoraSlots;
  group: SlotGroup;
  /** f32 [M, group.inPadded]. */
  x: GPUBuffer;
  s: GPUBuffer;
  ldS: number;
  /** u32 slot per row (NONE = 0xffffffff) and f32 scale multiplier per row. */
  slotOf: GPUBuffer;
  mult: GPUBuffer;
  rows?: 'tokens' | 'rows';
  /**
   * 'rows': the row-per-lane shrink, 'split': the K-split one; default: rows where the device prefers that layout
   * (Gpu.rowsLayout). Devices without 8-lane subgroups always run the K-split one.
   */
  layout?: 'rows' | 'split';
  /** Expand into s as well (row-per-lane layout only; see the contract above). */
  terms?: ShrinkTerms;
}

/**
 * Where the shrink writes its expanded terms: from word tOff of each s row, member g's B rows in order. Members of
 * q/k/v are row ranges [0, n1), [n1, n2), [n2, bRows) of B; gate/up (B2 set) are B's and B2's rows [0, bRows), up's
 * terms after gate's.
 */
export interface ShrinkTerms {
  tOff: number;
  B: GPUBuffer;
  B2?: GPUBuffer;
  bRows: number;
  n1: number;
  n2: number;
}

/** Whether the device runs the row-per-lane shrink: 8-lane subgroups, and 10 storage buffers in one shader. */
export function shrinkRowsCapable(gpu: Gpu): boolean {
  return gpu.rowsCapable && gpu.device.limits.maxStorageBuffersPerShaderStage >= 10;
}

export async function loraShrinkOp(gpu: Gpu, s: ShrinkSpec): Promise<Op> {
  const rows = shrinkRowsCapable(gpu) && (s.layout ?? (gpu.rowsLayout ? 'rows' : 'split')) === 'rows';
  if (s.terms && !rows) throw new Error(`${s.label}: the shrink expands into s (terms) only in the row-per-lane layout`);
  return shrinkOp(gpu, s, s.x, rows, null);
}

export interface NormShrinkSpec extends Omit<ShrinkSpec, 'x' | 'rows' | 'layout'> {
  /** The rmsnorm: its x and its output y (the shrink's input), both with row stride group.inPadded. */
  norm: Omit<RmsNormSpec, 'rows' | 'ld'>;
  /** Steps with up to this many tokens run the fused dispatch (default FUSED_MAX_TOKENS; tests force either form). */
  fusedMaxTokens?: number;
}

/**
 * Most step tokens for which the fused RMSNorm + shrink runs with one workgroup per token and member. Each of those
 * (G per token) redoes the norm, which a separate dispatch does once per token: on lavapipe, 16-token LoRA steps took
 * 108-109 ms of worker CPU with the two dispatches against 110-115 fused, while single-token steps were 2-3 ms
 * faster fused (equal at 4). Past it, a shrink that expands (terms) still fuses, with one workgroup per token that
 * does the norm once and then every member: that saves the norm's dispatch (about 20 µs of worker time each on
 * lavapipe, two per layer) and redoes nothing.
 */
export const FUSED_MAX_TOKENS = 4;

/**
 * RMSNorm followed by the shrink of its output: rmsnormOp's contract (ld = group.inPadded) and then loraShrinkOp's
 * on its output y; the columns of y from H to group.inPadded may be written with zeros. Where the device prefers
 * the row-per-lane layout (Gpu.rowsLayout), steps with adapters run one dispatch (shrink_rows with NORM) for both:
 * one workgroup per token and member up to fusedMaxTokens tokens, one per token past it when the shrink expands
 * (terms). Otherwise it is the two ops in sequence (the norm alone in steps without adapters).
 */
export async function loraNormShrinkOp(gpu: Gpu, s: NormShrinkSpec): Promise<Op[]> {
  const norm = await rmsnormOp(gpu, { ...s.norm, ld: s.group.inPadded });
  const shrink = await loraShrinkOp(gpu, { ...s, x: s.norm.y });
  if (!gpu.rowsLayout || !shrinkRowsCapable(gpu)) return [norm, shrink];
  const maxTokens = s.fusedMaxTokens ?? FUSED_MAX_TOKENS;
  // Past maxTokens (terms only) one workgroup per token: z = 1.
  const fused = await shrinkOp(gpu, s, s.norm.x, true, s.norm, (d) => (d.tokens <= maxTokens ? s.group.members : 1));
  const fuses = (d: StepDims) => d.lora && (d.tokens <= maxTokens || !!s.terms);
  return [
    {
      label: `${s.norm.label}+${s.label}`,
      encode(pass, d) {
        if (fuses(d)) return fused.encode(pass, d);
        norm.encode(pass, d);
        shrink.encode(pass, d);
      },
    },
  ];
}

/**
 * The shrink over input x in either layout; with `norm` (rows layout only) the fused RMSNorm + shrink. `zGroups`:
 * workgroups per row along z, the group's members by default; 1 (with terms) makes each workgroup do every member.
 */
async function shrinkOp(
  gpu: Gpu,
  s: Omit<ShrinkSpec, 'x'>,
  x: GPUBuffer,
  rows: boolean,
  norm: NormShrinkSpec['norm'] | null,
  zGroups: (d: StepDims) => number = () => s.group.members,
): Promise<Op> {
  const { lanes, shader } = gpu.laneReduce;
  const files = rows ? (['lora', 'lora_rows', 'dtype', shader] as const) : (['lora', 'dtype', shader] as const);
  const constants: Record<string, number> = { WDTYPE: WDTYPE[s.slots.dtype], WG: lanes, ACHUNKS: s.slots.aChunks ? 1 : 0 };
  const T = s.terms;
  if (rows) Object.assign(constants, { NORM: norm ? 1 : 0, NWDTYPE: norm ? WDTYPE[norm.w.dtype] : 0, TERMS: T ? 1 : 0, RP: s.slots.rankPadded });
  const pipeline = await gpu.pipeline(files, rows ? 'shrink_rows' : 'shrink', constants);
  const params = paramsBuffer(gpu.device, `${s.label}.params`, PARAMS, {
    Kp: s.group.inPadded,
    R: s.slots.maxRank,
    G: s.group.members,
    ldS: s.ldS,
    rankBase: s.group.rankBase,
    rankStride: s.slots.rankStride,
    N: 0,
    ldy: 0,
    Rp: s.slots.rankPadded,
  });
  const buffers: Record<number, GPUBuffer> = { 1: params, 2: s.slotOf, 3: s.mult, 4: s.slots.ranks, 6: x, 7: s.s, 10: s.group.A };
  if (rows) {
    // shrink_rows binds the norm's buffers whether or not NORM is set (stand-ins without it).
    const standIn = (tag: string) => gpu.buffer(`${s.label}.${tag}`, 16, GPUBufferUsage.STORAGE);
    buffers[11] = paramsBuffer(gpu.device, `${s.label}.norm`, NORM_PARAMS, { H: norm?.w.length ?? 0, eps: norm?.eps ?? 0 });
    buffers[13] = norm?.w.buffer ?? standIn('no-norm-w');
    buffers[14] = norm?.y ?? standIn('no-xn');
    buffers[15] = paramsBuffer(gpu.device, `${s.label}.terms`, TERM_PARAMS, {
      tOff: T?.tOff ?? 0,
      bRows: T?.bRows ?? 0,
      n1: T?.n1 ?? 0,
      n2: T?.n2 ?? 0,
      split: T?.B2 ? 1 : 0,
    });
    buffers[16] = T?.B ?? standIn('no-B');
    buffers[17] = T?.B2 ?? T?.B ?? standIn('no-B2');
  }
  const bg = bindGroup(gpu.device, pipeline, s.label, buffers);
  const fromRows = s.rows === 'rows';
  // With terms one workgroup per row and member walks the whole rank (it expands all of it).
  const xGroups = T ? 1 : Math.ceil(s.slots.maxRank / (rows ? ROWS_RL : ROWS));
  return {
    label: s.label,
    encode(pass, d) {
      const M = fromRows ? d.seqs : d.tokens;
      if (!d.lora || M === 0) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(xGroups, M, zGroups(d));
    },
  };
}

export interface EmbedLoraSpec {
  label: string;
  slots: LoraSlots;
  /** The slots' embed_tokens group (A [S][R][pad8(vocab)], B [S][hidden][Rp]). */
  group: SlotGroup;
  ids: GPUBuffer;
  slotOf: GPUBuffer;
  mult: GPUBuffer;
  s: GPUBuffer;
  ldS: number;
  /** The embedded rows, f32 [T, ldx]; the LoRA delta is added in place. */
  x: GPUBuffer;
  ldx: number;
  hidden: number;
}

export async function embedLoraOp(gpu: Gpu, s: EmbedLoraSpec): Promise<Op> {
  const { lanes } = gpu.laneReduce;
  const constants = { WDTYPE: WDTYPE[s.slots.dtype], WG: lanes };
  // The embedding kernels reduce nothing; compose with the workgroup reduction so no feature is needed.
  const gather = await gpu.pipeline(['lora', 'dtype', 'reduce_workgroup'], 'embed_shrink', constants);
  const expand = await gpu.pipeline(['lora', 'dtype', 'reduce_workgroup'], 'expand_add', constants);
  // The two kernels read N differently: A's row stride (padded vocabulary) for the gather, hidden for the expand.
  const params = (label: string, N: number) =>
    paramsBuffer(gpu.device, label, PARAMS, {
      Kp: 0,
      R: s.slots.maxRank,
      G: 1,
      ldS: s.ldS,
      rankBase: s.group.rankBase,
      rankStride: s.slots.rankStride,
      N,
      ldy: s.ldx,
      Rp: s.slots.rankPadded,
    });
  const gatherBg = bindGroup(gpu.device, gather, `${s.label}.gather`, {
    1: params(`${s.label}.params`, s.group.inPadded),
    2: s.slotOf,
    3: s.mult,
    4: s.slots.ranks,
    5: s.group.A,
    7: s.s,
    8: s.ids,
  });
  const expandBg = bindGroup(gpu.device, expand, `${s.label}.expand`, {
    1: params(`${s.label}.expand.params`, s.hidden),
    2: s.slotOf,
    4: s.slots.ranks,
    5: s.group.B[0]!,
    7: s.s,
    9: s.x,
  });
  return {
    label: s.label,
    encode(pass, d) {
      if (!d.lora || d.tokens === 0) return;
      pass.setPipeline(gather);
      pass.setBindGroup(0, gatherBg);
      pass.dispatchWorkgroups(d.tokens);
      pass.setPipeline(expand);
      pass.setBindGroup(0, expandBg);
      pass.dispatchWorkgroups(Math.ceil(s.hidden / lanes), d.tokens);
    },
  };
}
