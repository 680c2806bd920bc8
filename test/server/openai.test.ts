// The server through the official `openai` npm client against the real engine on TinyStories with the three shared
// adapters: model listing, completions (token-id and text prompts, arrays, n, echo, seed, logprobs, stop),
// streaming, golden.json's tokens for every case alone and all at once, a 64-request streaming load, and clients
// that disconnect mid-stream (their KV blocks come back, seen through /metrics).
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../../src/engine/llm.js';
import { createServer, type PolyloraServer } from '../../src/server/server.js';
import { golden, type GoldenCase } from '../helpers/shared.js';
import { ADAPTERS, adapterDir, client, goldenBody, metric, metrics, modelDir, tokenIds, waitFor } from './helpers.js';

const g = golden();
const BASE = 'tinystories';
let llm: LLM;
let server: PolyloraServer;
let url: string;
let openai: OpenAI;

beforeAll(async () => {
  llm = await LLM.load(modelDir(), { enableLora: true, maxLoras: 4, maxNumSeqs: 64 });
  server = createServer(llm, {
    servedModelNames: [BASE],
    loraModules: ADAPTERS.map((name) => ({ name, path: adapterDir(name) })),
  });
  url = await server.listen(0);
  await server.ready;
  openai = client(url);
});

afterAll(async () => {
  await server?.close();
  await llm?.close();
});

type Completion = OpenAI.Completions.Completion;

/** Token ids and text of a non-streamed golden request. */
async function complete(c: GoldenCase, extra: Record<string, unknown> = {}) {
  const body = goldenBody(c, BASE, extra);
  const res: Completion = await openai.completions.create(body as OpenAI.Completions.CompletionCreateParamsNonStreaming);
  const choice = res.choices[0]!;
  return { res, ids: tokenIds(choice.logprobs!.tokens!), text: choice.text };
}

/** The same, streamed: ids and text put together from the chunks. */
async function completeStreamed(c: GoldenCase) {
  const body = { ...goldenBody(c, BASE), stream: true };
  const stream = await openai.completions.create(body as OpenAI.Completions.CompletionCreateParamsStreaming);
  const ids: number[] = [];
  let text = '';
  let chunks = 0;
  let finish: string | null = null;
  let model = '';
  for await (const chunk of stream) {
    chunks++;
    model = chunk.model;
    const ch = chunk.choices[0]!;
    ids.push(...tokenIds(ch.logprobs?.tokens ?? []));
    text += ch.text;
    finish = ch.finish_reason ?? finish;
  }
  return { ids, text, chunks, finish, model };
}

function describeMismatch(c: GoldenCase, ids: number[]): string {
  const i = ids.findIndex((t, k) => t !== c.expected_ids[k]);
  return `${c.name}/${c.adapter ?? 'base'}: first mismatch at token ${i}: expected ${c.expected_ids[i]}, got ${ids[i]}`;
}

describe('models', () => {
  it('lists the base and the adapters, with parent = base and root = the adapter folder (as vLLM)', async () => {
    const list = await openai.models.list();
    const cards = list.data as (OpenAI.Models.Model & { parent: string | null; root: string })[];
    expect(cards.map((m) => m.id)).toEqual([BASE, ...ADAPTERS]);
    expect(cards[0]).toMatchObject({ object: 'model', parent: null, root: modelDir() });
    for (const name of ADAPTERS) {
      expect(cards.find((m) => m.id === name)).toMatchObject({ parent: BASE, root: adapterDir(name) });
    }
    const one = await openai.models.retrieve('pirate');
    expect(one.id).toBe('pirate');
  });
});

