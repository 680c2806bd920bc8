// Per-request sampling parameters, named as in vLLM's SamplingParams (camelCase), with vLLM's defaults, and
// checked once when a request is added: an out-of-range value is an error naming the field.

import { PolyloraError } from '../errors.js';
import { MAX_LOGIT_BIAS } from '../kernels/sample.js';

export interface SamplingParams {
  /** Tokens to generate at most (default 16, as vLLM). */
  maxTokens?: number;
  /** 0 = greedy (default 1.0). */
  temperature?: number;
  /** Nucleus sampling mass in (0, 1] (default 1 = off). */
  topP?: number;
  /** Keep the k most likely tokens; 0 or -1 = off (default). */
  topK?: number;
  /** Drop tokens less likely than minP × the most likely one; 0 = off (default). */
  minP?: number;
  /** Seed of this request's random stream: the same seed gives the same tokens whatever else runs. */
  seed?: number;
  /**
   * Generate at least this many tokens before EOS, a stop token id or a stop string may end the output (vLLM's
   * min_tokens): until then those token ids cannot be sampled and stop strings are not looked for. Default 0.
   */
  minTokens?: number;
  /** Extra token ids that end generation (kept in the output ids, as vLLM). */
  stopTokenIds?: number[];
  /** Keep generating past EOS (benchmarks). */
  ignoreEos?: boolean;
  /** Strings that end generation; the text stops before them (they never appear in the output). */
  stop?: string[];
  /** Return this many most likely tokens (with logprobs) at each generated position, besides the sampled one. */
  logprobs?: number;
  /** OpenAI-style penalties on tokens already generated: subtract presencePenalty once and frequencyPenalty per
   *  occurrence from their logits (default 0). */
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** transformers/vLLM-style multiplicative penalty on tokens of the prompt and output (default 1 = off). */
  repetitionPenalty?: number;
  /** Completions per prompt (they share the prompt's KV blocks), default 1. */
  n?: number;
  /**
   * Also score the prompt: the log-probability of each prompt token given the ones before it, with this many top
   * alternatives (vLLM's prompt_logprobs; OpenAI's echo + logprobs). Default: off.
   */
  promptLogprobs?: number;
  /**
   * Added to the logits of these token ids before penalties and sampling (OpenAI's and vLLM's logit_bias), clamped to
   * [-100, 100] as vLLM does; -100 all but bans a token, +100 all but forces it. At most MAX_LOGIT_BIAS entries.
   * Logprobs stay those of the model (before the bias), as vLLM reports them.
   */
  logitBias?: Record<number, number> | Map<number, number>;
}

export interface ResolvedSampling {
  maxTokens: number;
  minTokens: number;
  temperature: number;
  topP: number;
  topK: number; // 0 = off
  minP: number;
  seed: number; // u32
  stopTokenIds: number[];
  ignoreEos: boolean;
  stop: string[];
  logprobs: number; // top-N per position, 0 = only the sampled token's
  presencePenalty: number;
  frequencyPenalty: number;
  repetitionPenalty: number;
  n: number;
  promptLogprobs: number; // -1 = off
  logitBias: Map<number, number> | null; // token id -> bias (clamped), null when none
}

/** Most top-N logprobs a request may ask for (OpenAI allows up to 20). */
export const MAX_TOP_LOGPROBS = 20;

/** vLLM clamps logit_bias values to this range (OpenAI's documented one). */
const LOGIT_BIAS_LIMIT = 100;

