// The GPU forward pass of a llama-family model over one step batch: every kernel of the step is recorded in one
// compute pass and one submit; only the sampled token ids and their logprobs are read back.
//
// Per layer (x: residual stream f32 [T, H]):
//   xn = rmsnorm(x)·w_in;  qkv = xn·W_qkvᵀ (+b);  rope(q, k) and k, v -> paged cache;  a = attention(q, cache)
//   x += a·W_oᵀ;  xn = rmsnorm(x)·w_post;  m = silu(xn·W_gateᵀ) · (xn·W_upᵀ);  x += m·W_downᵀ
// Then xs[r] = rmsnorm(x[sampleRows[r]])·w_final; logits = xs·W_lmᵀ; token[r] = sample(logits[r]).
// With LoRA slots, every projection group first runs the shrink (s = x·Aᵀ per row's slot) and its matmul adds
// s·Bᵀ before the epilogue; steps without adapters skip all of it (StepDims.lora).

import type { Gpu } from '../gpu/device.js';
import { PolyloraError } from '../errors.js';
import type { Paced } from '../gpu/pacer.js';
import { WaitPacer } from '../gpu/pacer.js';
import { getPlatform } from '../platform/platform.js';
import { pad8 } from '../gpu/tensors.js';
import type { Op, StepDims } from '../kernels/op.js';
import { sequence } from '../kernels/op.js';
import { embedOp } from '../kernels/embed.js';
import { rmsnormOp, type RmsNormSpec } from '../kernels/rmsnorm.js';
import { matmulOp } from '../kernels/matmul.js';
import { ropeOp } from '../kernels/rope.js';
import { attentionOp } from '../kernels/attention.js';
import { MAX_LOGIT_BIAS, MAX_TOPN, sampleOp } from '../kernels/sample.js';
import { embedLoraOp, loraNormShrinkOp, loraShrinkOp, S_HEADER, shrinkRowsCapable } from '../kernels/lora.js';
import type { MatmulLora } from '../kernels/matmul.js';
import type { LoraSlots, SlotGroup } from '../lora/gpu-slots.js';
import type { KvPool } from '../kv/kv-pool.js';
import type { ModelConfig } from './config-types.js';
import type { ModelWeights } from './gpu-weights.js';
import { ropeTable } from './rope.js';
import type { StepLimits } from './step-batch.js';
import { StepBatch } from './step-batch.js';

/** The u64 GPU timestamp (ns) at byte `at` of `bytes`, in ms. */
function stepEndMs(bytes: ArrayBuffer, at: number): number {
  const w = new Uint32Array(bytes, at, 2);
  return (w[1]! * 2 ** 32 + w[0]!) / 1e6;
}

/** A submitted step: where its results will be read back. */
export interface InFlight extends Paced {
  staging: GPUBuffer;
  busy: boolean;
  rows: number;
  top: number; // bytes of top-N ids (and of their logprobs) read back, 0 when no row asked
  result: StepResult;
}

export interface StepResult {
  tokens: Uint32Array; // [rows] sampled ids (valid until the next step)
  logprobs: Float32Array; // [rows] log-probability of each sampled id under the raw logits
  /** [rows, MAX_TOPN] most likely ids and logprobs per row; filled only when some row asked (batch.maxTopN > 0). */
  topIds: Uint32Array;
  topLogprobs: Float32Array;
}

export class ModelRunner {
  readonly config: ModelConfig;
  readonly batch: StepBatch;
  readonly kv: KvPool;
  private readonly gpu: Gpu;
  private readonly forward: Op;
  private readonly ops: Op[];
  private readonly buffers: GPUBuffer[];
  /** f32 [maxRows, pad8(vocab)]: the logits of the last step (read by tests through readLogits). */
  readonly logits: GPUBuffer;
  private readonly outTokens: GPUBuffer;
  private readonly outLogprobs: GPUBuffer;
  private readonly topIds: GPUBuffer;
  private readonly topLogprobs: GPUBuffer;
  /** Two read-back slots: a step can be recorded while the previous one runs. */
  private readonly inFlight: InFlight[];
  private readonly pacer = new WaitPacer(getPlatform().waitPolls);
  /**
   * Where waits are paced and the device has timestamps: each step's pass writes its end time (query i for
   * in-flight record i), resolved and copied behind that record's results, so the pacer learns when a step ended
   * even when its wait found it done (src/gpu/pacer.ts).
   */
  private readonly stepEnd: { queries: GPUQuerySet; resolved: GPUBuffer; passes: GPUComputePassDescriptor[] } | null;
  private nextFlight = 0;
  private lastEnd = NaN;
  private readonly dims: StepDims = { tokens: 0, seqs: 0, lora: false };