describe('completions', () => {
  it("gives golden.json's tokens for every case, each request alone, and names the adapter that served it", async () => {
    for (const c of g.cases) {
      const { res, ids, text } = await complete(c);
      expect(ids, describeMismatch(c, ids)).toEqual(c.expected_ids);
      expect(text).toBe(c.expected_text);
      expect(res.model).toBe(c.adapter ?? BASE);
      expect(res.choices[0]!.finish_reason).toBe(ids.length === c.max_tokens ? 'length' : 'stop');
      expect(res.usage).toEqual({ prompt_tokens: c.prompt_ids.length, completion_tokens: ids.length, total_tokens: c.prompt_ids.length + ids.length });
    }
  });

  it('gives the same tokens for all cases at once (base and three adapters mixed in one batch)', async () => {
    const before = llm.stats.maxRowsInStep;
    const results = await Promise.all(g.cases.map((c) => complete(c)));
    results.forEach(({ ids }, i) => expect(ids, describeMismatch(g.cases[i]!, ids)).toEqual(g.cases[i]!.expected_ids));
    // They really ran together: some step sampled for more requests than one adapter kind has cases.
    expect(Math.max(before, llm.stats.maxRowsInStep)).toBeGreaterThan(g.cases.length / 4);
  });

  it('streams the same tokens and text as the non-streamed answer, a chunk per token', async () => {
    for (const c of g.cases.filter((x) => x.name === 'once-there-was')) {
      const s = await completeStreamed(c);
      expect(s.ids, describeMismatch(c, s.ids)).toEqual(c.expected_ids);
      expect(s.text).toBe(c.expected_text);
      expect(s.chunks).toBe(c.expected_ids.length);
      expect(s.finish).toBe('length');
      expect(s.model).toBe(c.adapter ?? BASE);
    }
  });

  it('takes an array of prompts with n choices each, in vLLM order (prompt · n + j)', async () => {
    const [a, b] = [g.cases.find((c) => c.name === 'one-day' && c.adapter === 'zara')!, g.cases.find((c) => c.name === 'dog' && c.adapter === 'zara')!];
    const res = await openai.completions.create({ model: 'zara', prompt: [a.prompt_ids, b.prompt_ids], n: 2, max_tokens: 32, temperature: 0 });
    expect(res.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(res.choices.map((c) => c.text)).toEqual([a.expected_text, a.expected_text, b.expected_text, b.expected_text]);
    expect(res.usage?.prompt_tokens).toBe(a.prompt_ids.length + b.prompt_ids.length);
    expect(res.usage?.completion_tokens).toBe(2 * (a.expected_ids.length + b.expected_ids.length));
  });

  it('encodes text prompts with the tokenizer and echoes them', async () => {
    const c = g.cases.find((x) => x.name === 'once-there-was' && x.adapter === 'pirate')!;
    const res = await openai.completions.create({ model: 'pirate', prompt: c.prompt_text, max_tokens: 32, temperature: 0, echo: true });
    expect(res.choices[0]!.text).toBe(c.prompt_text + c.expected_text);
    expect(res.usage?.prompt_tokens).toBe(c.prompt_ids.length);
    const many = await openai.completions.create({ model: 'pirate', prompt: [c.prompt_text, c.prompt_text], max_tokens: 32, temperature: 0 });
    expect(many.choices.map((x) => x.text)).toEqual([c.expected_text, c.expected_text]);
  });

  it('samples reproducibly with a seed; choice j uses the seed the engine gives completion j of n', async () => {
    const c = g.cases[0]!;
    // A high temperature: TinyStories is confident enough that different seeds often agree at 1.
    const body = { model: 'robot', prompt: c.prompt_ids, max_tokens: 24, temperature: 2.5, seed: 1234, n: 2 };
    const [r1, r2] = [await openai.completions.create(body), await openai.completions.create(body)];
    expect(r1.choices.map((x) => x.text)).toEqual(r2.choices.map((x) => x.text));
    const second = await openai.completions.create({ ...body, n: 1, seed: (1234 + Math.imul(1, 0x9e3779b9)) >>> 0 });
    expect(second.choices[0]!.text).toBe(r1.choices[1]!.text);
    const other = await openai.completions.create({ ...body, n: 1, seed: 99 });
    expect(other.choices[0]!.text).not.toBe(r1.choices[0]!.text);
  });

  it('returns logprobs: the N most likely tokens per position, the sampled one among them, offsets into the text', async () => {
    const c = g.cases.find((x) => x.name === 'park' && x.adapter === null)!;
    const res = await openai.completions.create({ model: BASE, prompt: c.prompt_ids, max_tokens: 12, temperature: 0, logprobs: 3 });
    const lp = res.choices[0]!.logprobs!;
    expect(lp.tokens!.join('')).toBe(res.choices[0]!.text);
    expect(lp.tokens!.length).toBe(12);
    lp.tokens!.forEach((tok, i) => {
      const top = lp.top_logprobs![i]!;
      expect(Object.keys(top).length).toBeGreaterThanOrEqual(3);
      expect(Object.keys(top).length).toBeLessThanOrEqual(4);
      // Greedy: the sampled token is the most likely one.
      expect(top[tok]).toBe(lp.token_logprobs![i]);
      expect(lp.token_logprobs![i]).toBe(Math.max(...Object.values(top)));
      expect(lp.token_logprobs![i]).toBeLessThanOrEqual(0);
      if (i > 0) expect(lp.text_offset![i]).toBe(lp.text_offset![i - 1]! + lp.tokens![i - 1]!.length);
    });
  });

  it('echo with logprobs scores the prompt too: its tokens lead, the first with null, the rest as the engine scores them', async () => {
    const c = g.cases.find((x) => x.name === 'dog' && x.adapter === 'pirate')!;
    const body = { model: 'pirate', prompt: c.prompt_text, max_tokens: 6, temperature: 0, echo: true, logprobs: 2 };
    const res = await openai.completions.create(body);
    const lp = res.choices[0]!.logprobs!;
    const n = c.prompt_ids.length;
    expect(lp.tokens!.length).toBe(n + 6);
    // The text echoes the prompt as sent; the prompt's token strings are what the model saw (BOS included), and the
    // completion's tokens join to the rest of the text.
    expect(res.choices[0]!.text.startsWith(c.prompt_text)).toBe(true);
    expect(lp.tokens!.slice(n).join('')).toBe(res.choices[0]!.text.slice(c.prompt_text.length));
    expect([lp.token_logprobs![0], lp.top_logprobs![0]]).toEqual([null, null]);
    // The engine's own scores of the same prompt with the same adapter.
    const [ref] = await llm.generate({ promptIds: c.prompt_ids }, { temperature: 0, maxTokens: 6, promptLogprobs: 2 }, { lora: { name: 'pirate', path: adapterDir('pirate') } });
    expect(lp.token_logprobs!.slice(1, n)).toEqual(ref!.promptLogprobs!.slice(1).map((p) => p!.logprob));
    expect(lp.token_logprobs!.slice(n)).toEqual(ref!.logprobs);
    lp.text_offset!.forEach((o, i) => i > 0 && expect(o).toBe(lp.text_offset![i - 1]! + lp.tokens![i - 1]!.length));
    // Streamed: the first chunk carries the prompt and its scores; the whole stream says the same.
    const stream = await openai.completions.create({ ...body, stream: true });
    const tokens: (number | null)[] = [];
    for await (const chunk of stream) tokens.push(...(chunk.choices[0]?.logprobs?.token_logprobs ?? []));
    expect(tokens).toEqual(lp.token_logprobs);
  });

  it('logit_bias changes the tokens as the library does (-100 bans golden\'s first token), streamed or not', async () => {
    const c = g.cases.find((x) => x.adapter === 'robot')!;
    const logitBias = { [c.expected_ids[0]!]: -100, [c.expected_ids[3]!]: 4 };
    const { ids } = await complete(c, { logit_bias: Object.fromEntries(Object.entries(logitBias).map(([k, v]) => [String(k), v])) });
    const [want] = await llm.generate({ promptIds: c.prompt_ids }, { temperature: 0, maxTokens: c.max_tokens, logitBias }, { lora: { name: 'robot', path: adapterDir('robot') } });
    expect(ids).toEqual(want!.tokenIds);
    expect(ids[0]).not.toBe(c.expected_ids[0]);
    const stream = await openai.completions.create({ ...goldenBody(c, BASE, { logit_bias: logitBias }), stream: true } as OpenAI.Completions.CompletionCreateParamsStreaming);
    const streamed: number[] = [];
    for await (const chunk of stream) streamed.push(...tokenIds(chunk.choices[0]?.logprobs?.tokens ?? []));
    expect(streamed).toEqual(want!.tokenIds);
  });

  it('min_tokens holds a stop token id back until then, as the library does', async () => {
    const c = g.cases.find((x) => x.adapter === null)!;
    const stopId = c.expected_ids[2]!;
    const { ids, res } = await complete(c, { min_tokens: 6, stop_token_ids: [stopId] });
    const [want] = await llm.generate({ promptIds: c.prompt_ids }, { temperature: 0, maxTokens: c.max_tokens, minTokens: 6, stopTokenIds: [stopId] });
    expect(ids).toEqual(want!.tokenIds);
    expect(ids.length).toBeGreaterThan(6);
    expect(ids.slice(0, 6)).not.toContain(stopId);
    expect(res.choices[0]!.finish_reason).toBe(want!.finishReason === 'stop' ? 'stop' : 'length');
  });

  it('ends at a stop string, which never appears in the text, streamed or not', async () => {
    const c = g.cases.find((x) => x.name === 'once-there-was' && x.adapter === 'zara')!;
    const stop = ' loved';
    const cut = c.expected_text.slice(0, c.expected_text.indexOf(stop));
    const res = await openai.completions.create({ model: 'zara', prompt: c.prompt_ids, max_tokens: 32, temperature: 0, stop: [stop, 'never seen'] });
    expect(res.choices[0]!.text).toBe(cut);
    expect(res.choices[0]!.finish_reason).toBe('stop');
    expect((res.choices[0] as unknown as { stop_reason: string }).stop_reason).toBe(stop);
    const stream = await openai.completions.create({ model: 'zara', prompt: c.prompt_ids, max_tokens: 32, temperature: 0, stop, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    expect(text).toBe(cut);
  });

  it('reports usage in a last chunk with stream_options.include_usage', async () => {
    const c = g.cases[0]!;
    const stream = await openai.completions.create({
      model: BASE,
      prompt: c.prompt_ids,
      max_tokens: 5,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage).toEqual({ prompt_tokens: c.prompt_ids.length, completion_tokens: 5, total_tokens: c.prompt_ids.length + 5 });
  });
});

describe('chat', () => {
  it('is refused with a clear 400 for a model without a chat template', async () => {
    const err = await openai.chat.completions.create({ model: 'zara', messages: [{ role: 'user', content: 'hi' }] }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.status).toBe(400);
    expect(err.message).toMatch(/chat template/);
    expect(err.message).toMatch(/\/v1\/completions/);
  });
});

describe('load', () => {
  it('64 concurrent streaming requests over the base and three adapters all give their solo tokens', async () => {
    const cases = Array.from({ length: 64 }, (_, i) => g.cases[i % g.cases.length]!);
    const t0 = performance.now();
    const results = await Promise.all(cases.map((c) => completeStreamed(c)));
    const ms = performance.now() - t0;
    const wrong = results.map((r, i) => (r.ids.join() === cases[i]!.expected_ids.join() ? null : describeMismatch(cases[i]!, r.ids))).filter((x) => x);
    expect(wrong).toEqual([]);
    const tokens = results.reduce((s, r) => s + r.ids.length, 0);
    console.log(`load: 64 streams, ${tokens} tokens in ${ms.toFixed(0)} ms (${((tokens * 1000) / ms).toFixed(0)} tokens/s through HTTP)`);
    const m = await metrics(url);
    expect(metric(m, 'vllm:num_requests_running')).toBe(0);
    expect(metric(m, 'polylora:kv_cache_blocks_used')).toBe(0);
    for (const name of ADAPTERS) expect(metric(m, 'polylora:lora_requests_total', { lora_name: name })).toBeGreaterThanOrEqual(16);
  });

  it('clients that disconnect mid-stream end their requests and free their KV blocks (seen in /metrics)', async () => {
    const aborted = (m: Map<string, number>) => metric(m, 'vllm:request_success_total', { finished_reason: 'abort' });
    const abortedBefore = aborted(await metrics(url));
    const c = g.cases[0]!;
    // Long requests: 400 tokens each would take far longer than the wait below.
    const streams = await Promise.all(
      ['zara', 'pirate', 'robot', BASE].map((model) =>
        openai.completions.create({ model, prompt: c.prompt_ids, max_tokens: 400, temperature: 0, ignore_eos: true, stream: true } as OpenAI.Completions.CompletionCreateParamsStreaming),
      ),
    );
    const iterators = streams.map((s) => s[Symbol.asyncIterator]());
    for (const it of iterators) for (let k = 0; k < 3; k++) await it.next();
    const during = await metrics(url);
    expect(metric(during, 'vllm:num_requests_running')).toBe(4);
    expect(metric(during, 'polylora:kv_cache_blocks_used')).toBeGreaterThan(0);
    // GPU-slot residency: each adapter sits in a slot (of --max-loras 4) referenced by its one running sequence.
    expect(metric(during, 'polylora:lora_gpu_slots')).toBe(4);
    for (const name of ADAPTERS) expect(metric(during, 'polylora:lora_gpu_slot_resident', { lora_name: name, refs: '1' })).toBe(1);
    const info = { running_lora_adapters: [...ADAPTERS].sort().join(','), waiting_lora_adapters: '', max_lora: '4' };
    expect(metric(during, 'vllm:lora_requests_info', info), 'vllm:lora_requests_info (its value: the sample time)').toBeGreaterThan(0);
    for (const s of streams) s.controller.abort();
    await waitFor('the aborted requests to end', async () => metric(await metrics(url), 'vllm:num_requests_running') === 0, 5000);
    const after = await metrics(url);
    expect(metric(after, 'polylora:kv_cache_blocks_used')).toBe(0);
    for (const name of ADAPTERS) expect(metric(after, 'polylora:lora_gpu_slot_resident', { lora_name: name, refs: '0' })).toBe(1);
    expect(aborted(after) - abortedBefore).toBe(4);
    expect(llm.stats.running + llm.stats.waiting).toBe(0);
  });
});
