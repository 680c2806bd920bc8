// The multi-LoRA kernels through real LoraSlots (adapters parsed by the real loader, written by LoraSlots.load with
// their scale folded into B, in the base's dtype), driven as the model runner drives them:
//   shrink (src/kernels/lora.ts):  s[t, 0] = slot(t),  s[t, 1 + g] = rank_g (u32 bits),  s[t, 4] = mult[t] (NONE
//     rows: header word 0 only),  s[t, 8 + g·R + j] = mult[t] · Σ_k x[t, k] · A[slot, g, j, k]  (j < rank_g; nothing
//     else written)
//   matmul with MatmulLora (src/kernels/matmul.ts):  acc[m, n] = Σ_k x·W (+ bias) + Σ_{j < rank_g(n)} B[slot, n, j] ·
//     s[m, 8 + g(n)·R + j], then the store / add / swiglu epilogue
//   embedding (embedLoraOp):  x[t, n] += Σ_{j < rank} B[slot, n, j] · mult[t] · A[slot, j, ids[t]]
// for every projection group (qkv with its member boundaries, o, gate_up with SwiGLU, down, lm_head over the sampled
// rows), checked against the reference `linear(x, n, W, lora)` (unmerged) and against linear with the merged weight
// W + mult·B·A. The slots hold 16 adapters of ranks 1..64 (maxLoraRank 64) with different targets (some lack
// modules: rank 0 there), file dtypes F32/F16/BF16 and slot dtypes F32/F16/BF16; each row gets a random slot or NONE
// (base only), slots repeat, and each row a scale multiplier (0 and negative included). Hidden sizes 7, 13, 64, 130.
// Both layouts of the matmul and of the shrink run every group: the dispatchers' choice for M and, forced, the other
// one (K-split across the lanes, or whole rows per lane with x and s shared by subgroup shuffles, where the device
// has 8-lane subgroups).
// B is never zero, and every LoRA row must differ from the base by far more than the tolerance, so a kernel that
// dropped the adapter cannot pass. Every value a kernel must not write (s beyond each rank, rows past M, y columns
// outside the block) must come back bit for bit. Fixed seeds.
//
// Tolerances (ε = 2^-24). The reference gets exactly the values the slots hold (A rounded to the slot dtype,
// fl32(scale·B) rounded to it) with the row's multiplier m as its scale, so only rounding differs. Per output
// (m, n) of member g, rank r: S = Σ_k |x_k·W_nk| + |bias_n|; Sa_j = Σ_k |x_k·A_jk|; T = |m|·Σ_j |B_nj|·Sa_j.
// - shrink: K products and K − 1 additions in f32 in any order, then ·m: |s − m·u_j| <= (K + 3)·ε·|m|·Sa_j
//   (u_j the exact Σ x·A); the reference rounds m·u_j once: + ε·|m·u_j|.
// - GPU acc vs exact: the K base products and r expand products are summed in one f32 chain:
//   (K + r + 2)·ε·(S + T), plus the shrink errors carried through B: (K + 3)·ε·T.
// - unmerged reference vs exact: it rounds x·Aᵀ to f32 (ε·T) and the output once (ε·|acc|).
// - merged reference vs exact: W + m·B·A rounded to f32 per element (ε·Σ_k |x_k|·|W'_nk| <= ε·(S + T)), output ε·|acc|.
// - 'add' epilogue: one more f32 addition on the GPU and one rounding in the reference: ε·(|y0| + S + T) + ε·|y|.
// - swiglu: as in matmul.test.ts, silu' <= 1.1 and WGSL's exp/division error: 1.1·δg·|u| + |silu(g)|·δu +
//   (10 + 2|g|)·ε·|silu(g)·u|, with δg, δu the acc tolerances above.
// - embedding: the gather is exact, m·A rounds once (ε·T), the expand sums r products sequentially ((r + 1)·ε·T),
//   the add into x rounds once (ε·(|x0| + T)), and the reference rounds once (ε·|y|), T = |m|·Σ_j |B_nj·A_j,id|.
import { describe, expect, it } from 'vitest';
import { pad8 } from '../../src/gpu/tensors.js';
import type { DType } from '../../src/io/dtype.js';
import { DTYPE_BYTES } from '../../src/io/dtype.js';
import { embedLoraOp, FUSED_MAX_TOKENS, loraNormShrinkOp, loraShrinkOp, S_HEADER, shrinkRowsCapable } from '../../src/kernels/lora.js';
import { matmulOp, type MatmulLora, type MatmulSpec } from '../../src/kernels/matmul.js';
import type { LoraAdapter } from '../../src/lora/adapter.js';
import { baseLoraModules } from '../../src/lora/adapter.js';
import { LoraSlots, type SlotGroup } from '../../src/lora/gpu-slots.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { linear, type LinearWeights, type LoraDelta, rmsnorm, silu, siluMul } from '../../src/reference/ops.js';
import { EPS, expectClose, expectExact, padRows, randomF32, rng, type Rng, roundToDType, SENTINEL, useKernelHarness } from '../helpers/kernels.js';
import { type AdapterSpec, kernelConfig, type KernelConfigSpec, makeAdapter, mergeDelta, slotDelta } from '../helpers/lora.js';

const h = useKernelHarness();

const NONE: number = 0xffffffff;
const MAX_LORAS = 16;
const MAX_RANK = 64;
/** Ranks of the 16 adapters, slot by slot: 1..64, not multiples of the kernels' 4 rows or lane counts. */
const RANKS = [1, 3, 8, 16, 33, 64, 5, 2, 64, 12, 1, 40, 7, 24, 4, 9];
/** Per-request scale multipliers: 1 (as trained), 0 (base), negative, fractional. */
const MULTS = [1, 0, -1, 0.5, 2, -0.375, 1.25, 1];
const FILE_DTYPES: DType[] = ['F32', 'F16', 'BF16'];
const ALL_LINEAR = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

type Kind = 'qkv' | 'o' | 'gate_up' | 'down' | 'lm_head';
const GROUP_MODULES: Record<Exclude<Kind, 'lm_head'>, string[]> = {
  qkv: ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'],
  o: ['self_attn.o_proj'],
  gate_up: ['mlp.gate_proj', 'mlp.up_proj'],
  down: ['mlp.down_proj'],
};
const GROUP_INDEX: Record<Exclude<Kind, 'lm_head'>, number> = { qkv: 0, o: 1, gate_up: 2, down: 3 };

