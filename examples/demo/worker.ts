// The engine side of the demo: a dedicated Web Worker that owns the GPU device, the LLM and its adapters, and
// talks to the page only through the messages in protocol.ts. Nothing of the engine runs on the main thread.
//
// Adapters are read when they are added (llm.loadLora), so a run's requests all start synchronously: one
// llm.stream() per column in the same tick, and the engine schedules them into the same steps. The worker tags
// each arriving token with the engine step that produced it (llm.stats.steps: the engine counts a step before it
// hands out that step's tokens) and reports the most columns served by one step.

import { Gpu, LLM, fileListTree, type FileTree, type LoraAdapter, type RequestStream } from '../../src/index.browser.js';
// Opening an adapter by Hub id or URL with its own download progress needs the platform's resolver, which the
// public API does not export (llm.loadLora resolves strings too, but reports downloads to the model's onProgress).
import { browserPlatform } from '../../src/platform/browser.js';
import type {
  AdapterSummary,
  BatchReport,
  ColumnSpec,
  DeviceSummary,
  EngineOptions,
  FromWorker,
  Progress,
  PromptInput,
  RunParams,
  Source,
  ToWorker,
} from './protocol.js';

/** The worker global, typed for what this file uses (the project compiles against the DOM library). */
interface WorkerScope {
  postMessage(message: FromWorker): void;
  addEventListener(type: 'message', listener: (e: MessageEvent<ToWorker>) => void): void;
}
const scope = self as unknown as WorkerScope;
const post = (m: FromWorker) => scope.postMessage(m);

const ADAPTER_CONFIG = 'adapter_config.json';
/** Sequences per engine step: more columns than this would wait for a free row. */
const MAX_NUM_SEQS = 16;
/** Progress messages per phase at most every this many ms (the last one always goes). */
const PROGRESS_INTERVAL_MS = 100;

interface Loaded {
  llm: LLM;
  options: EngineOptions;
  /** Registered adapters: name -> the FileTree it was registered with (requests must name the same source). */
  adapters: Map<string, FileTree>;
}

interface ActiveRun {
  run: number;
  streams: RequestStream[];
  done: Promise<void>;
}

const gpuReady: Promise<Gpu> = Gpu.create();
let loaded: Loaded | null = null;
let active: ActiveRun | null = null;
/** Model loads and adapter changes run one after another, in arrival order. */
let queue: Promise<void> = Promise.resolve();

void reportDevice();

scope.addEventListener('message', (e) => {
  const m = e.data;
  if (m.type === 'stop') {
    if (active?.run === m.run) active.streams.forEach((s) => s.abort());
    return;
  }
  queue = queue.then(() => handle(m)).catch((err: unknown) => console.error(err));
});

async function handle(m: Exclude<ToWorker, { type: 'stop' }>): Promise<void> {
  switch (m.type) {
    case 'load-model':
      return loadModel(m.source, m.options);
    case 'add-adapters':
      return addAdapters(m.source);
    case 'remove-adapter':
      return removeAdapter(m.name);
    case 'run':
      // The queue waits only for the start: the run streams on, and 'stop' never waits in the queue.
      return startRun(m.run, m.prompt, m.params, m.columns);
  }
}

async function reportDevice(): Promise<void> {
  try {
    const gpu = await gpuReady;
    const offered = (await navigator.gpu.requestAdapter())?.features.has('shader-f16') ?? false;
    const i = gpu.info;
    const device: DeviceSummary = {
      description: i.description,
      vendor: i.vendor,
      architecture: i.architecture,
      f16Compute: i.features.shaderF16,
      shaderF16Offered: offered,
      subgroups: i.features.subgroups,
      subgroupMinSize: i.subgroupMinSize,
      subgroupMaxSize: i.subgroupMaxSize,
      maxBufferSize: i.maxBufferSize,
      maxStorageBufferBindingSize: i.maxStorageBufferBindingSize,
    };
    post({ type: 'device', device });
  } catch (e) {
    post({ type: 'device-error', message: messageOf(e) });
  }
}

