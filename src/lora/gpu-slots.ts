// Adapter weights on the GPU: `maxLoras` slots stacked per layer and projection group (vLLM's / Punica's layout),
// in the base model's dtype, with each module's scale folded into its B. Writing an adapter into a slot is a few
// dozen queue.writeBuffer calls of images prepared once per adapter; nothing is allocated on the GPU after start.
//
// Per layer, per group (members stacked like the base's fused matrices):
//   qkv:     A [S][3][R][pad8(hidden)]   B [S][q+k+v rows][Rp]
//   o:       A [S][1][R][pad8(nh·hd)]    B [S][hidden][Rp]
//   gate_up: A [S][2][R][pad8(hidden)]   B_gate, B_up [S][inter][Rp]
//   down:    A [S][1][R][pad8(inter)]    B [S][hidden][Rp]
// and, with `embeddings`, lm_head (A [S][1][R][pad8(hidden)], B [S][vocab][Rp]) and embed_tokens (A [S][R][pad8(vocab)],
// B [S][hidden][Rp]). Where the device runs the row-per-lane shrink (Gpu.rowsLayout) the linear groups' A blocks
// are chunk-major instead (`aChunks`): per (slot, member), [Kp / CE][R][CE] with CE = 16 bytes of elements, so the
// R rows' k-chunk c sit side by side and that shrink's lanes (one row each) read one contiguous run per chunk.
// ranks: u32 [S][L·7 + 2]: each module's rank in the slot (0 = untouched by that adapter),
// in LINEAR_MODULES order per layer, then lm_head, embed_tokens, | DORA_FLAG when the module uses DoRA.
// S = maxLoras, R = maxLoraRank, Rp = pad8(R).
// DoRA: every B buffer of a Linear group ends with a table f32 [S][rows][4] at word doraWords: per output row n of
// the slot's module, (m_n, ‖W_n‖², B'_n·P_n, B'_n·(A·Aᵀ)·B'_nᵀ) with B' = scale·B and P = A·Wᵀ, so the matmul gets
// DoRA's factor m_n / ‖W_n + c·B'_n·A‖ for a request's scale multiplier c as m_n / sqrt(t1 + 2c·t2 + c²·t3).

import { PolyloraError } from '../errors.js';
import type { DType } from '../io/dtype.js';
import { DTYPE_BYTES, fromFloat32 } from '../io/dtype.js';
import type { Gpu } from '../gpu/device.js';
import { pad8 } from '../gpu/tensors.js';
import type { ModelConfig } from '../model/config-types.js';
import type { ModelWeights } from '../model/gpu-weights.js';
import type { GpuMatrix } from '../gpu/tensors.js';
import { doraRowStats } from '../kernels/dora.js';
import { toFloat32 } from '../io/dtype.js';
import { LINEAR_MODULES, type LinearModule, linearShape } from '../model/weights-spec.js';
import type { LoraAdapter, LoraModule } from './adapter.js';
import { loraFloat32 } from './adapter.js';

export type GroupName = 'qkv' | 'o' | 'gate_up' | 'down' | 'lm_head' | 'embed';

/** A stacked projection group in one layer (or lm_head / embed_tokens). */
export interface SlotGroup {
  name: GroupName;
  members: number; // G
  inPadded: number; // Kp: A row length (elements)
  /** Rank-table entry of the first member, within a slot's row. */
  rankBase: number;
  A: GPUBuffer;
  /** One B per output buffer: [B] or, for gate_up, [B_gate, B_up]. */
  B: GPUBuffer[];
  /** Output rows of each member, in order (q, k, v rows for qkv). */
  memberRows: number[];
  /** u32 word offset of the DoRA table in each B buffer (after the S·rows·Rp B elements). */
  doraWords: number;
}

/** Set in a ranks entry when the module applies DoRA (ranks stay below it). */
export const DORA_FLAG = 1 << 16;
/** f32 words per output row in the DoRA table. */
const DORA_ROW = 4;

