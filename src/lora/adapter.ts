// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) -> a validated LoraAdapter, checked
// against the base model's ModelConfig (shapes only: no base weights are needed) before any byte of it is used.
// A pure function of its input: it returns a complete adapter or throws, and leaves nothing open behind it.
//
// Tensor names, as peft's save_pretrained writes them (the adapter-name segment, e.g. `.default`, is optional;
// one file holds one adapter):
//   base_model.model.<module>.lora_A[.<name>].weight            [r, in]    Linear modules (q/k/v/o, gate/up/down, lm_head)
//   base_model.model.<module>.lora_B[.<name>].weight            [out, r]
//   base_model.model.<module>.lora_embedding_A[.<name>]          [r, vocab]   embed_tokens
//   base_model.model.<module>.lora_embedding_B[.<name>]          [hidden, r]
//   base_model.model.<module>.lora_magnitude_vector[.<name>][.weight]  [out]   DoRA (use_dora), Linear modules only
// A Linear module computes y = x·Wᵀ + scale · (x·Aᵀ)·Bᵀ. peft's Embedding adds, for token t, scale · B·A[:, t]
// to the embedding row (F.embedding(x, Aᵀ) @ Bᵀ): the same formula with x the one-hot vector of t, so an
// embedding LoRA is stored here like a Linear one with in = vocab and out = hidden.
// DoRA (use_dora, peft's DoraLinearLayer) rescales each output row n of W + scale·B·A to the learned length m[n]:
//   y = m ⊙ (x·Wᵀ + scale · (x·Aᵀ)·Bᵀ) / ‖W + scale·B·A‖_row + bias        (the norm over each row's inputs)
//
// What the tensors say is checked against the config and the base (peft's behaviour when it loads the adapter):
// - a tensor for a module the base does not have (unknown name, layer index past the last layer): error;
// - a tensor whose shape does not fit the base module, an A without its B, ranks of A and B that differ: error;
// - a rank other than adapter_config.json's r (after rank_pattern): error (peft fails with "size mismatch");
// - a rank above maxLoraRank: error naming both;
// - a tensor for a module the config does not target: dropped with a warning (peft never creates that layer);
// - a targeted module without tensors: a warning (peft initialises it with B = 0: the base runs unchanged);
// - target_modules selecting no module of the base: error (peft: "Target modules ... not found in the base model").

import { PolyloraError, type ErrorDetails } from '../errors.js';
import type { TensorInfo } from '../io/checkpoint-types.js';
import { openCheckpoint, type SafetensorsCheckpoint } from '../io/checkpoint.js';
import { toFloat32, type DType } from '../io/dtype.js';
import type { FileTree } from '../io/source.js';
import type { ModelConfig } from '../model/config-types.js';
import { LINEAR_MODULES, type LinearModule, layerPrefix, linearShape } from '../model/weights-spec.js';
import type { LoraDelta } from '../reference/ops.js';
import type { ReferenceLora } from '../reference/model.js';
import { isTargeted, moduleScaling, parsePeftConfig, type ModuleSelector, type PeftLoraConfig } from './peft-config.js';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
const PICKLE_FILES = ['adapter_model.bin', 'adapter_model.pt', 'adapter_model.pth'];

/** Module paths of the two non-layer targets. */
export const LM_HEAD_MODULE = 'lm_head';
export const EMBED_TOKENS_MODULE = 'model.embed_tokens';

/** What a LoRA module adapts: a layer's projection, the output layer, or the token embedding. */
export type LoraTarget = LinearModule | 'lm_head' | 'embed_tokens';

/** A module of the base model a LoRA can target, with the shapes its A and B must have. */
export interface BaseModule {
  /** e.g. `model.layers.3.self_attn.q_proj`, `lm_head`, `model.embed_tokens`. */
  path: string;
  target: LoraTarget;
  /** Decoder layer index, null for lm_head / embed_tokens. */
  layer: number | null;
  /** 'embedding': embed_tokens (tensors lora_embedding_A/B); 'linear': everything else (lora_A/B). */
  kind: 'linear' | 'embedding';
  /** A is [r, inFeatures]: the Linear's input size; vocab for the embedding. */
  inFeatures: number;
  /** B is [outFeatures, r]: the Linear's output size; hidden size for the embedding. */
  outFeatures: number;
}

