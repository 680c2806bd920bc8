// One sequence being generated: its tokens (prompt then output), how many of them already have K/V in the cache,
// and the KV blocks that hold them.

import type { LoraAdapter } from '../lora/adapter.js';
import type { ResolvedSampling } from './sampling-params.js';
import { PEN_IN_PROMPT } from '../kernels/sample.js';

/** The adapter a sequence runs with, and the request's multiplier on the adapter's own scale. */
export interface SequenceLora {
  adapter: LoraAdapter;
  scale: number;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export class Sequence {
  readonly id: number;
  readonly tokens: number[]; // prompt ids, then generated ids
  readonly promptLen: number;
  readonly sampling: ResolvedSampling;
  /** Tokens whose k/v are in the cache (the next step starts here). */
  numComputed = 0;
  /** KV block ids, in order: token j lives in blocks[j / blockSize]. */
  readonly blocks: number[] = [];
  /** Prefix-cache keys of the leading full, computed blocks (blockKeys[i] identifies blocks[i]). */
  readonly blockKeys: string[] = [];
  /** n > 1: the other completions of this prompt, forked from this sequence when its prefill is done. */
  readonly forks: Sequence[] = [];
  /** Log-probability of each generated token. */
  readonly logprobs: number[] = [];
  finishReason: FinishReason | null = null;
  /** Taken out of the scheduler (finished or aborted); a step still in flight for it is ignored. */
  removed = false;
  readonly lora: SequenceLora | null;
  /** GPU slot holding the adapter while the sequence is running (-1: none held). */
  slot = -1;
  /**
   * For penalized sampling: each distinct token of the output (and, with a repetition penalty, of the prompt)
   * -> its output count | PEN_IN_PROMPT. Null when the request has no penalty.
   */
  readonly penalties: Map<number, number> | null;
  /** Token ids that cannot be sampled while fewer than sampling.minTokens are generated (EOS, stop token ids). */
  suppressed: readonly number[] = [];
  /** Top logprobs of each generated position (when asked for). */
  readonly topLogprobs: { id: number; logprob: number }[][] = [];
  /** Prompt logprobs (when asked for): entry i scores prompt token i given tokens [0, i); entry 0 stays empty. */
  readonly promptLogprobs: ({ id: number; logprob: number; top: { id: number; logprob: number }[] } | undefined)[] = [];

  constructor(id: number, promptIds: readonly number[], sampling: ResolvedSampling, lora: SequenceLora | null = null) {
    this.id = id;
    this.tokens = [...promptIds];
    this.promptLen = promptIds.length;
    this.sampling = sampling;
    this.lora = lora;
    const penalized = sampling.presencePenalty !== 0 || sampling.frequencyPenalty !== 0 || sampling.repetitionPenalty !== 1;
    this.penalties = penalized ? new Map() : null;
    if (this.penalties && sampling.repetitionPenalty !== 1) {
      for (const t of promptIds) this.penalties.set(t, PEN_IN_PROMPT);
    }
  }

  /** Appends a sampled token (and keeps the penalty counts). */
  append(token: number, logprob: number): void {
    this.tokens.push(token);
    this.logprobs.push(logprob);
    if (this.penalties) this.penalties.set(token, (this.penalties.get(token) ?? 0) + 1);
  }

  get numGenerated(): number {
    return this.tokens.length - this.promptLen;
  }

  /** Tokens still to run through the model before the next sample. */
  get numPending(): number {
    return this.tokens.length - this.numComputed;
  }

  /**
   * What, besides tokens, determines this sequence's KV values: its adapter and the request's scale on it ('' for
   * the base model, which scale 0 is too).
   */
  get kvIdentity(): string {
    const l = this.lora;
    if (!l || l.scale === 0) return '';
    return `${l.adapter.name}#${l.adapter.id ?? l.adapter.source}@${l.scale}`;
  }
}
