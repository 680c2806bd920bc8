// POST /v1/chat/completions: the messages rendered with the model's chat template (tokenizer config), n choices, as
// one JSON answer or as SSE chunks (a first chunk with the assistant role per choice, then content deltas).

import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { abortOnDisconnect, allResults, checkPrompt, sendJson, type ServingContext } from './context.js';
import { chatLogprobs, tokenNamer, usage, type ChoiceRun } from './generation.js';
import { errorBody, HttpError, toHttpError } from './http-error.js';
import { parseChatRequest, type ChatRequest } from './protocol.js';
import { SseWriter } from './sse.js';

export async function handleChatCompletions(ctx: ServingContext, body: unknown, res: ServerResponse): Promise<void> {
  const { llm } = ctx;
  const r = parseChatRequest(body);
  const route = await ctx.adapters.route(r.model);
  const ids = chatPromptIds(ctx, r);
  const params = { ...r.params, maxTokens: r.params.maxTokens ?? Math.max(1, llm.info.maxModelLen - ids.length) };
  checkPrompt(llm, ids, params.maxTokens, 'messages');
  const runs = ctx.start(route, [ids], params, r.n, r.loraScale);
  const name = tokenNamer(llm, r.tokensAsIds);
  const abort = abortOnDisconnect(res, runs);
  const head = { id: `chatcmpl-${randomBytes(16).toString('hex')}`, created: Math.floor(Date.now() / 1000), model: route.model };

  if (!r.stream) {
    const outs = await allResults(runs, abort);
    const choices = runs.map((run, k) => {
      const out = outs[k]!;
      return {
        index: run.index,
        message: { role: 'assistant', content: out.text },
        logprobs: r.logprobs ? { content: chatLogprobs(name, out.tokenIds, out.logprobs, out.topLogprobs) } : null,
        finish_reason: out.finishReason,
        stop_reason: out.stopReason ?? null,
      };
    });
    const generated = outs.reduce((s, o) => s + o.tokenIds.length, 0);
    sendJson(res, 200, { ...head, object: 'chat.completion', choices, usage: usage([ids], generated) });
    return;
  }

  const sse = new SseWriter(res);
  const chunk = { ...head, object: 'chat.completion.chunk' };
  for (const run of runs) {
    sse.send({ ...chunk, choices: [{ index: run.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] });
  }
  let generated = 0;
  const pump = async (run: ChoiceRun) => {
    for await (const c of run.stream) {
      if (c.finishReason === 'abort') break; // the client is gone
      generated += c.tokenIds.length;
      const logprobs = r.logprobs ? { content: chatLogprobs(name, c.tokenIds, c.logprobs, c.topLogprobs) } : null;
      const stopReason = c.finishReason ? ((await run.stream.result).stopReason ?? null) : null;
      sse.send({ ...chunk, choices: [{ index: run.index, delta: { content: c.text }, logprobs, finish_reason: c.finishReason, stop_reason: stopReason }] });
    }
  };
  try {
    await Promise.all(runs.map(pump));
  } catch (e) {
    abort();
    sse.send(errorBody(toHttpError(e)));
  }
  if (r.includeUsage) sse.send({ ...chunk, choices: [], usage: usage([ids], generated) });
  sse.done();
}

/** The rendered chat template, tokenized (the template writes any BOS itself). */
function chatPromptIds(ctx: ServingContext, r: ChatRequest): number[] {
  const tk = ctx.llm.tokenizer;
  if (!tk?.hasChatTemplate) {
    // vLLM's words, then where polylora looks for one.
    throw new HttpError(
      400,
      'As of transformers v4.44, default chat template is no longer allowed, so you must provide a chat template if the ' +
        `tokenizer does not define one. (Model "${ctx.llm.info.model}" has ${tk ? 'no chat template' : 'no tokenizer'}: ` +
        'polylora reads chat_template.jinja, chat_template.json or the chat_template field of tokenizer_config.json in the ' +
        'model folder; for a model without one, use /v1/completions.)',
      { param: 'messages' },
    );
  }
  const text = tk.applyChatTemplate(r.messages, { addGenerationPrompt: r.addGenerationPrompt, variables: r.templateVariables });
  return tk.encode(text, { addSpecialTokens: false });
}