/** One LoRA matrix as stored in the file, bytes copied out (the adapter owns them). */
export interface LoraTensor {
  /** Tensor name in the file, for messages. */
  name: string;
  dtype: DType;
  /** Row-major [rows, cols]: A [rank, in], B [out, rank]. */
  shape: [number, number];
  /** Little-endian element bytes in `dtype`; byteLength = rows · cols · bytes(dtype). */
  bytes: Uint8Array;
}

/** The LoRA on one module: y += scale · (x·Aᵀ)·Bᵀ. */
export interface LoraModule extends BaseModule {
  rank: number;
  /** lora_alpha after alpha_pattern. */
  alpha: number;
  /** alpha / rank, or alpha / sqrt(rank) with rsLoRA. */
  scale: number;
  /** [rank, inFeatures]. */
  a: LoraTensor;
  /** [outFeatures, rank]. */
  b: LoraTensor;
  /** DoRA's learned row lengths m [outFeatures] (f32), when the adapter uses DoRA. */
  magnitude?: Float32Array;
}

export interface LoraTargetsSummary {
  /** Which kinds of module carry a LoRA, in LINEAR_MODULES order, then lm_head, embed_tokens. */
  targets: LoraTarget[];
  /** Decoder layers with at least one LoRA module, ascending. */
  layers: number[];
}

/** A parsed, validated adapter, ready for a GPU slot or the reference model. Immutable by convention. */
export interface LoraAdapter {
  /** The name requests use. */
  name: string;
  /** The registry's numeric id, when it has one. */
  id?: number;
  /** Where it was read from (folder path, Hub id, label of an in-memory tree). */
  source: string;
  /** The largest module rank. */
  rank: number;
  /** Per module path, in base order (layer by layer in LINEAR_MODULES order, then lm_head, embed_tokens). */
  modules: ReadonlyMap<string, LoraModule>;
  /** Bytes of all A and B tensors (and DoRA magnitudes). */
  byteSize: number;
  /** DoRA (use_dora): every module has a magnitude. */
  dora: boolean;
  targets: LoraTargetsSummary;
  /** adapter_config.json's base_model_name_or_path. */
  baseModelNameOrPath: string | null;
  /** Config and load warnings for the user (nothing here stops serving). */
  warnings: string[];
}

export interface LoadLoraOptions {
  /** Default: the last path component of the source's label. */
  name?: string;
  id?: number;
  /** Largest rank the server's slots hold; a bigger adapter is refused. Default: no limit. */
  maxLoraRank?: number;
  /** The loaded base's name or path (Hub id or folder): compared loosely with base_model_name_or_path (warning only). */
  baseModelName?: string;
}

/** Every module of `config` a LoRA can target, in base order. */
export function baseLoraModules(config: ModelConfig): BaseModule[] {
  const out: BaseModule[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const m of LINEAR_MODULES) {
      const [outFeatures, inFeatures] = linearShape(config, m);
      out.push({ path: `${layerPrefix(layer)}${m}`, target: m, layer, kind: 'linear', inFeatures, outFeatures });
    }
  }
  out.push({ path: LM_HEAD_MODULE, target: 'lm_head', layer: null, kind: 'linear', inFeatures: config.hiddenSize, outFeatures: config.vocabSize });
  out.push({ path: EMBED_TOKENS_MODULE, target: 'embed_tokens', layer: null, kind: 'embedding', inFeatures: config.vocabSize, outFeatures: config.hiddenSize });
  return out;
}

/** A tensor's values widened to f32 (a new array), e.g. for the reference model or an f32 GPU slot. */
export function loraFloat32(t: LoraTensor): Float32Array {
  return toFloat32(t.bytes, t.dtype);
}

/**
 * The adapter as the reference model's per-sequence LoRA: module path -> {a, b, rank, scale · scaleMultiplier}, f32.
 * `lm_head` and `model.embed_tokens` entries are included (ReferenceModel applies them).
 */
export function toReferenceLora(adapter: LoraAdapter, scaleMultiplier = 1): ReferenceLora {
  const out = new Map<string, LoraDelta>();
  for (const [path, m] of adapter.modules) {
    const d: LoraDelta = { a: loraFloat32(m.a), b: loraFloat32(m.b), rank: m.rank, scale: m.scale * scaleMultiplier };
    if (m.magnitude) d.magnitude = m.magnitude;
    out.set(path, d);
  }
  return out;
}

