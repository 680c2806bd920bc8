// The OpenAI-compatible HTTP server (node:http, no framework): vLLM's routes, flags and answers, over one LLM.
//
//   const server = createServer(LLM.load(model, { enableLora: true }), { loraModules: [{ name: 'zara', path }] });
//   const url = await server.listen(8000, '127.0.0.1');    // answers 503 until the model and adapters are loaded
//   await server.ready;
//
// Routes: GET /health (no key needed; 503 while loading), GET /version, GET /metrics, GET /v1/models[/{id}],
// POST /v1/completions, POST /v1/chat/completions, POST /v1/load_lora_adapter and /v1/unload_lora_adapter (only
// with allowRuntimeLoraUpdating). With an API key every route but /health needs `Authorization: Bearer <key>`.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { LLM } from '../engine/llm.js';
import { LoRARequest } from '../engine/lora-request.js';
import type { SamplingParams } from '../engine/sampling-params.js';
import { AdapterManager, type LoraModuleSpec, type Route } from './adapters.js';
import { handleChatCompletions } from './chat-completions.js';
import { handleCompletions } from './completions.js';
import { sendError, sendJson, type ServingContext } from './context.js';
import { llmHooks, type EngineHooks } from './engine-hooks.js';
import { startChoices } from './generation.js';
import { HttpError } from './http-error.js';
import { renderMetrics, ServerMetrics } from './metrics.js';
import { asBody } from './protocol.js';
import type { LoraResolver } from './resolvers.js';
import { AdapterStateStore } from './state-store.js';

export interface ServerOptions {
  /** Names the base model answers to (vLLM's --served-model-name); the first is the one responses carry. Default: the model the LLM was loaded from. */
  servedModelNames?: string[];
  /** Required as `Authorization: Bearer <key>` on every route but /health (vLLM's --api-key). */
  apiKey?: string | null;
  /** Adapters served from the start (--lora-modules); a failing one fails `ready`. */
  loraModules?: LoraModuleSpec[];
  /** Requests for a base name get this adapter (--default-lora); null = the base model (default). */
  defaultLora?: string | null;
  /** Asked in order for names nobody serves (--lora-resolver, plugins). */
  resolvers?: LoraResolver[];
  /** Folder of the adapter state: runtime-added adapters are recorded there and restored at start (--state-dir). */
  stateDir?: string | null;
  /** Enables /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING). Default false. */
  allowRuntimeLoraUpdating?: boolean;
  /** Largest request body in bytes (413 above), default 32 MiB. */
  maxBodyBytes?: number;
  /** Engine requests allowed to wait beyond the running batch (maxNumSeqs); 429 above. Default 1024. */
  maxQueuedRequests?: number;
  /** Log lines (adapter loads, restores, errors). Default: none. */
  onLog?: (message: string) => void;
}

