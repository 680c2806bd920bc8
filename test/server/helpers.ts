// Shared pieces of the server tests (Node only): the shared model and adapters, the official openai client pointed
// at a server, /metrics parsing, token ids from logprobs, and a copy of the model folder with a chat template.
import { mkdtemp, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { golden, sharedPath, type GoldenCase } from '../helpers/shared.js';

export const ADAPTERS = ['zara', 'pirate', 'robot'] as const;

export function modelDir(): string {
  return sharedPath(golden().model_path);
}

export function adapterDir(name: string): string {
  const a = golden().adapters[name];
  if (!a) throw new Error(`golden.json has no adapter "${name}"`);
  return sharedPath(a.path);
}

/** The openai client for `url`; no retries (429 and 503 must reach the test). */
export function client(url: string, apiKey = 'unused'): OpenAI {
  return new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });
}

/** Completions body for a golden case: token-id prompt, greedy, token ids returned in logprobs (vLLM's extension). */
export function goldenBody(c: GoldenCase, baseName: string, extra: Record<string, unknown> = {}) {
  return {
    model: c.adapter ?? baseName,
    prompt: c.prompt_ids,
    max_tokens: c.max_tokens,
    temperature: 0,
    logprobs: 0,
    return_tokens_as_token_ids: true,
    ...extra,
  };
}

/** `token_id:123` strings (return_tokens_as_token_ids) -> ids. */
export function tokenIds(tokens: readonly string[]): number[] {
  return tokens.map((t) => {
    const m = /^token_id:(\d+)$/.exec(t);
    if (!m) throw new Error(`not a token_id: string: ${JSON.stringify(t)}`);
    return Number(m[1]);
  });
}

/** /metrics as `name{labels}` -> value. */
export async function metrics(url: string, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`, { headers });
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  const out = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** The value of the series `name` whose labels include all of `labels` (0 when there is none). */
export function metric(m: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  for (const [key, v] of m) {
    const brace = key.indexOf('{');
    if ((brace < 0 ? key : key.slice(0, brace)) !== name) continue;
    if (Object.entries(labels).every(([k, val]) => key.includes(`${k}="${val}"`))) return v;
  }
  return 0;
}

/** Polls `check` until it returns true (or throws after `timeoutMs`). */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * A temporary model folder: the shared files symlinked, tokenizer_config.json copied with `chatTemplate` added.
 * Returns its path (the caller removes it).
 */
export async function modelWithChatTemplate(chatTemplate: string): Promise<string> {
  const src = modelDir();
  const dir = await mkdtemp(join(tmpdir(), 'polylora-chat-model-'));
  for (const f of await readdir(src)) {
    if (f !== 'tokenizer_config.json') await symlink(join(src, f), join(dir, f));
  }
  const cfg = JSON.parse(await readFile(join(src, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, chat_template: chatTemplate }));
  return dir;
}
