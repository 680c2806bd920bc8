// Streaming detokenization: token ids arrive one by one, text leaves as deltas. Decoding a token alone is wrong
// for most tokenizers (SentencePiece strips the leading space of a decode; byte-level and byte-fallback tokens
// can hold part of a UTF-8 character), so each step decodes a short window of recent ids and emits what the new
// id added, holding it back while the text ends in an incomplete character (U+FFFD) — the scheme of
// text-generation-inference and vLLM.

import type { Tokenizer } from './tokenizer.js';

/** How many trailing context ids (e.g. the prompt's) seed the window. */
const CONTEXT_IDS = 6;

export class IncrementalDecoder {
  /** The window: ids[0, readOffset) decode to text already given out (context for the rest), the others not yet. */
  private readonly ids: number[];
  private readOffset: number;
  private readonly skipSpecialTokens: boolean;

  /**
   * `context`: ids that precede the stream (the prompt), so the first delta gets its leading space right;
   * only the last few are kept. `skipSpecialTokens` (default true) leaves BOS/EOS/chat markers out of the text.
   */
  constructor(
    private readonly tokenizer: Tokenizer,
    options: { context?: readonly number[]; skipSpecialTokens?: boolean } = {},
  ) {
    this.ids = (options.context ?? []).slice(-CONTEXT_IDS);
    this.readOffset = this.ids.length;
    this.skipSpecialTokens = options.skipSpecialTokens ?? true;
  }

  /** Adds one id; returns the text it completes ('' while a character is still incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const { emitted, all } = this.texts();
    if (all.length > emitted.length && !all.endsWith('\uFFFD')) {
      this.advance();
      return all.slice(emitted.length);
    }
    return '';
  }

  /** Emits whatever is held back (an incomplete character comes out as U+FFFD). */
  flush(): string {
    const { emitted, all } = this.texts();
    this.advance();
    return all.length > emitted.length ? all.slice(emitted.length) : '';
  }

  private texts(): { emitted: string; all: string } {
    const opts = { skipSpecialTokens: this.skipSpecialTokens };
    return { emitted: this.tokenizer.decode(this.ids.slice(0, this.readOffset), opts), all: this.tokenizer.decode(this.ids, opts) };
  }

  /** What was just emitted becomes the next window's context; older ids are dropped. */
  private advance(): void {
    this.ids.splice(0, this.readOffset);
    this.readOffset = this.ids.length;
  }
}
