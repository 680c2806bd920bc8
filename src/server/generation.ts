// Running the choices of one API request on the engine, and the pieces both endpoints format from them: token
// strings, logprobs, usage, finish reasons.

import type { LLM } from '../engine/llm.js';
import type { LoRARequest } from '../engine/lora-request.js';
import type { RequestStream, TopLogprob } from '../engine/request.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';

/** One choice being generated: for prompt `prompt`, the response's choice `index`. */
export interface ChoiceRun {
  prompt: number;
  index: number;
  stream: RequestStream;
}

/**
 * Starts `n` choices for every prompt; choice index = prompt · n + j (vLLM's order). Each prompt's choices are one
 * engine group (LLM.streamGroup): one prefill, shared prompt blocks, choice j > 0 sampling with a seed derived from
 * the request's. If a start fails, the ones started are aborted.
 */
export function startChoices(llm: LLM, prompts: number[][], params: SamplingParams, n: number, lora: LoRARequest | null): ChoiceRun[] {
  const runs: ChoiceRun[] = [];
  try {
    // The engine runs the n choices of a prompt as one group: one prefill, shared KV blocks, per-choice seeds.
    prompts.forEach((ids, p) => {
      llm.streamGroup({ promptIds: ids }, { ...params, n }, { lora }).forEach((stream, j) => {
        runs.push({ prompt: p, index: p * n + j, stream });
      });
    });
  } catch (e) {
    for (const r of runs) r.stream.abort();
    throw e;
  }
  return runs;
}

/**
 * How logprobs name a token: the text it adds after other text (so the tokens of a choice join to its text), or
 * `token_id:<id>` (vLLM's return_tokens_as_token_ids form, also used without a tokenizer).
 */
export function tokenNamer(llm: LLM, asIds: boolean): (id: number) => string {
  const tk = llm.tokenizer;
  if (!tk || asIds) return (id) => `token_id:${id}`;
  let names = tokenTexts.get(tk);
  if (!names) tokenTexts.set(tk, (names = new Map()));
  // Decoded alone, a token loses what decoders strip at the start of a text (SentencePiece's leading space), so
  // it is decoded after an anchor token and the anchor's text is cut off.
  const anchor = tk.encode('a', { addSpecialTokens: false })[0];
  const anchorText = anchor === undefined ? '' : tk.decode([anchor]);
  const cache = names;
  return (id) => {
    let s = cache.get(id);
    if (s === undefined) {
      const joined = anchor === undefined ? '' : tk.decode([anchor, id]);
      s = anchor !== undefined && joined.startsWith(anchorText) ? joined.slice(anchorText.length) : tk.decode([id]);
      cache.set(id, s);
    }
    return s;
  };
}

/** Token id -> its text after other text, per tokenizer (filled as tokens are seen). */
const tokenTexts = new WeakMap<Tokenizer, Map<number, string>>();

/** The completions API's logprobs object for some generated tokens. */
export interface CompletionLogprobs {
  tokens: string[];
  /** null for the first prompt token (echo): it has no context. */
  token_logprobs: (number | null)[];
  /** Per position: the `logprobs` most likely tokens and the sampled one, token string -> logprob. */
  top_logprobs: (Record<string, number> | null)[];
  /** Character offset of each token in the choice's text. */
  text_offset: number[];
}

/**
 * Completions logprobs for tokens `ids` (their logprobs `lps`, alternatives `top`), the first token starting at
 * character `offset` of the choice's text. Returns the object and the offset after the last token.
 */
export function completionLogprobs(
  name: (id: number) => string,
  ids: readonly number[],
  lps: readonly number[],
  top: readonly TopLogprob[][] | undefined,
  offset: number,
): { logprobs: CompletionLogprobs; offset: number } {
  const lp: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  ids.forEach((id, i) => {
    const s = name(id);
    lp.tokens.push(s);
    lp.token_logprobs.push(lps[i]!);
    const alts: Record<string, number> = {};
    for (const t of top?.[i] ?? []) alts[name(t.id)] = t.logprob;
    alts[s] = lps[i]!;
    lp.top_logprobs.push(alts);
    lp.text_offset.push(offset);
    offset += s.length;
  });
  return { logprobs: lp, offset };
}

/**
 * Completion logprobs of the prompt tokens (echo + logprobs), from RequestOutput.promptLogprobs: the first token has
 * null entries, as in OpenAI's API.
 */
export function promptCompletionLogprobs(
  name: (id: number) => string,
  ids: readonly number[],
  scored: readonly ({ logprob: number; top: TopLogprob[] } | null)[],
): { logprobs: CompletionLogprobs; offset: number } {
  const lp: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let offset = 0;
  ids.forEach((id, i) => {
    const s = name(id);
    const p = scored[i];
    lp.tokens.push(s);
    lp.token_logprobs.push(p ? p.logprob : null);
    if (p) {
      const alts: Record<string, number> = {};
      for (const t of p.top) alts[name(t.id)] = t.logprob;
      alts[s] = p.logprob;
      lp.top_logprobs.push(alts);
    } else {
      lp.top_logprobs.push(null);
    }
    lp.text_offset.push(offset);
    offset += s.length;
  });
  return { logprobs: lp, offset };
}

/** Two completion logprobs objects, one after the other. */
export function concatLogprobs(a: CompletionLogprobs, b: CompletionLogprobs): CompletionLogprobs {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}

/** One position of the chat API's logprobs. */
export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  /** UTF-8 bytes of `token`. */
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

const utf8 = new TextEncoder();

/** Chat logprobs `content` entries for tokens `ids`. */
export function chatLogprobs(
  name: (id: number) => string,
  ids: readonly number[],
  lps: readonly number[],
  top: readonly TopLogprob[][] | undefined,
): ChatTokenLogprob[] {
  return ids.map((id, i) => {
    const token = name(id);
    return {
      token,
      logprob: lps[i]!,
      bytes: [...utf8.encode(token)],
      top_logprobs: (top?.[i] ?? []).map((t) => {
        const s = name(t.id);
        return { token: s, logprob: t.logprob, bytes: [...utf8.encode(s)] };
      }),
    };
  });
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Usage of a request: each prompt counted once (however many choices it has), every generated token. */
export function usage(prompts: number[][], generated: number): Usage {
  const p = prompts.reduce((s, ids) => s + ids.length, 0);
  return { prompt_tokens: p, completion_tokens: generated, total_tokens: p + generated };
}