/**
 * Reads and validates the adapter in `tree` against the base `config` (see the file comment for every check).
 * Throws a PolyloraError naming the file, tensor or field; returns an adapter whose tensors are copied out.
 */
export async function loadLoraAdapter(tree: FileTree, config: ModelConfig, options: LoadLoraOptions = {}): Promise<LoraAdapter> {
  const configFile = `${tree.label}/${ADAPTER_CONFIG_FILE}`;
  if (!(await tree.has(ADAPTER_CONFIG_FILE))) {
    throw new PolyloraError('FILE_NOT_FOUND', 'not a PEFT adapter folder', {
      file: configFile,
      expected: `${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`,
      found: 'no adapter_config.json',
      hint: 'pass the folder peft `save_pretrained` wrote (or its Hub id)',
    });
  }
  const cfg = parsePeftConfig(parseJson(await tree.text(ADAPTER_CONFIG_FILE), configFile), configFile);
  if (!(await tree.has(ADAPTER_WEIGHTS_FILE)) && !(await tree.has(`${ADAPTER_WEIGHTS_FILE}.index.json`))) {
    const pickles: string[] = [];
    for (const f of PICKLE_FILES) if (await tree.has(f)) pickles.push(f);
    if (pickles.length) throw pickleRefused(tree.label, pickles[0]!);
  }
  const ckpt = await openCheckpoint(tree, { file: ADAPTER_WEIGHTS_FILE });
  try {
    const plan = planAdapter(ckpt, cfg, config, options);
    const modules = new Map<string, LoraModule>();
    let byteSize = 0;
    for (const p of plan.modules) {
      const a = await readTensor(ckpt, p.a);
      const b = await readTensor(ckpt, p.b);
      byteSize += a.bytes.byteLength + b.bytes.byteLength;
      const m: LoraModule = { ...p.base, rank: p.rank, alpha: p.alpha, scale: p.scale, a, b };
      if (p.m) {
        m.magnitude = loraFloat32(await readTensor(ckpt, p.m));
        byteSize += m.magnitude.byteLength;
      }
      modules.set(p.base.path, m);
    }
    const name = options.name ?? defaultAdapterName(tree.label);
    const adapter: LoraAdapter = {
      name,
      source: tree.label,
      rank: Math.max(...[...modules.values()].map((m) => m.rank)),
      modules,
      byteSize,
      dora: cfg.useDora,
      targets: summarize(modules.values()),
      baseModelNameOrPath: cfg.baseModelNameOrPath,
      warnings: plan.warnings,
    };
    if (options.id !== undefined) adapter.id = options.id;
    return adapter;
  } finally {
    await ckpt.close();
  }
}

/** The default adapter name for a folder or Hub id: `org/name@rev`, `/a/b/name/` -> `name`. */
export function defaultAdapterName(label: string): string {
  const noRev = label.replace(/@[^/]*$/, '').replace(/[\\/]+$/, '');
  return noRev.slice(Math.max(noRev.lastIndexOf('/'), noRev.lastIndexOf('\\')) + 1) || label;
}

/** Last path component, lower case, without @revision: the loose identity of a model name or folder. */
export function looseModelName(nameOrPath: string): string {
  return defaultAdapterName(nameOrPath.trim()).toLowerCase();
}

// ---- tensor names ----

type Role = 'A' | 'B' | 'M';

interface ParsedName {
  module: string;
  role: Role;
  embedding: boolean;
  /** The adapter-name segment (`default`), or null when absent. */
  adapterName: string | null;
}

const LINEAR_KEY = /^base_model\.model\.(.+)\.lora_(A|B)(?:\.([^.]+))?\.weight$/;
const EMBEDDING_KEY = /^base_model\.model\.(.+)\.lora_embedding_(A|B)(?:\.([^.]+))?$/;
// peft >= 0.12 saves `lora_magnitude_vector` (it strips the DoraLinearLayer's `.weight`); older files keep it.
const MAGNITUDE_KEY = /^base_model\.model\.(.+)\.lora_magnitude_vector(?:\.(?!weight$)([^.]+))?(?:\.weight)?$/;

