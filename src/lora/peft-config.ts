// adapter_config.json of a PEFT LoRA adapter -> PeftLoraConfig, and PEFT's rules for which modules a config
// targets and with which rank and alpha. The rules follow peft (src/peft/tuners/tuners_utils.py
// `check_target_module_exists`, src/peft/utils/other.py `get_pattern_key`, LoraLayer.update_layer); a module is
// named by its path in the transformers model, e.g. `model.layers.3.self_attn.q_proj`, `lm_head`,
// `model.embed_tokens`:
//
// - target_modules, a list: a module is targeted when its path is in the list or ends with `.<entry>`;
//   a string: re.fullmatch(string, path); "all-linear" (any case): every nn.Linear but the output layer, i.e.
//   the seven projections of every layer here. Absent/null: peft's default for llama/mistral/qwen2/qwen3,
//   q_proj and v_proj.
// - exclude_modules, the same two forms (list: exact or `.<entry>` suffix; string: fullmatch), wins over targets.
// - layers_to_transform (int or list), only with a target_modules list: the layer index is read with
//   re.match(r".*\.<layers_pattern>\.(\d+)\.", path) for each layers_pattern (default r"[^.]*"); a path without
//   one (lm_head, embed_tokens) is then not targeted.
// - rank_pattern / alpha_pattern: the first key, in file order, with re.match(rf"(.*\.)?({key})$", path) gives
//   the module's r / lora_alpha; otherwise r / lora_alpha.
// - scale = alpha / r, or alpha / sqrt(r) with use_rslora.
// - fan_in_fan_out describes the *base* layer's storage (GPT-2's Conv1D keeps weights [in, out]); lora_A and
//   lora_B are nn.Linear weights [r, in] and [out, r] either way. The bases here are all nn.Linear, for which
//   peft itself resets fan_in_fan_out to False with a warning ("fan_in_fan_out is set to True but the target module
//   is `torch.nn.Linear`"); so does polylora.
//
// Patterns are Python regular expressions; they are translated to JavaScript ((?P<name>...) -> (?<name>...),
// (?P=name) -> \k<name>, \Z -> $). A pattern JavaScript cannot compile is a CONFIG_INVALID error naming it.

import { PolyloraError } from '../errors.js';

/** How adapter_config.json's target_modules (or exclude_modules) selects modules. */
export type ModuleSelector =
  /** Exact path or `.<name>` suffix match, e.g. ["q_proj", "v_proj"]. */
  | { kind: 'names'; names: string[] }
  /** re.fullmatch against the whole path. */
  | { kind: 'regex'; source: string; regex: RegExp }
  /** Every linear layer but the output layer (lm_head). */
  | { kind: 'all-linear' };

export interface PeftLoraConfig {
  /** Where the config came from, for messages. */
  file: string;
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  /** rank_pattern in file order: [pattern, r]. */
  rankPattern: [string, number][];
  /** alpha_pattern in file order: [pattern, alpha]. */
  alphaPattern: [string, number][];
  targetModules: ModuleSelector;
  excludeModules: ModuleSelector | null;
  /** null: every layer. */
  layersToTransform: number[] | null;
  /** null or empty: any `<name>.<index>.` segment. */
  layersPattern: string[] | null;
  /** ensure_weight_tying (peft >= 0.18): LoRA on tied embed_tokens / lm_head shared between the two. */
  ensureWeightTying: boolean;
  /** use_dora: every targeted Linear rescales its output rows by a learned magnitude (DoRA). */
  useDora: boolean;
  /** bias: which base biases were trained ("none" unless the adapter may carry bias vectors). */
  bias: 'none' | 'all' | 'lora_only';
  baseModelNameOrPath: string | null;
  /** Things to tell the user that do not stop loading. */
  warnings: string[];
}

/** The PEFT default target_modules for llama, mistral, qwen2 and qwen3 (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING). */
export const DEFAULT_TARGET_MODULES: readonly string[] = ['q_proj', 'v_proj'];

/** init_lora_weights values whose initialisation rewrites the base weights (the adapter then needs that residual base). */
const BASE_CHANGING_INITS = /^(pissa|olora|corda|loftq)/i;