  private constructor(
    gpu: Gpu,
    config: ModelConfig,
    kv: KvPool,
    batch: StepBatch,
    ops: Op[],
    buffers: GPUBuffer[],
    io: { logits: GPUBuffer; outTokens: GPUBuffer; outLogprobs: GPUBuffer; topIds: GPUBuffer; topLogprobs: GPUBuffer; staging: GPUBuffer[] },
  ) {
    this.gpu = gpu;
    this.config = config;
    this.kv = kv;
    this.batch = batch;
    this.ops = ops;
    this.forward = sequence('forward', ops);
    this.buffers = buffers;
    this.logits = io.logits;
    this.outTokens = io.outTokens;
    this.outLogprobs = io.outLogprobs;
    this.topIds = io.topIds;
    this.topLogprobs = io.topLogprobs;
    const maxRows = batch.limits.maxRows;
    this.stepEnd = null;
    if (this.pacer.enabled && gpu.features.timestampQuery) {
      const queries = gpu.device.createQuerySet({ type: 'timestamp', count: 2, label: 'step.end' });
      // resolveQuerySet writes at multiples of 256 bytes.
      const resolved = gpu.device.createBuffer({ label: 'step.end', size: 512, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      buffers.push(resolved);
      const passes = [0, 1].map((i) => ({ timestampWrites: { querySet: queries, endOfPassWriteIndex: i } }));
      this.stepEnd = { queries, resolved, passes };
    }
    this.inFlight = io.staging.map((staging) => ({
      staging,
      key: 0,
      work: 0,
      submittedAt: 0,
      sleptUntil: 0,
      busy: false,
      rows: 0,
      top: 0,
      result: {
        tokens: new Uint32Array(maxRows),
        logprobs: new Float32Array(maxRows),
        topIds: new Uint32Array(maxRows * MAX_TOPN),
        topLogprobs: new Float32Array(maxRows * MAX_TOPN),
      },
    }));
  }

  static async create(
    gpu: Gpu,
    c: ModelConfig,
    w: ModelWeights,
    kv: KvPool,
    limits: Omit<StepLimits, 'maxBlocksPerSeq' | 'maxPenaltyEntries'> & { maxModelLen: number; maxPenaltyEntries?: number },
    slots?: LoraSlots,
  ): Promise<ModelRunner> {
    const maxBlocksPerSeq = Math.ceil(limits.maxModelLen / kv.blockSize);
    // Penalized rows list their distinct tokens, biased rows their logit_bias tokens: min(context + biases, vocab) each.
    const maxPenaltyEntries = limits.maxPenaltyEntries ?? limits.maxRows * Math.min(limits.maxModelLen + MAX_LOGIT_BIAS, c.vocabSize);
    const batch = new StepBatch(gpu, { ...limits, maxBlocksPerSeq, maxPenaltyEntries });
    const T = limits.maxTokens;
    const R = limits.maxRows;
    const H = pad8(c.hiddenSize);
    const qkvWidth = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
    const ldqkv = pad8(qkvWidth);
    const ldattn = pad8(c.numHeads * c.headDim);
    const ldmlp = pad8(c.intermediateSize);
    const ldv = pad8(c.vocabSize);
    const act = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    const buffers: GPUBuffer[] = [];
    const buf = (label: string, bytes: number, usage = act) => {
      const b = gpu.buffer(label, bytes, usage);
      buffers.push(b);
      return b;
    };
    const x = buf('act.x', T * H * 4);
    const xn = buf('act.xn', T * H * 4);
    const qkv = buf('act.qkv', T * ldqkv * 4);
    const attn = buf('act.attn', T * ldattn * 4);
    const mlp = buf('act.mlp', T * ldmlp * 4);
    const xs = buf('act.xs', R * H * 4);
    const logits = buf('act.logits', R * ldv * 4);
    const outTokens = buf('out.tokens', R * 4);
    const outLogprobs = buf('out.logprobs', R * 4);
    const topIds = buf('out.topIds', R * MAX_TOPN * 4);
    const topLogprobs = buf('out.topLogprobs', R * MAX_TOPN * 4);
    // Read back: ids [R], logprobs [R], then (only when asked) top ids [R, MAX_TOPN] and their logprobs, then (with
    // timestamps) the step's end time, u64 ns.
    const staging = [0, 1].map((i) => buf(`out.staging${i}`, R * 8 * (1 + MAX_TOPN) + 8, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST));
    const dummy = buf('dummy', 16);
    const rot = gpu.upload('rope.table', ropeTable(c, limits.maxModelLen));
    buffers.push(rot);
    const dims = batch.dims;

    // Multi-LoRA: one scratch s [max(T, R), ldS] reused by every group (shrink, then its matmul): 8 header words, 3·rank
    // shrunk values and, where the shrink also expands (`terms`: row-per-lane devices, which stream B far better there
    // than in the matmul's epilogue), the widest group's B rows of terms, unless that s would not fit one binding.
    const termRows = (g: SlotGroup) => (g.name === 'gate_up' ? 2 * g.memberRows[0]! : g.memberRows.reduce((a, b) => a + b, 0));
    const tOff = slots ? S_HEADER + 3 * slots.maxRank : 0;
    const widest = slots ? Math.max(0, ...slots.layers.flat().map(termRows)) : 0;
    const terms =
      !!slots && gpu.rowsLayout && shrinkRowsCapable(gpu) && Math.max(T, R) * (tOff + widest) * 4 <= gpu.device.limits.maxStorageBufferBindingSize;
    const ldS = slots ? tOff + (terms ? widest : 0) : 0;
    const s = slots ? buf('lora.s', Math.max(T, R) * ldS * 4) : dummy;
    // A group's shrink (with `norm`: the rmsnorm that produces its input first, fused where the device prefers).
    type Norm = Omit<RmsNormSpec, 'rows' | 'ld'>;
    const lora = async (group: SlotGroup | undefined, input: GPUBuffer, label: string, rows?: 'rows', norm?: Norm): Promise<{ shrink: Op[]; mm?: MatmulLora }> => {
      if (!slots || !group) return { shrink: norm ? [await rmsnormOp(gpu, { ...norm, ld: H })] : [] };
      const total = group.memberRows.reduce((a, b) => a + b, 0);
      const qkvBounds = group.name === 'qkv';
      const bRows = group.name === 'gate_up' ? group.memberRows[0]! : total;
      const n1 = qkvBounds ? group.memberRows[0]! : total;
      const n2 = qkvBounds ? group.memberRows[0]! + group.memberRows[1]! : total;
      // lm_head (rows) keeps the expand in its matmul: its terms would be a vocabulary wide.
      const withTerms = terms && !rows;
      const spec = {
        label: `${label}.shrink`,
        slots,
        group,
        s,
        ldS,
        slotOf: rows ? batch.rowSlotBuf : batch.slotOfBuf,
        mult: rows ? batch.rowMultBuf : batch.multBuf,
        terms: withTerms ? { tOff, B: group.B[0]!, B2: group.B[1], bRows, n1, n2 } : undefined,
      };
      return {
        shrink: norm ? await loraNormShrinkOp(gpu, { ...spec, norm }) : [await loraShrinkOp(gpu, { ...spec, x: input, rows })],
        mm: {
          dtype: slots.dtype,
          B: group.B[0]!,
          B2: group.B[1],
          bRows,
          n1,
          n2,
          tOff: withTerms ? tOff : undefined,
          R: slots.maxRank,
          Rp: slots.rankPadded,
          doraWords: group.doraWords,
          s,
          ldS,
        },
      };
    };

    const ops: Op[] = [
      await embedOp(gpu, { label: 'embed', E: w.embed, ids: batch.idsBuf, feed: batch.feedBuf, prevOut: outTokens, x, ldx: H }),
    ];
    if (slots?.embed) {
      ops.push(
        await embedLoraOp(gpu, {
          label: 'embed.lora',
          slots,
          group: slots.embed,
          ids: batch.idsBuf,
          slotOf: batch.slotOfBuf,
          mult: batch.multBuf,
          s,
          ldS,
          x,
          ldx: H,
          hidden: c.hiddenSize,
        }),
      );
    }
    for (let l = 0; l < c.numLayers; l++) {
      const L = w.layers[l]!;
      const n = `layer${l}`;
      const G = slots?.layers[l];
      const qkvLora = await lora(G?.[0], xn, `${n}.qkv`, undefined, { label: `${n}.input_norm`, w: L.inputNorm, x, y: xn, eps: c.rmsNormEps });
      const oLora = await lora(G?.[1], attn, `${n}.o`);
      const guLora = await lora(G?.[2], xn, `${n}.gate_up`, undefined, { label: `${n}.post_norm`, w: L.postNorm, x, y: xn, eps: c.rmsNormEps });
      const downLora = await lora(G?.[3], mlp, `${n}.down`);
      ops.push(
        ...qkvLora.shrink,
        await matmulOp(gpu, { label: `${n}.qkv`, W: L.qkv, bias: L.qkvBias, x: xn, y: qkv, ldy: ldqkv, epilogue: 'store', dims, dummy, lora: qkvLora.mm }),
        await ropeOp(gpu, {
          label: `${n}.rope`,
          nh: c.numHeads,
          nkv: c.numKvHeads,
          hd: c.headDim,
          ldqkv,
          eps: c.rmsNormEps,
          positions: batch.positionsBuf,
          slots: batch.slotsBuf,
          rot,
          qkv,
          kcache: kv.k[l]!,
          vcache: kv.v[l]!,
          qNorm: L.qNorm,
          kNorm: L.kNorm,
          dummy,
        }),
        await attentionOp(gpu, {
          label: `${n}.attention`,
          nh: c.numHeads,
          nkv: c.numKvHeads,
          hd: c.headDim,
          ldq: ldqkv,
          ldo: ldattn,
          blockSize: kv.blockSize,
          maxBlocks: maxBlocksPerSeq,
          window: c.slidingWindow ?? 0,
          dims,
          positions: batch.positionsBuf,
          seqOf: batch.seqOfBuf,
          blockTables: batch.blockTablesBuf,
          q: qkv,
          kcache: kv.k[l]!,
          vcache: kv.v[l]!,
          o: attn,
        }),
        ...oLora.shrink,
        await matmulOp(gpu, { label: `${n}.o`, W: L.o, bias: L.oBias, x: attn, y: x, ldy: H, epilogue: 'add', dims, dummy, lora: oLora.mm }),
        ...guLora.shrink,
        await matmulOp(gpu, { label: `${n}.gate_up`, W: L.gate, W2: L.up, x: xn, y: mlp, ldy: ldmlp, epilogue: 'swiglu', dims, dummy, lora: guLora.mm }),
        ...downLora.shrink,
        await matmulOp(gpu, { label: `${n}.down`, W: L.down, x: mlp, y: x, ldy: H, epilogue: 'add', dims, dummy, lora: downLora.mm }),
      );
    }
    const headLora = slots?.lmHead ? await lora(slots.lmHead, xs, 'lm_head', 'rows') : { shrink: [] };
    ops.push(
      await rmsnormOp(gpu, { label: 'final_norm', w: w.finalNorm, x, y: xs, ld: H, eps: c.rmsNormEps, rows: batch.sampleRowsBuf }),
      ...headLora.shrink,
      await matmulOp(gpu, { label: 'lm_head', W: w.lmHead, x: xs, y: logits, ldy: ldv, epilogue: 'store', rows: 'rows', dims, dummy, lora: headLora.mm }),
      await sampleOp(gpu, {
        label: 'sample',
        vocab: c.vocabSize,
        ld: ldv,
        logits,
        sampling: batch.samplingBuf,
        penalties: batch.penaltiesBuf,
        tokens: outTokens,
        logprobs: outLogprobs,
        topIds,
        topLogprobs,
      }),
    );
    return new ModelRunner(gpu, c, kv, batch, ops, buffers, { logits, outTokens, outLogprobs, topIds, topLogprobs, staging });
  }

  /**
   * Runs the step described by `batch` (filled by the caller) and returns the sampled rows. One submit; the
   * readback is the only wait.
   */
  async step(): Promise<StepResult> {
    return this.collect(this.submit());
  }

  /**
   * Records and submits the step in `batch` and returns a handle for its results. Up to two steps may be in
   * flight (the engine fills the next batch while the GPU runs the previous one); the batch can be refilled as soon
   * as this returns, since queue.writeBuffer copies its data.
   */
  submit(): InFlight {
    this.gpu.check();
    const fi = this.nextFlight;
    const f = this.inFlight[fi]!;
    if (f.busy) throw new Error('two steps are already in flight');
    this.nextFlight ^= 1;
    const b = this.batch;
    b.upload(this.gpu.queue);
    this.dims.tokens = b.tokens;
    this.dims.seqs = b.rows;
    this.dims.lora = b.lora;
    const enc = this.gpu.device.createCommandEncoder();
    this.kv.encodeCopies(enc);
    const R = b.rows;
    const pass = enc.beginComputePass(R > 0 ? this.stepEnd?.passes[fi] : undefined);
    this.forward.encode(pass, this.dims);
    pass.end();
    const top = b.maxTopN > 0 ? R * MAX_TOPN * 4 : 0;
    if (R > 0) {
      enc.copyBufferToBuffer(this.outTokens, 0, f.staging, 0, R * 4);
      enc.copyBufferToBuffer(this.outLogprobs, 0, f.staging, R * 4, R * 4);
      if (top > 0) {
        enc.copyBufferToBuffer(this.topIds, 0, f.staging, R * 8, top);
        enc.copyBufferToBuffer(this.topLogprobs, 0, f.staging, R * 8 + top, top);
      }
      if (this.stepEnd) {
        enc.resolveQuerySet(this.stepEnd.queries, fi, 1, this.stepEnd.resolved, 256 * fi);
        enc.copyBufferToBuffer(this.stepEnd.resolved, 256 * fi, f.staging, R * 8 + 2 * top, 8);
      }
    }
    this.gpu.queue.submit([enc.finish()]);
    // Steps of one shape take about the same time: the pacer learns it per (tokens, rows, LoRA on/off).
    this.pacer.submitted(f, (b.tokens * 65536 + R) * 2 + (b.lora ? 1 : 0), b.tokens);
    f.busy = true;
    f.rows = R;
    f.top = top;
    return f;
  }

  /** Waits for a submitted step and returns its sampled rows (valid until that handle is submitted again). */
  async collect(f: InFlight): Promise<StepResult> {
    const { rows: R, top } = f;
    try {
      if (R === 0) return f.result;
      const size = R * 8 + 2 * top + (this.stepEnd ? 8 : 0);
      try {
        // Steps are collected in submission order, so the other record, if busy, is queued behind this one.
        await this.pacer.beforeWait(f, this.inFlight[this.inFlight[0] === f ? 1 : 0]!.busy);
        await f.staging.mapAsync(GPUMapMode.READ, 0, size);
      } catch (e) {
        // The device went away (or the buffer became unusable): say so in the engine's terms.
        await this.gpu.settleLoss();
        this.gpu.check();
        throw new PolyloraError('GPU_ERROR', `reading a step's results failed: ${(e as Error).message}`, { cause: e });
      }
      const mapped = f.staging.getMappedRange(0, size);
      this.lastEnd = this.stepEnd ? stepEndMs(mapped, size - 8) : NaN;
      this.pacer.done(f, this.lastEnd);
      f.result.tokens.set(new Uint32Array(mapped, 0, R));
      f.result.logprobs.set(new Float32Array(mapped, R * 4, R));
      if (top > 0) {
        f.result.topIds.set(new Uint32Array(mapped, R * 8, R * MAX_TOPN));
        f.result.topLogprobs.set(new Float32Array(mapped, R * 8 + top, R * MAX_TOPN));
      }
      f.staging.unmap();
      this.gpu.check();
      return f.result;
    } finally {
      f.busy = false;
    }
  }

  /**
   * Runs the step in `batch` one kernel per submit and returns each kernel's wall time in ms (CPU-timed around
   * submit + onSubmittedWorkDone, so each includes one submit's fixed cost). For benchmarks and tuning only.
   */
  async profileStep(): Promise<{ label: string; ms: number }[]> {
    const b = this.batch;
    b.upload(this.gpu.queue);
    this.dims.tokens = b.tokens;
    this.dims.seqs = b.rows;
    this.dims.lora = b.lora;
    await this.gpu.queue.onSubmittedWorkDone();
    const out: { label: string; ms: number }[] = [];
    for (const op of this.ops) {
      const t0 = performance.now();
      const enc = this.gpu.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      op.encode(pass, this.dims);
      pass.end();
      this.gpu.queue.submit([enc.finish()]);
      await this.gpu.queue.onSubmittedWorkDone();
      out.push({ label: op.label, ms: performance.now() - t0 });
    }
    return out;
  }

  /** The logits rows of the last step, f32 [rows, vocab] (tests and debugging). */
  async readLogits(rows: number): Promise<Float32Array> {
    const ldv = pad8(this.config.vocabSize);
    const all = new Float32Array(await this.gpu.read(this.logits, 0, rows * ldv * 4));
    const out = new Float32Array(rows * this.config.vocabSize);
    for (let r = 0; r < rows; r++) out.set(all.subarray(r * ldv, r * ldv + this.config.vocabSize), r * this.config.vocabSize);
    return out;
  }

  /** The last step read back: its end by the GPU's timestamp clock (ms, that clock's origin); NaN where untimed. */
  get lastStepEndMs(): number {
    return this.lastEnd;
  }

  destroy(): void {
    this.stepEnd?.queries.destroy();
    for (const b of this.buffers) b.destroy();
    this.batch.destroy();
  }
}