function parseTensorName(name: string): ParsedName | null {
  const lin = LINEAR_KEY.exec(name);
  if (lin) return { module: lin[1]!, role: lin[2] as Role, embedding: false, adapterName: lin[3] ?? null };
  const emb = EMBEDDING_KEY.exec(name);
  if (emb) return { module: emb[1]!, role: emb[2] as Role, embedding: true, adapterName: emb[3] ?? null };
  const mag = MAGNITUDE_KEY.exec(name);
  if (mag) return { module: mag[1]!, role: 'M', embedding: false, adapterName: mag[2] ?? null };
  return null;
}

/** Why a tensor that is not lora_A/B is in the file, when its name tells. */
function foreignTensor(name: string): { what: string; hint: string } {
  if (/\.lora_B(\.[^.]+)?\.bias$/.test(name)) {
    return { what: 'bias on lora_B (lora_bias) in the adapter', hint: 'LoRA with lora_bias is not supported; merge it with peft and load the merged model' };
  }
  if (/\.bias$/.test(name) && !/\.lora_/.test(name)) {
    return { what: 'trained bias vector in the adapter (bias "all" / "lora_only")', hint: 'polylora serves only low-rank deltas, not per-adapter biases; retrain with bias="none", or merge the adapter with peft (`merge_and_unload()`) and load the merged model' };
  }
  if (/\.weight$/.test(name) && !/\.lora_/.test(name)) {
    return { what: 'full weight in the adapter (modules_to_save or a trained bias?)', hint: 'polylora serves only low-rank deltas; merge the adapter with peft (`merge_and_unload()`) and load the merged model' };
  }
  return { what: 'not a LoRA tensor', hint: 'expected names base_model.model.<module>.lora_A.weight / lora_B.weight (or lora_embedding_A / lora_embedding_B): is this a PEFT LoRA adapter?' };
}

// ---- validation ----

interface ModulePlan {
  base: BaseModule;
  a: TensorInfo;
  b: TensorInfo;
  /** DoRA magnitude [out]. */
  m?: TensorInfo;
  rank: number;
  alpha: number;
  scale: number;
}

interface Problem {
  code: 'WEIGHTS_MISMATCH' | 'CONFIG_INVALID' | 'INVALID_ARGUMENT';
  what: string;
  d: ErrorDetails;
}

const shapeStr = (s: readonly number[]): string => `[${s.join(', ')}]`;

