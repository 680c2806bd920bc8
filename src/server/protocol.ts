// OpenAI request bodies -> typed requests, checked field by field: a wrong type or value is a 400 that names the
// field as the client spelled it. Fields and defaults follow OpenAI's API and vLLM's extensions (top_k, min_p,
// repetition_penalty, min_tokens, stop_token_ids, ignore_eos, add_generation_prompt, chat_template_kwargs; logit_bias is clamped to
// [-100, 100] as vLLM does); polylora adds
// `lora_scale` (the per-request multiplier on the adapter's scale). Unknown fields are ignored, as vLLM does.

import type { SamplingParams } from '../engine/sampling-params.js';
import { resolveSampling } from '../engine/sampling-params.js';
import type { ChatMessage } from '../tokenizer/chat-template.js';
import { badField, HttpError, toHttpError } from './http-error.js';

/** SamplingParams field -> the request field it comes from (for errors raised by the engine's checks). */
export const FIELD_NAMES: Record<string, string> = {
  maxTokens: 'max_tokens',
  minTokens: 'min_tokens',
  temperature: 'temperature',
  topP: 'top_p',
  topK: 'top_k',
  minP: 'min_p',
  seed: 'seed',
  stop: 'stop',
  stopTokenIds: 'stop_token_ids',
  ignoreEos: 'ignore_eos',
  logprobs: 'logprobs',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  repetitionPenalty: 'repetition_penalty',
  n: 'n',
  prompt: 'prompt',
  logitBias: 'logit_bias',
};

/** Most choices per prompt, and most top logprobs per position (vLLM's default max_logprobs). */
export const MAX_N = 128;
export const MAX_LOGPROBS = 20;

/** What completions and chat requests share. */
export interface GenerationRequest {
  /** The `model` field; undefined = the base model (vLLM accepts a missing model). */
  model: string | undefined;
  /** Sampling for every choice; `maxTokens` undefined = as much as the context allows (chat only). `n` is not set. */
  params: SamplingParams;
  /** Choices per prompt. */
  n: number;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with `usage` and no choices. */
  includeUsage: boolean;
  /** polylora extension: multiplies the adapter's own scale for this request (0 = the base model). */
  loraScale: number | undefined;
  /** vLLM's return_tokens_as_token_ids: logprobs name tokens `token_id:<id>`. */
  tokensAsIds: boolean;
}

/** One prompt of a completions request, as text or as token ids. */
export type CompletionPrompt = { text: string } | { ids: number[] };

export interface CompletionRequest extends GenerationRequest {
  prompts: CompletionPrompt[];
  echo: boolean;
  /** `logprobs`: how many most likely tokens to list per position (null = no logprobs). */
  logprobs: number | null;
}

export interface ChatRequest extends GenerationRequest {
  messages: ChatMessage[];
  addGenerationPrompt: boolean;
  /** chat_template_kwargs: extra template variables. */
  templateVariables: Record<string, unknown>;
  /** `logprobs: true`: return the sampled tokens' logprobs; `top_logprobs` alternatives per position. */
  logprobs: boolean;
  topLogprobs: number;
}

type Body = Record<string, unknown>;

/** The request body as an object, or a 400. */
export function asBody(v: unknown): Body {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new HttpError(400, `the request body must be a JSON object, found ${Array.isArray(v) ? 'an array' : typeof v}`);
  }
  return v as Body;
}

const present = (b: Body, name: string) => b[name] !== undefined && b[name] !== null;

function int(b: Body, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (!present(b, name)) return undefined;
  const v = b[name];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    const range = min === Number.MIN_SAFE_INTEGER ? '' : max === Number.MAX_SAFE_INTEGER ? ` >= ${min}` : ` in [${min}, ${max}]`;
    throw badField(name, `an integer${range}`, v);
  }
  return v;
}

function num(b: Body, name: string): number | undefined {
  if (!present(b, name)) return undefined;
  const v = b[name];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw badField(name, 'a number', v);
  return v;
}

function bool(b: Body, name: string): boolean | undefined {
  if (!present(b, name)) return undefined;
  const v = b[name];
  if (typeof v !== 'boolean') throw badField(name, 'true or false', v);
  return v;
}

