// One sequence being generated: its tokens (prompt then output), how many of them already have K/V in the cache,
// and the KV blocks that hold them.

import type { LoraAdapter } from '../lora/adapter.js';
import type { ResolvedSampling } from './sampling-params.js';

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
  /** Log-probability of each generated token. */
  readonly logprobs: number[] = [];
  finishReason: FinishReason | null = null;
  readonly lora: SequenceLora | null;
  /** GPU slot holding the adapter while the sequence is running (-1: none held). */
  slot = -1;

  constructor(id: number, promptIds: readonly number[], sampling: ResolvedSampling, lora: SequenceLora | null = null) {
    this.id = id;
    this.tokens = [...promptIds];
    this.promptLen = promptIds.length;
    this.sampling = sampling;
    this.lora = lora;
  }

  get numGenerated(): number {
    return this.tokens.length - this.promptLen;
  }

  /** Tokens still to run through the model before the next sample. */
  get numPending(): number {
    return this.tokens.length - this.numComputed;
  }
}