/** Checks every tensor header against the config and the base; returns what to read, or throws the first problem. */
function planAdapter(ckpt: SafetensorsCheckpoint, cfg: PeftLoraConfig, config: ModelConfig, options: LoadLoraOptions): { modules: ModulePlan[]; warnings: string[] } {
  const warnings = [...cfg.warnings];
  const problems: Problem[] = [];
  const file = `${ckpt.label}/${ADAPTER_WEIGHTS_FILE}`;
  const hint = baseHint(config);
  const bases = baseLoraModules(config);
  const baseByPath = new Map(bases.map((b) => [b.path, b]));

  // 1. Every stored tensor is a lora_A / lora_B (or a DoRA magnitude) of one adapter; pair them per module.
  const found = new Map<string, { A?: string; B?: string; embedding: boolean }>();
  const magnitudes = new Map<string, string>(); // module -> tensor
  const adapterNames = new Map<string | null, string>(); // segment -> first tensor using it
  for (const s of ckpt.stored.values()) {
    const p = parseTensorName(s.name);
    if (!p) {
      const { what, hint: h } = foreignTensor(s.name);
      problems.push({ code: 'WEIGHTS_MISMATCH', what, d: { file: s.file, tensor: s.name, expected: 'only lora_A / lora_B tensors', found: `${s.dtype} ${shapeStr(s.shape)}`, hint: h } });
      continue;
    }
    if (!adapterNames.has(p.adapterName)) adapterNames.set(p.adapterName, s.name);
    if (p.role === 'M') {
      const other = magnitudes.get(p.module);
      if (other !== undefined) {
        problems.push({ code: 'WEIGHTS_MISMATCH', what: 'two DoRA magnitude vectors for one module', d: { file: s.file, tensor: s.name, expected: 'one adapter per file', found: `also "${other}"`, hint: 'save each adapter to its own folder' } });
      }
      magnitudes.set(p.module, s.name);
      continue;
    }
    const entry = found.get(p.module) ?? { embedding: p.embedding };
    if (entry.embedding !== p.embedding) {
      problems.push({ code: 'WEIGHTS_MISMATCH', what: 'module has both lora_A/B and lora_embedding_A/B tensors', d: { file: s.file, tensor: s.name, expected: 'one kind per module', found: `also ${entry.A ?? entry.B}` } });
      continue;
    }
    if (entry[p.role] !== undefined) {
      problems.push({ code: 'WEIGHTS_MISMATCH', what: `two lora_${p.role} tensors for one module`, d: { file: s.file, tensor: s.name, expected: 'one adapter per file', found: `also "${entry[p.role]}"`, hint: 'save each adapter to its own folder' } });
      continue;
    }
    entry[p.role] = s.name;
    found.set(p.module, entry);
  }
  if (adapterNames.size > 1) {
    const [[n1, t1], [n2, t2]] = [...adapterNames].slice(0, 2) as [[string | null, string], [string | null, string]];
    problems.push({
      code: 'WEIGHTS_MISMATCH',
      what: 'tensors of more than one adapter in the file',
      d: { file, tensor: t2, expected: `one adapter-name segment throughout (as in "${t1}": ${n1 === null ? 'none' : `"${n1}"`})`, found: n2 === null ? 'none' : `"${n2}"`, hint: 'save each adapter to its own folder' },
    });
  }
  if (found.size === 0 && problems.length === 0) {
    problems.push({ code: 'WEIGHTS_MISMATCH', what: 'the adapter has no LoRA tensors', d: { file, expected: 'lora_A / lora_B tensors', found: `${ckpt.stored.size} tensors` } });
  }

  // 2. Each module exists in the base, has both matrices, and their shapes fit it.
  for (const [module, name] of magnitudes) {
    if (!found.has(module)) {
      problems.push({ code: 'WEIGHTS_MISMATCH', what: 'DoRA magnitude vector without lora_A / lora_B', d: { file, tensor: name, expected: `base_model.model.${module}.lora_A.weight and lora_B.weight`, found: 'no such tensors', hint: 'the adapter file is incomplete; save it again' } });
    }
  }
  const present: { base: BaseModule; a: TensorInfo; b: TensorInfo; m?: TensorInfo; rank: number }[] = [];
  for (const [module, { A, B, embedding }] of found) {
    const some = (A ?? B)!;
    const base = baseByPath.get(module);
    if (!base) {
      problems.push(unknownModule(file, some, module, config, hint));
      continue;
    }
    const roleName = (r: Role): string => (embedding ? `lora_embedding_${r}` : `lora_${r}`);
    if (embedding !== (base.kind === 'embedding')) {
      const want = base.kind === 'embedding' ? 'lora_embedding_A / lora_embedding_B' : 'lora_A.weight / lora_B.weight';
      problems.push({ code: 'WEIGHTS_MISMATCH', what: `wrong LoRA tensor kind for a ${base.kind === 'embedding' ? 'token embedding' : 'Linear'} module`, d: { file, tensor: some, expected: want, found: roleName(A ? 'A' : 'B'), hint: 'the file was not written by peft for this architecture' } });
      continue;
    }
    if (A === undefined || B === undefined) {
      const have = (A ?? B)!;
      const at = have.lastIndexOf(roleName(A ? 'A' : 'B'));
      const missing = have.slice(0, at) + roleName(A ? 'B' : 'A') + have.slice(at + roleName('A').length);
      problems.push({ code: 'WEIGHTS_MISMATCH', what: `${roleName(A ? 'A' : 'B')} without its ${roleName(A ? 'B' : 'A')}`, d: { file, tensor: have, expected: `"${missing}"`, found: 'no such tensor', hint: 'the adapter file is incomplete; save it again' } });
      continue;
    }
    const a = ckpt.info(A); // DTYPE_UNSUPPORTED (naming the tensor) for anything but F32/F16/BF16
    const b = ckpt.info(B);
    const expectA = `[r, ${base.inFeatures}]`;
    const expectB = `[${base.outFeatures}, r]`;
    const bad = (t: TensorInfo, expected: string, extra = ''): Problem => ({
      code: 'WEIGHTS_MISMATCH',
      what: `LoRA tensor does not fit ${module} of the base`,
      d: { file: t.file, tensor: t.name, expected, found: shapeStr(t.shape), hint: `${extra}${hint}` },
    });
    if (a.shape.length !== 2 || a.shape[1] !== base.inFeatures) {
      problems.push(bad(a, expectA, transposedNote(a.shape, [a.shape[1] ?? 0, base.inFeatures])));
      continue;
    }
    if (b.shape.length !== 2 || b.shape[0] !== base.outFeatures) {
      problems.push(bad(b, expectB, transposedNote(b.shape, [base.outFeatures, b.shape[0] ?? 0])));
      continue;
    }
    const rank = a.shape[0]!;
    if (b.shape[1] !== rank || rank === 0) {
      problems.push({ code: 'WEIGHTS_MISMATCH', what: 'lora_A and lora_B ranks differ', d: { file: b.file, tensor: b.name, expected: `[${base.outFeatures}, ${rank}] (the rank of "${a.name}")`, found: shapeStr(b.shape), hint: 'the adapter file is corrupt; save it again' } });
      continue;
    }
    const magnitude = doraMagnitude(ckpt, cfg, base, magnitudes.get(module), file);
    if (magnitude && 'problem' in magnitude) {
      problems.push(magnitude.problem);
      continue;
    }
    present.push({ base, a, b, rank, ...(magnitude ? { m: magnitude.m } : {}) });
  }

  // 3. Which of them the config targets (in base order); scales; ranks against the config and maxLoraRank.
  const order = new Map(bases.map((b, i) => [b.path, i]));
  present.sort((x, y) => order.get(x.base.path)! - order.get(y.base.path)!);
  const isLinear = (b: BaseModule): boolean => b.kind === 'linear' && b.target !== 'lm_head';
  const targeted = new Set(bases.filter((b) => isTargeted(cfg, b.path, isLinear(b))).map((b) => b.path));
  if (targeted.size === 0) {
    problems.push({
      code: 'CONFIG_INVALID',
      what: 'target_modules selects no module of the base model',
      d: { file: cfg.file, field: 'target_modules', expected: 'names or a pattern matching modules such as model.layers.0.self_attn.q_proj', found: describeSelector(cfg.targetModules), hint: `maybe wrong base model? (peft: "Target modules not found in the base model"); ${hint}` },
    });
  }
  const modules: ModulePlan[] = [];
  const dropped: string[] = [];
  for (const p of present) {
    if (!targeted.has(p.base.path)) {
      dropped.push(p.base.path);
      continue;
    }
    const { r, alpha, scale } = moduleScaling(cfg, p.base.path);
    if (p.rank !== r) {
      problems.push({
        code: 'WEIGHTS_MISMATCH',
        what: 'LoRA rank differs from adapter_config.json',
        d: { file: p.a.file, tensor: p.a.name, expected: `rank ${r} (r${cfg.rankPattern.length ? ' after rank_pattern' : ''})`, found: `rank ${p.rank} (${shapeStr(p.a.shape)})`, hint: 'the config and the weights come from different saves (peft fails to load this with "size mismatch")' },
      });
      continue;
    }
    if (options.maxLoraRank !== undefined && p.rank > options.maxLoraRank) {
      problems.push({
        code: 'INVALID_ARGUMENT',
        what: 'adapter rank is larger than maxLoraRank',
        d: { file: p.a.file, tensor: p.a.name, field: 'maxLoraRank', expected: `rank <= maxLoraRank (${options.maxLoraRank})`, found: `rank ${p.rank}`, hint: `start the engine with maxLoraRank >= ${p.rank}` },
      });
      continue;
    }
    modules.push({ base: p.base, a: p.a, b: p.b, ...(p.m ? { m: p.m } : {}), rank: p.rank, alpha, scale });
  }
  throwFirst(problems);

  if (cfg.bias !== 'none') {
    warnings.push(`${cfg.file}: bias is "${cfg.bias}", but the file holds no bias vectors (the base has none to train there), so the adapter is a plain LoRA`);
  }
  if (dropped.length) {
    warnings.push(`${file}: ${dropped.length} module(s) have LoRA tensors but adapter_config.json does not target them, so they are ignored (as peft does): ${preview(dropped)}`);
  }
  const presentPaths = new Set(present.map((p) => p.base.path));
  const missing = [...targeted].filter((p) => !presentPaths.has(p));
  if (missing.length) {
    warnings.push(`${file}: ${missing.length} targeted module(s) have no LoRA tensors and run as the base (peft initialises them with B = 0): ${preview(missing)}`);
  }
  if (cfg.targetModules.kind === 'names') {
    const unused = cfg.targetModules.names.filter((n) => !bases.some((b) => b.path === n || b.path.endsWith(`.${n}`)));
    if (unused.length) warnings.push(`${cfg.file}: target_modules entries that match no module of the base: ${unused.join(', ')}`);
  }
  if (modules.length === 0) {
    throw new PolyloraError('WEIGHTS_MISMATCH', 'no LoRA module of the adapter is targeted by its config', {
      file,
      field: 'target_modules',
      expected: `tensors for modules selected by ${describeSelector(cfg.targetModules)}`,
      found: preview(present.map((p) => p.base.path)),
      hint: 'adapter_config.json and the weights do not belong together',
    });
  }
  const tiedTargets = modules.filter((m) => m.base.target === 'lm_head' || m.base.target === 'embed_tokens');
  if (cfg.ensureWeightTying && config.tieWordEmbeddings && tiedTargets.length) {
    throw new PolyloraError('CONFIG_INVALID', 'ensure_weight_tying on a tied embedding is not supported', {
      file: cfg.file,
      field: 'ensure_weight_tying',
      expected: 'false',
      found: 'true',
      hint: 'peft then shares one LoRA between embed_tokens and lm_head; merge the adapter with peft and load the merged model',
    });
  }
  if (options.baseModelName !== undefined && cfg.baseModelNameOrPath !== null && looseModelName(options.baseModelName) !== looseModelName(cfg.baseModelNameOrPath)) {
    warnings.push(`${cfg.file}: the adapter was trained on "${cfg.baseModelNameOrPath}" but the base model is "${options.baseModelName}"; the shapes fit, but the output may not be what the adapter was trained for`);
  }
  return { modules, warnings };
}