/** What polylora runs, for refusal hints. */
export const SUPPORTED_SUMMARY =
  'polylora runs LoRA and DoRA (peft_type "LORA", optionally rsLoRA, use_dora, rank_pattern / alpha_pattern) on q/k/v/o, ' +
  'gate/up/down, lm_head and embed_tokens, with no trained bias vectors and no modules_to_save';

/**
 * Parses adapter_config.json (already JSON-decoded). Refuses, naming the field and its value, every setting
 * polylora would otherwise have to ignore: another peft_type, non-empty modules_to_save, lora_bias,
 * layer_replication, trainable_token_indices, target_parameters, aLoRA, QALoRA.
 */
export function parsePeftConfig(json: unknown, file: string): PeftLoraConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new PolyloraError('CONFIG_INVALID', 'adapter config is not a JSON object', {
      file,
      found: Array.isArray(json) ? 'an array' : json === null ? 'null' : typeof json,
    });
  }
  const c = json as Record<string, unknown>;
  const warnings: string[] = [];
  const bad = (field: string, what: string, expected: string, hint?: string): PolyloraError =>
    new PolyloraError('CONFIG_INVALID', what, { file, field, expected, found: show(c[field]), hint });
  const unsupported = (field: string, expected: string, what: string, hint: string): PolyloraError =>
    new PolyloraError('CONFIG_INVALID', what, { file, field, expected, found: show(c[field]), hint: `${hint}; ${SUPPORTED_SUMMARY}` });
  const isSet = (field: string): boolean => c[field] !== undefined && c[field] !== null;

  if (isSet('peft_type') && c.peft_type !== 'LORA') {
    throw unsupported('peft_type', '"LORA"', 'not a LoRA adapter', 'AdaLoRA, LoHa, LoKr, IA3, prompt tuning etc. are other methods with other weights');
  }
  const useDora = c.use_dora ?? false;
  if (typeof useDora !== 'boolean') throw bad('use_dora', 'invalid use_dora', 'true or false');
  // bias "all" / "lora_only" trains the base's bias vectors; on a base without biases (llama, mistral) there are
  // none and the file is a plain LoRA. Bias tensors in the file are refused by the adapter loader, by name.
  const bias = c.bias ?? 'none';
  if (bias !== 'none' && bias !== 'all' && bias !== 'lora_only') throw bad('bias', 'invalid bias', '"none", "all" or "lora_only"');
  if (Array.isArray(c.modules_to_save) ? c.modules_to_save.length > 0 : isSet('modules_to_save')) {
    throw unsupported('modules_to_save', 'null or []', 'adapters with modules_to_save are not supported', 'those modules are saved as full replacement weights, not a low-rank delta; merge the adapter with peft (`merge_and_unload()`) and load the merged model');
  }
  if (isSet('lora_bias') && c.lora_bias !== false) {
    throw unsupported('lora_bias', 'false', 'LoRA with a bias on lora_B is not supported', 'retrain with lora_bias=False, or merge with peft');
  }
  for (const field of ['layer_replication', 'target_parameters', 'alora_invocation_tokens', 'trainable_token_indices']) {
    const v = c[field];
    if (v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0)) {
      throw unsupported(field, 'null', `${field} is not supported`, 'it changes the model beyond a low-rank delta on whole linear layers');
    }
  }
  if (c.use_qalora === true) throw unsupported('use_qalora', 'false', 'QALoRA adapters are not supported', 'QALoRA pools its input for quantized bases');

  const r = c.r;
  if (typeof r !== 'number' || !Number.isInteger(r) || r <= 0) throw bad('r', 'invalid LoRA rank', 'a positive integer');
  const loraAlpha = c.lora_alpha ?? 8; // peft's LoraConfig default
  if (typeof loraAlpha !== 'number' || !Number.isFinite(loraAlpha) || loraAlpha <= 0) throw bad('lora_alpha', 'invalid lora_alpha', 'a positive number');
  const useRslora = c.use_rslora ?? false;
  if (typeof useRslora !== 'boolean') throw bad('use_rslora', 'invalid use_rslora', 'true or false');

  const patternMap = (field: string, isValid: (v: unknown) => v is number, expected: string): [string, number][] => {
    const v = c[field];
    if (v === undefined || v === null) return [];
    if (typeof v !== 'object' || Array.isArray(v)) throw bad(field, `invalid ${field}`, `an object pattern -> ${expected}`);
    const entries = Object.entries(v as Record<string, unknown>);
    for (const [key, val] of entries) {
      if (!isValid(val)) {
        throw new PolyloraError('CONFIG_INVALID', `invalid ${field} entry`, { file, field: `${field}.${key}`, expected, found: show(val) });
      }
      compilePattern(`(?:.*\\.)?(?:${key})$`, file, `${field}.${key}`); // compiles, or names the key
    }
    return entries as [string, number][];
  };
  const rankPattern = patternMap('rank_pattern', (v): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0, 'a positive integer rank');
  const alphaPattern = patternMap('alpha_pattern', (v): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0, 'a positive number');

  const targetModules = parseSelector(c.target_modules, file, 'target_modules', true) ?? { kind: 'names', names: [...DEFAULT_TARGET_MODULES] };
  if (c.target_modules === undefined || c.target_modules === null) {
    warnings.push(`${file}: target_modules is not set; using peft's default for this architecture (${DEFAULT_TARGET_MODULES.join(', ')})`);
  }
  const excludeModules = parseSelector(c.exclude_modules, file, 'exclude_modules', false);

  let layersToTransform: number[] | null = null;
  const ltt = c.layers_to_transform;
  if (typeof ltt === 'number') layersToTransform = [ltt];
  else if (Array.isArray(ltt)) layersToTransform = ltt.length ? (ltt as number[]) : null;
  else if (ltt !== undefined && ltt !== null) throw bad('layers_to_transform', 'invalid layers_to_transform', 'an integer, a list of integers, or null');
  if (layersToTransform?.some((i) => typeof i !== 'number' || !Number.isInteger(i) || i < 0)) {
    throw bad('layers_to_transform', 'invalid layers_to_transform', 'non-negative integer layer indices');
  }
  let layersPattern: string[] | null = null;
  const lp = c.layers_pattern;
  if (typeof lp === 'string') layersPattern = lp === '' ? null : [lp];
  else if (Array.isArray(lp) && lp.every((p) => typeof p === 'string')) layersPattern = lp.length ? (lp as string[]) : null;
  else if (lp !== undefined && lp !== null) throw bad('layers_pattern', 'invalid layers_pattern', 'a string, a list of strings, or null');
  for (const p of layersPattern ?? []) compilePattern(`^.*\\.(?:${p})\\.(\\d+)\\.`, file, 'layers_pattern');
  if (layersToTransform && targetModules.kind !== 'names') {
    warnings.push(`${file}: layers_to_transform is ignored because target_modules is ${targetModules.kind === 'regex' ? 'a regular expression' : '"all-linear"'} (as in peft)`);
  }

  if (c.fan_in_fan_out === true) {
    warnings.push(`${file}: fan_in_fan_out is true but the targeted layers are nn.Linear; treated as false, as peft does (lora_A / lora_B are [r, in] / [out, r] either way)`);
  } else if (isSet('fan_in_fan_out') && typeof c.fan_in_fan_out !== 'boolean') {
    throw bad('fan_in_fan_out', 'invalid fan_in_fan_out', 'true or false');
  }
  if (typeof c.init_lora_weights === 'string' && BASE_CHANGING_INITS.test(c.init_lora_weights)) {
    warnings.push(
      `${file}: init_lora_weights is "${c.init_lora_weights}", an initialisation that rewrites the base weights; ` +
        'unless the adapter was saved with path_initial_model_for_weight_conversion it only works with that modified base',
    );
  }
  if (isSet('task_type') && c.task_type !== 'CAUSAL_LM') {
    warnings.push(`${file}: task_type is ${show(c.task_type)}; polylora runs the adapter on a causal LM`);
  }
  const base = c.base_model_name_or_path;
  return {
    file,
    r,
    loraAlpha,
    useRslora,
    rankPattern,
    alphaPattern,
    targetModules,
    excludeModules,
    layersToTransform,
    layersPattern,
    ensureWeightTying: c.ensure_weight_tying === true,
    useDora,
    bias,
    baseModelNameOrPath: typeof base === 'string' && base !== '' ? base : null,
    warnings,
  };
}

