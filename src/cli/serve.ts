// `polylora serve <model>`: the OpenAI-compatible server, with vLLM's flag names so that `vllm serve ...` command
// lines keep working. It listens at once (503 until the model and adapters are loaded) and stops on SIGINT/SIGTERM.

import { parseArgs } from 'node:util';
import { LLM } from '../engine/llm.js';
import { PolyloraError } from '../errors.js';
import type { HubOptions } from '../platform/platform.js';
import type { LoraModuleSpec } from '../server/adapters.js';
import { parseResolverSpec } from '../server/resolvers.js';
import { createServer } from '../server/server.js';
import { int, str, usageError, type Values } from './args.js';
import { progressBar } from './progress.js';

export const SERVE_USAGE = `polylora serve <model> [options]          (vLLM's flag names)

  <model>                       local model folder, or a Hugging Face Hub id org/name[@rev]
  --host H                      address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --port P                      port (default 8000; 0 = any free port)
  --served-model-name N...      names the base model answers to (default: <model>); the first is reported
  --api-key KEY                 require "Authorization: Bearer KEY" on every route but /health (or VLLM_API_KEY)
  --enable-lora                 serve LoRA adapters
  --lora-modules M...           adapters served from the start: name=path or {"name","path","base_model_name"} (JSON)
  --max-loras N                 adapters in GPU slots at once (default 4)
  --max-lora-rank R             largest adapter rank (default 16)
  --max-cpu-loras N             parsed adapters kept in CPU memory (default max(max-loras, 8))
  --default-lora NAME           requests for the base model name get this adapter (default: off)
  --lora-resolver SPEC          where unknown model names are looked up, in order: fs:<dir> or hub:<org> (repeatable)
  --state-dir DIR               keep runtime-added adapters here; they are restored at the next start
  --allow-runtime-lora-updating enable /v1/load_lora_adapter and /v1/unload_lora_adapter
                                (also VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)
  --max-model-len N             longest prompt + output (default: the model's, at most 4096)
  --max-num-seqs N              sequences per step (default 64)
  --max-num-batched-tokens N    token rows per step (default 256)
  --kv-cache-memory-bytes B     KV cache size in bytes (default 256 MiB)
  --max-queued-requests N       requests waiting beyond --max-num-seqs before 429 (default 1024)
  --max-body-bytes B            largest request body (default 32 MiB; 413 above)
  --revision R                  Hub branch, tag or commit of <model>

  --no-enable-prefix-caching    do not reuse KV blocks of repeated prompt prefixes (on by default, as in vLLM)
  --no-async-scheduling         read each step back before recording the next (on by default)

vLLM flags without meaning here (--dtype, --gpu-memory-utilization, --tensor-parallel-size, --trust-remote-code,
...) are accepted and ignored with a note.`;

/** vLLM flags accepted for drop-in command lines but without effect here: name -> takes a value. */
const IGNORED_VLLM_FLAGS: Record<string, boolean> = {
  dtype: true,
  'gpu-memory-utilization': true,
  'tensor-parallel-size': true,
  'pipeline-parallel-size': true,
  'uvicorn-log-level': true,
  'tokenizer-mode': true,
  'swap-space': true,
  seed: true,
  'trust-remote-code': false,
  'disable-log-requests': false,
  'disable-log-stats': false,
  'enforce-eager': false,
};

/** Flags that take several values (vLLM's nargs='+'): the positionals after them are theirs. */
const MULTI_VALUE = new Set(['lora-modules', 'served-model-name']);

export async function serveCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const o = parseServeArgs(argv, env);
  const log = (m: string) => process.stderr.write(`polylora serve: ${m}\n`);
  for (const note of o.notes) log(note);
  const bar = progressBar();
  log(`loading ${o.model} ...`);
  const loading = LLM.load(o.model, {
    ...o.llm,
    hub: { ...o.hub, onProgress: (p) => bar.update(p) },
    onProgress: (p) => bar.update({ file: 'weights to GPU', loaded: p.loaded, total: p.total }),
  });
  const server = createServer(loading, { ...o.server, resolvers: o.resolvers.map((s) => parseResolverSpec(s, o.hub)), onLog: log });
  const url = await server.listen(o.port, o.host);
  log(`listening on ${url} (503 until the model is loaded)`);
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log(`${signal}: shutting down`);
      void server
        .close()
        .then(() => loading.then((llm) => llm.close()))
        .catch(() => {})
        .finally(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  try {
    await server.ready;
  } catch (e) {
    bar.done();
    await server.close();
    await loading.then((llm) => llm.close()).catch(() => {});
    throw e;
  }
  bar.done();
  const llm = await loading;
  const adapters = server.adapters.list().map((a) => a.name);
  log(
    `ready: ${llm.info.model} as ${server.adapters.baseNames.join(', ')}; KV cache ${llm.info.kvCapacityTokens} tokens, ` +
      `max model len ${llm.info.maxModelLen}; adapters: ${adapters.length ? adapters.join(', ') : 'none'}` +
      (server.adapters.defaultLora ? `; default adapter ${server.adapters.defaultLora}` : ''),
  );
  await stopped;
}

export interface ServeArgs {
  model: string;
  host: string;
  port: number;
  hub: HubOptions;
  llm: Parameters<typeof LLM.load>[1];
  server: Omit<NonNullable<Parameters<typeof createServer>[1]>, 'resolvers' | 'onLog'>;
  resolvers: string[];
  /** Lines for the log (ignored vLLM flags). */
  notes: string[];
}