const GROUPS: { name: GroupName; members: LinearModule[] }[] = [
  { name: 'qkv', members: ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'] },
  { name: 'o', members: ['self_attn.o_proj'] },
  { name: 'gate_up', members: ['mlp.gate_proj', 'mlp.up_proj'] },
  { name: 'down', members: ['mlp.down_proj'] },
];

export interface LoraSlotOptions {
  maxLoras: number;
  maxRank: number;
  /** Allocate lm_head and embed_tokens slots (large for big vocabularies). */
  embeddings: boolean;
  /** The base model's weights: DoRA adapters read their row norms from them (prepareDora). */
  weights?: ModelWeights;
  /** Chunk-major A blocks (see the top of this file); default: where the device prefers the row-per-lane layout. */
  aChunks?: boolean;
}

interface SlotImage {
  a: Uint8Array;
  b: Uint8Array;
  rank: number;
  /** DoRA table rows f32 [rows][4], from prepareDora(). */
  dora?: Float32Array;
}

interface Prepared {
  /** Per module path: A image ([rank][Kp], or chunk-major [Kp / CE][R][CE]) and B image [rows][Rp] (scale folded), in the slot dtype. */
  images: Map<string, SlotImage>;
}

export class LoraSlots {
  readonly maxLoras: number;
  readonly maxRank: number;
  readonly rankPadded: number; // Rp
  readonly dtype: DType;
  readonly embeddings: boolean;
  /** Linear groups' A blocks are chunk-major (the embed group's A stays [R][Vp]). */
  readonly aChunks: boolean;
  /** [layer][group index in GROUPS order]. */
  readonly layers: SlotGroup[][];
  readonly lmHead: SlotGroup | null;
  readonly embed: SlotGroup | null;
  readonly ranks: GPUBuffer;
  readonly rankStride: number;
  private readonly gpu: Gpu;
  private readonly rankRow: Uint32Array;
  private readonly prepared = new WeakMap<LoraAdapter, Prepared>();
  private readonly buffers: GPUBuffer[] = [];

  private readonly weights: ModelWeights | undefined;

  constructor(gpu: Gpu, config: ModelConfig, dtype: DType, o: LoraSlotOptions) {
    this.gpu = gpu;
    this.weights = o.weights;
    this.dtype = dtype;
    this.maxLoras = o.maxLoras;
    this.maxRank = o.maxRank;
    this.rankPadded = pad8(o.maxRank);
    this.embeddings = o.embeddings;
    this.aChunks = o.aChunks ?? gpu.rowsLayout;
    this.rankStride = config.numLayers * LINEAR_MODULES.length + 2;
    this.rankRow = new Uint32Array(this.rankStride);
    const S = o.maxLoras;
    const R = o.maxRank;
    const eb = DTYPE_BYTES[dtype];
    const alloc = (label: string, elements: number, tableRows = 0) => {
      const b = gpu.buffer(label, elements * eb + tableRows * DORA_ROW * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
      this.buffers.push(b);
      return b;
    };
    this.layers = [];
    for (let l = 0; l < config.numLayers; l++) {
      this.layers.push(
        GROUPS.map((g) => {
          const [, inF] = linearShape(config, g.members[0]!);
          const Kp = pad8(inF);
          const rows = g.members.map((m) => linearShape(config, m)[0]);
          const label = `lora.L${l}.${g.name}`;
          const bRows = g.name === 'gate_up' ? rows[0]! : rows.reduce((a, b) => a + b, 0);
          const B = (g.name === 'gate_up' ? rows : [bRows]).map((n, i) => alloc(`${label}.B${i}`, S * n * this.rankPadded, S * n));
          return {
            name: g.name,
            members: g.members.length,
            inPadded: Kp,
            rankBase: l * LINEAR_MODULES.length + LINEAR_MODULES.indexOf(g.members[0]!),
            A: alloc(`${label}.A`, S * g.members.length * R * Kp),
            B,
            memberRows: rows,
            doraWords: (S * bRows * this.rankPadded * eb) / 4,
          };
        }),
      );
    }
    const H = config.hiddenSize;
    const V = config.vocabSize;
    const base = config.numLayers * LINEAR_MODULES.length;
    this.lmHead = o.embeddings
      ? { name: 'lm_head', members: 1, inPadded: pad8(H), rankBase: base, A: alloc('lora.lm_head.A', S * R * pad8(H)), B: [alloc('lora.lm_head.B', S * V * this.rankPadded, S * V)], memberRows: [V], doraWords: (S * V * this.rankPadded * eb) / 4 }
      : null;
    this.embed = o.embeddings
      ? { name: 'embed', members: 1, inPadded: pad8(V), rankBase: base + 1, A: alloc('lora.embed.A', S * R * pad8(V)), B: [alloc('lora.embed.B', S * H * this.rankPadded)], memberRows: [H], doraWords: 0 }
      : null;
    this.ranks = gpu.buffer('lora.ranks', S * this.rankStride * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    this.buffers.push(this.ranks);
  }

  /** Bytes of GPU memory held by all slots. */
  get bytes(): number {
    return this.buffers.reduce((a, b) => a + b.size, 0);
  }

  /** Checks that `adapter` fits these slots (rank, targets); throws a named error otherwise. */
  check(adapter: LoraAdapter): void {
    if (adapter.rank > this.maxRank) {
      throw new PolyloraError('INVALID_ARGUMENT', `adapter "${adapter.name}" has rank ${adapter.rank}`, {
        file: adapter.source,
        expected: `rank <= maxLoraRank = ${this.maxRank}`,
        found: `rank ${adapter.rank}`,
        hint: 'raise maxLoraRank (--max-lora-rank)',
      });
    }
    if (!this.embeddings && (adapter.targets.targets.includes('lm_head') || adapter.targets.targets.includes('embed_tokens'))) {
      throw new PolyloraError('INVALID_ARGUMENT', `adapter "${adapter.name}" adapts lm_head / embed_tokens`, {
        file: adapter.source,
        hint: 'enable LoRA on embeddings (loraEmbeddings: true, --lora-embeddings); it reserves vocab-sized slots',
      });
    }
  }

  /** Writes `adapter` into `slot` (queued: visible to the next submit). Modules it lacks get rank 0. */
  load(slot: number, adapter: LoraAdapter): void {
    this.check(adapter);
    const q = this.gpu.queue;
    const eb = DTYPE_BYTES[this.dtype];
    const Rp = this.rankPadded;
    const R = this.maxRank;
    const prep = this.prepare(adapter);
    if (!this.ready(adapter)) throw new Error(`LoRA slots: DoRA adapter "${adapter.name}" loaded before prepareDora()`);
    this.rankRow.fill(0);
    const write = (group: SlotGroup, member: number, path: string) => {
      const img = prep.images.get(path);
      if (!img) return;
      this.rankRow[group.rankBase + member] = img.rank | (img.dora ? DORA_FLAG : 0);
      q.writeBuffer(group.A, ((slot * group.members + member) * R * group.inPadded) * eb, img.a);
      const { index, rows: bRows, rowStart } = memberLayout(group, member);
      const B = group.B[index]!;
      q.writeBuffer(B, (slot * bRows + rowStart) * Rp * eb, img.b);
      if (img.dora) q.writeBuffer(B, group.doraWords * 4 + (slot * bRows + rowStart) * DORA_ROW * 4, img.dora);
    };
    this.layers.forEach((groups, l) => {
      groups.forEach((g, gi) => GROUPS[gi]!.members.forEach((m, mi) => write(g, mi, `model.layers.${l}.${m}`)));
    });
    if (this.lmHead) write(this.lmHead, 0, 'lm_head');
    if (this.embed) write(this.embed, 0, 'model.embed_tokens');
    q.writeBuffer(this.ranks, slot * this.rankStride * 4, this.rankRow);
  }

  /** Marks `slot` empty (all ranks 0). */
  clear(slot: number): void {
    this.rankRow.fill(0);
    this.gpu.queue.writeBuffer(this.ranks, slot * this.rankStride * 4, this.rankRow);
  }

  /** True when `adapter` can be loaded now (a DoRA adapter needs prepareDora() first). */
  ready(adapter: LoraAdapter): boolean {
    if (!adapter.dora) return true;
    const prep = this.prepare(adapter);
    for (const [path, m] of adapter.modules) if (m.magnitude && !prep.images.get(path)!.dora) return false;
    return true;
  }

  /**
   * Computes a DoRA adapter's tables from the base weights (once per adapter; on the GPU, then a few CPU passes of
   * rows · rank²). The slot's A and B values are used as the slot holds them (rounded to the slot dtype).
   */
  async prepareDora(adapter: LoraAdapter): Promise<void> {
    const prep = this.prepare(adapter);
    const todo = [...adapter.modules].filter(([path, m]) => m.magnitude && !prep.images.get(path)!.dora);
    if (todo.length === 0) return;
    const decoded = todo.map(([path, m]) => {
      const img = prep.images.get(path)!;
      const a = toFloat32(img.a, this.dtype);
      const aRows = this.aChunks ? chunkMajor(a, m.rank, pad8(m.inFeatures), this.maxRank, this.dtype, false) : a;
      return { a: aRows, b: toFloat32(img.b, this.dtype) }; // A [r][Kp], B [out][Rp] (scaled)
    });
    const stats = await doraRowStats(
      this.gpu,
      todo.map(([, m], i) => ({ ...this.baseRows(m), rows: m.outFeatures, A: decoded[i]!.a, rank: m.rank })),
    );
    todo.forEach(([path, m], i) => {
      prep.images.get(path)!.dora = doraTable(m, decoded[i]!.a, decoded[i]!.b, this.rankPadded, stats[i]!);
    });
  }

  /** The base matrix a Linear module's rows live in (q/k/v are stacked in one, as in the slots' B) and their first row. */
  private baseRows(m: LoraModule): { W: GpuMatrix; rowStart: number } {
    const w = this.weights;
    if (!w) throw new Error('LoRA slots: DoRA needs the base weights (LoraSlotOptions.weights)');
    if (m.target === 'lm_head') return { W: w.lmHead, rowStart: 0 };
    const gi = GROUPS.findIndex((g) => g.members.includes(m.target as LinearModule));
    if (gi < 0) throw new Error(`DoRA on ${m.path} is not supported`);
    const member = GROUPS[gi]!.members.indexOf(m.target as LinearModule);
    const layer = w.layers[m.layer!]!;
    const W = [layer.qkv, layer.o, member === 0 ? layer.gate : layer.up, layer.down][gi]!;
    return { W, rowStart: memberLayout(this.layers[m.layer!]![gi]!, member).rowStart };
  }

  /** Slot images of `adapter` in this dtype: A padded to Kp per row, B restrided to Rp with the scale folded in. */
  private prepare(adapter: LoraAdapter): Prepared {
    let p = this.prepared.get(adapter);
    if (p) return p;
    p = { images: new Map() };
    for (const [path, m] of adapter.modules) p.images.set(path, this.image(m));
    this.prepared.set(adapter, p);
    return p;
  }

  private image(m: LoraModule): SlotImage {
    const r = m.rank;
    const Rp = this.rankPadded;
    const Kp = pad8(m.inFeatures);
    const a = loraFloat32(m.a); // [r, in]
    const b = loraFloat32(m.b); // [out, r]
    const aRows = new Float32Array(r * Kp);
    for (let j = 0; j < r; j++) aRows.set(a.subarray(j * m.inFeatures, (j + 1) * m.inFeatures), j * Kp);
    // The embedding's A is gathered by column, never shrunk: it keeps its rows.
    const aImg = this.aChunks && m.target !== 'embed_tokens' ? chunkMajor(aRows, r, Kp, this.maxRank, this.dtype, true) : aRows;
    const bImg = new Float32Array(m.outFeatures * Rp);
    for (let n = 0; n < m.outFeatures; n++) {
      for (let j = 0; j < r; j++) bImg[n * Rp + j] = m.scale * b[n * r + j]!;
    }
    return { a: fromFloat32(aImg, this.dtype), b: fromFloat32(bImg, this.dtype), rank: r };
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }
}

/**
 * Between an A image's rows [r][Kp] and its chunk-major form [Kp / CE][R][CE] (CE = elements per 16 bytes in
 * `dtype`; rows r..R-1 zero): `toChunks` true builds the chunk-major form from rows, false takes the rows back.
 */
function chunkMajor(a: Float32Array, r: number, Kp: number, R: number, dtype: DType, toChunks: boolean): Float32Array {
  const CE = 16 / DTYPE_BYTES[dtype];
  const KV = Kp / CE;
  const out = new Float32Array(toChunks ? R * Kp : r * Kp);
  for (let j = 0; j < r; j++) {
    for (let c = 0; c < KV; c++) {
      const rowAt = j * Kp + c * CE;
      const chunkAt = (c * R + j) * CE;
      if (toChunks) out.set(a.subarray(rowAt, rowAt + CE), chunkAt);
      else out.set(a.subarray(chunkAt, chunkAt + CE), rowAt);
    }
  }
  return out;
}

/**
 * Where member `member` of `group` sits in its B buffer: gate and up have one buffer each; q/k/v (stacked like the
 * base's qkv matrix) share one, member after member. Returns the buffer index, its rows per slot, the member's first row.
 */
function memberLayout(group: SlotGroup, member: number): { index: number; rows: number; rowStart: number } {
  if (group.name === 'gate_up') return { index: member, rows: group.memberRows[member]!, rowStart: 0 };
  const before = group.memberRows.slice(0, member).reduce((a, b) => a + b, 0);
  return { index: 0, rows: group.memberRows.reduce((a, b) => a + b, 0), rowStart: before };
}

/**
 * A module's DoRA table rows (m_n, ‖W_n‖², B'_n·P_n, B'_n·G·B'_nᵀ) from its row statistics ([‖W_n‖², P_n] per row,
 * P = A·Wᵀ), A [r][Kp] and B' [out][Rp] as the slot holds them, and G = A·Aᵀ.
 */
function doraTable(m: LoraModule, a: Float32Array, b: Float32Array, Rp: number, stats: Float32Array): Float32Array {
  const r = m.rank;
  const Kp = a.length / r;
  const gram = new Float64Array(r * r);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j <= i; j++) {
      let d = 0;
      for (let k = 0; k < Kp; k++) d += a[i * Kp + k]! * a[j * Kp + k]!;
      gram[i * r + j] = gram[j * r + i] = d;
    }
  }
  const table = new Float32Array(m.outFeatures * DORA_ROW);
  for (let n = 0; n < m.outFeatures; n++) {
    const st = n * (1 + r);
    let bp = 0;
    let bgb = 0;
    for (let i = 0; i < r; i++) {
      const bi = b[n * Rp + i]!;
      bp += bi * stats[st + 1 + i]!;
      let gb = 0;
      for (let j = 0; j < r; j++) gb += gram[i * r + j]! * b[n * Rp + j]!;
      bgb += bi * gb;
    }
    table[n * DORA_ROW] = m.magnitude![n]!;
    table[n * DORA_ROW + 1] = stats[st]!;
    table[n * DORA_ROW + 2] = bp;
    table[n * DORA_ROW + 3] = bgb;
  }
  return table;
}