/** alpha / r, or alpha / sqrt(r) with rsLoRA (peft LoraLayer.update_layer). */
export function loraScale(alpha: number, r: number, useRslora: boolean): number {
  return useRslora ? alpha / Math.sqrt(r) : alpha / r;
}

/** The first pattern key (file order) matching `path` by re.match(rf"(.*\.)?({key})$"), as peft's get_pattern_key. */
export function matchPatternKey(patterns: readonly [string, number][], path: string): [string, number] | undefined {
  return patterns.find(([key]) => new RegExp(`^(?:.*\\.)?(?:${toJsRegex(key)})$`).test(path));
}

/** The module's r, lora_alpha and scale after rank_pattern / alpha_pattern. */
export function moduleScaling(cfg: PeftLoraConfig, path: string): { r: number; alpha: number; scale: number } {
  const r = matchPatternKey(cfg.rankPattern, path)?.[1] ?? cfg.r;
  const alpha = matchPatternKey(cfg.alphaPattern, path)?.[1] ?? cfg.loraAlpha;
  return { r, alpha, scale: loraScale(alpha, r, cfg.useRslora) };
}

/**
 * Whether peft would put a LoRA layer on the module at `path` (see the file comment). `isLinear` says whether the
 * module is an nn.Linear other than the output layer (what "all-linear" expands to).
 */
