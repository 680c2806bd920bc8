// One sequence being generated: its tokens (prompt then output), how many of them already have K/V in the cache,
// and the KV blocks that hold them.

import type { ResolvedSampling } from './sampling-params.js';

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

  constructor(id: number, promptIds: readonly number[], sampling: ResolvedSampling) {
    this.id = id;
    this.tokens = [...promptIds];
    this.promptLen = promptIds.length;
    this.sampling = sampling;
  }

  get numGenerated(): number {
    return this.tokens.length - this.promptLen;
  }

  /** Tokens still to run through the model before the next sample. */
  get numPending(): number {
    return this.tokens.length - this.numComputed;
  }
}