async function loadModel(source: Source, options: EngineOptions): Promise<void> {
  try {
    await stopActiveRun();
    if (loaded) {
      const old = loaded;
      loaded = null;
      for (const name of old.adapters.keys()) post({ type: 'adapter-removed', name });
      await old.llm.close();
    }
    const gpu = await gpuReady;
    const model = source.kind === 'files' ? fileListTree(source.files) : source.location.trim();
    const downloads = throttled((p: Progress) => post({ type: 'model-progress', progress: p }));
    const uploads = throttled((p: Progress) => post({ type: 'model-progress', progress: p }));
    const llm = await LLM.load(model, {
      gpu,
      enableLora: true,
      maxLoras: options.maxLoras,
      maxLoraRank: options.maxLoraRank,
      maxModelLen: options.maxModelLen,
      maxNumSeqs: MAX_NUM_SEQS,
      hub: {
        endpoint: options.hubEndpoint || undefined,
        onProgress: (p) => downloads({ phase: 'download', item: p.file, done: p.loaded, total: p.total }),
      },
      onProgress: (p) => uploads({ phase: 'upload', item: p.tensor, done: p.loaded, total: p.total }),
      onWarning: (w) => console.warn(`polylora: ${w}`),
    });
    loaded = { llm, options, adapters: new Map() };
    const c = llm.info.config;
    post({
      type: 'model-loaded',
      model: {
        label: llm.info.model,
        arch: c.arch,
        numLayers: c.numLayers,
        hiddenSize: c.hiddenSize,
        vocabSize: c.vocabSize,
        torchDtype: c.torchDtype,
        weightBytes: llm.info.weightBytes,
        kvCapacityTokens: llm.info.kvCapacityTokens,
        maxModelLen: llm.info.maxModelLen,
        loraSlotBytes: llm.info.loraSlotBytes,
        maxLoras: options.maxLoras,
        maxLoraRank: options.maxLoraRank,
        hasTokenizer: llm.tokenizer !== null,
      },
    });
  } catch (e) {
    post({ type: 'model-error', message: messageOf(e) });
  }
}

/** Reads every adapter of `source`, shows each (or its error), and registers the good ones with the LLM. */
async function addAdapters(source: Source): Promise<void> {
  try {
    if (!loaded) throw new Error('load a model first: adapters are checked against its shapes');
    const { llm, options, adapters } = loaded;
    const trees = source.kind === 'files' ? adapterTrees(source.files) : [await openLocation(source.location.trim(), options)];
    for (const tree of trees) {
      const where = source.kind === 'files' ? tree.label : source.location.trim();
      try {
        // Named after its folder (or Hub repo), without a revision: `org/pirate@v2` -> pirate.
        const name = uniqueName(where.replace(/\/+$/, '').split('/').pop()!.replace(/@.*$/, '') || 'adapter', adapters);
        // Read, checked against the base and the GPU slots, and kept in memory: a run then starts it synchronously.
        let adapter: LoraAdapter;
        try {
          adapter = await llm.loadLora({ name, path: tree });
        } catch (e) {
          if (llm.listLoras().includes(name)) llm.removeLora(name);
          throw e;
        }
        adapters.set(name, tree);
        post({ type: 'adapter-added', adapter: summarize(adapter) });
      } catch (e) {
        post({ type: 'adapter-error', label: where, message: messageOf(e) });
      }
    }
  } catch (e) {
    post({ type: 'adapter-error', label: source.kind === 'files' ? 'picked files' : source.location, message: messageOf(e) });
  } finally {
    post({ type: 'adapters-done' });
  }
}

async function removeAdapter(name: string): Promise<void> {
  if (!loaded?.adapters.has(name)) return;
  try {
    loaded.llm.removeLora(name);
    loaded.adapters.delete(name);
    post({ type: 'adapter-removed', name });
  } catch (e) {
    post({ type: 'adapter-error', label: name, message: messageOf(e) });
  }
}

