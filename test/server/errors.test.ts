// Every error status the server answers, in OpenAI's JSON shape: 400 naming the field, 401 on every route but
// /health, 404 listing the served names, 405, 413, 429 when the queue is full, 503 while loading (and after a
// failed load). One engine with room for 2 sequences, so the queue fills with a few requests.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../../src/engine/llm.js';
import { createServer, type PolyloraServer } from '../../src/server/server.js';
import { golden } from '../helpers/shared.js';
import { adapterDir, client, modelDir, waitFor } from './helpers.js';

const g = golden();
const KEY = 'sekrit-key';
const BODY_LIMIT = 64 * 1024;
let llm: LLM;
let server: PolyloraServer;
let url: string;

beforeAll(async () => {
  llm = await LLM.load(modelDir(), { enableLora: true, maxLoras: 2, maxNumSeqs: 2 });
  server = createServer(llm, {
    servedModelNames: ['tiny', 'tiny-alias'],
    apiKey: KEY,
    loraModules: [{ name: 'zara', path: adapterDir('zara') }],
    maxQueuedRequests: 1,
    maxBodyBytes: BODY_LIMIT,
    allowRuntimeLoraUpdating: true,
  });
  url = await server.listen(0);
  await server.ready;
});

afterAll(async () => {
  await server?.close();
  await llm?.close();
});

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  error: { message: string; type: string; param: string | null; code: number } | undefined;
}

