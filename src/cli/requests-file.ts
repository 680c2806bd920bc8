// `polylora generate --requests FILE.jsonl`: one request per line, run through one engine (one batch where they
// overlap), results printed in file order. A bad line fails that request only, with its line number.
//
// Line format (snake_case, as vLLM's offline batch files):
//   {"prompt_ids": [1, 2, 3]} or {"prompt": "text"},
//   "lora": "<dir|org/name>" | null, "lora_scale": 1.0, "max_tokens": N, "temperature": 0, "top_p", "top_k",
//   "min_p", "seed", "stop": [...], "ignore_eos", "presence_penalty", "frequency_penalty", "repetition_penalty",
//   "logit_bias": {"<token id>": bias}, "min_tokens", "arrival_ms": delay after the start before it is submitted.

import { readFile } from 'node:fs/promises';
import { PolyloraError, isPolyloraError } from '../errors.js';
import type { SamplingParams } from '../engine/sampling-params.js';

export interface FileRequest {
  line: number; // 1-based
  prompt: string | number[];
  lora: string | null;
  loraScale: number;
  params: SamplingParams;
  arrivalMs: number;
}

export interface BadLine {
  line: number;
  error: string;
}

const KNOWN = new Set([
  'prompt',
  'prompt_ids',
  'lora',
  'lora_scale',
  'max_tokens',
  'temperature',
  'top_p',
  'top_k',
  'min_p',
  'seed',
  'stop',
  'ignore_eos',
  'arrival_ms',
  'presence_penalty',
  'frequency_penalty',
  'repetition_penalty',
  'logit_bias',
  'min_tokens',
]);

/** Parses the file; each line is a request or a BadLine (blank lines and lines starting with # are skipped). */
export async function readRequestsFile(path: string, defaults: SamplingParams): Promise<(FileRequest | BadLine)[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new PolyloraError('FILE_NOT_FOUND', 'cannot read the requests file', { file: path, found: (e as NodeJS.ErrnoException).code, cause: e });
  }
  const out: (FileRequest | BadLine)[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === '' || raw.trimStart().startsWith('#')) return;
    try {
      out.push(parseLine(raw, line, defaults, path));
    } catch (e) {
      out.push({ line, error: isPolyloraError(e) ? e.message : String(e) });
    }
  });
  return out;
}

function parseLine(raw: string, line: number, defaults: SamplingParams, file: string): FileRequest {
  const where = `${file}:${line}`;
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(raw) as Record<string, unknown>;
  } catch (e) {
    throw new PolyloraError('INVALID_ARGUMENT', 'not a JSON object', { file: where, found: (e as Error).message });
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) {
    throw new PolyloraError('INVALID_ARGUMENT', 'not a JSON object', { file: where, found: JSON.stringify(j) });
  }
  const unknown = Object.keys(j).filter((k) => !KNOWN.has(k));
  if (unknown.length) {
    throw new PolyloraError('INVALID_ARGUMENT', 'unknown field', {
      file: where,
      field: unknown[0],
      hint: `known fields: ${[...KNOWN].join(', ')}`,
    });
  }
  const num = (k: string): number | undefined => {
    const v = j[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new PolyloraError('INVALID_ARGUMENT', 'not a number', { file: where, field: k, found: JSON.stringify(v) });
    }
    return v;
  };
  let prompt: string | number[];
  if (j.prompt_ids !== undefined) {
    const ids = j.prompt_ids;
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((t) => Number.isInteger(t) && t >= 0)) {
      throw new PolyloraError('INVALID_ARGUMENT', 'bad prompt_ids', {
        file: where,
        field: 'prompt_ids',
        expected: 'a non-empty array of token ids',
        found: JSON.stringify(ids),
      });
    }
    prompt = ids as number[];
  } else if (typeof j.prompt === 'string') {
    prompt = j.prompt;
  } else {
    throw new PolyloraError('INVALID_ARGUMENT', 'no prompt', { file: where, field: 'prompt', hint: 'give "prompt" (text) or "prompt_ids"' });
  }
  const lora = j.lora ?? null;
  if (lora !== null && (typeof lora !== 'string' || lora === '')) {
    throw new PolyloraError('INVALID_ARGUMENT', 'bad lora', { file: where, field: 'lora', expected: 'a folder, a Hub id or null', found: JSON.stringify(lora) });
  }
  const stop = j.stop;
  if (stop !== undefined && (!Array.isArray(stop) || !stop.every((s) => typeof s === 'string'))) {
    throw new PolyloraError('INVALID_ARGUMENT', 'bad stop', { file: where, field: 'stop', expected: 'an array of strings' });
  }
  const logitBias = j.logit_bias;
  if (logitBias !== undefined && (logitBias === null || typeof logitBias !== 'object' || Array.isArray(logitBias))) {
    throw new PolyloraError('INVALID_ARGUMENT', 'bad logit_bias', { file: where, field: 'logit_bias', expected: 'an object mapping token ids to biases' });
  }
  const arrivalMs = num('arrival_ms') ?? 0;
  if (arrivalMs < 0) throw new PolyloraError('INVALID_ARGUMENT', 'negative arrival_ms', { file: where, field: 'arrival_ms' });
  return {
    line,
    prompt,
    lora: lora as string | null,
    loraScale: num('lora_scale') ?? 1,
    arrivalMs,
    params: {
      ...defaults,
      maxTokens: num('max_tokens') ?? defaults.maxTokens,
      minTokens: num('min_tokens'),
      temperature: num('temperature') ?? defaults.temperature,
      topP: num('top_p') ?? defaults.topP,
      topK: num('top_k') ?? defaults.topK,
      minP: num('min_p') ?? defaults.minP,
      seed: num('seed') ?? defaults.seed,
      presencePenalty: num('presence_penalty'),
      frequencyPenalty: num('frequency_penalty'),
      repetitionPenalty: num('repetition_penalty'),
      logitBias: logitBias as Record<number, number> | undefined,
      stop: stop as string[] | undefined,
      ignoreEos: j.ignore_eos === undefined ? defaults.ignoreEos : j.ignore_eos === true,
    },
  };
}