function isTokenIds(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((t) => typeof t === 'number' && Number.isInteger(t) && t >= 0);
}

/** Fields that would change the output in ways polylora does not implement: refused rather than ignored. */
function refuseUnsupported(b: Body, names: string[]): void {
  for (const name of names) {
    const v = b[name];
    const empty = v === undefined || v === null || v === '' || v === false || (typeof v === 'object' && Object.keys(v as object).length === 0);
    if (!empty) throw new HttpError(400, `field "${name}" is not supported by polylora`, { param: name });
  }
}

/** The fields shared by both endpoints. `defaultMaxTokens` undefined: max_tokens stays open when absent. */
function parseGeneration(b: Body, defaultMaxTokens: number | undefined, maxTokensFields: string[]): GenerationRequest {
  if (present(b, 'model') && typeof b.model !== 'string') throw badField('model', 'a string', b.model);
  const n = int(b, 'n', 1, MAX_N) ?? 1;
  const bestOf = int(b, 'best_of', 1);
  if (bestOf !== undefined && bestOf !== n) {
    throw new HttpError(400, 'field "best_of": only best_of = n is supported (every sampled sequence is returned)', { param: 'best_of' });
  }
  let maxTokens: number | undefined;
  for (const f of maxTokensFields) maxTokens ??= int(b, f, 1);
  let stop: string[] | undefined;
  if (present(b, 'stop')) {
    const s = b.stop;
    if (typeof s === 'string') stop = s === '' ? [] : [s];
    else if (Array.isArray(s) && s.every((x) => typeof x === 'string')) stop = (s as string[]).filter((x) => x !== '');
    else throw badField('stop', 'a string or an array of strings', s);
  }
  let stopTokenIds: number[] | undefined;
  if (present(b, 'stop_token_ids')) {
    if (!Array.isArray(b.stop_token_ids) || !b.stop_token_ids.every((t) => Number.isInteger(t) && t >= 0)) {
      throw badField('stop_token_ids', 'an array of token ids', b.stop_token_ids);
    }
    stopTokenIds = b.stop_token_ids as number[];
  }
  const streamOptions = b.stream_options;
  if (streamOptions !== undefined && streamOptions !== null && (typeof streamOptions !== 'object' || Array.isArray(streamOptions))) {
    throw badField('stream_options', 'an object', streamOptions);
  }
  const includeUsage = bool((streamOptions ?? {}) as Body, 'include_usage') ?? false;
  const params: SamplingParams = {
    maxTokens: maxTokens ?? defaultMaxTokens,
    minTokens: int(b, 'min_tokens', 0),
    temperature: num(b, 'temperature'),
    topP: num(b, 'top_p'),
    topK: int(b, 'top_k', -1),
    minP: num(b, 'min_p'),
    seed: int(b, 'seed', Number.MIN_SAFE_INTEGER),
    stop,
    stopTokenIds,
    ignoreEos: bool(b, 'ignore_eos'),
    presencePenalty: num(b, 'presence_penalty'),
    frequencyPenalty: num(b, 'frequency_penalty'),
    repetitionPenalty: num(b, 'repetition_penalty'),
    logitBias: present(b, 'logit_bias') ? (b.logit_bias as Record<number, number>) : undefined, // checked below
  };
  for (const k of Object.keys(params) as (keyof SamplingParams)[]) if (params[k] === undefined) delete params[k];
  // The engine's own range checks, run now so that a bad value fails the request before anything starts.
  try {
    resolveSampling({ ...params, maxTokens: params.maxTokens ?? Math.max(1, params.minTokens ?? 1) }, 'request');
  } catch (e) {
    throw toHttpError(e, FIELD_NAMES);
  }
  return {
    model: present(b, 'model') ? (b.model as string) : undefined,
    params,
    n,
    stream: bool(b, 'stream') ?? false,
    includeUsage,
    loraScale: num(b, 'lora_scale'),
    tokensAsIds: bool(b, 'return_tokens_as_token_ids') ?? false,
  };
}

