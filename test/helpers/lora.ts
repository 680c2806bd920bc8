// LoRA fixtures for the GPU tests (browser-safe: no node: imports): PEFT adapters built in memory for a chosen
// base config and read back through the real loader, the values a GPU slot holds for them (the oracle's input),
// and the shared TinyStories adapters as LoRARequests.
import type { DType } from '../../src/io/dtype.js';
import { fromFloat32, toFloat32 } from '../../src/io/dtype.js';
import type { FileTree } from '../../src/io/source.js';
import type { TensorToWrite } from '../../src/io/safetensors-write.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { parseModelConfig } from '../../src/model/config.js';
import { baseLoraModules, loadLoraAdapter, loraFloat32, type LoraAdapter } from '../../src/lora/adapter.js';
import type { LoraDelta } from '../../src/reference/ops.js';
import { LoRARequest } from '../../src/engine/lora-request.js';
import { adapterTree, loraTensors, peftConfig } from '../lora/fixtures.js';
import { golden, sharedTree } from './shared.js';

export interface KernelConfigSpec {
  hidden: number;
  inter: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  layers: number;
}

/**
 * A llama config with exactly these shapes (weights are never read: the LoRA slots need only the shapes).
 * q [heads·headDim, hidden], k/v [kvHeads·headDim, hidden], o [hidden, heads·headDim], gate/up [inter, hidden],
 * down [hidden, inter], lm_head [vocab, hidden], embed_tokens [vocab, hidden].
 */
export function kernelConfig(s: KernelConfigSpec): ModelConfig {
  const json = {
    model_type: 'llama',
    hidden_size: s.hidden,
    intermediate_size: s.inter,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: s.headDim,
    vocab_size: s.vocab,
    tie_word_embeddings: false,
  };
  return parseModelConfig(json, 'kernel-test/config.json').config;
}

/** Short target name of a module path, as adapter_config.json's target_modules and rank_pattern use it. */
export function shortName(path: string): string {
  return path === 'model.embed_tokens' ? 'embed_tokens' : path.slice(path.lastIndexOf('.') + 1);
}

export interface AdapterSpec {
  name: string;
  r: number;
  alpha: number;
  /** target_modules entries (short names: q_proj, ..., lm_head, embed_tokens). */
  targets: string[];
  /** Per short name: that module's rank (peft's rank_pattern). */
  rankPattern?: Record<string, number>;
  /** Per short name: that module's lora_alpha (peft's alpha_pattern). */
  alphaPattern?: Record<string, number>;
  useRslora?: boolean;
  /** Targeted modules written without tensors (peft then keeps B = 0: the base runs there). */
  omit?: (path: string) => boolean;
  /** File dtype of the LoRA tensors. */
  dtype?: DType;
  seed: number;
}

/**
 * The adapter folder `spec` describes, as peft's save_pretrained writes it, in memory (label `mem/<name>`).
 * Values are uniform in [-0.5, 0.5): B is never zero.
 */
export function adapterFiles(config: ModelConfig, spec: AdapterSpec): FileTree {
  const tensors: TensorToWrite[] = [];
  let seed = spec.seed * 1000;
  for (const m of baseLoraModules(config)) {
    const short = shortName(m.path);
    seed++;
    if (!spec.targets.includes(short) || spec.omit?.(m.path)) continue;
    tensors.push(
      ...loraTensors({
        module: m.path,
        rank: spec.rankPattern?.[short] ?? spec.r,
        inFeatures: m.inFeatures,
        outFeatures: m.outFeatures,
        embedding: m.kind === 'embedding',
        dtype: spec.dtype ?? 'F32',
        seed,
      }).tensors,
    );
  }
  const cfg = peftConfig({
    r: spec.r,
    lora_alpha: spec.alpha,
    target_modules: spec.targets,
    rank_pattern: spec.rankPattern ?? {},
    alpha_pattern: spec.alphaPattern ?? {},
    use_rslora: spec.useRslora ?? false,
  });
  return adapterTree(cfg, tensors, `mem/${spec.name}`);
}

/** adapterFiles(config, spec) read back with the real loader (loadLoraAdapter) against `config`. */
export function makeAdapter(config: ModelConfig, spec: AdapterSpec): Promise<LoraAdapter> {
  return loadLoraAdapter(adapterFiles(config, spec), config, { name: spec.name });
}

/** `x` rounded to `dtype` and widened back (exactly) to f32. */
export function rounded(x: Float32Array, dtype: DType): Float32Array {
  return toFloat32(fromFloat32(x, dtype), dtype);
}

/**
 * What a GPU slot of `dtype` holds for the module `path` of `adapter`, as an unmerged reference delta with the
 * request's multiplier as its scale: a = A rounded to the slot dtype, b = fl32(scale · B) rounded to the slot dtype
 * (LoraSlots folds the adapter's scale into B in f32, then converts). null when the adapter lacks the module.
 */
export function slotDelta(adapter: LoraAdapter, path: string, dtype: DType, mult: number): LoraDelta | null {
  const m = adapter.modules.get(path);
  if (!m) return null;
  const b = loraFloat32(m.b).map((v) => m.scale * v);
  return { a: rounded(loraFloat32(m.a), dtype), b: rounded(b, dtype), rank: m.rank, scale: mult };
}

/** W + d.scale · d.b · d.a, [out, in], each element summed in f64 and rounded to f32 once. */
export function mergeDelta(w: Float32Array, out: number, inF: number, d: LoraDelta | null): Float32Array {
  const merged = w.slice();
  if (!d) return merged;
  for (let n = 0; n < out; n++) {
    for (let k = 0; k < inF; k++) {
      let s = 0;
      for (let j = 0; j < d.rank; j++) s += d.b[n * d.rank + j]! * d.a[j * inF + k]!;
      merged[n * inF + k] = w[n * inF + k]! + d.scale * s;
    }
  }
  return merged;
}

const trees = new Map<string, Promise<FileTree>>();

/**
 * golden.json's adapter `name` as a LoRARequest. The FileTree is opened once per test file and reused: the engine
 * identifies a FileTree source by object, so a second, equal tree under the same name would be refused.
 */
export async function goldenLora(name: string, scale = 1): Promise<LoRARequest> {
  let tree = trees.get(name);
  if (!tree) trees.set(name, (tree = sharedTree(golden().adapters[name]!.path)));
  return new LoRARequest(name, undefined, await tree, { scale });
}