/** A raw request (fetch), so statuses and bodies are seen exactly as sent. */
async function call(method: string, path: string, o: { body?: unknown; raw?: string; key?: string | null; base?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const key = o.key === undefined ? KEY : o.key;
  if (key !== null) headers.authorization = `Bearer ${key}`;
  const body = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
  const res = await fetch(`${o.base ?? url}${path}`, { method, headers, body });
  const text = await res.text();
  let error;
  try {
    error = (JSON.parse(text) as { error?: Answer['error'] }).error;
  } catch {
    error = undefined;
  }
  return { status: res.status, headers: res.headers, text, error };
}

const prompt = g.cases[0]!.prompt_ids;

describe('401', () => {
  it('every route but /health needs the key, missing or wrong', async () => {
    const routes: [string, string][] = [
      ['GET', '/v1/models'],
      ['GET', '/v1/models/tiny'],
      ['GET', '/metrics'],
      ['GET', '/version'],
      ['POST', '/v1/completions'],
      ['POST', '/v1/chat/completions'],
      ['POST', '/v1/load_lora_adapter'],
      ['POST', '/v1/unload_lora_adapter'],
      ['GET', '/no/such/route'],
    ];
    for (const [method, path] of routes) {
      for (const key of [null, 'wrong', `${KEY}x`]) {
        const a = await call(method, path, { key, body: method === 'POST' ? { model: 'tiny', prompt } : undefined });
        expect(a.status, `${method} ${path} with key ${key}`).toBe(401);
        expect(a.error).toMatchObject({ type: 'AuthenticationError', code: 401 });
      }
    }
    expect((await call('GET', '/health', { key: null })).status).toBe(200);
    expect((await call('GET', '/version')).status).toBe(200);
    const err = await client(url, 'wrong').models.list().catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((await client(url, KEY).models.list()).data.map((m) => m.id)).toEqual(['tiny', 'tiny-alias', 'zara']);
  });
});

describe('400', () => {
  const bad: [string, Record<string, unknown>, string][] = [
    ['max_tokens', { max_tokens: 'many' }, 'max_tokens'],
    ['max_tokens < 1', { max_tokens: 0 }, 'max_tokens'],
    ['temperature', { temperature: -1 }, 'temperature'],
    ['top_p (checked by the engine, named as sent)', { top_p: 2 }, 'top_p'],
    ['n', { n: 0 }, 'n'],
    ['stop', { stop: 5 }, 'stop'],
    ['logprobs', { logprobs: 50 }, 'logprobs'],
    ['empty prompt', { prompt: [] }, 'prompt'],
    ['token id outside the vocabulary', { prompt: [1, 99999] }, 'prompt'],
    ['second prompt of a list', { prompt: [[1, 2], [1, 70000]] }, 'prompt[1]'],
    ['context too long', { prompt: Array.from({ length: 500 }, () => 80), max_tokens: 100 }, 'max_tokens'],
    ['model not a string', { model: 7 }, 'model'],
    ['suffix (not supported)', { suffix: 'x' }, 'suffix'],
    ['prompt_logprobs', { prompt_logprobs: 21 }, 'prompt_logprobs'],
    ['min_tokens > max_tokens', { min_tokens: 9, max_tokens: 4 }, 'min_tokens'],
    ['logit_bias not an object', { logit_bias: [1, 2] }, 'logit_bias'],
    ['logit_bias value', { logit_bias: { '5': 'up' } }, 'logit_bias[5]'],
    ['logit_bias key outside the vocabulary (checked by the engine)', { logit_bias: { '99999': 1 } }, 'logit_bias[99999]'],
  ];
  for (const [what, patch, param] of bad) {
    it(`completions: ${what} -> field "${param}"`, async () => {
      const a = await call('POST', '/v1/completions', { body: { model: 'tiny', prompt, ...patch } });
      expect(a.status, a.text).toBe(400);
      expect(a.error).toMatchObject({ type: 'BadRequestError', param, code: 400 });
      expect(a.error!.message).toContain(param === 'max_tokens' && what === 'context too long' ? 'maximum context length' : `"${param}"`);
    });
  }

  it('chat: missing messages, bad role; bodies that are not JSON objects', async () => {
    let a = await call('POST', '/v1/chat/completions', { body: { model: 'tiny' } });
    expect([a.status, a.error?.param]).toEqual([400, 'messages']);
    a = await call('POST', '/v1/chat/completions', { body: { model: 'tiny', messages: [{ content: 'x' }] } });
    expect([a.status, a.error?.param]).toEqual([400, 'messages[0].role']);
    a = await call('POST', '/v1/completions', { raw: '{"model": "tiny", ' });
    expect(a.status).toBe(400);
    expect(a.error!.message).toMatch(/not valid JSON/);
    a = await call('POST', '/v1/completions', { body: [1, 2] });
    expect(a.status).toBe(400);
    expect(a.error!.message).toMatch(/JSON object/);
  });

  it('through the openai client: BadRequestError carrying the param', async () => {
    const err = await client(url, KEY).completions.create({ model: 'tiny', prompt, max_tokens: -3 }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.error).toMatchObject({ param: 'max_tokens' });
  });
});

describe('404 and 405', () => {
  it('an unknown model is a 404 whose message lists the served names', async () => {
    const a = await call('POST', '/v1/completions', { body: { model: 'pirate', prompt } });
    expect(a.status).toBe(404);
    expect(a.error).toMatchObject({ type: 'NotFoundError', param: 'model', code: 404 });
    expect(a.error!.message).toBe('The model `pirate` does not exist. Served models: tiny, tiny-alias, zara.');
    const err = await client(url, KEY).chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((await call('GET', '/v1/models/nope')).status).toBe(404);
    expect((await call('GET', '/nope')).status).toBe(404);
  });

  it('every served name of the base works; a wrong method is 405 with Allow', async () => {
    const a = await call('POST', '/v1/completions', { body: { model: 'tiny-alias', prompt, max_tokens: 2 } });
    expect(a.status).toBe(200);
    expect(JSON.parse(a.text).model).toBe('tiny'); // responses carry the first served name, as vLLM
    const b = await call('GET', '/v1/completions');
    expect(b.status).toBe(405);
    expect(b.headers.get('allow')).toBe('POST');
  });
});

describe('413', () => {
  it('a body over the limit is refused, declared or chunked, and the server goes on', async () => {
    const big = JSON.stringify({ model: 'tiny', prompt: 'x'.repeat(BODY_LIMIT) });
    const a = await call('POST', '/v1/completions', { raw: big });
    expect(a.status).toBe(413);
    expect(a.error).toMatchObject({ code: 413 });
    expect(a.error!.message).toContain(`${BODY_LIMIT} bytes`);
    // Without Content-Length (a streamed body), counted while reading.
    const chunks = [big.slice(0, 1000), big.slice(1000)];
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: new ReadableStream({
        pull(c) {
          const next = chunks.shift();
          if (next === undefined) c.close();
          else c.enqueue(new TextEncoder().encode(next));
        },
      }),
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(413);
    expect((await call('POST', '/v1/completions', { body: { model: 'tiny', prompt, max_tokens: 1 } })).status).toBe(200);
  });
});

describe('429', () => {
  it('when running + waiting requests would pass max-num-seqs + max-queued-requests', async () => {
    const openai = client(url, KEY);
    // n = 3 fills the 2 running places and the 1 queue place; ignore_eos keeps them going.
    const long = await openai.completions.create({
      model: 'zara',
      prompt,
      n: 3,
      max_tokens: 400,
      ignore_eos: true,
      temperature: 0,
      stream: true,
    } as OpenAI.Completions.CompletionCreateParamsStreaming);
    const it = long[Symbol.asyncIterator]();
    await it.next();
    const a = await call('POST', '/v1/completions', { body: { model: 'tiny', prompt, max_tokens: 1 } });
    expect(a.status).toBe(429);
    expect(a.error).toMatchObject({ type: 'RateLimitError', code: 429 });
    expect(a.headers.get('retry-after')).toBe('1');
    long.controller.abort();
    await waitFor('the aborted requests to end', () => llm.stats.running + llm.stats.waiting === 0);
    expect((await call('POST', '/v1/completions', { body: { model: 'tiny', prompt, max_tokens: 1 } })).status).toBe(200);
  });
});

describe('503', () => {
  it('while the model loads: /health and every route answer 503, then serve', async () => {
    let release!: (l: LLM) => void;
    const pending = new Promise<LLM>((r) => (release = r));
    const s = createServer(pending, { servedModelNames: ['later'] });
    const base = await s.listen(0);
    try {
      expect((await call('GET', '/health', { base, key: null })).status).toBe(503);
      const a = await call('POST', '/v1/completions', { base, key: null, body: { model: 'later', prompt } });
      expect(a.status).toBe(503);
      expect(a.error).toMatchObject({ type: 'ServiceUnavailableError', code: 503 });
      expect(a.headers.get('retry-after')).toBe('1');
      const err = await client(base).models.list().catch((e) => e);
      expect(err).toBeInstanceOf(OpenAI.APIError);
      expect(err.status).toBe(503);
      release(llm);
      await s.ready;
      expect((await call('GET', '/health', { base, key: null })).status).toBe(200);
      expect((await call('POST', '/v1/completions', { base, key: null, body: { model: 'later', prompt, max_tokens: 1 } })).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('after a failed load: 503 saying why', async () => {
    const s = createServer(Promise.reject(new Error('no such model folder')));
    const base = await s.listen(0);
    try {
      await expect(s.ready).rejects.toThrow('no such model folder');
      const a = await call('GET', '/health', { base, key: null });
      expect(a.status).toBe(503);
      expect(a.error!.message).toContain('no such model folder');
    } finally {
      await s.close();
    }
  });
});
