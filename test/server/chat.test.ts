// /v1/chat/completions through the openai client. TinyStories has no chat template, so the model is served from a
// temporary folder that links the shared files and adds one to tokenizer_config.json: `<bos> ` + the user turns.
// That renders the golden prompts exactly, so chat answers must be golden.json's texts (adapters included).
import { rm } from 'node:fs/promises';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../../src/engine/llm.js';
import { createServer, type PolyloraServer } from '../../src/server/server.js';
import { golden } from '../helpers/shared.js';
import { ADAPTERS, adapterDir, client, modelWithChatTemplate, tokenIds } from './helpers.js';

const g = golden();
const TEMPLATE = "{{ bos_token }} {% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}";
let dir: string;
let llm: LLM;
let server: PolyloraServer;
let openai: OpenAI;

beforeAll(async () => {
  dir = await modelWithChatTemplate(TEMPLATE);
  // The adapters name the Hub base they were trained on, not this temporary folder: that warning is expected here.
  llm = await LLM.load(dir, { enableLora: true, maxLoras: 4, maxNumSeqs: 16, onWarning: () => {} });
  server = createServer(llm, { servedModelNames: ['tiny-chat'], loraModules: ADAPTERS.map((name) => ({ name, path: adapterDir(name) })) });
  openai = client(await server.listen(0));
  await server.ready;
});

afterAll(async () => {
  await server?.close();
  await llm?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const cases = g.cases.filter((c) => c.name === 'once-there-was');

describe('chat completions', () => {
  it("answers with golden.json's text for the base and every adapter, with the template's prompt tokens", async () => {
    for (const c of cases) {
      const res = await openai.chat.completions.create({
        model: c.adapter ?? 'tiny-chat',
        messages: [
          { role: 'system', content: 'ignored by this template' },
          { role: 'user', content: c.prompt_text },
        ],
        max_tokens: c.max_tokens,
        temperature: 0,
        logprobs: true,
        return_tokens_as_token_ids: true,
      } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
      const choice = res.choices[0]!;
      expect(res.object).toBe('chat.completion');
      expect(res.model).toBe(c.adapter ?? 'tiny-chat');
      expect(choice.message).toMatchObject({ role: 'assistant', content: c.expected_text });
      expect(tokenIds(choice.logprobs!.content!.map((t) => t.token))).toEqual(c.expected_ids);
      expect(res.usage?.prompt_tokens).toBe(c.prompt_ids.length);
    }
  });

  it('streams: a role chunk first, then content deltas that add up to the same text', async () => {
    const c = cases.find((x) => x.adapter === 'pirate')!;
    const stream = await openai.chat.completions.create({
      model: 'pirate',
      messages: [{ role: 'user', content: [{ type: 'text', text: c.prompt_text }] }],
      max_tokens: c.max_tokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.Chat.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: 'assistant', content: '' });
    expect(chunks.every((x) => x.object === 'chat.completion.chunk' && x.model === 'pirate')).toBe(true);
    const text = chunks.map((x) => x.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(c.expected_text);
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('length');
    expect(chunks.at(-1)!.usage).toEqual({ prompt_tokens: c.prompt_ids.length, completion_tokens: c.max_tokens, total_tokens: c.prompt_ids.length + c.max_tokens });
  });

  it('returns n choices and top logprobs per position', async () => {
    const c = cases.find((x) => x.adapter === 'zara')!;
    const res = await openai.chat.completions.create({
      model: 'zara',
      messages: [{ role: 'user', content: c.prompt_text }],
      max_tokens: 8,
      temperature: 0,
      n: 3,
      logprobs: true,
      top_logprobs: 2,
    });
    expect(res.choices.map((x) => x.index)).toEqual([0, 1, 2]);
    const prefix = c.expected_text.slice(0, res.choices[0]!.message.content!.length);
    for (const choice of res.choices) {
      expect(choice.message.content).toBe(prefix);
      const lp = choice.logprobs!.content!;
      expect(lp.map((t) => t.token).join('')).toBe(prefix);
      for (const t of lp) {
        expect(t.top_logprobs.length).toBe(2);
        expect(t.top_logprobs[0]!.logprob).toBe(t.logprob); // greedy: the sampled token is the most likely
        expect(t.bytes).toEqual([...new TextEncoder().encode(t.token)]);
      }
    }
  });

  it('names the field of a malformed message', async () => {
    const err = await openai.chat.completions
      .create({ model: 'zara', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] })
      .catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.error).toMatchObject({ param: 'messages[0].content[0]', code: 400 });
  });
});