export function isTargeted(cfg: PeftLoraConfig, path: string, isLinear: boolean): boolean {
  if (cfg.excludeModules && selects(cfg.excludeModules, path, isLinear)) return false;
  const t = cfg.targetModules;
  if (t.kind !== 'names') return selects(t, path, isLinear);
  if (t.names.includes(path)) return true;
  if (!t.names.some((n) => path.endsWith(`.${n}`))) return false;
  if (!cfg.layersToTransform) return true;
  const layer = layerIndex(cfg, path);
  return layer !== null && cfg.layersToTransform.includes(layer);
}

/** The layer index peft reads from `path` for layers_to_transform, or null when the path has none. */
export function layerIndex(cfg: PeftLoraConfig, path: string): number | null {
  const patterns = cfg.layersPattern ?? ['[^.]*'];
  for (const p of patterns) {
    const m = new RegExp(`^.*\\.(?:${toJsRegex(p)})\\.(\\d+)\\.`).exec(path);
    if (m) return Number(m[1]);
  }
  return null;
}

function selects(s: ModuleSelector, path: string, isLinear: boolean): boolean {
  switch (s.kind) {
    case 'all-linear':
      return isLinear;
    case 'regex':
      return s.regex.test(path);
    case 'names':
      return s.names.includes(path) || s.names.some((n) => path.endsWith(`.${n}`));
  }
}

/** A target_modules / exclude_modules value, or null when absent. */
function parseSelector(v: unknown, file: string, field: string, allLinear: boolean): ModuleSelector | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') {
    if (allLinear && v.toLowerCase() === 'all-linear') return { kind: 'all-linear' };
    return { kind: 'regex', source: v, regex: compilePattern(`^(?:${v})$`, file, field) };
  }
  if (Array.isArray(v) && v.every((n) => typeof n === 'string')) {
    if (v.length === 0 && allLinear) {
      throw new PolyloraError('CONFIG_INVALID', 'target_modules is empty', { file, field, expected: 'module names, a regular expression or "all-linear"', found: '[]' });
    }
    return { kind: 'names', names: v as string[] };
  }
  throw new PolyloraError('CONFIG_INVALID', `invalid ${field}`, { file, field, expected: 'a list of module names or a regular expression string', found: show(v) });
}

/** Python `re` syntax -> JavaScript RegExp source, for the constructs that differ and appear in PEFT configs. */
function toJsRegex(py: string): string {
  return py.replace(/\(\?P<([A-Za-z_]\w*)>/g, '(?<$1>').replace(/\(\?P=([A-Za-z_]\w*)\)/g, '\\k<$1>').replace(/\\Z/g, '$');
}

function compilePattern(wrapped: string, file: string, field: string): RegExp {
  try {
    return new RegExp(toJsRegex(wrapped));
  } catch (e) {
    throw new PolyloraError('CONFIG_INVALID', 'pattern is not a regular expression polylora can compile', {
      file,
      field,
      expected: 'a Python regular expression using the syntax JavaScript shares (no inline flags, no possessive quantifiers)',
      found: `${wrapped} (${(e as Error).message})`,
    });
  }
}

function show(v: unknown): string {
  return v === undefined ? 'nothing (field missing)' : JSON.stringify(v);
}
