// `polylora chat <model> [--lora name=path ...]`: an interactive terminal chat, replies streamed as they are
// generated, the adapter switchable between turns (/lora pirate, /lora none). A model without a chat template is
// used as a text model: each line is a prompt the model continues.

import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { LLM } from '../engine/llm.js';
import { LoRARequest } from '../engine/lora-request.js';
import type { RequestStream } from '../engine/request.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import { isPolyloraError } from '../errors.js';
import { llmHooks, type EngineHooks } from '../server/engine-hooks.js';
import type { ChatMessage } from '../tokenizer/chat-template.js';
import { int, num, str, usageError, type Values } from './args.js';
import { progressBar } from './progress.js';
import { parseLoraModule } from './serve.js';

export const CHAT_USAGE = `polylora chat <model> [--lora name=path ...] [options]

  <model>              local model folder, or a Hugging Face Hub id org/name[@rev]
  --lora name=path     an adapter to switch to during the chat (repeatable; path: folder or Hub id)
  --system TEXT        system message at the start of the conversation
  --max-tokens N       tokens per reply at most (default 256)
  --temperature T      0 = greedy (default 0.7)
  --top-p P            nucleus sampling (default 1 = off)
  --seed S             random seed of the first reply (later replies use S+1, S+2, ...)
  --max-lora-rank R    largest adapter rank accepted (default 64, as generate)
  --max-model-len N    longest conversation in tokens (default: the model's, at most 4096)
  --revision R         Hub branch, tag or commit of <model>

In the chat: /lora NAME switches adapter, /lora NAME=PATH adds one and switches, /lora none goes back to the
base model, /loras lists them, /reset starts a new conversation, /quit (or Ctrl-D) ends. Ctrl-C stops a reply.`;

const HELP = '/lora NAME | /lora NAME=PATH | /lora none | /loras | /reset | /quit';