/**
 * The 16 adapters, one per slot. By i % 4: every target (7 projections, lm_head, embed_tokens); q/v + embed_tokens
 * only (k has rank 0 inside qkv); k/o/up/down + lm_head (q, v, gate absent; adapter 6 also lacks all of layer 1);
 * all seven projections with per-module ranks and alphas (rank_pattern / alpha_pattern), gate omitted in layer 1.
 * Adapters 3 and 11 use rsLoRA.
 */
function adapterSpecs(): AdapterSpec[] {
  return RANKS.map((r, i): AdapterSpec => {
    const base = { name: `a${i}`, r, alpha: [4, 8, 16][i % 3]!, dtype: FILE_DTYPES[i % 3]!, seed: i + 1, useRslora: i % 8 === 3 };
    switch (i % 4) {
      case 0:
        return { ...base, targets: [...ALL_LINEAR, 'lm_head', 'embed_tokens'] };
      case 1:
        return { ...base, targets: ['q_proj', 'v_proj', 'embed_tokens'] };
      case 2:
        return { ...base, targets: ['k_proj', 'o_proj', 'up_proj', 'down_proj', 'lm_head'], omit: i === 6 ? (p) => p.startsWith('model.layers.1.') : undefined };
      default:
        return {
          ...base,
          targets: [...ALL_LINEAR, 'lm_head'],
          rankPattern: { q_proj: 1, v_proj: Math.max(1, r >> 1), gate_proj: Math.min(64, r + 2), lm_head: 3 },
          alphaPattern: { down_proj: 3, v_proj: 20 },
          omit: (p) => p === 'model.layers.1.mlp.gate_proj',
        };
    }
  });
}

interface Scenario {
  config: KernelConfigSpec;
  dtype: DType; // slot dtype = base weight dtype
  layer: number;
  bias: boolean; // qkv bias (qwen2-style attention_bias)
}

const CONFIGS: { spec: KernelConfigSpec; layer: number; bias: boolean; dtypes: DType[] }[] = [
  { spec: { hidden: 13, inter: 21, heads: 3, kvHeads: 1, headDim: 6, vocab: 37, layers: 2 }, layer: 1, bias: false, dtypes: ['F32', 'F16', 'BF16'] },
  { spec: { hidden: 64, inter: 100, heads: 4, kvHeads: 2, headDim: 16, vocab: 50, layers: 2 }, layer: 0, bias: true, dtypes: ['F32', 'F16', 'BF16'] },
  { spec: { hidden: 130, inter: 36, heads: 5, kvHeads: 5, headDim: 26, vocab: 77, layers: 2 }, layer: 1, bias: false, dtypes: ['F32', 'F16', 'BF16'] },
  { spec: { hidden: 7, inter: 9, heads: 1, kvHeads: 1, headDim: 10, vocab: 11, layers: 2 }, layer: 1, bias: true, dtypes: ['F16'] },
];

const adapterCache = new Map<KernelConfigSpec, Promise<LoraAdapter[]>>();
function adaptersFor(spec: KernelConfigSpec): Promise<LoraAdapter[]> {
  let p = adapterCache.get(spec);
  if (!p) {
    const config = kernelConfig(spec);
    adapterCache.set(spec, (p = Promise.all(adapterSpecs().map((s) => makeAdapter(config, s)))));
  }
  return p;
}

/** Slots of `dtype` for `config` holding `adapters[i]` in slot i; destroyed after `body`. */
async function withSlots(
  config: ModelConfig,
  dtype: DType,
  adapters: readonly LoraAdapter[],
  body: (slots: LoraSlots) => Promise<void>,
  maxLoras = MAX_LORAS,
  maxRank = MAX_RANK,
): Promise<void> {
  const slots = new LoraSlots(h.gpu(), config, dtype, { maxLoras, maxRank, embeddings: true });
  try {
    adapters.forEach((a, i) => slots.load(i, a));
    await body(slots);
  } finally {
    slots.destroy();
  }
}

/**
 * Slot and multiplier of each of `M` rows. With M >= MAX_LORAS + 2 every slot appears, and so do NONE rows; some
 * slots appear on several rows (with different multipliers). Smaller M: random, with at least one adapter row.
 */
function assignRows(r: Rng, M: number, slotsInUse: number): { slotOf: number[]; mult: number[] } {
  const pick = () => (r.int(slotsInUse + 1) === slotsInUse ? NONE : r.int(slotsInUse));
  const slotOf: number[] = [];
  if (M >= slotsInUse + 2) {
    for (let s = 0; s < slotsInUse; s++) slotOf.push(s);
    slotOf.push(NONE, NONE);
  }
  while (slotOf.length < M) slotOf.push(pick());
  r.shuffle(slotOf);
  if (slotOf.every((s) => s === NONE)) slotOf[0] = r.int(slotsInUse);
  const mult = slotOf.map((_, i) => MULTS[(i + r.int(MULTS.length)) % MULTS.length]!);
  return { slotOf, mult };
}

function memberPaths(kind: Kind, layer: number): string[] {
  return kind === 'lm_head' ? ['lm_head'] : GROUP_MODULES[kind].map((m) => `model.layers.${layer}.${m}`);
}

/** The u32 bits of f32 values: s rows mix u32 header words and f32 values. */
const bitsOf = (x: Float32Array): Uint32Array => new Uint32Array(x.buffer, x.byteOffset, x.length);
const SENTINEL_BITS = bitsOf(new Float32Array([SENTINEL]))[0]!;

/**
 * One row x [K] through one member (weights lw, slot delta d or null): the unmerged reference linear(x, W, d), the
 * merged one linear(x, W + m·B·A), the base, their tolerances against the GPU (see the file comment), S + T, and
 * how far the LoRA term stands above the unmerged tolerance (max over outputs of |un − base| / max tolerance).
 */
function referenceRow(xm: Float32Array, lw: LinearWeights, d: LoraDelta | null) {
  const K = lw.inFeatures;
  const n = lw.outFeatures;
  const un = linear(xm, 1, lw, d);
  const me = linear(xm, 1, { ...lw, weight: mergeDelta(lw.weight, n, K, d) });
  const base = linear(xm, 1, lw);
  const tolUn = new Float64Array(n);
  const tolMe = new Float64Array(n);
  const mag = new Float64Array(n);
  const sa = new Float64Array(d?.rank ?? 0); // Sa_j
  for (let j = 0; j < sa.length; j++) for (let k = 0; k < K; k++) sa[j] += Math.abs(xm[k]! * d!.a[j * K + k]!);
  let maxDelta = 0;
  let maxTol = 0;
  for (let o = 0; o < n; o++) {
    let S = lw.bias ? Math.abs(lw.bias[o]!) : 0;
    for (let k = 0; k < K; k++) S += Math.abs(xm[k]! * lw.weight[o * K + k]!);
    let T = 0;
    for (let j = 0; j < sa.length; j++) T += Math.abs(d!.b[o * d!.rank + j]!) * sa[j]!;
    T *= Math.abs(d?.scale ?? 0);
    const gpu = (K + sa.length + 2) * EPS * (S + T) + (K + 3) * EPS * T;
    tolUn[o] = gpu + EPS * T + EPS * Math.abs(un[o]!);
    tolMe[o] = gpu + EPS * (S + T) + EPS * Math.abs(me[o]!);
    mag[o] = S + T;
    maxDelta = Math.max(maxDelta, Math.abs(un[o]! - base[o]!));
    maxTol = Math.max(maxTol, tolUn[o]!);
  }
  return { un, me, base, tolUn, tolMe, mag, loraOverTol: maxDelta / maxTol };
}

