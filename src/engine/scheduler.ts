// Iteration-level scheduling: before every step, decide which sequences run and how many of their tokens, fill
// the step batch, and grow their KV block lists. Decodes go first (one token each), then unfinished prefills,
// then waiting sequences are admitted in arrival order while the token budget, the sequence limit and free KV
// blocks allow; long prompts are prefilled in chunks so they cannot starve running decodes. When a decode needs
// a block and none is free, the most recently admitted sequence is preempted: its blocks are freed and it is
// recomputed from its tokens later (vLLM's recompute preemption).
// A sequence with a LoRA adapter holds a GPU slot while it runs; a waiting one whose adapter cannot get a slot
// (all slots referenced by running sequences) is passed over for now, and later ones may start before it.

import type { KvPool } from '../kv/kv-pool.js';
import type { SlotPool } from '../lora/slot-pool.js';
import type { StepBatch } from '../model/step-batch.js';
import type { StepResult } from '../model/runner.js';
import { MAX_TOPN, PEN_BIAS_ONLY } from '../kernels/sample.js';
import type { Sequence } from './sequence.js';

const NOTHING: readonly number[] = [];

/** slotOf value of a token that runs the base model only. */
const NO_SLOT = 0xffffffff;
/** feed value of a token whose id is given by the CPU (not fed back from the previous step's samples). */
const NO_FEED = 0xffffffff;

export interface SchedulerLimits {
  maxNumSeqs: number; // sequences in one step
  maxNumBatchedTokens: number; // token rows in one step
  maxModelLen: number; // prompt + output tokens per sequence
}

/** What one sequence contributes to a step. */
export interface Scheduled {
  seq: Sequence;
  start: number; // first token index
  count: number; // tokens this step
  row: number; // sample row, or -1 when the step ends inside its prompt
  /** n > 1: this entry samples a fork of `forkOf` from the same logits row; it starts running after the step. */
  forkOf?: Sequence;
  /** Prompt logprobs: rows [scoreRow, scoreRow + scoreCount) score tokens start + 1, start + 2, ... of the prompt. */
  scoreRow?: number;
  scoreCount?: number;
}

/** Sample rows a step keeps for scoring prompt tokens (prompt logprobs), beyond one row per sequence. */
export const SCORING_ROWS = 64;

export class Scheduler {
  readonly waiting: Sequence[] = [];
  readonly running: Sequence[] = [];
  /** Sequences preempted (blocks freed, to be recomputed) so far. */
  preemptions = 0;
  /** Fork rows (n > 1) placed in the step being scheduled. */
  private forkRows = 0;
  /** Prompt-scoring rows still free in the step being scheduled. */
  private scoreRowsLeft = 0;
  /** Two plans, used in turn: a step may be recorded while the previous one runs (speculate()). */
  private readonly plans: [Scheduled[], Scheduled[]] = [[], []];
  private planIndex = 0;
  /** The plan being filled. */
  private plan: Scheduled[] = this.plans[0];
  private readonly batch: StepBatch;
  private readonly kv: KvPool;
  private readonly limits: SchedulerLimits;
  private readonly slots: SlotPool | null;

  constructor(batch: StepBatch, kv: KvPool, limits: SchedulerLimits, slots: SlotPool | null = null) {
    this.batch = batch;
    this.kv = kv;
    this.limits = limits;
    this.slots = slots;
  }

  get hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  add(seq: Sequence): void {
    this.waiting.push(seq);
  }

  /**
   * Removes a sequence wherever it is and frees its blocks at once. Forks still waiting for it become ordinary
   * waiting sequences (they compute the shared prompt themselves, mostly from the prefix cache).
   */
  remove(seq: Sequence): void {
    seq.removed = true;
    const i = this.running.indexOf(seq);
    if (i >= 0) this.running.splice(i, 1);
    const j = this.waiting.indexOf(seq);
    if (j >= 0) this.waiting.splice(j, 1);
    this.freeBlocks(seq);
    this.releaseSlot(seq);
    if (seq.forks.length > 0) this.waiting.push(...seq.forks.splice(0));
  }

