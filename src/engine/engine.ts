// The generation loop: requests come in at any time, and every step the scheduler picks what runs, the model
// runner executes it on the GPU, and the sampled tokens go back to their requests (stop rules, detokenization,
// streaming). One loop per engine; it sleeps when there is nothing to do.

import { PolyloraError } from '../errors.js';
import type { InFlight, ModelRunner } from '../model/runner.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { TextOutput } from './text-output.js';
import type { RequestOutput } from './request.js';
import { RequestStream } from './request.js';
import type { SamplingParams } from './sampling-params.js';
import { resolveSampling } from './sampling-params.js';
import type { Scheduled, SchedulerLimits } from './scheduler.js';
import { Scheduler } from './scheduler.js';
import type { FinishReason, SequenceLora } from './sequence.js';
import { Sequence } from './sequence.js';
import type { SlotPool } from '../lora/slot-pool.js';
import { MAX_LOGIT_BIAS } from '../kernels/sample.js';

export interface EngineLimits extends SchedulerLimits {
  /**
   * Record the next decode step while the GPU runs the current one (its token ids fed back on the GPU), so the
   * read-back wait overlaps GPU work. Default true.
   */
  asyncScheduling?: boolean;
}

export interface EngineStats {
  steps: number;
  promptTokens: number;
  generatedTokens: number;
  /** Largest number of sequences that sampled in one step. */
  maxRowsInStep: number;
}

/** The engine's state right now (for metrics). */
export interface EngineSnapshot extends EngineStats {
  running: number; // sequences with KV blocks, being stepped
  waiting: number; // sequences queued (not admitted yet, or preempted)
  kvBlocksTotal: number;
  kvBlocksFree: number; // includes cached blocks nobody holds
  kvBlockSize: number;
  prefixCacheQueries: number; // prompt tokens looked up in the prefix cache
  prefixCacheHits: number; // prompt tokens served from it
  preemptions: number; // sequences whose blocks were taken back (recomputed later)
}

/** The prompt's scores as requests report them (null for the first token), when the request asked for them. */
function promptScores(seq: Sequence): RequestOutput['promptLogprobs'] {
  if (seq.sampling.promptLogprobs < 0) return undefined;
  return Array.from({ length: seq.promptLen }, (_, i) => {
    const p = seq.promptLogprobs[i];
    return p ? { logprob: p.logprob, top: p.top } : null;
  });
}

interface StepInFlight {
  plan: readonly Scheduled[];
  flight: InFlight;
}

interface Active {
  seq: Sequence;
  stream: RequestStream;
  output: TextOutput;
  stopIds: Set<number>;
  eosIds: Set<number>;
  stopReason?: string | number;
  arrivalMs: number;
  firstTokenMs: number | null;
  /** n > 1: the sequence this one forks from (until the fork happens). */
  forkOf: Sequence | null;
}

export class Engine {
  readonly limits: EngineLimits;
  readonly stats: EngineStats = { steps: 0, promptTokens: 0, generatedTokens: 0, maxRowsInStep: 0 };
  private readonly runner: ModelRunner;
  private readonly tokenizer: Tokenizer | null;
  private readonly eosIds: number[];
  private readonly scheduler: Scheduler;
  private readonly active = new Map<Sequence, Active>();
  private nextId = 0;
  private loop: Promise<void> | null = null;
  private closed = false;

  constructor(runner: ModelRunner, tokenizer: Tokenizer | null, eosIds: number[], limits: EngineLimits, slots: SlotPool | null = null) {
    this.runner = runner;
    this.tokenizer = tokenizer;
    this.eosIds = eosIds;
    this.limits = limits;
    this.scheduler = new Scheduler(runner.batch, runner.kv, limits, slots);
  }

  /** Number of requests not finished yet. */
  get numActive(): number {
    return this.active.size;
  }

  snapshot(): EngineSnapshot {
    const kv = this.runner.kv;
    return {
      ...this.stats,
      running: this.scheduler.running.length,
      waiting: this.scheduler.waiting.length,
      kvBlocksTotal: kv.numBlocks,
      kvBlocksFree: kv.allocator.numFree,
      kvBlockSize: kv.blockSize,
      prefixCacheQueries: kv.prefixCache?.queries ?? 0,
      prefixCacheHits: kv.prefixCache?.hits ?? 0,
      preemptions: this.scheduler.preemptions,
    };
  }

  /** Sequences per adapter name, running (admitted) and waiting (queued or preempted); the base is not counted. */
  loraRequests(): { running: Map<string, number>; waiting: Map<string, number> } {
    const count = (seqs: readonly Sequence[]) => {
      const out = new Map<string, number>();
      for (const s of seqs) if (s.lora) out.set(s.lora.adapter.name, (out.get(s.lora.adapter.name) ?? 0) + 1);
      return out;
    };
    return { running: count(this.scheduler.running), waiting: count(this.scheduler.waiting) };
  }

