/// <reference types="vite/client" />
// The demo page's main thread: the controls, the adapter list and the answer columns. The engine lives in
// worker.ts; this file only sends it the messages of protocol.ts and draws what comes back.

import type { ColumnSpec, EngineOptions, FromWorker, PromptInput, RunParams, Source, ToWorker } from './protocol.js';
import { AdapterList } from './ui/adapters.js';
import { Columns, type ColumnLabel } from './ui/columns.js';
import { byId, formatBytes } from './ui/dom.js';
import { deviceName, showDevice, showModel } from './ui/facts.js';

/** Only `npm run demo` (the dev server) serves the shared test data, at /@fs/<absolute path>; a build has null. */
const sharedDir = import.meta.env.VITE_SHARED_DIR as string | null;
const SHARED = sharedDir ? `/@fs${sharedDir}` : null;
const BUNDLED_MODEL = 'models/tinystories-656k';
const BUNDLED_ADAPTERS = ['zara', 'pirate', 'robot'].map((n) => `adapters/tinystories-656k/${n}`);

const el = {
  gpuError: byId('gpu-error'),
  modelForm: byId<HTMLFormElement>('model-form'),
  modelLocation: byId<HTMLInputElement>('model-location'),
  modelLoad: byId<HTMLButtonElement>('model-load'),
  modelFiles: byId<HTMLInputElement>('model-files'),
  modelBundled: byId<HTMLButtonElement>('model-bundled'),
  modelProgress: byId<HTMLProgressElement>('model-progress'),
  modelStatus: byId('model-status'),
  modelInfo: byId('model-info'),
  maxLoras: byId<HTMLInputElement>('opt-max-loras'),
  maxRank: byId<HTMLInputElement>('opt-max-rank'),
  maxLen: byId<HTMLInputElement>('opt-max-len'),
  hub: byId<HTMLInputElement>('opt-hub'),
  adapterForm: byId<HTMLFormElement>('adapter-form'),
  adapterLocation: byId<HTMLInputElement>('adapter-location'),
  adapterAdd: byId<HTMLButtonElement>('adapter-add'),
  adapterFiles: byId<HTMLInputElement>('adapter-files'),
  adaptersBundled: byId<HTMLButtonElement>('adapters-bundled'),
  adapterStatus: byId('adapter-status'),
  useBase: byId<HTMLInputElement>('use-base'),
  temperature: byId<HTMLInputElement>('temperature'),
  topP: byId<HTMLInputElement>('top-p'),
  maxTokens: byId<HTMLInputElement>('max-tokens'),
  seed: byId<HTMLInputElement>('seed'),
  promptIds: byId<HTMLInputElement>('prompt-ids'),
  deviceStatus: byId('device-status'),
  deviceInfo: byId('device-info'),
  deviceChip: byId('device-chip'),
  runForm: byId<HTMLFormElement>('run-form'),
  prompt: byId<HTMLTextAreaElement>('prompt'),
  run: byId<HTMLButtonElement>('run'),
  stop: byId<HTMLButtonElement>('stop'),
  batch: byId('batch'),
  promptInfo: byId('prompt-info'),
};

const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'polylora-engine' });
const send = (m: ToWorker) => worker.postMessage(m);
const columns = new Columns(byId('columns'));
const adapters = new AdapterList(byId('adapter-list'), (name) => send({ type: 'remove-adapter', name }));

const state = {
  gpuOk: false,
  modelLoaded: false,
  loadingModel: false,
  /** add-adapters requests sent and not answered with adapters-done yet. */
  addingAdapters: 0,
  /** The run in progress, or null. */
  run: null as number | null,
  lastRun: 0,
  modelT0: 0,
  /** Column indices of the run in progress. */
  columns: [] as number[],
};

/** Enables exactly the controls that make sense now. */
function refresh(): void {
  const idle = state.run === null;
  const canLoad = state.gpuOk && !state.loadingModel && idle;
  for (const c of [el.modelLocation, el.modelLoad, el.modelFiles, el.modelBundled]) c.disabled = !canLoad;
  const canAdd = state.modelLoaded && !state.loadingModel && idle;
  for (const c of [el.adapterLocation, el.adapterAdd, el.adapterFiles, el.adaptersBundled]) c.disabled = !canAdd;
  el.run.disabled = !state.modelLoaded || state.loadingModel || state.addingAdapters > 0 || !idle;
  el.stop.disabled = idle;
  adapters.setRemovable(idle);
  document.body.toggleAttribute('data-busy', state.loadingModel || state.addingAdapters > 0 || state.run !== null);
}

// ---- model ----

function engineOptions(): EngineOptions {
  return {
    maxLoras: readNumber(el.maxLoras),
    maxLoraRank: readNumber(el.maxRank),
    maxModelLen: readNumber(el.maxLen),
    hubEndpoint: el.hub.value.trim(),
  };
}