/**
 * The DoRA magnitude of a present module: required (shape [out]) with use_dora on a Linear, refused on the
 * embedding (peft's DoraEmbeddingLayer is not served) and without use_dora (peft would ignore it silently).
 */
function doraMagnitude(ckpt: SafetensorsCheckpoint, cfg: PeftLoraConfig, base: BaseModule, name: string | undefined, file: string): { m: TensorInfo } | { problem: Problem } | null {
  if (!cfg.useDora) {
    if (name === undefined) return null;
    return { problem: { code: 'WEIGHTS_MISMATCH', what: 'DoRA magnitude vector in an adapter whose config has use_dora false', d: { file, tensor: name, field: 'use_dora', expected: 'use_dora: true in adapter_config.json, or no lora_magnitude_vector tensors', found: 'use_dora false', hint: 'the config and the weights come from different saves' } } };
  }
  if (base.kind === 'embedding') {
    return { problem: { code: 'WEIGHTS_MISMATCH', what: 'DoRA on embed_tokens is not supported', d: { file, tensor: name ?? `base_model.model.${base.path}.lora_embedding_A`, field: 'use_dora', expected: 'DoRA on Linear modules only (q/k/v/o, gate/up/down, lm_head)', found: 'a DoRA embedding', hint: 'merge the adapter into the base with peft (`merge_and_unload()`) and load the merged model' } } };
  }
  const expected = `base_model.model.${base.path}.lora_magnitude_vector [${base.outFeatures}]`;
  if (name === undefined) {
    return { problem: { code: 'WEIGHTS_MISMATCH', what: 'DoRA module without its magnitude vector', d: { file, tensor: `base_model.model.${base.path}.lora_magnitude_vector`, expected, found: 'no such tensor', hint: 'use_dora is true, so every LoRA module needs one; the adapter file is incomplete' } } };
  }
  const m = ckpt.info(name);
  if (m.shape.length !== 1 || m.shape[0] !== base.outFeatures) {
    return { problem: { code: 'WEIGHTS_MISMATCH', what: `DoRA magnitude does not fit ${base.path} of the base`, d: { file: m.file, tensor: name, expected, found: shapeStr(m.shape), hint: 'maybe wrong base model?' } } };
  }
  return { m };
}