/**
 * What the shrink must leave in s: header words (u32) and values (f32, with tolerances), every other element the
 * SENTINEL it held. Rows [0, M) are written; rows past M (up to sRows) stay untouched.
 */
function expectedS(
  M: number,
  sRows: number,
  ldS: number,
  slotOf: readonly number[],
  mult: readonly number[],
  deltas: (row: number, g: number) => LoraDelta | null,
  x: Float32Array,
  K: number,
  G: number,
  R = MAX_RANK,
): { want: Float32Array; tol: Float64Array; wantHeader: Uint32Array } {
  const want = new Float32Array(sRows * ldS).fill(SENTINEL);
  const tol = new Float64Array(sRows * ldS);
  const wantHeader = new Uint32Array(sRows * S_HEADER).fill(SENTINEL_BITS);
  for (let m = 0; m < M; m++) {
    const slot = slotOf[m]!;
    wantHeader[m * S_HEADER] = slot;
    if (slot === NONE) continue;
    wantHeader[m * S_HEADER + 4] = bitsOf(new Float32Array([mult[m]!]))[0]!;
    for (let g = 0; g < G; g++) {
      const d = deltas(m, g);
      const rank = d?.rank ?? 0;
      wantHeader[m * S_HEADER + 1 + g] = rank;
      for (let j = 0; j < rank; j++) {
        let u = 0;
        let sa = 0;
        for (let k = 0; k < K; k++) {
          u += x[m * K + k]! * d!.a[j * K + k]!;
          sa += Math.abs(x[m * K + k]! * d!.a[j * K + k]!);
        }
        const i = m * ldS + S_HEADER + g * R + j;
        want[i] = mult[m]! * u;
        tol[i] = (K + 3) * EPS * Math.abs(mult[m]!) * sa + EPS * Math.abs(mult[m]! * u);
      }
    }
  }
  return { want, tol, wantHeader };
}

/** Compares s as read back with expectedS: header words bit for bit, the rest within tolerance / bit for bit. */
function checkS(got: Float32Array, e: ReturnType<typeof expectedS>, sRows: number, ldS: number, what: string, R = MAX_RANK): void {
  if (ldS > S_HEADER + 3 * R) {
    // Rows with expanded terms past the values (checked through the matmul's output): compare the front of each row.
    const w = S_HEADER + 3 * R;
    const front = <T extends Float32Array | Float64Array>(a: T, make: (n: number) => T) => {
      const out = make(sRows * w);
      for (let m = 0; m < sRows; m++) out.set(a.subarray(m * ldS, m * ldS + w), m * w);
      return out;
    };
    const f32 = (n: number) => new Float32Array(n);
    return checkS(front(got, f32), { want: front(e.want, f32), tol: front(e.tol, (n) => new Float64Array(n)), wantHeader: e.wantHeader }, sRows, w, what);
  }
  const gotBits = bitsOf(got);
  const header = new Uint32Array(sRows * S_HEADER);
  for (let m = 0; m < sRows; m++) header.set(gotBits.subarray(m * ldS, m * ldS + S_HEADER), m * S_HEADER);
  expectExact(header, e.wantHeader, `${what}: s headers`, (i) => `s[${Math.floor(i / S_HEADER)}, ${i % S_HEADER}]`);
  const values = got.slice();
  const want = e.want.slice();
  for (let m = 0; m < sRows; m++) {
    values.fill(0, m * ldS, m * ldS + S_HEADER);
    want.fill(0, m * ldS, m * ldS + S_HEADER);
  }
  expectClose(values, want, (i) => e.tol[i]!, `${what}: s values`, (i) => `s[${Math.floor(i / ldS)}, ${i % ldS}]`);
}

interface GroupCase {
  kind: Kind;
  M: number; // rows the kernels compute
  seed: number;
  /** Split W into parts of this many rows (boundaries inside members). */
  partRows?: number;
  /** MatmulLora.sPairsCached (1: ranks past 2 · lanes take the per-column path). */
  sPairsCached?: number;
  /** Force the matmul's layout (MatmulSpec.rowsMinM); default: the dispatcher's choice for M. */
  layout?: 'rows' | 'split';
  /** The row-per-lane shrink expands into s (ShrinkSpec.terms) and the matmul adds those terms (MatmulLora.tOff). */
  terms?: boolean;
}

