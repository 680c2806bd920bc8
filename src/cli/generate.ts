// `polylora generate`: one prompt in, text out (streamed), or one JSON object with --json; or a file of requests
// (--requests FILE.jsonl) run through one engine, one JSON line per request in file order.

import { parseArgs } from 'node:util';
import { LLM } from '../engine/llm.js';
import type { RequestOutput } from '../engine/request.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import { isPolyloraError } from '../errors.js';
import { progressBar } from './progress.js';
import { int, intList, num, str, usageError } from './args.js';
import { readRequestsFile, type BadLine, type FileRequest } from './requests-file.js';

export const GENERATE_USAGE = `polylora generate --model <dir|org/name[@rev]> (--prompt TEXT | --prompt-ids 1,2,3 | --requests FILE) [options]

  --model M            local model folder, or a Hugging Face Hub id (downloaded into the HF cache)
  --prompt TEXT        text prompt (encoded with the model's tokenizer, BOS added as configured)
  --prompt-ids IDS     comma-separated prompt token ids, used as they are
  --max-tokens N       tokens to generate at most (default 128)
  --temperature T      0 = greedy (default 1.0)
  --top-p P            nucleus sampling (default 1 = off)
  --top-k K            keep the K most likely tokens (default 0 = off)
  --min-p P            drop tokens below P x the most likely one (default 0 = off)
  --seed S             random seed (default: random)
  --ignore-eos         keep going past the end-of-sequence token
  --json               print {"token_ids": [...], "text": "..."} instead of streaming text
  --lora A             a PEFT LoRA adapter (folder or Hub id) for the prompt
  --lora-scale S       multiply the adapter's scale by S (default 1; 0 = base model)
  --requests FILE      JSON lines, one request each: {"prompt_ids": [...] | "prompt": "...", "lora": A | null,
                       "lora_scale", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "arrival_ms"};
                       all run in one engine (overlapping ones in the same batch); output in file order
  --max-lora-rank R    largest adapter rank accepted (default 64)
  --max-model-len N    longest prompt + output (default: the model's, at most 4096)
  --revision R         Hub branch, tag or commit`;

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      model: { type: 'string', short: 'm' },
      prompt: { type: 'string', short: 'p' },
      'prompt-ids': { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      'min-p': { type: 'string' },
      seed: { type: 'string' },
      'ignore-eos': { type: 'boolean' },
      json: { type: 'boolean' },
      lora: { type: 'string' },
      'lora-scale': { type: 'string' },
      requests: { type: 'string' },
      'max-lora-rank': { type: 'string' },
      'max-model-len': { type: 'string' },
      revision: { type: 'string' },
    },
  });
  const model = str(values, 'model');
  if (!model) throw usageError('--model is required', 'e.g. --model ./models/tinystories-656k or --model org/name');
  const promptText = str(values, 'prompt');
  const promptIds = intList(values, 'prompt-ids');
  const requestsFile = str(values, 'requests');
  if ([promptText, promptIds, requestsFile].filter((x) => x !== undefined).length !== 1) {
    throw usageError('give exactly one of --prompt, --prompt-ids and --requests');
  }
  const params: SamplingParams = {
    maxTokens: int(values, 'max-tokens', 1) ?? 128,
    temperature: num(values, 'temperature', (n) => n >= 0, 'a number >= 0') ?? 1,
    topP: num(values, 'top-p', (n) => n > 0 && n <= 1, 'a number in (0, 1]'),
    topK: int(values, 'top-k', 0),
    minP: num(values, 'min-p', (n) => n >= 0 && n <= 1, 'a number in [0, 1]'),
    seed: int(values, 'seed', 0),
    ignoreEos: values['ignore-eos'] === true,
  };
  const loraScale = num(values, 'lora-scale') ?? 1;
  const lora = str(values, 'lora');
  const requests = requestsFile ? await readRequestsFile(requestsFile, params) : null;
  const adapters = new Set(requests ? requests.flatMap((r) => ('prompt' in r && r.lora ? [r.lora] : [])) : lora ? [lora] : []);
  const bar = progressBar();
  let llm: LLM;
  try {
    llm = await LLM.load(model, {
      hub: { revision: str(values, 'revision'), onProgress: (p) => bar.update(p) },
      onProgress: (p) => bar.update({ file: 'weights to GPU', loaded: p.loaded, total: p.total }),
      maxModelLen: int(values, 'max-model-len', 2),
      maxNumSeqs: requests ? Math.min(256, Math.max(1, requests.length)) : 1,
      enableLora: adapters.size > 0,
      maxLoras: Math.max(1, Math.min(adapters.size, 16)),
      maxLoraRank: int(values, 'max-lora-rank', 1) ?? 64,
    });
  } finally {
    bar.done();
  }
  try {
    if (requests) return await runRequests(llm, requests, values.json === true);
    const prompt = promptIds ? { promptIds } : promptText!;
    const req = lora ? { lora: { name: lora, path: lora, scale: loraScale } } : {};
    if (values.json) {
      const [out] = await llm.generate(prompt, params, req);
      process.stdout.write(`${JSON.stringify({ token_ids: out!.tokenIds, text: out!.text })}\n`);
    } else {
      for await (const c of llm.stream(prompt, params, req)) process.stdout.write(c.text);
      process.stdout.write('\n');
    }
    return 0;
  } finally {
    await llm.close();
  }
}

/**
 * Submits every request at its arrival time (those at 0 in the same tick, so they share the first step) and prints
 * the results in file order; a failed request prints its error with its line number. Exit code 1 if any failed.
 */
async function runRequests(llm: LLM, lines: (FileRequest | BadLine)[], json: boolean): Promise<number> {
  // Read every adapter first, so requests arriving together start in the same step (a bad adapter fails only the
  // lines that use it, when they start).
  const names = new Set(lines.flatMap((r) => ('prompt' in r && r.lora ? [r.lora] : [])));
  await Promise.allSettled([...names].map((a) => llm.loadLora({ name: a, path: a })));
  const results = lines.map((r) => {
    if ('error' in r) return Promise.reject(new Error(r.error));
    const start = () => {
      const prompt = typeof r.prompt === 'string' ? r.prompt : { promptIds: r.prompt };
      const lora = r.lora ? { name: r.lora, path: r.lora, scale: r.loraScale } : null;
      return llm.stream(prompt, r.params, { lora }).result;
    };
    return r.arrivalMs > 0 ? new Promise<RequestOutput>((res) => setTimeout(res, r.arrivalMs)).then(start) : start();
  });
  const settled = await Promise.allSettled(results);
  let failed = 0;
  settled.forEach((s, i) => {
    const line = lines[i]!.line;
    if (s.status === 'rejected') {
      failed++;
      const message = isPolyloraError(s.reason) || s.reason instanceof Error ? s.reason.message : String(s.reason);
      process.stderr.write(`polylora generate: line ${line}: ${message}\n`);
      if (json) process.stdout.write(`${JSON.stringify({ line, error: message })}\n`);
      return;
    }
    const out = s.value;
    if (json) process.stdout.write(`${JSON.stringify({ token_ids: out.tokenIds, text: out.text })}\n`);
    else process.stdout.write(`--- line ${line} (${out.finishReason}) ---\n${out.text}\n`);
  });
  return failed > 0 ? 1 : 0;
}