function unknownModule(file: string, tensor: string, module: string, config: ModelConfig, hint: string): Problem {
  const layer = /^model\.layers\.(\d+)\.(.+)$/.exec(module);
  if (layer && Number(layer[1]) >= config.numLayers) {
    return { code: 'WEIGHTS_MISMATCH', what: 'LoRA tensor for a layer the base does not have', d: { file, tensor, expected: `layer index < ${config.numLayers}`, found: `layer ${layer[1]}`, hint } };
  }
  const known = layer ? LINEAR_MODULES.join(', ') : `model.layers.<i>.<${LINEAR_MODULES.join('|')}>, ${LM_HEAD_MODULE}, ${EMBED_TOKENS_MODULE}`;
  return { code: 'WEIGHTS_MISMATCH', what: `LoRA targets module "${module}", which the base model does not have`, d: { file, tensor, expected: `one of ${known}`, found: module, hint } };
}

function transposedNote(found: readonly number[], transposedOf: [number, number]): string {
  return found.length === 2 && found[0] === transposedOf[1] && found[1] === transposedOf[0] && found[0] !== found[1]
    ? 'the tensor looks transposed (peft stores lora_A [r, in] and lora_B [out, r] whatever fan_in_fan_out says); '
    : '';
}

function baseHint(config: ModelConfig): string {
  return `maybe wrong base model? the base is ${config.arch}, hidden_size ${config.hiddenSize}, intermediate_size ${config.intermediateSize}, ${config.numLayers} layers, ${config.numHeads}/${config.numKvHeads} heads of ${config.headDim}, vocab ${config.vocabSize}`;
}