async function checkGroup(sc: Scenario, c: GroupCase): Promise<void> {
  const { kind, M } = c;
  const config = kernelConfig(sc.config);
  const adapters = await adaptersFor(sc.config);
  const dtype = sc.dtype;
  const r = rng(c.seed);
  const paths = memberPaths(kind, sc.layer);
  const shapes = new Map(baseLoraModules(config).map((b) => [b.path, [b.outFeatures, b.inFeatures] as const]));
  const K = shapes.get(paths[0]!)![1];
  const Kp = pad8(K);
  const rowsOf = paths.map((p) => shapes.get(p)![0]);
  const G = paths.length;
  const gated = kind === 'gate_up';
  const fromRows = kind === 'lm_head';
  const epilogue: MatmulSpec['epilogue'] = gated ? 'swiglu' : kind === 'o' || kind === 'down' ? 'add' : 'store';
  const N = gated ? rowsOf[0]! : rowsOf.reduce((a, b) => a + b, 0); // y columns
  const tokens = fromRows ? M + 5 : M; // lm_head: more token rows than sampled rows, so using the wrong count shows
  // With terms each s row also holds the group's B rows of terms (gate and up: both), after 3 words of slack.
  const tOff = S_HEADER + 3 * MAX_RANK + 3;
  const ldS = c.terms ? tOff + (gated ? 2 * N : N) : S_HEADER + 3 * MAX_RANK;
  const sRows = tokens + 1;
  const ldy = N + 3;
  const yRows = tokens + 1;

  // Base weights, members stacked as the runner's fused matrices (gate and up apart).
  const ws = rowsOf.map((n) => roundToDType(randomF32(r, n * K, 0.5), dtype));
  const bias = sc.bias && kind === 'qkv' ? rowsOf.map((n) => roundToDType(randomF32(r, n, 0.5), dtype)) : null;
  const x = randomF32(r, M * K);
  const { slotOf, mult } = assignRows(r, M, MAX_LORAS);
  const y0 = epilogue === 'add' ? randomF32(r, yRows * ldy, 2) : new Float32Array(yRows * ldy).fill(SENTINEL);

  // Reference, row by row (each row has its own adapter and multiplier).
  const deltaCache = new Map<string, LoraDelta | null>();
  const delta = (m: number, g: number): LoraDelta | null => {
    const slot = slotOf[m]!;
    if (slot === NONE) return null;
    const key = `${slot}/${g}`;
    if (!deltaCache.has(key)) deltaCache.set(key, slotDelta(adapters[slot]!, paths[g]!, dtype, 1));
    const d = deltaCache.get(key)!;
    return d && { ...d, scale: mult[m]! };
  };
  const outFor = (g: number) => ({ n0: gated ? 0 : rowsOf.slice(0, g).reduce((a, b) => a + b, 0), n: rowsOf[g]! });
  // Per member g: [M, n] reference values (unmerged, merged), their tolerances and S + T.
  const refs = rowsOf.map((n) => ({ un: new Float32Array(M * n), me: new Float32Array(M * n), tolUn: new Float64Array(M * n), tolMe: new Float64Array(M * n), mag: new Float64Array(M * n) }));
  let weakRows = 0; // adapter rows whose LoRA term is not far above the tolerance (the test could not fail there)
  for (let m = 0; m < M; m++) {
    const xm = x.subarray(m * K, (m + 1) * K);
    for (let g = 0; g < G; g++) {
      const n = rowsOf[g]!;
      const d = delta(m, g);
      const row = referenceRow(xm, { weight: ws[g]!.values, bias: bias?.[g]!.values ?? null, outFeatures: n, inFeatures: K }, d);
      for (const f of ['un', 'me', 'tolUn', 'tolMe', 'mag'] as const) refs[g]![f].set(row[f], m * n);
      if (d && d.rank > 0 && d.scale !== 0 && row.loraOverTol < 100) weakRows++;
    }
  }
  expect(weakRows, 'test setup: rows whose LoRA term is below 100x the tolerance').toBe(0);

  /** The expected y and its tolerance, from one of the two references. */
  const expectedY = (acc: Float32Array[], tolAcc: Float64Array[]): { want: Float32Array; tol: Float64Array } => {
    const want = y0.slice();
    const tol = new Float64Array(want.length);
    for (let m = 0; m < M; m++) {
      if (gated) {
        const gv = acc[0]!.subarray(m * N, (m + 1) * N);
        const uv = acc[1]!.subarray(m * N, (m + 1) * N);
        const yv = siluMul(gv, uv);
        for (let o = 0; o < N; o++) {
          const i = m * ldy + o;
          const sg = silu(gv[o]!);
          want[i] = yv[o]!;
          tol[i] = 1.1 * tolAcc[0]![m * N + o]! * Math.abs(uv[o]!) + Math.abs(sg) * tolAcc[1]![m * N + o]! + (10 + 2 * Math.abs(gv[o]!)) * EPS * Math.abs(sg * uv[o]!);
        }
        continue;
      }
      for (let g = 0; g < G; g++) {
        const { n0, n } = outFor(g);
        for (let o = 0; o < n; o++) {
          const i = m * ldy + n0 + o;
          const a = acc[g]![m * n + o]!;
          const t = tolAcc[g]![m * n + o]!;
          if (epilogue === 'add') {
            want[i] = y0[i]! + a;
            tol[i] = t + EPS * (Math.abs(y0[i]!) + refs[g]!.mag[m * n + o]!) + EPS * Math.abs(want[i]!);
          } else {
            want[i] = a;
            tol[i] = t;
          }
        }
      }
    }
    return { want, tol };
  };

  // GPU: real slots, the shrink, then the matmul with the fused expand, in one pass.
  await withSlots(config, dtype, adapters, async (slots) => {
    const group: SlotGroup = kind === 'lm_head' ? slots.lmHead! : slots.layers[sc.layer]![GROUP_INDEX[kind]]!;
    expect(group.memberRows, 'slot group member rows').toEqual(rowsOf);
    const partBytes = c.partRows ? c.partRows * Kp * DTYPE_BYTES[dtype] : undefined;
    const cat = (parts: Float32Array[]) => {
      const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      return out;
    };
    const wBytes = gated ? ws[0]!.bytes : roundToDType(cat(ws.map((w) => w.values)), dtype).bytes;
    const W = h.matrix('W', wBytes, dtype, N, K, partBytes);
    if (c.partRows) expect(W.parts.length, 'test setup: W parts').toBe(Math.ceil(N / c.partRows));
    const sBuf = h.storage('s', new Float32Array(sRows * ldS).fill(SENTINEL));
    // Rows past M get real slots too: a kernel reading the token count instead of the row count would use them.
    const slotOfAll = new Uint32Array(tokens).fill(0);
    slotOfAll.set(slotOf);
    const multAll = new Float32Array(tokens).fill(1);
    multAll.set(mult);
    const slotOfBuf = h.storage('slotOf', slotOfAll);
    const multBuf = h.storage('mult', multAll);
    const xBuf = h.storage('x', padRows(x, M, K, Kp));
    const yBuf = h.storage('y', y0);
    const total = rowsOf.reduce((a, b) => a + b, 0);
    const lora: MatmulLora = {
      dtype,
      B: group.B[0]!,
      B2: group.B[1],
      bRows: gated ? rowsOf[0]! : total,
      n1: kind === 'qkv' ? rowsOf[0]! : total,
      n2: kind === 'qkv' ? rowsOf[0]! + rowsOf[1]! : total,
      R: slots.maxRank,
      Rp: slots.rankPadded,
      doraWords: group.doraWords,
      s: sBuf,
      ldS,
      sPairsCached: c.sPairsCached,
      tOff: c.terms ? tOff : undefined,
    };
    const rows = fromRows ? ('rows' as const) : ('tokens' as const);
    const dims = { tokens, seqs: fromRows ? M : 1, lora: true };
    const terms = c.terms ? { tOff, B: lora.B, B2: lora.B2, bRows: lora.bRows, n1: lora.n1, n2: lora.n2 } : undefined;
    const shrinkSpec = { label: `${kind}.shrink`, slots, group, x: xBuf, s: sBuf, ldS, slotOf: slotOfBuf, mult: multBuf, rows, layout: c.terms ? ('rows' as const) : c.layout, terms };
    if (c.terms && !shrinkRowsCapable(h.gpu())) {
      // Only the row-per-lane shrink expands; elsewhere asking for it is refused, not ignored.
      await expect(loraShrinkOp(h.gpu(), shrinkSpec)).rejects.toThrow(/terms\) only in the row-per-lane layout/);
      return;
    }
    const shrink = await loraShrinkOp(h.gpu(), shrinkSpec);
    const mm = await matmulOp(h.gpu(), {
      label: kind,
      W,
      W2: gated ? h.matrix('W2', ws[1]!.bytes, dtype, N, K, partBytes) : undefined,
      bias: bias ? h.vector('bias', roundToDType(cat(bias.map((b) => b.values)), dtype).bytes, dtype) : undefined,
      x: xBuf,
      y: yBuf,
      ldy,
      epilogue,
      rows,
      dims: h.dims(dims),
      dummy: h.dummy(),
      lora,
      rowsMinM: c.layout === 'rows' ? 1 : c.layout === 'split' ? Infinity : undefined,
    });
    await h.run([shrink, mm], dims);

    const what = `${kind} ${dtype} K ${K} M ${M}`;
    const gotS = await h.readF32(sBuf);
    checkS(gotS, expectedS(M, sRows, ldS, slotOf, mult, delta, x, K, G), sRows, ldS, what);
    const gotY = await h.readF32(yBuf, yRows * ldy);
    const where = (i: number) => {
      const m = Math.floor(i / ldy);
      const slot = slotOf[m];
      return `y[${m}, ${i % ldy}] (slot ${slot === NONE ? 'NONE' : slot}, mult ${mult[m]})`;
    };
    const un = expectedY(refs.map((f) => f.un), refs.map((f) => f.tolUn));
    expectClose(gotY, un.want, (i) => un.tol[i]!, `${what} vs unmerged reference`, where);
    const me = expectedY(refs.map((f) => f.me), refs.map((f) => f.tolMe));
    expectClose(gotY, me.want, (i) => me.tol[i]!, `${what} vs merged W + m·B·A`, where);
  });
}