export async function chatCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      lora: { type: 'string', multiple: true },
      system: { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      seed: { type: 'string' },
      'max-lora-rank': { type: 'string' },
      'max-model-len': { type: 'string' },
      revision: { type: 'string' },
    },
  });
  const v = values as Values;
  const model = positionals[0];
  if (!model) throw usageError('the model is required', 'polylora chat <model folder or org/name> [--lora name=path ...]');
  const loras = ((v.lora as string[] | undefined) ?? []).map(parseLoraModule);
  const params: SamplingParams = {
    maxTokens: int(v, 'max-tokens', 1) ?? 256,
    temperature: num(v, 'temperature', (n) => n >= 0, 'a number >= 0') ?? 0.7,
    topP: num(v, 'top-p', (n) => n > 0 && n <= 1, 'a number in (0, 1]'),
  };
  let seed = int(v, 'seed', 0);
  const out = process.stdout;
  const note = (m: string) => process.stderr.write(`${m}\n`);

  const bar = progressBar();
  let llm: LLM;
  try {
    llm = await LLM.load(model, {
      hub: { revision: str(v, 'revision'), onProgress: (p) => bar.update(p) },
      onProgress: (p) => bar.update({ file: 'weights to GPU', loaded: p.loaded, total: p.total }),
      enableLora: true,
      // One sequence at a time: two slots keep the last two adapters resident when switching back and forth.
      maxLoras: 2,
      maxLoraRank: int(v, 'max-lora-rank', 1) ?? 64,
      maxModelLen: int(v, 'max-model-len', 2),
      maxNumSeqs: 1,
      onWarning: (m) => note(`warning: ${m}`),
    });
  } finally {
    bar.done();
  }
  const hooks = llmHooks(llm);
  try {
    const adapters = new Map<string, LoRARequest>();
    for (const m of loras) adapters.set(m.name, await addAdapter(hooks, m.name, m.path));
    const chatMode = llm.tokenizer?.hasChatTemplate === true;
    if (!llm.tokenizer) throw usageError(`${model} has no tokenizer.json; chat needs text`);
    note(
      chatMode
        ? `chatting with ${model}. ${HELP}`
        : `${model} has no chat template: each line is a prompt the model continues. ${HELP}`,
    );
    const system = str(v, 'system');
    const history: ChatMessage[] = system ? [{ role: 'system', content: system }] : [];
    let current: LoRARequest | null = null;
    let running: RequestStream | null = null;

    const rl = createInterface({ input: process.stdin, output: out, terminal: process.stdin.isTTY === true });
    const prompt = () => {
      rl.setPrompt(`${current?.name ?? 'base'}> `);
      rl.prompt();
    };
    rl.on('SIGINT', () => {
      if (running) running.abort();
      else rl.close();
    });

    /** Runs a /command; false when the chat should end. */
    const command = async (line: string): Promise<boolean> => {
      const [cmd, ...rest] = line.split(/\s+/);
      const arg = rest.join(' ');
      switch (cmd) {
        case '/quit':
        case '/exit':
          return false;
        case '/reset':
          history.splice(system ? 1 : 0);
          note('(new conversation)');
          return true;
        case '/loras':
          note(`adapters: ${[...adapters.keys()].join(', ') || 'none'} (current: ${current?.name ?? 'base'})`);
          return true;
        case '/lora': {
          if (arg === '') {
            note(`current adapter: ${current?.name ?? 'none (base model)'}`);
          } else if (arg === 'none') {
            current = null;
            note('(base model)');
          } else if (arg.includes('=')) {
            const m = parseLoraModule(arg);
            const req = await addAdapter(hooks, m.name, m.path);
            adapters.set(m.name, req);
            current = req;
            note(`(adapter ${m.name})`);
          } else if (adapters.has(arg)) {
            current = adapters.get(arg)!;
            note(`(adapter ${arg})`);
          } else {
            note(`no adapter "${arg}" (adapters: ${[...adapters.keys()].join(', ') || 'none'}); add one with /lora ${arg}=PATH`);
          }
          return true;
        }
        default:
          note(`unknown command ${cmd}: ${HELP}`);
          return true;
      }
    };

    const turn = async (text: string): Promise<void> => {
      let ids: number[];
      if (chatMode) {
        history.push({ role: 'user', content: text });
        ids = llm.tokenizer!.encode(llm.chatPrompt(history), { addSpecialTokens: false });
      } else {
        ids = llm.tokenizer!.encode(text);
      }
      const p: SamplingParams = { ...params };
      if (seed !== undefined) p.seed = seed++;
      const room = llm.info.maxModelLen - ids.length;
      if (room < 1) {
        if (chatMode) history.pop();
        note(`the conversation is longer than the context (${llm.info.maxModelLen} tokens): /reset to start again`);
        return;
      }
      p.maxTokens = Math.min(p.maxTokens!, room);
      running = llm.stream({ promptIds: ids }, p, { lora: current });
      let reply = '';
      try {
        for await (const c of running) {
          out.write(c.text);
          reply += c.text;
        }
      } finally {
        running = null;
        out.write('\n');
      }
      if (chatMode) history.push({ role: 'assistant', content: reply });
    };

    prompt();
    for await (const raw of rl) {
      const line = raw.trimStart();
      try {
        if (line.startsWith('/')) {
          if (!(await command(line.trimEnd()))) break;
        } else if (line.trim() !== '') {
          await turn(chatMode ? line.trim() : raw);
        }
      } catch (e) {
        if (!isPolyloraError(e)) throw e;
        note(`error: ${e.message}`);
      }
      prompt();
    }
    rl.close();
  } finally {
    await llm.close();
  }
}

/** Reads and validates an adapter now (so a bad one is reported before it is picked). */
async function addAdapter(hooks: EngineHooks, name: string, path: string): Promise<LoRARequest> {
  const req = new LoRARequest(name, undefined, path);
  const adapter = await hooks.loadLora(req);
  process.stderr.write(`adapter ${name}: rank ${adapter.rank} on ${adapter.targets.targets.join('/')}\n`);
  return req;
}
