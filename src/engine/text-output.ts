// One request's output text: incremental detokenization plus stop strings. A stop string ends generation and
// never reaches the caller: while text could still turn out to be the start of a stop string (its last
// maxStopLength − 1 characters), it is held back, and released only when it cannot (vLLM's rule).

import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { IncrementalDecoder } from '../tokenizer/incremental.js';

export class TextOutput {
  /** Text given to the caller so far (the final text once finished). */
  emitted = '';
  private full = '';
  private readonly decoder: IncrementalDecoder | null;
  private readonly stops: readonly string[];
  private readonly holdBack: number;

  constructor(tokenizer: Tokenizer | null, promptIds: readonly number[], stops: readonly string[]) {
    this.decoder = tokenizer ? new IncrementalDecoder(tokenizer, { context: promptIds }) : null;
    this.stops = stops.filter((s) => s.length > 0);
    this.holdBack = Math.max(0, ...this.stops.map((s) => s.length - 1));
  }

  /**
   * Adds one generated token. `last`: generation ends with it anyway (length, EOS), so nothing is held back.
   * `checkStops` false (before min_tokens): stop strings are not looked for, the tail is still held back.
   * Returns the text to emit now and the stop string that matched, if one did (the text then ends before it).
   */
  push(id: number, last: boolean, checkStops = true): { delta: string; stop: string | null } {
    if (!this.decoder) return { delta: '', stop: null };
    this.full += this.decoder.push(id);
    if (last) this.full += this.decoder.flush();
    if (this.stops.length > 0 && checkStops) {
      // A new match can only start within the held-back tail or the new text.
      const from = Math.max(0, this.emitted.length - this.holdBack);
      let at = -1;
      let stop: string | null = null;
      for (const s of this.stops) {
        const i = this.full.indexOf(s, from);
        if (i >= 0 && (at < 0 || i < at)) {
          at = i;
          stop = s;
        }
      }
      if (stop !== null) return { delta: this.release(at), stop };
    }
    return { delta: this.release(last ? this.full.length : this.full.length - this.holdBack), stop: null };
  }

  /** Emits full text up to `end` (never less than already emitted). */
  private release(end: number): string {
    if (end <= this.emitted.length) return '';
    const delta = this.full.slice(this.emitted.length, end);
    this.emitted = this.full.slice(0, end);
    return delta;
  }
}