async function checkEmbed(sc: Scenario, T: number, seed: number): Promise<void> {
  const config = kernelConfig(sc.config);
  const adapters = await adaptersFor(sc.config);
  const { dtype } = sc;
  const r = rng(seed);
  const H = config.hiddenSize;
  const V = config.vocabSize;
  const ldx = pad8(H) + 1;
  const ldS = S_HEADER + 3 * MAX_RANK;
  const ids = Array.from({ length: T }, (_, t) => (t === 0 ? V - 1 : t === 1 ? 0 : r.int(V)));
  const { slotOf, mult } = assignRows(r, T, MAX_LORAS);
  const x0 = randomF32(r, (T + 1) * ldx, 2);
  const want = x0.slice();
  const tol = new Float64Array(want.length);
  let weakRows = 0;
  for (let t = 0; t < T; t++) {
    const slot = slotOf[t]!;
    const d = slot === NONE ? null : slotDelta(adapters[slot]!, 'model.embed_tokens', dtype, mult[t]!);
    if (!d) continue;
    let maxDelta = 0;
    for (let n = 0; n < H; n++) {
      let acc = 0;
      let T_ = 0;
      for (let j = 0; j < d.rank; j++) {
        acc += d.b[n * d.rank + j]! * d.a[j * V + ids[t]!]!;
        T_ += Math.abs(d.b[n * d.rank + j]! * d.a[j * V + ids[t]!]!);
      }
      T_ *= Math.abs(d.scale);
      const i = t * ldx + n;
      want[i] = x0[i]! + d.scale * acc;
      tol[i] = (d.rank + 2) * EPS * T_ + EPS * (Math.abs(x0[i]!) + T_) + EPS * Math.abs(want[i]!);
      maxDelta = Math.max(maxDelta, Math.abs(d.scale * acc) / (tol[i]! || 1));
    }
    if (d.scale !== 0 && maxDelta < 100) weakRows++;
  }
  expect(weakRows, 'test setup: rows whose LoRA term is below 100x the tolerance').toBe(0);

  await withSlots(config, dtype, adapters, async (slots) => {
    const xBuf = h.storage('x', x0);
    const op = await embedLoraOp(h.gpu(), {
      label: 'embed.lora',
      slots,
      group: slots.embed!,
      ids: h.storage('ids', new Uint32Array(ids)),
      slotOf: h.storage('slotOf', new Uint32Array(slotOf)),
      mult: h.storage('mult', new Float32Array(mult)),
      s: h.storage('s', new Float32Array(T * ldS).fill(SENTINEL)),
      ldS,
      x: xBuf,
      ldx,
      hidden: H,
    });
    await h.run(op, { tokens: T, seqs: 1, lora: true });
    const got = await h.readF32(xBuf, want.length);
    expectClose(got, want, (i) => tol[i]!, `embedding LoRA ${dtype} H ${H} vocab ${V} T ${T}`, (i) => {
      const t = Math.floor(i / ldx);
      return `x[${t}, ${i % ldx}] (id ${ids[t]}, slot ${slotOf[t] === NONE ? 'NONE' : slotOf[t]}, mult ${mult[t]})`;
    });
  });
}

/**
 * RMSNorm + shrink (loraNormShrinkOp; one fused dispatch where the device prefers the row-per-lane layout): xn
 * against the reference rmsnorm within rmsnorm.test.ts's tolerance ((H + 1)/2 + 12)·ε·m_i, and s against the
 * shrink of the reference xn: the shrink's tolerance plus what xn's error moves it by, |mult|·Σ_k |A_jk|·tol_k.
 * With terms (the shrink expands into s) also each term against Σ_j B_nj·s_j of the reference s: what the s
 * tolerances move it by, Σ_j |B_nj|·tol_j, plus the f32 sum of the rank products, (rank + 1)·ε·Σ_j |B_nj·s_j|.
 */