  /** Takes `fork` out of its parent's pending forks (it was aborted before the fork). */
  dropFork(parent: Sequence, fork: Sequence): void {
    const i = parent.forks.indexOf(fork);
    if (i >= 0) parent.forks.splice(i, 1);
  }

  /** Fills the step batch; returns the plan (reused two steps later), empty when nothing can run. */
  schedule(): readonly Scheduled[] {
    const b = this.batch;
    b.reset();
    this.nextPlan();
    this.forkRows = 0;
    this.scoreRowsLeft = SCORING_ROWS;
    let budget = this.limits.maxNumBatchedTokens;
    // 1. Running sequences: decodes (and unfinished prefills) in admission order.
    let i = 0;
    while (i < this.running.length && budget > 0) {
      const seq = this.running[i]!;
      const n = this.chunk(seq, budget);
      if (n === 0) {
        i++; // no scoring rows left this step: its next prompt chunk waits for the next one
        continue;
      }
      if (!this.reserve(seq, n, true)) {
        // Everything admitted after it is preempted already: it waits for blocks too.
        this.preempt(seq);
        continue;
      }
      this.place(seq, n);
      budget -= n;
      i++;
    }
    // 2. Admit waiting sequences in arrival order (passing over those whose adapter has no slot yet).
    let w = 0;
    while (w < this.waiting.length && budget > 0) {
      const seq = this.waiting[w]!;
      // Forks sampled this step start running after it: they count against maxNumSeqs already.
      if (this.running.length + this.forkRows >= this.limits.maxNumSeqs) break;
      if (!this.acquireSlot(seq)) {
        w++;
        continue;
      }
      this.reuseCachedPrefix(seq);
      const n = this.chunk(seq, budget);
      if (n === 0 || !this.reserve(seq, n, false)) {
        this.freeBlocks(seq);
        seq.numComputed = 0;
        this.releaseSlot(seq);
        break;
      }
      this.waiting.splice(w, 1);
      this.running.push(seq);
      this.place(seq, n);
      budget -= n;
    }
    return this.plan;
  }

  private nextPlan(): void {
    this.planIndex ^= 1;
    this.plan = this.plans[this.planIndex]!;
    this.plan.length = 0;
  }

  /**
   * Fills the batch with the decode step that follows `prev` (still running on the GPU) as if every sequence in it
   * goes on: one more token each, whose id the GPU feeds from prev's samples. Returns null (batch untouched) when
   * that guess is not safe to make: requests are waiting for admission, prev has prefill chunks, forks,
   * penalties (they need prev's token on the CPU), or no free block for a new position. A sequence that finishes
   * by length at prev is left out; one that finishes otherwise (EOS, stop string) computes one wasted token.
   */
  speculate(prev: readonly Scheduled[]): readonly Scheduled[] | null {
    if (this.waiting.length > 0 || prev.length === 0) return null;
    const B = this.kv.blockSize;
    let blocksNeeded = 0;
    let going = 0;
    for (const e of prev) {
      const seq = e.seq;
      if (e.row < 0 || e.forkOf || seq.removed || seq.forks.length > 0 || seq.penalties) return null;
      if (!this.continues(seq)) continue;
      going++;
      if (seq.blocks.length * B <= e.start + e.count) blocksNeeded++;
    }
    if (going === 0 || blocksNeeded > this.kv.allocator.numFree) return null;
    const b = this.batch;
    b.reset();
    this.nextPlan();
    for (const e of prev) {
      const seq = e.seq;
      if (!this.continues(seq)) continue;
      const pos = e.start + e.count; // the token prev samples
      if (seq.blocks.length * B <= pos) seq.blocks.push(this.kv.allocator.allocate());
      const seqRow = b.seqs++;
      const tableBase = seqRow * b.limits.maxBlocksPerSeq;
      for (let j = 0; j < seq.blocks.length; j++) b.blockTables[tableBase + j] = seq.blocks[j]!;
      const slot = seq.slot >= 0 ? seq.slot : NO_SLOT;
      const mult = seq.lora?.scale ?? 0;
      if (seq.slot >= 0) b.lora = true;
      const t = b.tokens++;
      b.ids[t] = 0;
      b.feed[t] = e.row;
      b.positions[t] = pos;
      b.seqOf[t] = seqRow;
      b.slots[t] = seq.blocks[Math.floor(pos / B)]! * B + (pos % B);
      b.slotOf[t] = slot;
      b.mult[t] = mult;
      this.plan.push({ seq, start: pos, count: 1, row: this.sampleRow(seq, t, slot, mult, 1) });
    }
    return this.plan;
  }

