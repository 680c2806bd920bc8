// POST /v1/completions: one or more prompts (text or token ids), n choices each, as one JSON answer or as SSE.

import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { abortOnDisconnect, allResults, checkPrompt, sendJson, type ServingContext } from './context.js';
import { completionLogprobs, concatLogprobs, promptCompletionLogprobs, tokenNamer, usage, type ChoiceRun } from './generation.js';
import { errorBody, HttpError, toHttpError } from './http-error.js';
import { parseCompletionRequest, type CompletionPrompt } from './protocol.js';
import { SseWriter } from './sse.js';

export async function handleCompletions(ctx: ServingContext, body: unknown, res: ServerResponse): Promise<void> {
  const { llm } = ctx;
  const r = parseCompletionRequest(body);
  const route = await ctx.adapters.route(r.model);
  const param = (i: number) => (r.prompts.length > 1 ? `prompt[${i}]` : 'prompt');
  const prompts = r.prompts.map((p, i) => encode(ctx, p, param(i)));
  prompts.forEach((ids, i) => checkPrompt(llm, ids, r.params.maxTokens!, param(i)));
  // Echo: the prompt as the client gave it (text), or its decoding (token ids).
  const echo = r.prompts.map((p, i) => (!r.echo ? '' : 'text' in p ? p.text : (llm.tokenizer?.decode(prompts[i]!) ?? '')));
  const runs = ctx.start(route, prompts, r.params, r.n, r.loraScale);
  const name = tokenNamer(llm, r.tokensAsIds);
  const abort = abortOnDisconnect(res, runs);
  const head = { id: `cmpl-${randomBytes(16).toString('hex')}`, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: route.model };

  if (!r.stream) {
    const outs = await allResults(runs, abort);
    const choices = runs.map((run, k) => {
      const out = outs[k]!;
      const prefix = echo[run.prompt]!;
      let logprobs = null;
      if (r.logprobs !== null) {
        // With echo, the prompt's tokens come first (scored by the engine), then the completion's.
        const head = r.echo && out.promptLogprobs ? promptCompletionLogprobs(name, prompts[run.prompt]!, out.promptLogprobs) : null;
        const tail = completionLogprobs(name, out.tokenIds, out.logprobs, out.topLogprobs, head ? head.offset : prefix.length).logprobs;
        logprobs = head ? concatLogprobs(head.logprobs, tail) : tail;
      }
      return {
        index: run.index,
        text: prefix + out.text,
        logprobs,
        finish_reason: out.finishReason,
        stop_reason: out.stopReason ?? null,
      };
    });
    const generated = outs.reduce((s, o) => s + o.tokenIds.length, 0);
    sendJson(res, 200, { ...head, choices, usage: usage(prompts, generated) });
    return;
  }

  const sse = new SseWriter(res);
  let generated = 0;
  const pump = async (run: ChoiceRun) => {
    let prefix = echo[run.prompt]!;
    let offset = prefix.length;
    for await (const c of run.stream) {
      if (c.finishReason === 'abort') break; // the client is gone
      generated += c.tokenIds.length;
      let logprobs = null;
      if (r.logprobs !== null) {
        // The first chunk of an echo carries the prompt: its tokens' logprobs lead.
        const head = prefix && r.echo && c.promptLogprobs ? promptCompletionLogprobs(name, prompts[run.prompt]!, c.promptLogprobs) : null;
        const tail = completionLogprobs(name, c.tokenIds, c.logprobs, c.topLogprobs, head ? head.offset : offset);
        logprobs = head ? concatLogprobs(head.logprobs, tail.logprobs) : tail.logprobs;
        offset = tail.offset;
      }
      const stopReason = c.finishReason ? ((await run.stream.result).stopReason ?? null) : null;
      sse.send({ ...head, choices: [{ index: run.index, text: prefix + c.text, logprobs, finish_reason: c.finishReason, stop_reason: stopReason }] });
      prefix = '';
    }
  };
  try {
    await Promise.all(runs.map(pump));
  } catch (e) {
    abort();
    sse.send(errorBody(toHttpError(e)));
  }
  if (r.includeUsage) sse.send({ ...head, choices: [], usage: usage(prompts, generated) });
  sse.done();
}

/** A prompt's token ids: given, or the text encoded as vLLM does for completions (special tokens added). */
function encode(ctx: ServingContext, p: CompletionPrompt, param: string): number[] {
  if ('ids' in p) return p.ids;
  if (!ctx.llm.tokenizer) {
    throw new HttpError(400, `field "${param}": this model has no tokenizer.json, so prompts must be token ids`, { param });
  }
  return ctx.llm.tokenizer.encode(p.text);
}