async function checkNormShrink(sc: Scenario, kind: 'qkv' | 'gate_up', M: number, seed: number, fusedMaxTokens?: number, terms = false, R = MAX_RANK): Promise<void> {
  const config = kernelConfig(sc.config);
  // Slots of max rank R hold the adapters whose modules all fit it.
  const adapters = (await adaptersFor(sc.config)).filter((a) => [...a.modules.values()].every((m) => m.rank <= R));
  const r = rng(seed);
  const H = config.hiddenSize;
  const Kp = pad8(H);
  const G = kind === 'qkv' ? 3 : 2;
  const paths = memberPaths(kind, sc.layer);
  const shapes = new Map(baseLoraModules(config).map((b) => [b.path, b.outFeatures] as const));
  const rowsOf = paths.map((p) => shapes.get(p)!);
  const gated = kind === 'gate_up';
  const total = rowsOf.reduce((a, b) => a + b, 0);
  const bRows = gated ? rowsOf[0]! : total;
  // Member g's terms start at word tOff + first[g] of a row (gate/up: up's after gate's), after 3 words of slack.
  const first = gated ? [0, bRows] : [0, rowsOf[0]!, rowsOf[0]! + rowsOf[1]!];
  const tOff = S_HEADER + 3 * R + 3;
  const ldS = terms ? tOff + total : S_HEADER + 3 * R;
  const sRows = M + 1;
  const eps = 1e-5;
  const x0 = new Float32Array((M + 1) * Kp);
  for (let t = 0; t < M; t++) x0.set(randomF32(r, H, [1, 1e-3, 37][t % 3]), t * Kp);
  const w = roundToDType(randomF32(r, H, 2), sc.dtype);
  const xnRef = new Float32Array(M * H);
  const xnTol = new Float64Array(M * H);
  for (let t = 0; t < M; t++) {
    const row = x0.subarray(t * Kp, t * Kp + H);
    xnRef.set(rmsnorm(row, w.values, eps), t * H);
    let ss = 0;
    for (let i = 0; i < H; i++) ss += row[i]! * row[i]!;
    const inv = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) xnTol[t * H + i] = ((H + 1) / 2 + 12) * EPS * Math.abs(row[i]! * w.values[i]!) * inv;
  }
  const { slotOf, mult } = assignRows(r, M, adapters.length);
  const delta = (m: number, g: number): LoraDelta | null => {
    const slot = slotOf[m]!;
    if (slot === NONE) return null;
    const d = slotDelta(adapters[slot]!, paths[g]!, sc.dtype, 1);
    return d && { ...d, scale: mult[m]! };
  };
  const e = expectedS(M, sRows, ldS, slotOf, mult, delta, xnRef, H, G, R);
  for (let m = 0; m < M; m++) {
    for (let g = 0; g < G; g++) {
      const d = delta(m, g);
      for (let j = 0; j < (d?.rank ?? 0); j++) {
        let moved = 0;
        for (let k = 0; k < H; k++) moved += Math.abs(d!.a[j * H + k]!) * xnTol[m * H + k]!;
        e.tol[m * ldS + S_HEADER + g * R + j] += Math.abs(mult[m]!) * moved;
      }
    }
  }
  await withSlots(config, sc.dtype, adapters, async (slots) => {
    const group = slots.layers[sc.layer]![GROUP_INDEX[kind]]!;
    const xnBuf = h.storage('xn', new Float32Array((M + 1) * Kp));
    const sBuf = h.storage('s', new Float32Array(sRows * ldS).fill(SENTINEL));
    const spec = {
      label: `${kind}.shrink`,
      slots,
      group,
      s: sBuf,
      ldS,
      slotOf: h.storage('slotOf', new Uint32Array(slotOf)),
      mult: h.storage('mult', new Float32Array(mult)),
      norm: { label: 'norm', w: h.vector('w', w.bytes, sc.dtype), x: h.storage('x', x0), y: xnBuf, eps },
      fusedMaxTokens,
      terms: terms ? { tOff, B: group.B[0]!, B2: group.B[1], bRows, n1: first[1] ?? bRows, n2: gated ? bRows : first[2]! } : undefined,
    };
    const rowsDevice = h.gpu().rowsLayout && shrinkRowsCapable(h.gpu());
    if (terms && !rowsDevice) {
      // Only the row-per-lane shrink expands; elsewhere asking for it is refused, not ignored.
      await expect(loraNormShrinkOp(h.gpu(), spec)).rejects.toThrow(/terms\) only in the row-per-lane layout/);
      return;
    }
    const ops = await loraNormShrinkOp(h.gpu(), spec);
    await h.run(ops, { tokens: M, seqs: M, lora: true });
    const split = M <= (fusedMaxTokens ?? FUSED_MAX_TOKENS);
    const form = !rowsDevice || (!split && !terms) ? 'two dispatches' : split ? 'fused, a workgroup per token and member' : 'fused, a workgroup per token';
    const what = `${kind} norm + shrink${terms ? ' + expand' : ''} ${sc.dtype} H ${H} M ${M} max rank ${R} (${form})`;
    const xn = await h.readF32(xnBuf);
    const want = new Float32Array((M + 1) * Kp);
    const tol = new Float64Array(want.length);
    for (let t = 0; t < M; t++) {
      want.set(xnRef.subarray(t * H, (t + 1) * H), t * Kp);
      tol.set(xnTol.subarray(t * H, (t + 1) * H), t * Kp);
    }
    expectClose(xn, want, (i) => tol[i]!, `${what}: xn`, (i) => `xn[${Math.floor(i / Kp)}, ${i % Kp}]`);
    const gotS = await h.readF32(sBuf);
    checkS(gotS, e, sRows, ldS, what, R);
    if (!terms) return;
    // Terms: rows without an adapter keep the sentinel (never written), members the adapter leaves alone are 0.
    const got = new Float32Array(sRows * total);
    const wantT = new Float32Array(sRows * total).fill(SENTINEL);
    const tolT = new Float64Array(sRows * total);
    for (let m = 0; m < sRows; m++) {
      got.set(gotS.subarray(m * ldS + tOff, (m + 1) * ldS), m * total);
      if (m >= M || slotOf[m] === NONE) continue;
      for (let g = 0; g < G; g++) {
        const d = delta(m, g);
        for (let n = 0; n < rowsOf[g]!; n++) {
          let v = 0;
          let moved = 0;
          let abs = 0;
          for (let j = 0; j < (d?.rank ?? 0); j++) {
            const bj = d!.b[n * d!.rank + j]!;
            const sj = e.want[m * ldS + S_HEADER + g * R + j]!;
            v += bj * sj;
            abs += Math.abs(bj * sj);
            moved += Math.abs(bj) * e.tol[m * ldS + S_HEADER + g * R + j]!;
          }
          const i = m * total + first[g]! + n;
          wantT[i] = v;
          tolT[i] = moved + ((d?.rank ?? 0) + 1) * EPS * abs;
        }
      }
    }
    expectClose(got, wantT, (i) => tolT[i]!, `${what}: terms`, (i) => `s[${Math.floor(i / total)}, tOff + ${i % total}]`);
  }, MAX_LORAS, R);
}

