// The CLI as users run it, in child processes: `polylora serve` with vLLM's flags (runtime updates enabled by
// VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), an adapter loaded at runtime that is still served after kill -9 and a
// restart, a clean SIGTERM; `polylora chat` driven through stdin, switching adapters between turns. The command line
// parsing itself is checked in-process first.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLoraModule, parseServeArgs } from '../../src/cli/serve.js';
import { STATE_FILE } from '../../src/server/state-store.js';
import { golden } from '../helpers/shared.js';
import { adapterDir, client, goldenBody, modelDir, tokenIds } from './helpers.js';

const g = golden();
const ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url));
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const KEY = 'process-key';
let tmp: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'polylora-server-process-'));
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

interface Cli {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `polylora <args>` from the sources (tsx), in the repo folder. */
function cli(args: string[], env: Record<string, string> = {}): Cli {
  const proc = spawn(process.execPath, ['--import', 'tsx', ENTRY, ...args], { cwd: REPO, env: { ...process.env, ...env }, stdio: 'pipe' });
  children.push(proc);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return { proc, stdout: () => out, stderr: () => err, exited };
}

/** Starts `polylora serve` and waits until /health answers 200; returns its URL. */
async function serve(args: string[], env: Record<string, string>): Promise<Cli & { url: string }> {
  const c = cli(['serve', ...args], env);
  const t0 = Date.now();
  let url: string | undefined;
  for (;;) {
    url ??= /listening on (http:\/\/\S+)/.exec(c.stderr())?.[1];
    if (url && (await fetch(`${url}/health`).then((r) => r.status === 200, () => false))) return { ...c, url };
    if (c.proc.exitCode !== null) throw new Error(`serve exited with ${c.proc.exitCode}:\n${c.stderr()}`);
    if (Date.now() - t0 > 60_000) throw new Error(`serve did not become healthy in 60 s:\n${c.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('command line', () => {
  it("parses vLLM's serve flags: several --lora-modules values in both forms, env switches, ignored flags", () => {
    const o = parseServeArgs(
      [
        'my/model',
        '--enable-lora',
        '--lora-modules',
        'a=/x/a',
        '{"name": "b", "path": "org/b", "base_model_name": "my/model"}',
        '--lora-modules',
        'c=/x/c',
        '--served-model-name',
        'm1',
        'm2',
        '--max-loras',
        '3',
        '--lora-resolver',
        'fs:/srv/loras',
        '--lora-resolver',
        'hub:org',
        '--dtype',
        'float16',
        '--port',
        '9000',
      ],
      { VLLM_ALLOW_RUNTIME_LORA_UPDATING: 'True', VLLM_API_KEY: 'envkey' },
    );
    expect(o.model).toBe('my/model');
    expect(o.server.loraModules).toEqual([
      { name: 'a', path: '/x/a' },
      { name: 'b', path: 'org/b', baseModelName: 'my/model' },
      { name: 'c', path: '/x/c' },
    ]);
    expect(o.server.servedModelNames).toEqual(['m1', 'm2']);
    expect(o.server.allowRuntimeLoraUpdating).toBe(true);
    expect(o.server.apiKey).toBe('envkey');
    expect(o.llm).toMatchObject({ enableLora: true, maxLoras: 3 });
    expect(o.resolvers).toEqual(['fs:/srv/loras', 'hub:org']);
    expect(o.port).toBe(9000);
    expect(o.notes).toEqual(['ignoring vLLM flag --dtype (no effect in polylora)']);
    expect(parseServeArgs(['m'], {}).server.allowRuntimeLoraUpdating).toBe(false);
  });

  it('refuses what it cannot use, naming the flag', () => {
    expect(() => parseServeArgs(['m', '--lora-modules', 'a=/x'], {})).toThrow(/--lora-modules needs --enable-lora/);
    expect(() => parseServeArgs(['m', '--enable-lora', '--max-loras', 'x'], {})).toThrow(/--max-loras/);
    expect(() => parseServeArgs([], {})).toThrow(/model is required/);
    expect(() => parseLoraModule('just-a-name')).toThrow(/name=path/);
    expect(() => parseLoraModule('{"name": "a"}')).toThrow(/"name" and "path"/);
  });
});

describe('polylora serve', () => {
  it('keeps a runtime-loaded adapter across kill -9 and a restart, and stops cleanly on SIGTERM', async () => {
    const stateDir = join(tmp, 'state');
    const args = [
      modelDir(),
      '--port', '0',
      '--served-model-name', 'tiny',
      '--enable-lora',
      '--lora-modules', `zara=${adapterDir('zara')}`, JSON.stringify({ name: 'pirate', path: adapterDir('pirate'), base_model_name: 'tiny' }),
      '--max-num-seqs', '8',
      '--state-dir', stateDir,
      '--api-key', KEY,
      '--dtype', 'float32',
    ];
    const env = { VLLM_ALLOW_RUNTIME_LORA_UPDATING: 'True' };
    const robot = g.cases.find((c) => c.adapter === 'robot' && c.name === 'park')!;
    const ask = async (openai: OpenAI) => {
      const res = await openai.completions.create(goldenBody(robot, 'tiny') as OpenAI.Completions.CompletionCreateParamsNonStreaming);
      return { ids: tokenIds(res.choices[0]!.logprobs!.tokens!), text: res.choices[0]!.text };
    };

    const first = await serve(args, env);
    expect(first.stderr()).toContain('ignoring vLLM flag --dtype');
    let openai = client(first.url, KEY);
    const cards = (await openai.models.list()).data as (OpenAI.Models.Model & { parent: string })[];
    expect(cards.map((m) => [m.id, m.parent])).toEqual([['tiny', null], ['zara', 'tiny'], ['pirate', 'tiny']]);
    const load = await fetch(`${first.url}/v1/load_lora_adapter`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ lora_name: 'robot', lora_path: adapterDir('robot') }),
    });
    expect([load.status, await load.text()]).toEqual([200, "Success: LoRA adapter 'robot' added successfully."]);
    const before = await ask(openai);
    expect(before.ids).toEqual(robot.expected_ids);

    first.proc.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');

    const second = await serve(args, env);
    openai = client(second.url, KEY);
    expect((await openai.models.list()).data.map((m) => m.id)).toEqual(['tiny', 'zara', 'pirate', 'robot']);
    expect(await ask(openai)).toEqual(before);
    const unload = await fetch(`${second.url}/v1/unload_lora_adapter`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ lora_name: 'robot' }),
    });
    expect(unload.status).toBe(200);
    const state = JSON.parse(await readFile(join(stateDir, STATE_FILE), 'utf8')) as { adapters: unknown[] };
    expect(state.adapters).toEqual([]);

    second.proc.kill('SIGTERM');
    expect(await second.exited).toEqual({ code: 0, signal: null });
    expect(second.stderr()).toContain('SIGTERM: shutting down');
  });

  it('exits with an error naming the flag when the command line is wrong', async () => {
    const c = cli(['serve', modelDir(), '--lora-modules', 'zara=/x']);
    expect((await c.exited).code).toBe(1);
    expect(c.stderr()).toContain('--lora-modules needs --enable-lora');
  });
});

describe('polylora chat', () => {
  it('streams replies and switches adapters between turns (a model without a template continues each line)', async () => {
    const c = cli(['chat', modelDir(), '--lora', `zara=${adapterDir('zara')}`, '--lora', `robot=${adapterDir('robot')}`, '--temperature', '0', '--max-tokens', '32']);
    const prompt = g.cases.find((x) => x.name === 'once-there-was')!.prompt_text;
    c.proc.stdin!.end(['/loras', '/lora zara', prompt, '/lora robot', prompt, '/lora none', prompt, '/lora nobody', '/quit', ''].join('\n'));
    const { code } = await c.exited;
    expect(code, c.stderr()).toBe(0);
    const expected = (adapter: string | null) => g.cases.find((x) => x.name === 'once-there-was' && x.adapter === adapter)!.expected_text;
    const out = c.stdout();
    const replies = [expected('zara'), expected('robot'), expected(null)].map((t) => out.indexOf(`${t}\n`));
    expect(replies.every((i) => i >= 0), out).toBe(true);
    expect(replies).toEqual([...replies].sort((a, b) => a - b));
    expect(c.stderr()).toContain('has no chat template');
    expect(c.stderr()).toContain('adapters: zara, robot (current: base)');
    expect(c.stderr()).toContain('no adapter "nobody"');
  });
});