  /**
   * Queues a request (with a parsed adapter, or none); generation starts on the next step. `stream` is the
   * caller's own RequestStream when it was handed out before the request could be queued (adapter loading).
   * One completion: for SamplingParams.n > 1 use addGroup.
   */
  add(
    promptIds: readonly number[],
    params: SamplingParams = {},
    lora: SequenceLora | null = null,
    stream: RequestStream = new RequestStream(`req-${this.nextId++}`),
  ): RequestStream {
    if ((params.n ?? 1) !== 1) throw new PolyloraError('INVALID_ARGUMENT', 'n > 1 needs addGroup', { field: 'n' });
    return this.addGroup(promptIds, params, lora, [stream])[0]!;
  }

  /**
   * Queues n = params.n completions of one prompt. The first computes the prompt; the others fork from it when
   * its prefill is done (sharing its KV blocks) and sample with seeds derived from the request's seed.
   */
  addGroup(
    promptIds: readonly number[],
    params: SamplingParams = {},
    lora: SequenceLora | null = null,
    streams?: RequestStream[],
  ): RequestStream[] {
    if (this.closed) throw new PolyloraError('INVALID_ARGUMENT', 'the engine is closed');
    const first = streams?.[0] ?? new RequestStream(`req-${this.nextId++}`);
    const sampling = resolveSampling(params, `request ${first.requestId}`, this.runner.config.vocabSize);
    this.checkPrompt(first.requestId, promptIds);
    // min_tokens keeps EOS and the stop ids from being sampled: entries in the step's list, as logit_bias entries are.
    const suppressed = sampling.minTokens > 0 ? [...new Set([...(sampling.ignoreEos ? [] : this.eosIds), ...sampling.stopTokenIds])] : [];
    if (suppressed.length + (sampling.logitBias?.size ?? 0) > MAX_LOGIT_BIAS) {
      throw new PolyloraError('INVALID_ARGUMENT', `invalid request ${first.requestId}`, {
        field: 'stopTokenIds',
        expected: `with minTokens, at most ${MAX_LOGIT_BIAS} stop token ids and logitBias entries together`,
        found: `${sampling.stopTokenIds.length} stop token ids, ${sampling.logitBias?.size ?? 0} logitBias entries`,
      });
    }
    const group: Active[] = [];
    for (let i = 0; i < sampling.n; i++) {
      const stream = streams?.[i] ?? (i === 0 ? first : new RequestStream(`${first.requestId}-${i}`));
      // Completion i > 0 gets its own random stream (the same for the same seed, whatever the batch).
      const seed = i === 0 ? sampling.seed : (sampling.seed + Math.imul(i, 0x9e3779b9)) >>> 0;
      const seq = new Sequence(this.nextId++, promptIds, { ...sampling, seed }, lora);
      seq.suppressed = suppressed;
      const a: Active = {
        seq,
        stream,
        output: new TextOutput(this.tokenizer, promptIds, sampling.stop),
        stopIds: new Set(sampling.stopTokenIds),
        eosIds: new Set(sampling.ignoreEos ? [] : this.eosIds),
        arrivalMs: performance.now(),
        firstTokenMs: null,
        forkOf: i === 0 ? null : group[0]!.seq,
      };
      stream.abort = () => this.finish(a, 'abort');
      this.active.set(seq, a);
      group.push(a);
    }
    const [head, ...rest] = group;
    head!.seq.forks.push(...rest.map((a) => a.seq));
    this.scheduler.add(head!.seq);
    this.stats.promptTokens += promptIds.length;
    for (const a of group) if (a.stream.abortedEarly) this.finish(a, 'abort');
    this.kick();
    return group.map((a) => a.stream);
  }

  /** Resolves when every queued request has finished. */
  async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  /** Aborts everything; later add() calls throw. */
  async close(): Promise<void> {
    this.closed = true;
    for (const a of [...this.active.values()]) this.finish(a, 'abort');
    await this.idle();
  }