function loadModel(source: Source, what: string): void {
  let options: EngineOptions;
  try {
    options = engineOptions();
  } catch {
    return;
  }
  state.loadingModel = true;
  state.modelLoaded = false;
  state.modelT0 = performance.now();
  el.modelStatus.textContent = `Loading ${what}…`;
  el.modelStatus.classList.remove('error');
  el.modelProgress.value = 0;
  el.modelProgress.parentElement!.classList.add('active');
  el.modelInfo.hidden = true;
  refresh();
  send({ type: 'load-model', source, options });
}

el.modelForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const location = el.modelLocation.value.trim();
  if (!location) {
    el.modelStatus.textContent = 'Type a Hub id (org/name) or a folder URL first.';
    el.modelLocation.focus();
    return;
  }
  loadModel({ kind: 'location', location }, location);
});

el.modelFiles.addEventListener('change', () => {
  const files = [...(el.modelFiles.files ?? [])];
  el.modelFiles.value = '';
  if (files.length) loadModel({ kind: 'files', files }, `${files.length} picked files`);
});

if (SHARED) {
  byId('dev-model').hidden = false;
  byId('dev-adapters').hidden = false;
  el.modelBundled.addEventListener('click', () => loadModel({ kind: 'location', location: `${SHARED}/${BUNDLED_MODEL}` }, 'TinyStories-656K'));
  el.adaptersBundled.addEventListener('click', () => {
    for (const rel of BUNDLED_ADAPTERS) addAdapters({ kind: 'location', location: `${SHARED}/${rel}` });
  });
}

// ---- adapters ----

function addAdapters(source: Source): void {
  state.addingAdapters++;
  el.adapterStatus.textContent = 'Reading adapters…';
  refresh();
  send({ type: 'add-adapters', source });
}

el.adapterForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const location = el.adapterLocation.value.trim();
  if (!location) {
    el.adapterStatus.textContent = 'Type a Hub id (org/name) or a folder URL first.';
    el.adapterLocation.focus();
    return;
  }
  el.adapterLocation.value = '';
  addAdapters({ kind: 'location', location });
});

el.adapterFiles.addEventListener('change', () => {
  const files = [...(el.adapterFiles.files ?? [])];
  el.adapterFiles.value = '';
  if (files.length) addAdapters({ kind: 'files', files });
});

// ---- run ----

/** The input's number; when it is out of its min/max/step, the browser shows why and this throws. */
function readNumber(input: HTMLInputElement): number {
  if (!input.checkValidity() || input.value.trim() === '') {
    if (input.value.trim() === '') input.setCustomValidity('a number is needed here');
    input.reportValidity();
    input.setCustomValidity('');
    throw new Error(`invalid ${input.id}`);
  }
  return input.valueAsNumber;
}

function readPrompt(): PromptInput {
  const raw = el.promptIds.value.trim();
  if (!raw) return { text: el.prompt.value };
  const ids = raw.split(/[\s,]+/).filter(Boolean).map(Number);
  if (!ids.every((t) => Number.isInteger(t) && t >= 0)) {
    el.promptIds.setCustomValidity('token ids are non-negative integers, separated by commas or spaces');
    el.promptIds.closest('details')!.open = true;
    el.promptIds.reportValidity();
    el.promptIds.setCustomValidity('');
    throw new Error('invalid prompt ids');
  }
  return { ids };
}

function startRun(): void {
  if (el.run.disabled) return;
  let params: RunParams;
  let prompt: PromptInput;
  try {
    params = {
      temperature: readNumber(el.temperature),
      topP: readNumber(el.topP),
      maxTokens: readNumber(el.maxTokens),
      seed: readNumber(el.seed),
    };
    prompt = readPrompt();
  } catch {
    return;
  }
  const specs: (ColumnSpec & ColumnLabel)[] = [];
  if (el.useBase.checked) specs.push({ column: 0, adapter: null, scale: 1, title: 'Base model', detail: 'no adapter' });
  for (const a of adapters.selected()) {
    specs.push({ column: specs.length, adapter: a.name, scale: a.scale, title: a.name, detail: `scale ×${a.scale.toFixed(2)}` });
  }
  if (specs.length === 0) {
    el.batch.textContent = 'Pick at least one column: the base model or an adapter.';
    return;
  }
  const run = ++state.lastRun;
  state.run = run;
  state.columns = specs.map((s) => s.column);
  columns.start(specs);
  el.batch.dataset.peak = '';
  el.batch.classList.remove('error');
  el.batch.textContent = `Generating ${specs.length} sequence${specs.length === 1 ? '' : 's'}, submitted together…`;
  el.promptInfo.textContent = '';
  refresh();
  send({ type: 'run', run, prompt, params, columns: specs.map(({ column, adapter, scale }) => ({ column, adapter, scale })) });
}

el.runForm.addEventListener('submit', (e) => {
  e.preventDefault();
  startRun();
});
el.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    startRun();
  }
});
el.stop.addEventListener('click', stopRun);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && state.run !== null) stopRun();
});

