// A request as its caller sees it: an async iterator of chunks (new token ids and the text they complete) and a
// promise of the final output. The engine pushes; the caller pulls at its own pace.

import type { FinishReason } from './sequence.js';

export interface Chunk {
  requestId: string;
  /** Ids generated since the previous chunk. */
  tokenIds: number[];
  /** Text those ids completed (UTF-8 safe: a character split across tokens arrives whole). */
  text: string;
  /** Log-probability of each id in tokenIds under the model's raw distribution. */
  logprobs: number[];
  /** With SamplingParams.logprobs = N: for each id in tokenIds, the N most likely tokens at that position. */
  topLogprobs?: TopLogprob[][];
  /** With SamplingParams.promptLogprobs, on the first chunk: the prompt's scores (as RequestOutput.promptLogprobs). */
  promptLogprobs?: ({ logprob: number; top: TopLogprob[] } | null)[];
  finishReason: FinishReason | null;
}

export interface TopLogprob {
  id: number;
  logprob: number;
}

export interface RequestMetrics {
  arrivalMs: number; // performance.now() at submission
  firstTokenMs: number | null; // time to first token, from arrival
  finishedMs: number | null; // total time, from arrival
}

export interface RequestOutput {
  requestId: string;
  promptIds: number[];
  /** Generated ids (EOS or the stop id included when generation ended on it). */
  tokenIds: number[];
  text: string;
  logprobs: number[];
  /** With SamplingParams.logprobs = N: the N most likely tokens at each generated position. */
  topLogprobs?: TopLogprob[][];
  finishReason: FinishReason;
  /** The stop string or stop token id that ended generation, when one did. */
  stopReason?: string | number;
  metrics: RequestMetrics;
  /**
   * With SamplingParams.promptLogprobs: for each prompt token, its log-probability given the tokens before it and
   * the top alternatives (null for the first token, which has no context).
   */
  promptLogprobs?: ({ logprob: number; top: TopLogprob[] } | null)[];
  /** With SamplingParams.n > 1 (LLM.generate): all n completions of the prompt; this object is outputs[0]. */
  outputs?: RequestOutput[];
}

export class RequestStream implements AsyncIterable<Chunk> {
  readonly requestId: string;
  /** Resolves when the request finishes (also when it is aborted); rejects on an engine error. */
  readonly result: Promise<RequestOutput>;
  private readonly queue: Chunk[] = [];
  private wake: (() => void) | null = null;
  private error: unknown = null;
  private done = false;
  private resolveResult!: (o: RequestOutput) => void;
  private rejectResult!: (e: unknown) => void;
  /** True once abort() was called before the engine took the request. */
  abortedEarly = false;
  /** Stops generation and frees the request's KV blocks (the engine installs it when it takes the request). */
  abort: () => void = () => {
    this.abortedEarly = true;
  };

  constructor(requestId: string) {
    this.requestId = requestId;
    this.result = new Promise((res, rej) => {
      this.resolveResult = res;
      this.rejectResult = rej;
    });
    // A caller that only iterates must not get an unhandled rejection from the result promise.
    this.result.catch(() => {});
  }

  push(c: Chunk): void {
    this.queue.push(c);
    this.notify();
  }

  /** True once the request has finished, failed or been aborted. */
  get settled(): boolean {
    return this.done;
  }

  finish(out: RequestOutput): void {
    this.done = true;
    this.resolveResult(out);
    this.notify();
  }

  fail(e: unknown): void {
    this.error = e;
    this.done = true;
    this.rejectResult(e);
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Chunk> {
    try {
      for (;;) {
        const c = this.queue.shift();
        if (c) {
          yield c;
          continue;
        }
        if (this.error) throw this.error;
        if (this.done) return;
        await new Promise<void>((r) => (this.wake = r));
      }
    } finally {
      // Breaking out of a for-await loop (client gone) ends the request.
      if (!this.done) this.abort();
    }
  }
}