async function startRun(run: number, prompt: PromptInput, params: RunParams, columns: ColumnSpec[]): Promise<void> {
  try {
    await stopActiveRun();
    if (!loaded) throw new Error('load a model first');
    const { llm, adapters } = loaded;
    const promptIds = 'ids' in prompt ? prompt.ids : llm.encode(prompt.text);
    post({ type: 'run-started', run, promptIds });
    const before = { ...llm.stats };
    const t0 = performance.now();
    /** Engine step -> columns that got a token from it. */
    const rowsInStep = new Map<number, number>();
    // Every column's request is queued in this one synchronous loop, so they are scheduled together.
    const streams = columns.map((c) => {
      const lora = c.adapter === null ? null : { name: c.adapter, path: adapterTree(adapters, c.adapter), scale: c.scale };
      return llm.stream({ promptIds }, params, { lora });
    });
    const pumps = columns.map(async (c, i) => {
      const stream = streams[i]!;
      let tokens = 0;
      try {
        for await (const chunk of stream) {
          if (chunk.tokenIds.length === 0) continue; // the empty last chunk of an aborted request
          const step = llm.stats.steps;
          rowsInStep.set(step, (rowsInStep.get(step) ?? 0) + 1);
          tokens += chunk.tokenIds.length;
          post({ type: 'tokens', run, column: c.column, text: chunk.text, tokens, elapsedMs: performance.now() - t0 });
        }
        const out = await stream.result;
        post({ type: 'column-done', run, column: c.column, finishReason: out.finishReason, tokens, elapsedMs: performance.now() - t0 });
      } catch (e) {
        post({ type: 'column-error', run, column: c.column, message: messageOf(e) });
      }
    });
    const done = Promise.all(pumps).then(() => {
      const batch: BatchReport = {
        sequences: columns.length,
        peakRowsInStep: Math.max(0, ...rowsInStep.values()),
        steps: llm.stats.steps - before.steps,
        tokens: llm.stats.generatedTokens - before.generatedTokens,
        elapsedMs: performance.now() - t0,
      };
      if (active?.run === run) active = null;
      post({ type: 'run-done', run, batch });
    });
    active = { run, streams, done };
  } catch (e) {
    post({ type: 'run-error', run, message: messageOf(e) });
  }
}

async function stopActiveRun(): Promise<void> {
  if (!active) return;
  const { streams, done } = active;
  streams.forEach((s) => s.abort());
  await done;
}

function adapterTree(adapters: Map<string, FileTree>, name: string): FileTree {
  const tree = adapters.get(name);
  if (!tree) throw new Error(`adapter "${name}" is not loaded (it was removed, or the model was replaced)`);
  return tree;
}

/** A Hub id or a folder URL, opened the way the library opens a model location (Hub downloads with progress). */
async function openLocation(location: string, options: EngineOptions): Promise<FileTree> {
  if (await browserPlatform.isLocal(location)) return browserPlatform.openLocal(location);
  const progress = throttled((p: Progress) => post({ type: 'adapter-progress', label: location, progress: p }));
  return browserPlatform.openHub(location, {
    endpoint: options.hubEndpoint || undefined,
    onProgress: (p) => progress({ phase: 'download', item: p.file, done: p.loaded, total: p.total }),
  });
}

/**
 * The adapter folders among picked files: every folder holding adapter_config.json is one adapter (so picking a
 * folder of adapters adds them all). Without any adapter_config.json the whole pick is one tree, and reading it
 * names the missing file.
 */
function adapterTrees(files: File[]): FileTree[] {
  const pathOf = (f: File) => f.webkitRelativePath || f.name;
  const roots = files
    .map(pathOf)
    .filter((p) => p === ADAPTER_CONFIG || p.endsWith(`/${ADAPTER_CONFIG}`))
    .map((p) => p.slice(0, p.length - ADAPTER_CONFIG.length))
    .sort();
  if (roots.length === 0) return [fileListTree(files)];
  return roots.map((root) => {
    const inside = files.filter((f) => pathOf(f).startsWith(root));
    // Files renamed relative to the adapter folder (a File built from another shares its bytes, nothing is copied).
    const renamed = inside.map((f) => new File([f], pathOf(f).slice(root.length), { type: f.type, lastModified: f.lastModified }));
    return fileListTree(renamed, root.replace(/\/$/, '') || 'picked files');
  });
}

function uniqueName(base: string, taken: Map<string, FileTree>): string {
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) if (!taken.has(`${base}-${i}`)) return `${base}-${i}`;
}

function summarize(a: LoraAdapter): AdapterSummary {
  const modules = [...a.modules.values()];
  return {
    name: a.name,
    source: a.source,
    rank: a.rank,
    targets: a.targets.targets,
    layers: a.targets.layers.length,
    byteSize: a.byteSize,
    dtypes: [...new Set(modules.flatMap((m) => [m.a.dtype, m.b.dtype]))],
    baseScale: modules[0]?.scale ?? 0,
    warnings: a.warnings,
  };
}

/** Calls `send` at most every PROGRESS_INTERVAL_MS, and always for the last item (done === total). */
function throttled(send: (p: Progress) => void): (p: Progress) => void {
  let last = -Infinity;
  return (p) => {
    const now = performance.now();
    if (p.done < p.total && now - last < PROGRESS_INTERVAL_MS) return;
    last = now;
    send(p);
  };
}

/** error.message: a PolyloraError's names the file, tensor or field, what was expected and found, and a hint. */
function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
