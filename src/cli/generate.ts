// `polylora generate`: one prompt in, text out (streamed), or one JSON object with --json.

import { parseArgs } from 'node:util';
import { LLM } from '../engine/llm.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import { progressBar } from './progress.js';
import { int, intList, num, str, usageError } from './args.js';

export const GENERATE_USAGE = `polylora generate --model <dir|org/name[@rev]> (--prompt TEXT | --prompt-ids 1,2,3) [options]

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
  --max-model-len N    longest prompt + output (default: the model's, at most 4096)
  --revision R         Hub branch, tag or commit`;

export async function generateCommand(argv: string[]): Promise<void> {
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
      'max-model-len': { type: 'string' },
      revision: { type: 'string' },
    },
  });
  const model = str(values, 'model');
  if (!model) throw usageError('--model is required', 'e.g. --model ./models/tinystories-656k or --model org/name');
  const promptText = str(values, 'prompt');
  const promptIds = intList(values, 'prompt-ids');
  if ((promptText === undefined) === (promptIds === undefined)) {
    throw usageError('give exactly one of --prompt and --prompt-ids');
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
  const bar = progressBar();
  const llm = await LLM.load(model, {
    hub: { revision: str(values, 'revision'), onProgress: (p) => bar.update(p) },
    maxModelLen: int(values, 'max-model-len', 2),
    maxNumSeqs: 1,
  });
  bar.done();
  try {
    const prompt = promptIds ? { promptIds } : promptText!;
    if (values.json) {
      const [out] = await llm.generate(prompt, params);
      process.stdout.write(`${JSON.stringify({ token_ids: out!.tokenIds, text: out!.text })}\n`);
    } else {
      for await (const c of llm.stream(prompt, params)) process.stdout.write(c.text);
      process.stdout.write('\n');
    }
  } finally {
    await llm.close();
  }
}