/** Row counts: prefill-sized (all 16 slots + NONE rows in one batch) and decode-sized (1, 2, 3 rows). */
const MS = [40, 1, 21, 3, 2, 18];
const KINDS: Kind[] = ['qkv', 'o', 'gate_up', 'down', 'lm_head'];

let scenarioIndex = 0;
for (const cfg of CONFIGS) {
  for (const dtype of cfg.dtypes) {
    const sc: Scenario = { config: cfg.spec, dtype, layer: cfg.layer, bias: cfg.bias };
    const si = scenarioIndex++;
    const s = cfg.spec;
    describe(`LoRA groups: hidden ${s.hidden}, inter ${s.inter}, heads ${s.heads}/${s.kvHeads}×${s.headDim}, vocab ${s.vocab}, slots ${dtype}, layer ${sc.layer}`, () => {
      KINDS.forEach((kind, ki) => {
        const M = MS[(si + ki) % MS.length]!;
        // Split W into parts whose boundaries fall inside members (qkv) or across the vocabulary (lm_head).
        const partRows = kind === 'qkv' && si % 2 === 0 ? 5 : kind === 'lm_head' && si % 2 === 1 ? 7 : undefined;
        const seed = 1000 * (si + 1) + ki;
        const sPairsCached = si % 2 === 1 ? 1 : undefined;
        const label = `${kind}${kind === 'qkv' && sc.bias ? ' + bias' : ''}: ${M} ${kind === 'lm_head' ? 'sampled rows' : 'tokens'}${partRows ? `, W in parts of ${partRows} rows` : ''}${sPairsCached ? ', 1 s pair in registers' : ''}`;
        it(label, () => checkGroup(sc, { kind, M, seed, partRows, sPairsCached }));
        // The same data through the layout the dispatcher would not pick for this M (row-per-lane below 5 rows,
        // K-split from 5), where the device has 8-lane subgroups for the row-per-lane one.
        const layout = M < 5 ? 'rows' : 'split';
        it(`${label}, ${layout} layout`, () => checkGroup(sc, { kind, M, seed, partRows, sPairsCached, layout }));
        // The shrink expanding into s (what the runner does on devices that prefer the row-per-lane layout), through
        // both matmul layouts; lm_head keeps its expand in the matmul.
        if (kind !== 'lm_head') {
          for (const mmLayout of ['rows', 'split'] as const) {
            it(`${label}, the shrink expands, ${mmLayout} matmul`, () =>
              checkGroup(sc, { kind, M, seed, partRows, sPairsCached, layout: mmLayout, terms: true }));
          }
        }
      });
      const T = MS[(si + 5) % MS.length]!;
      it(`embedding LoRA: ${T} tokens`, () => checkEmbed(sc, T, 7000 + si));
      (['qkv', 'gate_up'] as const).forEach((kind, ki) => {
        const M = MS[(si + ki + 2) % MS.length]!;
        it(`rmsnorm + ${kind} shrink: ${M} tokens`, () => checkNormShrink(sc, kind, M, 8000 + 10 * si + ki));
        // The same data through the form the dispatcher would not pick for this M (where the device fuses at all).
        const flipped = M <= FUSED_MAX_TOKENS ? 0 : Infinity;
        it(`rmsnorm + ${kind} shrink: ${M} tokens, ${flipped ? 'fused where the device fuses' : 'two dispatches'}`, () =>
          checkNormShrink(sc, kind, M, 8000 + 10 * si + ki, flipped));
        // Expanding into s as well (what the runner does where the device prefers the row-per-lane layout), in both
        // fused forms.
        it(`rmsnorm + ${kind} shrink + expand: ${M} tokens, a workgroup per token`, () => checkNormShrink(sc, kind, M, 8100 + 10 * si + ki, 0, true));
        it(`rmsnorm + ${kind} shrink + expand: ${M} tokens, a workgroup per token and member`, () =>
          checkNormShrink(sc, kind, M, 8100 + 10 * si + ki, Infinity, true));
        // Slots of max rank 16 and 8 (the kernel's constant-chunk expand: one rank block, with and without a second
        // 8-rank chunk), holding the adapters that fit.
        for (const R of [16, 8]) {
          it(`rmsnorm + ${kind} shrink + expand: ${M} tokens, max rank ${R}`, () => checkNormShrink(sc, kind, M, 8200 + 10 * si + ki, 0, true, R));
        }
      });
    });
  }
}

