// The inputs of one forward step, sized once for the largest step: CPU arrays the scheduler fills, and the GPU
// buffers they are copied into before the step's single submit. Nothing here is allocated per step.
//
// A step holds T token rows (prefill chunks and decode tokens of several sequences, in any order) and R sample
// rows: sampleRows[r] is the token row whose logits row r samples with sampling parameters r.

import type { Gpu } from '../gpu/device.js';
import type { RowSampling } from '../kernels/sample.js';
import { PEN_WORDS, SEQ_SAMPLING_BYTES, writeRowSampling } from '../kernels/sample.js';

export interface StepLimits {
  maxTokens: number; // token rows per step
  maxRows: number; // sampled rows per step (>= sequences per step)
  maxSeqs: number; // sequences (block-table rows) per step
  maxBlocksPerSeq: number; // block-table row length
  maxPenaltyEntries: number; // penalty list entries per step (distinct tokens of penalized or biased rows)
}

export class StepBatch {
  readonly limits: StepLimits;
  // CPU side, filled by the caller for rows [0, tokens) / [0, rows) / [0, seqs).
  readonly ids: Uint32Array; // [maxTokens] token ids
  readonly positions: Uint32Array; // [maxTokens] position in its sequence
  readonly seqOf: Uint32Array; // [maxTokens] block-table row of the token's sequence
  readonly slots: Uint32Array; // [maxTokens] KV slot the token's k/v are written to
  readonly feed: Uint32Array; // [maxTokens] NONE, or the previous step's sample row holding this token's id
  readonly blockTables: Uint32Array; // [maxSeqs, maxBlocksPerSeq]
  readonly sampleRows: Uint32Array; // [maxRows] token row sampled by each sample row
  readonly penalties: Uint32Array; // [maxPenaltyEntries, PEN_WORDS] (token id, count | flags, bias bits, 0)
  private readonly penaltiesF32: Float32Array; // the same memory (bias words)
  /** Entries used in `penalties`; the largest topN of any row (top logprobs are read back when > 0). */
  penaltyEntries = 0;
  maxTopN = 0;
  // Multi-LoRA, used when `lora` is set for the step: adapter slot (NONE = base only) and scale multiplier.
  readonly slotOf: Uint32Array; // [maxTokens]
  readonly mult: Float32Array; // [maxTokens]
  readonly rowSlot: Uint32Array; // [maxRows] slot of each sampled row (lm_head LoRA)
  readonly rowMult: Float32Array; // [maxRows]
  /** Some token of this step runs with an adapter. */
  lora = false;
  private readonly samplingBytes: ArrayBuffer; // [maxRows] struct SeqSampling
  private readonly samplingF32: Float32Array;
  private readonly samplingU32: Uint32Array;
  private readonly dimsCpu = new Uint32Array(4);
  tokens = 0;
  rows = 0;
  seqs = 0;

  // GPU side.
  readonly dims: GPUBuffer; // uniform {tokens, seqs (= sample rows)}
  readonly idsBuf: GPUBuffer;
  readonly positionsBuf: GPUBuffer;
  readonly seqOfBuf: GPUBuffer;
  readonly slotsBuf: GPUBuffer;
  readonly feedBuf: GPUBuffer;
  readonly blockTablesBuf: GPUBuffer;
  readonly sampleRowsBuf: GPUBuffer;
  readonly samplingBuf: GPUBuffer;
  readonly penaltiesBuf: GPUBuffer;
  readonly slotOfBuf: GPUBuffer;
  readonly multBuf: GPUBuffer;
  readonly rowSlotBuf: GPUBuffer;
  readonly rowMultBuf: GPUBuffer;

