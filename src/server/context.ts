// What the endpoint handlers share: the engine, the adapters, the counters, and the one way requests start.

import type { ServerResponse } from 'node:http';
import type { LLM } from '../engine/llm.js';
import type { RequestOutput } from '../engine/request.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import type { AdapterManager, Route } from './adapters.js';
import type { ChoiceRun } from './generation.js';
import { errorBody, HttpError, toHttpError } from './http-error.js';
import { FIELD_NAMES } from './protocol.js';
import type { ServerMetrics } from './metrics.js';

export interface ServingContext {
  llm: LLM;
  adapters: AdapterManager;
  metrics: ServerMetrics;
  /**
   * Starts the choices of one API request (n per prompt) for `route`: 429 when the engine's queue is full, else the
   * runs, counted in the metrics and against their adapter until they end.
   */
  start(route: Route, prompts: number[][], params: SamplingParams, n: number, loraScale: number | undefined): ChoiceRun[];
}

/** Answers with JSON (nothing when the client is already gone). */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendError(res: ServerResponse, e: unknown): HttpError {
  const err = toHttpError(e, FIELD_NAMES);
  sendJson(res, err.status, errorBody(err), err.headers);
  return err;
}

/** Aborts `runs` when the client goes away before the response is complete (its KV blocks are freed at once). */
export function abortOnDisconnect(res: ServerResponse, runs: ChoiceRun[]): () => void {
  const abort = () => {
    for (const r of runs) r.stream.abort();
  };
  res.on('close', () => {
    if (!res.writableFinished) abort();
  });
  return abort;
}

/** Every run's final output, in run order; if one fails, the others are aborted and the error rethrown. */
export async function allResults(runs: ChoiceRun[], abort: () => void): Promise<RequestOutput[]> {
  try {
    return await Promise.all(runs.map((x) => x.stream.result));
  } catch (e) {
    abort();
    throw e;
  }
}

/** Prompt ids checked against the vocabulary and the context: a 400 naming `param` (vLLM's wording for length). */
export function checkPrompt(llm: LLM, ids: readonly number[], maxTokens: number, param: string): void {
  const vocab = llm.info.config.vocabSize;
  const bad = ids.findIndex((t) => t >= vocab);
  if (bad >= 0) {
    throw new HttpError(400, `field "${param}": token ${bad} is ${ids[bad]}, not a token id of this model (expected integers in [0, ${vocab}))`, {
      param,
    });
  }
  const maxLen = llm.info.maxModelLen;
  if (ids.length + maxTokens > maxLen) {
    throw new HttpError(
      400,
      `This model's maximum context length is ${maxLen} tokens. However, you requested ${ids.length + maxTokens} tokens ` +
        `(${ids.length} in the messages, ${maxTokens} in the completion). Please reduce the length of the messages or completion.`,
      { param: ids.length >= maxLen ? param : 'max_tokens' },
    );
  }
}
