// Running the choices of one API request on the engine, and the pieces both endpoints format from them: token
// strings, logprobs, usage, finish reasons.

import type { LLM } from '../engine/llm.js';
import type { LoRARequest } from '../engine/lora-request.js';
import type { RequestStream, TopLogprob } from '../engine/request.js';
import type { SamplingParams } from '../engine/sampling-params.js';

/** One choice being generated: for prompt `prompt`, the response's choice `index`. */
export interface ChoiceRun {
  prompt: number;
  index: number;
  stream: RequestStream;
}

/**
 * Starts `n` choices for every prompt; choice index = prompt · n + j (vLLM's order). The engine has no `n` yet, so
 * this starts n requests per prompt with seeds seed, seed + 1, ... (from a random base when the request has no
 * seed): choices differ under sampling and a seeded request is reproducible. When the engine runs `n` itself
 * (sharing the prompt's KV blocks), only this function changes. If a start fails, the ones started are aborted.
 */
export function startChoices(llm: LLM, prompts: number[][], params: SamplingParams, n: number, lora: LoRARequest | null): ChoiceRun[] {
  const runs: ChoiceRun[] = [];
  try {
    prompts.forEach((ids, p) => {
      const base = params.seed ?? (n > 1 ? Math.floor(Math.random() * 2 ** 32) : undefined);
      for (let j = 0; j < n; j++) {
        const choiceParams: SamplingParams = { ...params };
        if (base !== undefined) choiceParams.seed = (base + j) >>> 0;
        runs.push({ prompt: p, index: p * n + j, stream: llm.stream({ promptIds: ids }, choiceParams, { lora }) });
      }
    });
  } catch (e) {
    for (const r of runs) r.stream.abort();
    throw e;
  }
  return runs;
}

/** Text of one token for logprobs: its decoded string, or `token_id:<id>` without a tokenizer (vLLM's form). */
export function tokenString(llm: LLM, id: number): string {
  return llm.tokenizer ? llm.tokenizer.decode([id]) : `token_id:${id}`;
}

/** The completions API's logprobs object for some generated tokens. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  /** Per position: the `logprobs` most likely tokens and the sampled one, token string -> logprob. */
  top_logprobs: Record<string, number>[];
  /** Character offset of each token in the choice's text. */
  text_offset: number[];
}

/**
 * Completions logprobs for tokens `ids` (their logprobs `lps`, alternatives `top`), the first token starting at
 * character `offset` of the choice's text. Returns the object and the offset after the last token.
 */
export function completionLogprobs(
  llm: LLM,
  ids: readonly number[],
  lps: readonly number[],
  top: readonly TopLogprob[][] | undefined,
  offset: number,
): { logprobs: CompletionLogprobs; offset: number } {
  const lp: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  ids.forEach((id, i) => {
    const s = tokenString(llm, id);
    lp.tokens.push(s);
    lp.token_logprobs.push(lps[i]!);
    const alts: Record<string, number> = {};
    for (const t of top?.[i] ?? []) alts[tokenString(llm, t.id)] = t.logprob;
    alts[s] = lps[i]!;
    lp.top_logprobs.push(alts);
    lp.text_offset.push(offset);
    offset += s.length;
  });
  return { logprobs: lp, offset };
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
  llm: LLM,
  ids: readonly number[],
  lps: readonly number[],
  top: readonly TopLogprob[][] | undefined,
): ChatTokenLogprob[] {
  return ids.map((id, i) => {
    const token = tokenString(llm, id);
    return {
      token,
      logprob: lps[i]!,
      bytes: [...utf8.encode(token)],
      top_logprobs: (top?.[i] ?? []).map((t) => {
        const s = tokenString(llm, t.id);
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