/** The command line (and VLLM_* environment) as load and server options. */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv = {}): ServeArgs {
  const valueFlags = [
    'model', 'host', 'port', 'api-key', 'max-loras', 'max-lora-rank', 'max-cpu-loras', 'default-lora', 'state-dir',
    'max-model-len', 'max-num-seqs', 'max-num-batched-tokens', 'kv-cache-memory-bytes', 'max-queued-requests',
    'max-body-bytes', 'revision',
  ];
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const f of valueFlags) options[f] = { type: 'string' };
  for (const f of ['lora-modules', 'served-model-name', 'lora-resolver']) options[f] = { type: 'string', multiple: true };
  for (const f of ['enable-lora', 'allow-runtime-lora-updating', 'enable-prefix-caching', 'no-enable-prefix-caching', 'async-scheduling', 'no-async-scheduling']) {
    options[f] = { type: 'boolean' };
  }
  for (const [f, takesValue] of Object.entries(IGNORED_VLLM_FLAGS)) options[f] = { type: takesValue ? 'string' : 'boolean' };
  const { values, tokens } = parseArgs({ args: argv, options, allowPositionals: true, strict: true, tokens: true });
  const v = values as Values;

  // Positionals: the model first; after a multi-value flag, more values of that flag.
  const multi: Record<string, string[]> = { 'lora-modules': [], 'served-model-name': [] };
  const positionals: string[] = [];
  let last: string | null = null;
  for (const t of tokens) {
    if (t.kind === 'option') {
      last = MULTI_VALUE.has(t.name) ? t.name : null;
      if (last && t.value !== undefined) multi[last]!.push(t.value);
    } else if (t.kind === 'positional') {
      if (last) multi[last]!.push(t.value);
      else positionals.push(t.value);
    } else last = null;
  }
  const model = positionals[0] ?? str(v, 'model');
  if (!model) throw usageError('the model is required', 'polylora serve <model folder or org/name> [options]');
  if (positionals.length > 1) throw usageError(`unexpected argument ${JSON.stringify(positionals[1])}`, 'flags come as --name value');

  const notes = Object.keys(IGNORED_VLLM_FLAGS)
    .filter((f) => v[f] !== undefined)
    .map((f) => `ignoring vLLM flag --${f} (no effect in polylora)`);
  const enableLora = v['enable-lora'] === true;
  const loraModules = multi['lora-modules']!.map(parseLoraModule);
  const loraFlags = ['max-loras', 'max-lora-rank', 'max-cpu-loras', 'default-lora', 'lora-resolver', 'allow-runtime-lora-updating'];
  if (!enableLora) {
    const used = loraFlags.filter((f) => v[f] !== undefined);
    if (loraModules.length) used.unshift('lora-modules');
    if (used.length) throw usageError(`--${used[0]} needs --enable-lora`);
  }
  const envUpdating = (env.VLLM_ALLOW_RUNTIME_LORA_UPDATING ?? '').trim().toLowerCase();
  const hub: HubOptions = { revision: str(v, 'revision') };
  return {
    model,
    host: str(v, 'host') ?? '127.0.0.1',
    port: int(v, 'port', 0) ?? 8000,
    hub,
    llm: {
      enableLora,
      maxLoras: int(v, 'max-loras', 1),
      maxLoraRank: int(v, 'max-lora-rank', 1),
      maxCpuLoras: int(v, 'max-cpu-loras', 1),
      maxModelLen: int(v, 'max-model-len', 2),
      maxNumSeqs: int(v, 'max-num-seqs', 1),
      maxNumBatchedTokens: int(v, 'max-num-batched-tokens', 1),
      kvCacheBytes: int(v, 'kv-cache-memory-bytes', 1),
      enablePrefixCaching: v['no-enable-prefix-caching'] !== true,
      asyncScheduling: v['no-async-scheduling'] !== true,
    },
    server: {
      servedModelNames: multi['served-model-name']!.length ? multi['served-model-name'] : undefined,
      apiKey: str(v, 'api-key') ?? env.VLLM_API_KEY ?? null,
      loraModules,
      defaultLora: str(v, 'default-lora') ?? null,
      stateDir: str(v, 'state-dir') ?? null,
      allowRuntimeLoraUpdating: v['allow-runtime-lora-updating'] === true || envUpdating === 'true' || envUpdating === '1',
      maxQueuedRequests: int(v, 'max-queued-requests', 0),
      maxBodyBytes: int(v, 'max-body-bytes', 1),
    },
    resolvers: (v['lora-resolver'] as string[] | undefined) ?? [],
    notes,
  };
}

/** `name=path` or `{"name": ..., "path": ..., "base_model_name": ...}` (vLLM's two forms). */
export function parseLoraModule(spec: string): LoraModuleSpec {
  const bad = (expected: string) =>
    new PolyloraError('INVALID_ARGUMENT', 'bad --lora-modules value', { field: '--lora-modules', expected, found: JSON.stringify(spec) });
  if (spec.trimStart().startsWith('{')) {
    let j: unknown;
    try {
      j = JSON.parse(spec);
    } catch {
      throw bad('valid JSON {"name": ..., "path": ..., "base_model_name": ...}');
    }
    const m = j as Record<string, unknown>;
    if (typeof m.name !== 'string' || typeof m.path !== 'string') throw bad('JSON with string fields "name" and "path"');
    if (m.base_model_name !== undefined && typeof m.base_model_name !== 'string') throw bad('"base_model_name" a string');
    return { name: m.name, path: m.path, baseModelName: m.base_model_name as string | undefined };
  }
  const eq = spec.indexOf('=');
  if (eq <= 0 || eq === spec.length - 1) throw bad('name=path');
  return { name: spec.slice(0, eq), path: spec.slice(eq + 1) };
}