  /**
   * Tokens of `seq` to run this step: what is pending, within the token budget; a prompt whose logprobs are asked
   * for also needs a scoring row per prompt token it scores, so its chunk stops where the scoring rows run out.
   */
  private chunk(seq: Sequence, budget: number): number {
    let n = Math.min(seq.numPending, budget);
    if (seq.sampling.promptLogprobs >= 0) {
      const scorable = Math.max(0, seq.promptLen - 1 - seq.numComputed); // positions whose next token is a prompt token
      if (scorable > this.scoreRowsLeft) n = Math.min(n, this.scoreRowsLeft);
    }
    return n;
  }

  /** False when the token prev is sampling will end the sequence by length anyway. */
  private continues(seq: Sequence): boolean {
    return seq.numGenerated + 1 < seq.sampling.maxTokens && seq.tokens.length + 1 < this.limits.maxModelLen;
  }

  /**
   * Applies a step's results (the plan schedule() or speculate() returned for it): tokens computed, sampled ids
   * appended. Returns the plan; entries of sequences removed meanwhile are skipped.
   */
  commit(plan: readonly Scheduled[], r: StepResult): readonly Scheduled[] {
    for (const s of plan) {
      if (s.seq.removed) continue;
      if (s.forkOf) this.fork(s.forkOf, s.seq);
      if (s.scoreCount) this.recordPromptLogprobs(s, r);
      s.seq.numComputed += s.count;
      this.registerFullBlocks(s.seq);
      if (s.row < 0) continue;
      s.seq.append(r.tokens[s.row]!, r.logprobs[s.row]!);
      const n = s.seq.sampling.logprobs;
      if (n > 0) {
        const top: { id: number; logprob: number }[] = [];
        for (let k = 0; k < n; k++) top.push({ id: r.topIds[s.row * MAX_TOPN + k]!, logprob: r.topLogprobs[s.row * MAX_TOPN + k]! });
        s.seq.topLogprobs.push(top);
      }
    }
    return plan;
  }

  /** Logprobs of the prompt tokens scored by `s` (positions start+1 ...), kept on the sequence. */
  private recordPromptLogprobs(s: Scheduled, r: StepResult): void {
    const n = s.seq.sampling.promptLogprobs;
    for (let i = 0; i < s.scoreCount!; i++) {
      const row = s.scoreRow! + i;
      const top: { id: number; logprob: number }[] = [];
      for (let k = 0; k < n; k++) top.push({ id: r.topIds[row * MAX_TOPN + k]!, logprob: r.topLogprobs[row * MAX_TOPN + k]! });
      s.seq.promptLogprobs[s.start + i + 1] = { id: r.tokens[row]!, logprob: r.logprobs[row]!, top };
    }
  }

  /** KV blocks for tokens [0, numComputed + n); may preempt later-admitted sequences when `preempt`. */
  private reserve(seq: Sequence, n: number, preempt: boolean): boolean {
    const B = this.kv.blockSize;
    const alloc = this.kv.allocator;
    const need = Math.ceil((seq.numComputed + n) / B) - seq.blocks.length;
    while (alloc.numFree < need) {
      if (!preempt) return false;
      const victim = this.running[this.running.length - 1]!;
      if (victim === seq) return false;
      this.preempt(victim);
    }
    for (let i = 0; i < need; i++) seq.blocks.push(alloc.allocate());
    return true;
  }

  private preempt(seq: Sequence): void {
    this.preemptions++;
    this.running.splice(this.running.indexOf(seq), 1);
    this.freeBlocks(seq);
    this.releaseSlot(seq);
    seq.numComputed = 0;
    this.waiting.unshift(seq);
  }