describe('slots over time', () => {
  const spec: KernelConfigSpec = { hidden: 33, inter: 20, heads: 2, kvHeads: 1, headDim: 12, vocab: 29, layers: 2 };

  it('a slot overwritten with another adapter serves only the new one (ranks updated, stale rows never read)', async () => {
    const config = kernelConfig(spec);
    // X: rank 16 on everything. Y: rank 3 on q_proj and embed_tokens only (k, v, o, gate/up, down, lm_head: rank 0).
    const X = await makeAdapter(config, { name: 'X', r: 16, alpha: 16, targets: [...ALL_LINEAR, 'lm_head', 'embed_tokens'], seed: 41 });
    const Y = await makeAdapter(config, { name: 'Y', r: 3, alpha: 6, targets: ['q_proj', 'embed_tokens'], dtype: 'BF16', seed: 42 });
    const slots = new LoraSlots(h.gpu(), config, 'F32', { maxLoras: 4, maxRank: MAX_RANK, embeddings: true });
    try {
      slots.load(2, X);
      const M = 4;
      const K = config.hiddenSize;
      const Kp = pad8(K);
      const ldS = S_HEADER + 3 * MAX_RANK;
      const group = slots.layers[1]![0]!; // qkv
      const rowsOf = group.memberRows;
      const N = rowsOf.reduce((a, b) => a + b, 0);
      const r = rng(43);
      const w = roundToDType(randomF32(r, N * K, 0.5), 'F32');
      const x = randomF32(r, M * K);
      const slotOf = [2, NONE, 2, 2];
      const mult = [1, 1, -0.5, 2];
      const W = h.matrix('W', w.bytes, 'F32', N, K);
      const xBuf = h.storage('x', padRows(x, M, K, Kp));
      const run = async (): Promise<{ y: Float32Array; s: Float32Array }> => {
        const sBuf = h.storage('s', new Float32Array(M * ldS).fill(SENTINEL));
        const yBuf = h.storage('y', new Float32Array(M * N).fill(SENTINEL));
        const slotOfBuf = h.storage('slotOf', new Uint32Array(slotOf));
        const multBuf = h.storage('mult', new Float32Array(mult));
        const shrink = await loraShrinkOp(h.gpu(), { label: 'qkv.shrink', slots, group, x: xBuf, s: sBuf, ldS, slotOf: slotOfBuf, mult: multBuf });
        const lora: MatmulLora = { dtype: 'F32', B: group.B[0]!, bRows: N, n1: rowsOf[0]!, n2: rowsOf[0]! + rowsOf[1]!, R: MAX_RANK, Rp: slots.rankPadded, doraWords: group.doraWords, s: sBuf, ldS };
        const dims = { tokens: M, seqs: 1, lora: true };
        const mm = await matmulOp(h.gpu(), { label: 'qkv', W, x: xBuf, y: yBuf, ldy: N, epilogue: 'store', dims: h.dims(dims), dummy: h.dummy(), lora });
        await h.run([shrink, mm], dims);
        return { y: await h.readF32(yBuf), s: await h.readF32(sBuf) };
      };
      /** Expected y: each member's unmerged reference with `adapter`'s slot delta (none for NONE rows or modules it lacks). */
      const expectY = (adapter: LoraAdapter | null): { want: Float32Array; tol: Float64Array } => {
        const want = new Float32Array(M * N);
        const tol = new Float64Array(M * N);
        let n0 = 0;
        rowsOf.forEach((n, g) => {
          const path = `model.layers.1.${GROUP_MODULES.qkv[g]}`;
          const weight = w.values.subarray(n0 * K, (n0 + n) * K);
          for (let m = 0; m < M; m++) {
            const d = adapter && slotOf[m] !== NONE ? slotDelta(adapter, path, 'F32', mult[m]!) : null;
            const row = referenceRow(x.subarray(m * K, (m + 1) * K), { weight, bias: null, outFeatures: n, inFeatures: K }, d);
            want.set(row.un, m * N + n0);
            tol.set(row.tolUn, m * N + n0);
          }
          n0 += n;
        });
        return { want, tol };
      };

      const a = await run();
      const ex = expectY(X);
      expectClose(a.y, ex.want, (i) => ex.tol[i]!, 'qkv with X in slot 2');
      expectExact(bitsOf(a.s).subarray(0, 4), [2, 16, 16, 16], 's header of a row with X');

      slots.load(2, Y);
      const b = await run();
      const ey = expectY(Y);
      expectClose(b.y, ey.want, (i) => ey.tol[i]!, 'qkv with Y overwriting X in slot 2', (i) => `y[${Math.floor(i / N)}, ${i % N}]`);
      // Y lacks k and v, so those columns are the base's (X's stale k/v rows in the slot are never read).
      expectExact(bitsOf(b.s).subarray(0, 4), [2, 3, 0, 0], 's header of a row with Y (k, v: rank 0)');
      expectExact(bitsOf(b.s).subarray(ldS, ldS + 4), [NONE, SENTINEL_BITS, SENTINEL_BITS, SENTINEL_BITS], 's header of a NONE row');
      // Y's rank 3 < X's 16: s values past rank 3 are never written.
      expectExact(b.s.subarray(S_HEADER + 3, S_HEADER + MAX_RANK), new Float32Array(MAX_RANK - 3).fill(SENTINEL), 's past rank 3 of member q');

      slots.clear(2);
      const c = await run();
      const eb = expectY(null);
      expectClose(c.y, eb.want, (i) => eb.tol[i]!, 'qkv after slots.clear(2): base only');
      expectExact(bitsOf(c.s).subarray(0, 4), [2, 0, 0, 0], 's header of a cleared slot');
    } finally {
      slots.destroy();
    }
  });

  it('a step without adapters (StepDims.lora false) runs no shrink and the base matmul only', async () => {
    const config = kernelConfig(spec);
    const adapters = await Promise.all([0, 1].map((i) => makeAdapter(config, { name: `b${i}`, r: 8, alpha: 16, targets: ALL_LINEAR, seed: 50 + i })));
    await withSlots(config, 'F16', adapters, async (slots) => {
      const M = 3;
      const K = config.intermediateSize;
      const group = slots.layers[0]![3]!; // down
      const N = group.memberRows[0]!;
      const ldS = S_HEADER + 3 * MAX_RANK;
      const r = rng(51);
      const w = roundToDType(randomF32(r, N * K, 0.5), 'F16');
      const x = randomF32(r, M * K);
      const y0 = randomF32(r, M * N, 2);
      const xBuf = h.storage('x', padRows(x, M, K, pad8(K)));
      const sBuf = h.storage('s', new Float32Array(M * ldS).fill(SENTINEL));
      const yBuf = h.storage('y', y0);
      const slotOfBuf = h.storage('slotOf', new Uint32Array([0, 1, 0]));
      const multBuf = h.storage('mult', new Float32Array([1, 1, 1]));
      const dims = { tokens: M, seqs: 1, lora: false };
      const shrink = await loraShrinkOp(h.gpu(), { label: 'down.shrink', slots, group, x: xBuf, s: sBuf, ldS, slotOf: slotOfBuf, mult: multBuf });
      const lora: MatmulLora = { dtype: 'F16', B: group.B[0]!, bRows: N, n1: N, n2: N, R: MAX_RANK, Rp: slots.rankPadded, doraWords: group.doraWords, s: sBuf, ldS };
      const mm = await matmulOp(h.gpu(), { label: 'down', W: h.matrix('W', w.bytes, 'F16', N, K), x: xBuf, y: yBuf, ldy: N, epilogue: 'add', dims: h.dims(dims), dummy: h.dummy(), lora });
      await h.run([shrink, mm], dims);
      const want = new Float32Array(M * N);
      const tol = new Float64Array(M * N);
      for (let m = 0; m < M; m++) {
        const row = referenceRow(x.subarray(m * K, (m + 1) * K), { weight: w.values, bias: null, outFeatures: N, inFeatures: K }, null);
        for (let o = 0; o < N; o++) {
          const i = m * N + o;
          want[i] = y0[i]! + row.un[o]!;
          tol[i] = row.tolUn[o]! + EPS * (Math.abs(y0[i]!) + row.mag[o]!) + EPS * Math.abs(want[i]!);
        }
      }
      expectClose(await h.readF32(yBuf), want, (i) => tol[i]!, 'down with adapters in the slots but lora off: base only');
      expectExact(await h.readF32(sBuf), new Float32Array(M * ldS).fill(SENTINEL), 's untouched');
    });
  });
});
