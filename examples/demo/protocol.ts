// The messages between the page (main.ts) and the engine worker (worker.ts): everything either side sends is one
// of these types, and nothing else crosses the boundary. Files picked on disk travel as File objects (structured
// clone keeps `webkitRelativePath`, so the worker sees the picked folder's layout).

/** Where a model or an adapter comes from. */
export type Source =
  /** A Hub id `org/name[@revision]`, or a folder URL (`https://…`, `/…`, `./…`): the library tells them apart. */
  | { kind: 'location'; location: string }
  /** Files of one picked folder (<input webkitdirectory>); for adapters it may hold several adapter folders. */
  | { kind: 'files'; files: File[] };

/** LLM.load options the page exposes. */
export interface EngineOptions {
  /** Adapters resident on the GPU at once: at most this many different adapters share one step. */
  maxLoras: number;
  /** Largest adapter rank accepted. */
  maxLoraRank: number;
  /** Prompt + output tokens per sequence. */
  maxModelLen: number;
  /** Hub endpoint; '' = https://huggingface.co. */
  hubEndpoint: string;
}

/** The sampling parameters of one run (SamplingParams fields, all given). */
export interface RunParams {
  temperature: number;
  topP: number;
  maxTokens: number;
  seed: number;
}

/** One output column: the base model (adapter null) or an adapter at a scale. */
export interface ColumnSpec {
  column: number;
  adapter: string | null;
  /** LoRARequest scale: multiplies the adapter's alpha / r (1 = as trained, 0 = base). */
  scale: number;
}

export type PromptInput = { text: string } | { ids: number[] };

export type ToWorker =
  | { type: 'load-model'; source: Source; options: EngineOptions }
  | { type: 'add-adapters'; source: Source }
  | { type: 'remove-adapter'; name: string }
  | { type: 'run'; run: number; prompt: PromptInput; params: RunParams; columns: ColumnSpec[] }
  | { type: 'stop'; run: number };

/** What the page shows about the GPU device (from llm.info.device / Gpu.info). */
export interface DeviceSummary {
  description: string;
  vendor: string;
  architecture: string;
  /** True when kernels compute in f16 (shader-f16 enabled); false: the f32 path. */
  f16Compute: boolean;
  /** Whether the adapter offers shader-f16 at all. */
  shaderF16Offered: boolean;
  subgroups: boolean;
  subgroupMinSize: number;
  subgroupMaxSize: number;
  /** In bytes. */
  maxBufferSize: number;
  /** In bytes. */
  maxStorageBufferBindingSize: number;
}

export interface ModelSummary {
  label: string;
  arch: string;
  numLayers: number;
  hiddenSize: number;
  vocabSize: number;
  torchDtype: string | null;
  /** Bytes of weights on the GPU. */
  weightBytes: number;
  kvCapacityTokens: number;
  maxModelLen: number;
  /** Bytes of the GPU LoRA slots. */
  loraSlotBytes: number;
  maxLoras: number;
  maxLoraRank: number;
  hasTokenizer: boolean;
}

export interface AdapterSummary {
  name: string;
  source: string;
  /** Largest module rank. */
  rank: number;
  /** Kinds of module adapted, e.g. ['q_proj', 'v_proj']. */
  targets: string[];
  /** Decoder layers with a LoRA module. */
  layers: number;
  /** Bytes of all A and B tensors. */
  byteSize: number;
  /** File dtypes of the tensors, e.g. ['BF16']. */
  dtypes: string[];
  /** The adapter's own scale (alpha / r, or alpha / sqrt(r) with rsLoRA), of its first module. */
  baseScale: number;
  warnings: string[];
}

/** Progress of a download (Hub) or an upload (weights to the GPU). */
export interface Progress {
  phase: 'download' | 'upload';
  /** The file (download) or tensor (upload) being worked on. */
  item: string;
  done: number;
  total: number;
}

export type FromWorker =
  | { type: 'device'; device: DeviceSummary }
  | { type: 'device-error'; message: string }
  | { type: 'model-progress'; progress: Progress }
  | { type: 'model-loaded'; model: ModelSummary }
  | { type: 'model-error'; message: string }
  /** `label` names what is being added (a Hub id, a URL or a picked folder). */
  | { type: 'adapter-progress'; label: string; progress: Progress }
  | { type: 'adapter-added'; adapter: AdapterSummary }
  /** An adapter (or a whole source) that could not be read: `label` names it, `message` is error.message. */
  | { type: 'adapter-error'; label: string; message: string }
  | { type: 'adapters-done' }
  | { type: 'adapter-removed'; name: string }
  | { type: 'run-started'; run: number; promptIds: number[] }
  /** New text of one column; counts and times are totals for the column so far (ms since the run started). */
  | { type: 'tokens'; run: number; column: number; text: string; tokens: number; elapsedMs: number }
  | { type: 'column-done'; run: number; column: number; finishReason: string; tokens: number; elapsedMs: number }
  | { type: 'column-error'; run: number; column: number; message: string }
  | { type: 'run-done'; run: number; batch: BatchReport }
  | { type: 'run-error'; run: number; message: string };

/** How the columns of a run shared the engine's steps. */
export interface BatchReport {
  /** Columns in the run. */
  sequences: number;
  /** Most columns that got a token from the same engine step. */
  peakRowsInStep: number;
  /** Engine steps the run took (llm.stats.steps before/after). */
  steps: number;
  /** Tokens generated by the run. */
  tokens: number;
  elapsedMs: number;
}