  /** True when the sequence needs no adapter or now holds its adapter's slot. */
  private acquireSlot(seq: Sequence): boolean {
    if (!seq.lora || seq.slot >= 0) return true;
    if (!this.slots) throw new Error('a LoRA sequence reached an engine without LoRA slots');
    seq.slot = this.slots.acquire(seq.lora.adapter);
    return seq.slot >= 0;
  }

  private releaseSlot(seq: Sequence): void {
    if (seq.slot < 0) return;
    this.slots!.release(seq.slot);
    seq.slot = -1;
  }

  private freeBlocks(seq: Sequence): void {
    for (const blk of seq.blocks) this.kv.allocator.release(blk);
    seq.blocks.length = 0;
    seq.blockKeys.length = 0;
  }

  /**
   * A new sequence starts from the longest run of cached blocks matching its prompt (same adapter); at least
   * the last prompt token is always computed, since its logits are needed.
   */
  private reuseCachedPrefix(seq: Sequence): void {
    const cache = this.kv.prefixCache;
    // Prompt logprobs need the logits of every prompt position: such a prompt is computed in full.
    if (!cache || seq.blocks.length > 0 || seq.sampling.promptLogprobs >= 0) return;
    const B = this.kv.blockSize;
    const reusable = Math.floor((seq.tokens.length - 1) / B);
    let prev = '';
    for (let i = 0; i < reusable; i++) {
      const key = cache.key(prev, seq.kvIdentity, seq.tokens, i);
      const b = cache.lookup(key);
      if (b < 0) break;
      seq.blocks.push(b);
      seq.blockKeys.push(key);
      prev = key;
    }
    seq.numComputed = seq.blocks.length * B;
    cache.queries += seq.tokens.length;
    cache.hits += seq.numComputed;
  }

  /** Offers the sequence's newly completed full blocks to the prefix cache. */
  private registerFullBlocks(seq: Sequence): void {
    const cache = this.kv.prefixCache;
    if (!cache) return;
    const full = Math.floor(seq.numComputed / this.kv.blockSize);
    while (seq.blockKeys.length < full) {
      const i = seq.blockKeys.length;
      const key = cache.key(seq.blockKeys[i - 1] ?? '', seq.kvIdentity, seq.tokens, i);
      cache.insert(key, seq.blocks[i]!);
      seq.blockKeys.push(key);
    }
  }

  /**
   * Starts `child` as a copy of `parent` right after the parent's prefill: full blocks are shared, the partial
   * last block is copied on the GPU (the child writes its own tokens there). Without a free block for that copy
   * the child waits and computes its prompt itself.
   */
  private fork(parent: Sequence, child: Sequence): void {
    const B = this.kv.blockSize;
    const alloc = this.kv.allocator;
    const computed = parent.numComputed;
    const full = Math.floor(computed / B);
    let copy = -1;
    if (computed % B !== 0) {
      copy = alloc.allocate();
      if (copy < 0) {
        this.waiting.unshift(child);
        return;
      }
      this.kv.queueCopy(parent.blocks[full]!, copy);
    }
    for (let i = 0; i < full; i++) {
      alloc.retain(parent.blocks[i]!);
      child.blocks.push(parent.blocks[i]!);
    }
    if (copy >= 0) child.blocks.push(copy);
    child.blockKeys.push(...parent.blockKeys.slice(0, full));
    child.numComputed = computed;
    this.acquireSlot(child); // the parent holds the adapter's slot: this cannot fail
    this.running.push(child);
  }