  private checkPrompt(id: string, ids: readonly number[]): void {
    const vocab = this.runner.config.vocabSize;
    if (ids.length === 0) {
      throw new PolyloraError('INVALID_ARGUMENT', `request ${id}: the prompt is empty`, {
        field: 'prompt',
        hint: 'give at least one token (most models expect BOS first)',
      });
    }
    const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad >= 0) {
      throw new PolyloraError('INVALID_ARGUMENT', `request ${id}: prompt token ${bad} is not a token id`, {
        field: 'prompt',
        expected: `integers in [0, ${vocab})`,
        found: String(ids[bad]),
      });
    }
    if (ids.length >= this.limits.maxModelLen) {
      throw new PolyloraError('INVALID_ARGUMENT', `request ${id}: the prompt is too long`, {
        field: 'prompt',
        expected: `fewer than maxModelLen = ${this.limits.maxModelLen} tokens`,
        found: `${ids.length} tokens`,
        hint: 'shorten the prompt or raise maxModelLen',
      });
    }
  }

  private kick(): void {
    if (this.loop) return;
    this.loop = this.run().finally(() => {
      this.loop = null;
      if (this.scheduler.hasWork && !this.closed) this.kick();
    });
  }

  private async run(): Promise<void> {
    // Start on a microtask: requests added in the same tick (one generate() call) share the first step.
    await Promise.resolve();
    const overlap = this.limits.asyncScheduling !== false;
    // The oldest step in flight; with async scheduling, the one after it is recorded before it is read back.
    let head: StepInFlight | null = null;
    try {
      for (;;) {
        if (!head) {
          if (!this.scheduler.hasWork) break;
          const plan = this.scheduler.schedule();
          if (plan.length === 0) {
            throw new PolyloraError('INVALID_ARGUMENT', 'no request fits in the KV cache', {
              hint: 'raise the KV cache memory or lower maxModelLen',
            });
          }
          head = { plan, flight: this.runner.submit() };
        }
        const spec: readonly Scheduled[] | null = overlap ? this.scheduler.speculate(head.plan) : null;
        const next: StepInFlight | null = spec ? { plan: spec, flight: this.runner.submit() } : null;
        const res = await this.runner.collect(head.flight);
        this.stats.steps++;
        this.stats.maxRowsInStep = Math.max(this.stats.maxRowsInStep, head.flight.rows);
        for (const s of this.scheduler.commit(head.plan, res)) {
          const a = this.active.get(s.seq); // absent when it finished or was aborted while the step ran
          if (s.row >= 0 && a) this.onToken(a);
        }
        head = next;
      }
    } catch (e) {
      for (const a of [...this.active.values()]) {
        this.scheduler.remove(a.seq);
        this.active.delete(a.seq);
        a.stream.fail(e);
      }
    }
  }

  private onToken(a: Active): void {
    const seq = a.seq;
    const id = seq.tokens[seq.tokens.length - 1]!;
    this.stats.generatedTokens++;
    if (a.firstTokenMs === null) a.firstTokenMs = performance.now() - a.arrivalMs;
    let reason: FinishReason | null = null;
    // Before min_tokens nothing but the length ends it (EOS and stop ids cannot be sampled then).
    const early = seq.numGenerated < seq.sampling.minTokens;
    if (!early && a.eosIds.has(id)) {
      reason = 'stop';
    } else if (!early && a.stopIds.has(id)) {
      reason = 'stop';
      a.stopReason = id;
    } else if (seq.numGenerated >= seq.sampling.maxTokens || seq.tokens.length >= this.limits.maxModelLen) {
      reason = 'length';
    }
    const { delta, stop } = a.output.push(id, reason !== null, !early);
    if (stop !== null) {
      reason = 'stop';
      a.stopReason = stop;
    }
    a.stream.push({
      requestId: a.stream.requestId,
      tokenIds: [id],
      text: delta,
      logprobs: [seq.logprobs[seq.logprobs.length - 1]!],
      topLogprobs: seq.sampling.logprobs > 0 ? [seq.topLogprobs[seq.topLogprobs.length - 1]!] : undefined,
      promptLogprobs: seq.numGenerated === 1 ? promptScores(seq) : undefined,
      finishReason: reason,
    });
    if (reason) this.finish(a, reason);
  }

  private finish(a: Active, reason: FinishReason): void {
    if (!this.active.has(a.seq)) return;
    this.active.delete(a.seq);
    if (a.forkOf) this.scheduler.dropFork(a.forkOf, a.seq);
    this.scheduler.remove(a.seq);
    a.seq.finishReason = reason;
    const now = performance.now();
    const out: RequestOutput = {
      requestId: a.stream.requestId,
      promptIds: a.seq.tokens.slice(0, a.seq.promptLen),
      tokenIds: a.seq.tokens.slice(a.seq.promptLen),
      text: a.output.emitted,
      logprobs: [...a.seq.logprobs],
      topLogprobs: a.seq.sampling.logprobs > 0 ? [...a.seq.topLogprobs] : undefined,
      promptLogprobs: promptScores(a.seq),
      finishReason: reason,
      stopReason: a.stopReason,
      metrics: { arrivalMs: a.arrivalMs, firstTokenMs: a.firstTokenMs, finishedMs: now - a.arrivalMs },
    };
    if (reason === 'abort') {
      a.stream.push({ requestId: out.requestId, tokenIds: [], text: '', logprobs: [], finishReason: 'abort' });
    }
    a.stream.finish(out);
  }
}