function stopRun(): void {
  if (state.run === null) return;
  send({ type: 'stop', run: state.run });
  el.batch.textContent = 'Stopping…';
}

// ---- messages from the worker ----

worker.addEventListener('message', (e: MessageEvent<FromWorker>) => onMessage(e.data));
worker.addEventListener('error', (e) => {
  showGpuError(`The engine worker failed to start: ${e.message || 'unknown error'} (see the browser console).`);
});

function showGpuError(message: string): void {
  el.gpuError.textContent = message;
  el.gpuError.hidden = false;
  el.deviceStatus.textContent = 'No usable WebGPU device.';
  el.deviceStatus.classList.add('error');
  el.deviceChip.textContent = 'No WebGPU';
  state.gpuOk = false;
  refresh();
}

function onMessage(m: FromWorker): void {
  switch (m.type) {
    case 'device':
      state.gpuOk = true;
      el.deviceStatus.textContent = `WebGPU: ${deviceName(m.device)}`;
      el.deviceChip.textContent = `WebGPU · ${deviceName(m.device)} · ${m.device.f16Compute ? 'f16' : 'f32'} compute`;
      showDevice(el.deviceInfo, m.device);
      break;
    case 'device-error':
      showGpuError(m.message);
      break;
    case 'model-progress': {
      const p = m.progress;
      el.modelProgress.value = p.total > 0 ? p.done / p.total : 0;
      el.modelStatus.textContent =
        p.phase === 'download'
          ? `Downloading ${p.item}: ${formatBytes(p.done)} of ${formatBytes(p.total)}`
          : `Uploading weights to the GPU: ${formatBytes(p.done)} of ${formatBytes(p.total)}`;
      break;
    }
    case 'model-loaded':
      state.loadingModel = false;
      state.modelLoaded = true;
      el.modelProgress.parentElement!.classList.remove('active');
      el.modelStatus.textContent = `Loaded ${m.model.label} in ${((performance.now() - state.modelT0) / 1000).toFixed(1)} s.`;
      showModel(el.modelInfo, m.model);
      el.batch.textContent = 'Ready: type a prompt and generate.';
      break;
    case 'model-error':
      state.loadingModel = false;
      el.modelProgress.parentElement!.classList.remove('active');
      el.modelStatus.textContent = m.message;
      el.modelStatus.classList.add('error');
      break;
    case 'adapter-progress':
      el.adapterStatus.textContent = `Downloading ${m.label}: ${m.progress.item} ${formatBytes(m.progress.done)} of ${formatBytes(m.progress.total)}`;
      break;
    case 'adapter-added':
      adapters.add(m.adapter);
      break;
    case 'adapter-error':
      adapters.addError(m.label, m.message);
      break;
    case 'adapters-done':
      state.addingAdapters--;
      el.adapterStatus.textContent = state.addingAdapters > 0 ? 'Reading adapters…' : `${adapters.size} adapter${adapters.size === 1 ? '' : 's'} loaded.`;
      break;
    case 'adapter-removed':
      adapters.removed(m.name);
      el.adapterStatus.textContent = `${adapters.size} adapter${adapters.size === 1 ? '' : 's'} loaded.`;
      break;
    case 'run-started':
      if (m.run === state.run) {
        el.promptInfo.textContent = `${m.promptIds.length} prompt tokens: ${m.promptIds.join(', ')}`;
        el.promptInfo.dataset.ids = m.promptIds.join(',');
      }
      break;
    case 'tokens':
      if (m.run === state.run) columns.append(m.column, m.text, m.tokens, m.elapsedMs);
      break;
    case 'column-done':
      if (m.run === state.run) columns.finish(m.column, m.finishReason, m.tokens, m.elapsedMs);
      break;
    case 'column-error':
      if (m.run === state.run) columns.fail(m.column, m.message);
      break;
    case 'run-done': {
      if (m.run !== state.run) break;
      state.run = null;
      const b = m.batch;
      const all = b.elapsedMs > 0 ? ` (${((b.tokens * 1000) / b.elapsedMs).toFixed(1)} tok/s in all)` : '';
      const shared =
        b.peakRowsInStep === b.sequences && b.sequences > 1
          ? `${b.sequences} sequences in one batch`
          : b.sequences === 1
            ? '1 sequence'
            : `${b.sequences} sequences, at most ${b.peakRowsInStep} per step`;
      el.batch.dataset.peak = String(b.peakRowsInStep);
      el.batch.dataset.steps = String(b.steps);
      el.batch.textContent = `${shared}: ${b.steps} steps, ${b.tokens} tokens in ${(b.elapsedMs / 1000).toFixed(2)} s${all}.`;
      break;
    }
    case 'run-error':
      if (m.run !== state.run) break;
      state.run = null;
      el.batch.textContent = m.message;
      el.batch.classList.add('error');
      for (const column of state.columns) columns.fail(column, 'not started: see the message above');
      break;
  }
  refresh();
}

refresh();