  constructor(gpu: Gpu, limits: StepLimits) {
    this.limits = limits;
    const { maxTokens, maxRows, maxSeqs, maxBlocksPerSeq } = limits;
    this.ids = new Uint32Array(maxTokens);
    this.positions = new Uint32Array(maxTokens);
    this.seqOf = new Uint32Array(maxTokens);
    this.slots = new Uint32Array(maxTokens);
    this.feed = new Uint32Array(maxTokens);
    this.blockTables = new Uint32Array(maxSeqs * maxBlocksPerSeq);
    this.sampleRows = new Uint32Array(maxRows);
    this.penalties = new Uint32Array(limits.maxPenaltyEntries * PEN_WORDS);
    this.penaltiesF32 = new Float32Array(this.penalties.buffer);
    this.slotOf = new Uint32Array(maxTokens);
    this.mult = new Float32Array(maxTokens);
    this.rowSlot = new Uint32Array(maxRows);
    this.rowMult = new Float32Array(maxRows);
    this.samplingBytes = new ArrayBuffer(maxRows * SEQ_SAMPLING_BYTES);
    this.samplingF32 = new Float32Array(this.samplingBytes);
    this.samplingU32 = new Uint32Array(this.samplingBytes);
    const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
    this.dims = gpu.buffer('step.dims', 16, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    this.idsBuf = gpu.buffer('step.ids', maxTokens * 4, storage);
    this.positionsBuf = gpu.buffer('step.positions', maxTokens * 4, storage);
    this.seqOfBuf = gpu.buffer('step.seqOf', maxTokens * 4, storage);
    this.slotsBuf = gpu.buffer('step.slots', maxTokens * 4, storage);
    this.feedBuf = gpu.buffer('step.feed', maxTokens * 4, storage);
    this.blockTablesBuf = gpu.buffer('step.blockTables', this.blockTables.byteLength, storage);
    this.sampleRowsBuf = gpu.buffer('step.sampleRows', maxRows * 4, storage);
    this.samplingBuf = gpu.buffer('step.sampling', this.samplingBytes.byteLength, storage);
    this.penaltiesBuf = gpu.buffer('step.penalties', this.penalties.byteLength, storage);
    this.slotOfBuf = gpu.buffer('step.slotOf', maxTokens * 4, storage);
    this.multBuf = gpu.buffer('step.mult', maxTokens * 4, storage);
    this.rowSlotBuf = gpu.buffer('step.rowSlot', maxRows * 4, storage);
    this.rowMultBuf = gpu.buffer('step.rowMult', maxRows * 4, storage);
  }

  /** Starts filling a new step. */
  reset(): void {
    this.tokens = 0;
    this.rows = 0;
    this.seqs = 0;
    this.lora = false;
    this.penaltyEntries = 0;
    this.maxTopN = 0;
  }

  /** Appends one entry to the step's penalty list (see PEN_WORDS): token id, count | flags, logit bias (word 3 stays 0). */
  addPenaltyEntry(id: number, countFlags: number, bias: number): void {
    const i = this.penaltyEntries++ * PEN_WORDS;
    this.penalties[i] = id;
    this.penalties[i + 1] = countFlags;
    this.penaltiesF32[i + 2] = bias;
  }

  setSampling(row: number, v: RowSampling): void {
    writeRowSampling(this.samplingF32, this.samplingU32, row, v);
    this.maxTopN = Math.max(this.maxTopN, v.topN ?? 0);
  }

  /** Copies the used part of every array to the GPU (queued before the step's submit). */
  upload(queue: GPUQueue): void {
    const { tokens: T, rows: R, seqs: S } = this;
    const L = this.limits;
    if (T > L.maxTokens || R > L.maxRows || S > L.maxSeqs) {
      throw new Error(`step of ${T} tokens / ${R} rows / ${S} seqs exceeds limits ${JSON.stringify(L)}`);
    }
    this.dimsCpu[0] = T;
    this.dimsCpu[1] = R;
    queue.writeBuffer(this.dims, 0, this.dimsCpu);
    if (T > 0) {
      queue.writeBuffer(this.idsBuf, 0, this.ids, 0, T);
      queue.writeBuffer(this.positionsBuf, 0, this.positions, 0, T);
      queue.writeBuffer(this.seqOfBuf, 0, this.seqOf, 0, T);
      queue.writeBuffer(this.slotsBuf, 0, this.slots, 0, T);
      queue.writeBuffer(this.feedBuf, 0, this.feed, 0, T);
    }
    if (S > 0) queue.writeBuffer(this.blockTablesBuf, 0, this.blockTables, 0, S * L.maxBlocksPerSeq);
    if (R > 0) {
      queue.writeBuffer(this.sampleRowsBuf, 0, this.sampleRows, 0, R);
      queue.writeBuffer(this.samplingBuf, 0, this.samplingBytes, 0, R * SEQ_SAMPLING_BYTES);
    }
    if (this.penaltyEntries > 0) queue.writeBuffer(this.penaltiesBuf, 0, this.penalties, 0, this.penaltyEntries * PEN_WORDS);
    if (this.lora) {
      queue.writeBuffer(this.slotOfBuf, 0, this.slotOf, 0, T);
      queue.writeBuffer(this.multBuf, 0, this.mult, 0, T);
      if (R > 0) {
        queue.writeBuffer(this.rowSlotBuf, 0, this.rowSlot, 0, R);
        queue.writeBuffer(this.rowMultBuf, 0, this.rowMult, 0, R);
      }
    }
  }

  destroy(): void {
    for (const b of [
      this.dims,
      this.idsBuf,
      this.positionsBuf,
      this.seqOfBuf,
      this.slotsBuf,
      this.feedBuf,
      this.blockTablesBuf,
      this.sampleRowsBuf,
      this.samplingBuf,
      this.penaltiesBuf,
      this.slotOfBuf,
      this.multBuf,
      this.rowSlotBuf,
      this.rowMultBuf,
    ]) {
      b.destroy();
    }
  }
}