export interface PolyloraServer {
  /** The node:http server (listen, close and events are available; prefer listen()/close() below). */
  readonly http: http.Server;
  /** Resolves once the model and the adapters (static, restored, default) are loaded; rejects if that fails. */
  readonly ready: Promise<void>;
  /** Served adapters, load/unload from code; throws before `ready`. */
  readonly adapters: AdapterManager;
  /** Starts listening (port 0: any free port); resolves with the base URL, e.g. `http://127.0.0.1:8000`. */
  listen(port?: number, host?: string): Promise<string>;
  /** Adds a resolver after the configured ones (the plugin API); usable before `ready`. */
  addResolver(r: LoraResolver): void;
  /** Stops listening, aborts running requests and closes connections. The LLM stays open (it is the caller's). */
  close(): Promise<void>;
}

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Starts serving `llm` (or the LLM a pending load will give: 503 until then). */
export function createServer(llm: LLM | Promise<LLM>, options: ServerOptions = {}): PolyloraServer {
  const maxBodyBytes = options.maxBodyBytes ?? 32 * 2 ** 20;
  const maxQueued = options.maxQueuedRequests ?? 1024;
  const resolvers = [...(options.resolvers ?? [])];
  const metrics = new ServerMetrics();
  const log = options.onLog ?? (() => {});
  const keyHash = options.apiKey ? sha256(options.apiKey) : null;
  let ctx: (ServingContext & { hooks: EngineHooks; allowUpdates: boolean }) | null = null;
  let loadError: unknown = null;
  let inFlight = 0;
  const sockets = new Set<Socket>();

  const ready = (async () => {
    const model = await llm;
    const hooks = llmHooks(model);
    const baseNames = options.servedModelNames?.length ? options.servedModelNames : [model.info.model];
    const store = options.stateDir ? await AdapterStateStore.open(options.stateDir, baseNames[0]!, log) : null;
    const adapters = new AdapterManager(model, hooks, { baseNames, resolvers, store, onLog: log });
    await adapters.addStatic(options.loraModules ?? []);
    await adapters.restore();
    await adapters.setDefaultLora(options.defaultLora ?? null);
    const start = (route: Route, prompts: number[][], params: SamplingParams, n: number, loraScale: number | undefined) => {
      const k = prompts.length * n;
      if (inFlight + k > hooks.maxNumSeqs + maxQueued) {
        throw new HttpError(
          429,
          `the request queue is full: ${inFlight} requests running or waiting, room for ${hooks.maxNumSeqs + maxQueued}; retry later`,
          { headers: { 'Retry-After': '1' } },
        );
      }
      const a = route.adapter;
      const lora = !a ? null : loraScale === undefined ? a.request : new LoRARequest(a.name, undefined, a.request.path, { scale: loraScale });
      const runs = startChoices(model, prompts, params, n, lora);
      metrics.countRequest(route.model);
      for (const run of runs) {
        inFlight++;
        adapters.track(a, run.stream.result);
        run.stream.result.then(
          (out) => {
            inFlight--;
            metrics.observe(out);
          },
          () => inFlight--,
        );
      }
      return runs;
    };
    ctx = { llm: model, adapters, metrics, start, hooks, allowUpdates: options.allowRuntimeLoraUpdating ?? false };
  })();
  ready.catch((e) => {
    loadError = e;
    log(`loading failed: ${e instanceof Error ? e.message : String(e)}`);
  });

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) sendError(res, e);
      else res.destroy();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    res.on('finish', () => metrics.countResponse(res.statusCode));
    if (path === '/health') {
      requireMethod(req, 'GET', 'HEAD');
      if (!ctx) throw notReady();
      res.writeHead(200, { 'Content-Length': 0 }).end();
      return;
    }
    if (keyHash && !authorized(req.headers.authorization, keyHash)) {
      throw new HttpError(401, 'Unauthorized: a valid API key is required as "Authorization: Bearer <key>"', {
        headers: { 'WWW-Authenticate': 'Bearer' },
      });
    }
    if (path === '/version') {
      requireMethod(req, 'GET');
      sendJson(res, 200, { version: VERSION });
      return;
    }
    if (!ctx) throw notReady();
    const c = ctx;
    switch (path) {
      case '/metrics': {
        requireMethod(req, 'GET');
        const text = renderMetrics(c.metrics, c.hooks.gauges(), c.llm, c.adapters);
        res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
        res.end(text);
        return;
      }
      case '/v1/models':
        requireMethod(req, 'GET');
        sendJson(res, 200, { object: 'list', data: modelCards(c) });
        return;
      case '/v1/completions':
        requireMethod(req, 'POST');
        return handleCompletions(c, await readJson(req, maxBodyBytes), res);
      case '/v1/chat/completions':
        requireMethod(req, 'POST');
        return handleChatCompletions(c, await readJson(req, maxBodyBytes), res);
      case '/v1/load_lora_adapter':
      case '/v1/unload_lora_adapter':
        return loraUpdate(c, req, res, path === '/v1/load_lora_adapter');
    }
    if (path.startsWith('/v1/models/')) {
      requireMethod(req, 'GET');
      const id = decodeURIComponent(path.slice('/v1/models/'.length));
      const card = modelCards(c).find((m) => m.id === id);
      if (!card) throw new HttpError(404, `The model \`${id}\` does not exist. Served models: ${c.adapters.names().join(', ')}.`, { param: 'model' });
      sendJson(res, 200, card);
      return;
    }
    throw new HttpError(404, `no route ${req.method} ${path}`);
  }

  async function loraUpdate(c: NonNullable<typeof ctx>, req: http.IncomingMessage, res: http.ServerResponse, load: boolean) {
    requireMethod(req, 'POST');
    if (!c.allowUpdates) {
      throw new HttpError(
        404,
        `${load ? 'loading' : 'unloading'} adapters at runtime is off: start the server with --allow-runtime-lora-updating ` +
          '(or VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)',
      );
    }
    if (c.hooks.maxLoraRank === null) throw new HttpError(400, 'this server was started without LoRA support (--enable-lora)');
    const b = asBody(await readJson(req, maxBodyBytes));
    if (load) {
      if (!b.lora_name || !b.lora_path) throw new HttpError(400, "Both 'lora_name' and 'lora_path' must be provided.", { param: b.lora_name ? 'lora_path' : 'lora_name' });
      if (b.load_inplace !== undefined && typeof b.load_inplace !== 'boolean') {
        throw new HttpError(400, `field "load_inplace": expected true or false, found ${JSON.stringify(b.load_inplace)}`, { param: 'load_inplace' });
      }
      await c.adapters.load(b.lora_name as string, b.lora_path as string, b.load_inplace === true);
      textAnswer(res, `Success: LoRA adapter '${b.lora_name}' added successfully.`);
    } else {
      await c.adapters.unload(b.lora_name as string);
      textAnswer(res, `Success: LoRA adapter '${b.lora_name}' removed successfully.`);
    }
  }

  function notReady(): HttpError {
    if (loadError) {
      const why = loadError instanceof Error ? loadError.message : String(loadError);
      return new HttpError(503, `the server failed to load: ${why}`);
    }
    return new HttpError(503, 'the model is loading; retry shortly', { headers: { 'Retry-After': '1' } });
  }

  return {
    http: server,
    ready,
    get adapters() {
      if (!ctx) throw notReady();
      return ctx.adapters;
    },
    listen(port = 8000, host = '127.0.0.1') {
      return new Promise<string>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const a = server.address() as AddressInfo;
          resolve(`http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
        });
      });
    },
    addResolver(r) {
      if (ctx) ctx.adapters.addResolver(r);
      else if (resolvers.some((x) => x.name === r.name)) throw new HttpError(400, `a resolver named "${r.name}" is already registered`);
      else resolvers.push(r);
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/** vLLM's model cards: the base under each served name, then the adapters with `parent` (base) and `root` (source). */
function modelCards(c: ServingContext) {
  const created = Math.floor(Date.now() / 1000);
  const base = c.adapters.baseNames.map((name) => ({
    id: name,
    object: 'model',
    created,
    owned_by: 'polylora',
    root: c.llm.info.model,
    parent: null,
    max_model_len: c.llm.info.maxModelLen,
  }));
  const loras = c.adapters.list().map((a) => ({
    id: a.name,
    object: 'model',
    created: a.created,
    owned_by: 'polylora',
    root: a.root,
    parent: a.parent,
    max_model_len: c.llm.info.maxModelLen,
    lora: { rank: a.rank, targets: a.targets, bytes: a.bytes, origin: a.origin, default: c.adapters.defaultLora === a.name },
  }));
  return [...base, ...loras];
}

function requireMethod(req: http.IncomingMessage, ...methods: string[]): void {
  if (!methods.includes(req.method ?? '')) {
    throw new HttpError(405, `method ${req.method} is not allowed here (use ${methods.join(' or ')})`, { headers: { Allow: methods.join(', ') } });
  }
}

function textAnswer(res: http.ServerResponse, text: string): void {
  res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** `Bearer <key>` compared in constant time (hashes of equal length). */
function authorized(header: string | undefined, keyHash: Buffer): boolean {
  const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
  return m !== null && timingSafeEqual(sha256(m[1]!.trim()), keyHash);
}

/**
 * The body as JSON: 413 above `limit` bytes (by Content-Length, or counted while reading; the rest is drained, not
 * kept, up to 4 x limit, so the client reads the answer), 400 when it is not JSON.
 */
function readJson(req: http.IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const tooLarge = (n: number) =>
      new HttpError(413, `the request body is ${n} bytes or more; the limit is ${limit} bytes`, { headers: { Connection: 'close' } });
    const declared = Number(req.headers['content-length'] ?? NaN);
    const chunks: Buffer[] = [];
    let size = 0;
    let over = declared > limit;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) over = true;
      if (!over) chunks.push(chunk);
      else if (size > 4 * limit) req.destroy();
    });
    req.on('error', reject);
    req.on('close', () => {
      if (over && !req.complete) reject(tooLarge(Math.max(size, declared || 0)));
    });
    req.on('end', () => {
      if (over) return reject(tooLarge(Math.max(size, declared || 0)));
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new HttpError(400, `the request body is not valid JSON: ${(e as Error).message}`));
      }
    });
  });
}
