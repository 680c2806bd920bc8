// A synthetic model with a real model's shapes and random weights, built in memory (no download): the same code
// path as a real checkpoint (safetensors bytes -> FileTree -> LLM.load), for benchmarks that need a model larger
// than the bundled TinyStories.

import type { DType } from '../src/io/dtype.js';
import { fromFloat32 } from '../src/io/dtype.js';
import type { FileTree } from '../src/io/source.js';
import { memoryTree } from '../src/io/source.js';
import { writeSafetensors } from '../src/io/safetensors-write.js';
import { parseModelConfig } from '../src/model/config.js';
import { expectedTensors } from '../src/model/weights-spec.js';

/** SmolLM2-135M's shapes (HuggingFaceTB/SmolLM2-135M config.json): llama, 30 layers, GQA 9/3, tied embeddings. */
export const SMOLLM2_135M = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 576,
  intermediate_size: 1536,
  num_hidden_layers: 30,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  vocab_size: 49152,
  max_position_embeddings: 8192,
  rms_norm_eps: 1e-5,
  rope_theta: 100000,
  tie_word_embeddings: true,
  hidden_act: 'silu',
  bos_token_id: 1,
  eos_token_id: 2,
};

/** Deterministic N(0, std²)-ish values (sum of uniforms), fast enough for 10^8 elements. */
function fillRandom(out: Float32Array, std: number, seed: number): void {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  const k = std * 2; // (u1 + u2 + u3 - 1.5) has variance 1/4
  for (let i = 0; i < out.length; i++) out[i] = (next() + next() + next() - 1.5) * k;
}

export function syntheticModel(configJson: Record<string, unknown>, dtype: DType, seed = 1): FileTree {
  const { config } = parseModelConfig(configJson, 'synthetic/config.json');
  const tensors = expectedTensors(config)
    .filter((t) => !t.optional)
    .map((t, i) => {
      const n = t.shape.reduce((a, b) => a * b, 1);
      const v = new Float32Array(n);
      if (t.name.endsWith('norm.weight')) v.fill(1);
      else fillRandom(v, 0.02, seed * 1000 + i);
      return { name: t.name, dtype, shape: t.shape, data: fromFloat32(v, dtype) };
    });
  return memoryTree(`synthetic-${config.arch}-${config.hiddenSize}x${config.numLayers}-${dtype}`, {
    'config.json': JSON.stringify({ ...configJson, torch_dtype: dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : 'bfloat16' }),
    'model.safetensors': writeSafetensors(tensors),
  });
}