function describeSelector(s: ModuleSelector): string {
  return s.kind === 'names' ? JSON.stringify(s.names) : s.kind === 'regex' ? JSON.stringify(s.source) : '"all-linear"';
}

function preview(items: readonly string[]): string {
  return items.slice(0, 4).join(', ') + (items.length > 4 ? `, ... (${items.length} in all)` : '');
}

/** One error for the first problem; its message counts and names a few of the others. */
function throwFirst(problems: readonly Problem[]): void {
  if (problems.length === 0) return;
  const { code, what, d } = problems[0]!;
  const rest = problems.slice(1);
  const more = rest.length ? ` (and ${rest.length} more: ${rest.slice(0, 3).map((p) => p.d.tensor ?? p.d.field).join(', ')}${rest.length > 3 ? ', ...' : ''})` : '';
  throw new PolyloraError(code, what + more, d);
}

function summarize(modules: Iterable<LoraModule>): LoraTargetsSummary {
  const order: LoraTarget[] = [...LINEAR_MODULES, 'lm_head', 'embed_tokens'];
  const targets = new Set<LoraTarget>();
  const layers = new Set<number>();
  for (const m of modules) {
    targets.add(m.target);
    if (m.layer !== null) layers.add(m.layer);
  }
  return { targets: order.filter((t) => targets.has(t)), layers: [...layers].sort((x, y) => x - y) };
}

/** The tensor's bytes, copied (the checkpoint closes), with every value checked finite. */
async function readTensor(ckpt: SafetensorsCheckpoint, t: TensorInfo): Promise<LoraTensor> {
  const bytes = (await ckpt.bytes(t.name)).slice();
  const values = toFloat32(bytes, t.dtype);
  const bad = values.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new PolyloraError('SAFETENSORS_INVALID', 'LoRA tensor holds a non-finite value', {
      file: t.file,
      tensor: t.name,
      expected: 'finite values',
      found: `${values[bad]} at element ${bad}`,
      hint: 'the adapter diverged in training or the file is corrupt',
    });
  }
  return { name: t.name, dtype: t.dtype, shape: [t.shape[0]!, t.shape[1]!], bytes };
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new PolyloraError('CONFIG_INVALID', 'not valid JSON', { file, found: (e as Error).message });
  }
}

function pickleRefused(label: string, file: string): PolyloraError {
  return new PolyloraError('FILE_NOT_FOUND', 'the adapter is a pickle file, which polylora does not read', {
    file: `${label}/${file}`,
    expected: ADAPTER_WEIGHTS_FILE,
    found: file,
    hint:
      'convert it once in Python: `from peft import PeftModel; from transformers import AutoModelForCausalLM; ' +
      'PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), ADAPTER_DIR).save_pretrained(OUT_DIR, safe_serialization=True)`, ' +
      'or without peft: `import torch, safetensors.torch; safetensors.torch.save_file(torch.load("adapter_model.bin", ' +
      'map_location="cpu"), "adapter_model.safetensors", metadata={"format": "pt"})`',
  });
}