/** `vocabSize`: when known, logit_bias keys must be ids below it. */
export function resolveSampling(p: SamplingParams = {}, where = 'sampling params', vocabSize?: number): ResolvedSampling {
  const bad = (field: string, expected: string, found: unknown): never => {
    throw new PolyloraError('INVALID_ARGUMENT', `invalid ${where}`, { field, expected, found: JSON.stringify(found) });
  };
  const num = (field: keyof SamplingParams, def: number, ok: (v: number) => boolean, expected: string): number => {
    const v = p[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) bad(field, expected, v);
    return v as number;
  };
  const maxTokens = num('maxTokens', 16, (v) => Number.isInteger(v) && v >= 1, 'an integer >= 1');
  const minTokens = num('minTokens', 0, (v) => Number.isInteger(v) && v >= 0 && v <= maxTokens, `an integer in [0, maxTokens = ${maxTokens}]`);
  const temperature = num('temperature', 1, (v) => v >= 0, 'a number >= 0');
  const topP = num('topP', 1, (v) => v > 0 && v <= 1, 'a number in (0, 1]');
  const topK = num('topK', 0, (v) => Number.isInteger(v) && v >= -1, 'an integer >= 1, or 0 / -1 for off');
  const minP = num('minP', 0, (v) => v >= 0 && v <= 1, 'a number in [0, 1]');
  const seed = num('seed', Math.floor(Math.random() * 2 ** 32), (v) => Number.isInteger(v), 'an integer');
  const stopTokenIds = p.stopTokenIds ?? [];
  if (!Array.isArray(stopTokenIds) || !stopTokenIds.every((t) => Number.isInteger(t) && t >= 0)) {
    bad('stopTokenIds', 'an array of token ids', stopTokenIds);
  }
  const stop = p.stop ?? [];
  if (!Array.isArray(stop) || !stop.every((s) => typeof s === 'string')) bad('stop', 'an array of strings', stop);
  const logprobs = num('logprobs', 0, (v) => Number.isInteger(v) && v >= 0 && v <= MAX_TOP_LOGPROBS, `an integer in [0, ${MAX_TOP_LOGPROBS}]`);
  const presencePenalty = num('presencePenalty', 0, (v) => v >= -2 && v <= 2, 'a number in [-2, 2]');
  const frequencyPenalty = num('frequencyPenalty', 0, (v) => v >= -2 && v <= 2, 'a number in [-2, 2]');
  const repetitionPenalty = num('repetitionPenalty', 1, (v) => v > 0 && v <= 10, 'a number in (0, 10]');
  const n = num('n', 1, (v) => Number.isInteger(v) && v >= 1 && v <= 64, 'an integer in [1, 64]');
  const promptLogprobs = num('promptLogprobs', -1, (v) => Number.isInteger(v) && v >= 0 && v <= MAX_TOP_LOGPROBS, `an integer in [0, ${MAX_TOP_LOGPROBS}]`);
  const logitBias = resolveLogitBias(p.logitBias, vocabSize, bad);
  return {
    maxTokens,
    minTokens,
    temperature,
    topP,
    topK: topK < 0 ? 0 : topK,
    minP,
    seed: seed >>> 0,
    stopTokenIds,
    ignoreEos: !!p.ignoreEos,
    stop,
    logprobs,
    presencePenalty,
    frequencyPenalty,
    repetitionPenalty,
    n,
    promptLogprobs,
    logitBias,
  };
}

/** logit_bias as a map of token id -> clamped bias (keys may be numeric strings, as in OpenAI's JSON). */
function resolveLogitBias(
  raw: SamplingParams['logitBias'],
  vocabSize: number | undefined,
  bad: (field: string, expected: string, found: unknown) => never,
): Map<number, number> | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) bad('logitBias', 'an object mapping token ids to biases', raw);
  const entries = raw instanceof Map ? [...raw.entries()] : Object.entries(raw);
  if (entries.length > MAX_LOGIT_BIAS) bad('logitBias', `at most ${MAX_LOGIT_BIAS} entries`, `${entries.length} entries`);
  const out = new Map<number, number>();
  const idRule = vocabSize === undefined ? 'an integer token id >= 0' : `an integer token id in [0, ${vocabSize})`;
  for (const [key, value] of entries) {
    const id = typeof key === 'number' ? key : /^\d+$/.test(String(key)) ? Number(key) : NaN;
    if (!Number.isInteger(id) || id < 0 || (vocabSize !== undefined && id >= vocabSize)) {
      bad(`logitBias[${String(key)}]`, `${idRule} as the key (hint: ids come from the model's tokenizer)`, key);
    }
    if (typeof value !== 'number' || !Number.isFinite(value)) bad(`logitBias[${String(key)}]`, 'a finite number', value);
    if (value !== 0) out.set(id, Math.min(LOGIT_BIAS_LIMIT, Math.max(-LOGIT_BIAS_LIMIT, value)));
  }
  return out.size > 0 ? out : null;
}