/** POST /v1/completions. `prompt`: a string, strings, token ids, or arrays of token ids. */
export function parseCompletionRequest(body: unknown): CompletionRequest {
  const b = asBody(body);
  refuseUnsupported(b, ['suffix']);
  const p = b.prompt;
  let prompts: CompletionPrompt[];
  if (typeof p === 'string') prompts = [{ text: p }];
  else if (isTokenIds(p)) prompts = [{ ids: p }];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string')) prompts = (p as string[]).map((text) => ({ text }));
  else if (Array.isArray(p) && p.length > 0 && p.every(isTokenIds)) prompts = (p as number[][]).map((ids) => ({ ids }));
  else {
    throw badField('prompt', 'a string, an array of strings, an array of token ids, or an array of token-id arrays (none empty)', p);
  }
  const echo = bool(b, 'echo') ?? false;
  const logprobs = int(b, 'logprobs', 0, MAX_LOGPROBS) ?? null;
  // vLLM's prompt_logprobs; OpenAI's echo + logprobs scores the prompt too.
  const promptLogprobs = int(b, 'prompt_logprobs', 0, MAX_LOGPROBS) ?? (echo && logprobs !== null ? logprobs : null);
  const g = parseGeneration(b, 16, ['max_tokens']);
  if (logprobs !== null) g.params.logprobs = logprobs;
  if (promptLogprobs !== null) g.params.promptLogprobs = promptLogprobs;
  return { ...g, prompts, echo, logprobs };
}

/** POST /v1/chat/completions. */
export function parseChatRequest(body: unknown): ChatRequest {
  const b = asBody(body);
  refuseUnsupported(b, ['tools', 'functions', 'continue_final_message']);
  if (present(b, 'response_format')) {
    const rf = b.response_format as { type?: unknown };
    if (typeof rf !== 'object' || rf.type !== 'text') {
      throw new HttpError(400, 'field "response_format": only {"type": "text"} is supported', { param: 'response_format' });
    }
  }
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw badField('messages', 'a non-empty array of messages', b.messages);
  const messages = b.messages.map((m, i) => parseMessage(m, `messages[${i}]`));
  const logprobs = bool(b, 'logprobs') ?? false;
  const topLogprobs = int(b, 'top_logprobs', 0, MAX_LOGPROBS) ?? 0;
  if (topLogprobs > 0 && !logprobs) {
    throw new HttpError(400, 'field "top_logprobs": needs "logprobs": true', { param: 'top_logprobs' });
  }
  const vars = b.chat_template_kwargs;
  if (vars !== undefined && vars !== null && (typeof vars !== 'object' || Array.isArray(vars))) {
    throw badField('chat_template_kwargs', 'an object', vars);
  }
  const g = parseGeneration(b, undefined, ['max_completion_tokens', 'max_tokens']);
  if (logprobs) g.params.logprobs = topLogprobs;
  return {
    ...g,
    messages,
    addGenerationPrompt: bool(b, 'add_generation_prompt') ?? true,
    templateVariables: (vars ?? {}) as Record<string, unknown>,
    logprobs,
    topLogprobs,
  };
}

/** One chat message; content parts of type "text" are joined with newlines (as vLLM does). */
function parseMessage(m: unknown, where: string): ChatMessage {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw badField(where, 'a message object {role, content}', m);
  const msg = m as Body;
  if (typeof msg.role !== 'string' || msg.role === '') throw badField(`${where}.role`, 'a role string (system, user, assistant, ...)', msg.role);
  const c = msg.content;
  let content: string;
  if (typeof c === 'string') content = c;
  else if (c === null || c === undefined) content = '';
  else if (Array.isArray(c)) {
    const texts = c.map((part, j) => {
      const p = part as Body;
      if (typeof p !== 'object' || p === null || p.type !== 'text' || typeof p.text !== 'string') {
        throw badField(`${where}.content[${j}]`, 'a text part {"type": "text", "text": "..."} (polylora models read text only)', part);
      }
      return p.text;
    });
    content = texts.join('\n');
  } else throw badField(`${where}.content`, 'a string or an array of text parts', c);
  return { ...msg, role: msg.role, content };
}