  /** Writes `n` tokens of `seq` starting at numComputed into the batch. */
  private place(seq: Sequence, n: number): void {
    const b = this.batch;
    const B = this.kv.blockSize;
    const seqRow = b.seqs++;
    const tableBase = seqRow * b.limits.maxBlocksPerSeq;
    for (let j = 0; j < seq.blocks.length; j++) b.blockTables[tableBase + j] = seq.blocks[j]!;
    const start = seq.numComputed;
    const slot = seq.slot >= 0 ? seq.slot : NO_SLOT;
    const mult = seq.lora?.scale ?? 0;
    if (seq.slot >= 0) b.lora = true;
    for (let i = 0; i < n; i++) {
      const pos = start + i;
      const t = b.tokens++;
      b.ids[t] = seq.tokens[pos]!;
      b.positions[t] = pos;
      b.seqOf[t] = seqRow;
      b.slots[t] = seq.blocks[Math.floor(pos / B)]! * B + (pos % B);
      b.feed[t] = NO_FEED;
      b.slotOf[t] = slot;
      b.mult[t] = mult;
    }
    const sampled = start + n === seq.tokens.length;
    const entry: Scheduled = { seq, start, count: n, row: sampled ? this.sampleRow(seq, b.tokens - 1, slot, mult) : -1 };
    if (seq.sampling.promptLogprobs >= 0 && start < seq.promptLen - 1) {
      // One scoring row per position whose next token is a prompt token: it reports that token's logprob.
      const count = Math.min(n, seq.promptLen - 1 - start);
      entry.scoreRow = b.rows;
      entry.scoreCount = count;
      for (let i = 0; i < count; i++) this.sampleRow(seq, b.tokens - n + i, slot, mult, 0, seq.tokens[start + i + 1]!);
      this.scoreRowsLeft -= count;
    }
    this.plan.push(entry);
    // n > 1: the forks sample the same logits row, each with its own seed, and start running after the step
    // (after their parent's entry in the plan, so commit() sees the parent's computed tokens first). Forks beyond
    // maxNumSeqs wait as ordinary sequences (their prompt mostly comes from the prefix cache).
    if (sampled) {
      for (const f of seq.forks.splice(0)) {
        if (this.running.length + this.forkRows < this.limits.maxNumSeqs && b.rows < b.limits.maxRows) {
          this.plan.push({ seq: f, start: 0, count: 0, row: this.sampleRow(f, b.tokens - 1, slot, mult), forkOf: seq });
          this.forkRows++;
        } else {
          this.waiting.push(f);
        }
      }
    }
  }

  /**
   * A sample row for `seq` reading token row `t`: its sampling parameters and penalty list. `ahead`: tokens it
   * has sampled that are not appended yet (a speculated step), for the seeded random stream's counter.
   */
  private sampleRow(seq: Sequence, t: number, slot: number, mult: number, ahead = 0, score?: number): number {
    const b = this.batch;
    const row = b.rows++;
    b.sampleRows[row] = t;
    b.rowSlot[row] = slot;
    b.rowMult[row] = mult;
    const sp = seq.sampling;
    const penStart = b.penaltyEntries;
    // A scoring row's token is given and its logprobs are of the raw logits: penalties and biases would change nothing.
    // One entry per token: its penalty state, its logit bias, and -∞ while min_tokens holds EOS and stop ids back.
    if (score === undefined) {
      const bias = sp.logitBias;
      const pen = seq.penalties;
      const ban = seq.numGenerated + ahead < sp.minTokens ? seq.suppressed : NOTHING;
      if (pen) for (const [id, v] of pen) b.addPenaltyEntry(id, v, ban.includes(id) ? -Infinity : (bias?.get(id) ?? 0));
      if (bias) for (const [id, v] of bias) if (!pen?.has(id)) b.addPenaltyEntry(id, PEN_BIAS_ONLY, ban.includes(id) ? -Infinity : v);
      for (const id of ban) if (!pen?.has(id) && !bias?.has(id)) b.addPenaltyEntry(id, PEN_BIAS_ONLY, -Infinity);
    }
    b.setSampling(row, {
      temperature: sp.temperature,
      topK: sp.topK,
      topP: sp.topP,
      minP: sp.minP,
      seed: sp.seed,
      counter: seq.numGenerated + ahead,
      topN: score === undefined ? sp.logprobs : Math.max(0, sp.promptLogprobs),
      presence: sp.presencePenalty,
      frequency: sp.frequencyPenalty,
      repetition: sp.repetitionPenalty,
      penStart,
      penLen: b.penaltyEntries - penStart,
      score,
    });
    return row;
  }
}
