// The expected-weights list and validateWeights against real and in-memory checkpoints (written with the real
// safetensors writer, opened with the real reader).
import { describe, expect, it } from 'vitest';
import { openCheckpoint, openSafetensors, type SafetensorsCheckpoint } from '../../src/io/checkpoint.js';
import type { SafetensorsDType } from '../../src/io/safetensors.js';
import { writeSafetensors } from '../../src/io/safetensors-write.js';
import { memorySource } from '../../src/io/source.js';
import { parseModelConfig } from '../../src/model/config.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { expectedTensors, resolveWeightNames, validateWeights } from '../../src/model/weights-spec.js';
import { sharedTree } from '../helpers/shared.js';
import { caught } from '../helpers/errors.js';

const BITS: Partial<Record<SafetensorsDType, number>> = { F32: 32, F16: 16, BF16: 16, I32: 32, U8: 8, F8_E4M3: 8 };

interface T {
  name: string;
  shape: number[];
  dtype?: SafetensorsDType;
}

/** A checkpoint holding zero-filled tensors of the given names, shapes and dtypes (default F32). */
function checkpointOf(tensors: readonly T[], metadata?: Record<string, string>): Promise<SafetensorsCheckpoint> {
  const file = writeSafetensors(
    tensors.map((t) => {
      const dtype = t.dtype ?? 'F32';
      return { name: t.name, dtype, shape: t.shape, data: new Uint8Array((t.shape.reduce((a, b) => a * b, 1) * BITS[dtype]!) / 8) };
    }),
    metadata,
  );
  return openSafetensors(memorySource('mem/model.safetensors', file));
}

function config(json: Record<string, unknown>): ModelConfig {
  return parseModelConfig({ hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 10, ...json }, 'mem/config.json').config;
}

/** Every tensor the config needs (optional ones left out). */
const complete = (c: ModelConfig): T[] => expectedTensors(c).filter((t) => !t.optional);

describe('expectedTensors', () => {
  it('llama: 9 tensors per layer plus embedding, final norm, lm_head; Linear weights [out, in]', () => {
    const c = config({ model_type: 'llama' });
    const t = expectedTensors(c);
    expect(t).toHaveLength(3 + 9 * 2);
    const get = (n: string): number[] | undefined => t.find((x) => x.name === n)?.shape;
    expect(get('model.embed_tokens.weight')).toEqual([10, 8]);
    expect(get('model.layers.1.self_attn.q_proj.weight')).toEqual([8, 8]);
    expect(get('model.layers.1.self_attn.k_proj.weight')).toEqual([4, 8]); // 2 kv heads of 2
    expect(get('model.layers.0.self_attn.o_proj.weight')).toEqual([8, 8]);
    expect(get('model.layers.0.mlp.gate_proj.weight')).toEqual([12, 8]);
    expect(get('model.layers.0.mlp.down_proj.weight')).toEqual([8, 12]);
    expect(get('model.norm.weight')).toEqual([8]);
    expect(t.find((x) => x.name === 'lm_head.weight')).toEqual({ name: 'lm_head.weight', shape: [10, 8] });
  });

  it('qwen2 adds q/k/v biases, qwen3 q/k norms of head_dim; tied embeddings make lm_head optional', () => {
    const q2 = expectedTensors(config({ model_type: 'qwen2', tie_word_embeddings: true }));
    expect(q2.filter((t) => t.name.endsWith('.bias')).map((t) => `${t.name} ${t.shape}`).slice(0, 3)).toEqual([
      'model.layers.0.self_attn.q_proj.bias 8',
      'model.layers.0.self_attn.k_proj.bias 4',
      'model.layers.0.self_attn.v_proj.bias 4',
    ]);
    expect(q2.find((t) => t.name === 'lm_head.weight')?.optional).toBe(true);
    const q3 = expectedTensors(config({ model_type: 'qwen3', head_dim: 6 }));
    expect(q3.find((t) => t.name === 'model.layers.1.self_attn.k_norm.weight')?.shape).toEqual([6]);
    expect(q3.find((t) => t.name === 'model.layers.1.self_attn.q_proj.weight')?.shape).toEqual([24, 8]);
    expect(q3.some((t) => t.name.endsWith('.bias'))).toBe(false);
  });
});

describe('validateWeights', () => {
  it('TinyStories-656K: tied, lm_head stored, embed_tokens an alias of it', async () => {
    const tree = await sharedTree('models/tinystories-656k');
    const { config: c } = parseModelConfig(JSON.parse(await tree.text('config.json')), 'config.json');
    const ckpt = await openCheckpoint(tree);
    validateWeights(c, ckpt);
    expect(resolveWeightNames(c, ckpt)).toEqual({ embed: 'model.embed_tokens.weight', lmHead: 'model.embed_tokens.weight' });
    // The same file against SmolLM's config: wrong base model.
    const smol = parseModelConfig(JSON.parse(await (await sharedTree('adapters/third-party/base-configs/smollm-135m-instruct')).text('config.json')), 'smollm/config.json').config;
    const e = caught(() => validateWeights(smol, ckpt));
    expect(e.code).toBe('WEIGHTS_MISMATCH');
    expect(e.tensor).toBe('model.embed_tokens.weight');
    expect(e.message).toContain('expected [49152, 576], found [2048, 128]');
    expect(e.message).toContain('maybe wrong base model?');
    expect(e.message).toMatch(/and \d+ more/);
    await ckpt.close();
  });

  it('accepts a complete checkpoint and ignores rotary inv_freq buffers', async () => {
    const c = config({ model_type: 'qwen3', head_dim: 6 });
    const ckpt = await checkpointOf([...complete(c), { name: 'model.layers.0.self_attn.rotary_emb.inv_freq', shape: [3] }]);
    validateWeights(c, ckpt);
  });

  it('a missing tensor: named, with its expected shape and the hint', async () => {
    const c = config({ model_type: 'llama' });
    const ckpt = await checkpointOf(complete(c).filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight'));
    const e = caught(() => validateWeights(c, ckpt));
    expect(e.code).toBe('WEIGHTS_MISMATCH');
    expect(e.tensor).toBe('model.layers.1.mlp.up_proj.weight');
    expect(e.message).toMatch(/missing.*expected shape \[12, 8\], found nothing.*maybe wrong base model\?/);
  });

  it('a mis-shaped tensor: both shapes', async () => {
    const c = config({ model_type: 'llama' });
    const ckpt = await checkpointOf(complete(c).map((t) => (t.name === 'model.layers.0.self_attn.v_proj.weight' ? { ...t, shape: [8, 8] } : t)));
    const e = caught(() => validateWeights(c, ckpt));
    expect(e.tensor).toBe('model.layers.0.self_attn.v_proj.weight');
    expect(e.message).toContain('expected [4, 8], found [8, 8]');
  });

  it('an unexpected tensor (qwen2 biases in a llama checkpoint) is an error', async () => {
    const q2 = config({ model_type: 'qwen2' });
    const ckpt = await checkpointOf(complete(q2));
    const e = caught(() => validateWeights(config({ model_type: 'llama' }), ckpt));
    expect(e.message).toMatch(/unexpected tensor/);
    expect(e.tensor).toMatch(/^model\.layers\.0\.self_attn\.[qkv]_proj\.bias$/); // the first in file order
    expect(e.message).toContain('and 5 more'); // the other five biases
    validateWeights(q2, ckpt);
  });

  it('tied embeddings: lm_head alone (no alias) serves as both; untied needs lm_head', async () => {
    const tied = config({ model_type: 'llama', tie_word_embeddings: true });
    const onlyHead = await checkpointOf(complete(tied).map((t) => (t.name === 'model.embed_tokens.weight' ? { ...t, name: 'lm_head.weight' } : t)));
    validateWeights(tied, onlyHead);
    expect(resolveWeightNames(tied, onlyHead)).toEqual({ embed: 'lm_head.weight', lmHead: 'lm_head.weight' });
    const both = await checkpointOf([...complete(tied), { name: 'lm_head.weight', shape: [10, 8] }]);
    validateWeights(tied, both);
    expect(resolveWeightNames(tied, both)).toEqual({ embed: 'model.embed_tokens.weight', lmHead: 'model.embed_tokens.weight' });
    const untied = config({ model_type: 'llama' });
    const noHead = await checkpointOf(complete(untied).filter((t) => t.name !== 'lm_head.weight'));
    expect(caught(() => validateWeights(untied, noHead)).tensor).toBe('lm_head.weight');
  });

  it('quantized checkpoints are refused: GPTQ-style names, or integer / fp8 tensors', async () => {
    const c = config({ model_type: 'llama' });
    const gptq = await checkpointOf([
      ...complete(c).filter((t) => !t.name.endsWith('q_proj.weight')),
      { name: 'model.layers.0.self_attn.q_proj.qweight', shape: [1, 8], dtype: 'I32' },
      { name: 'model.layers.0.self_attn.q_proj.scales', shape: [1, 8], dtype: 'F16' },
    ]);
    const e = caught(() => validateWeights(c, gptq, 'gptq'));
    expect(e.code).toBe('WEIGHTS_MISMATCH');
    expect(e.message).toMatch(/quantized checkpoint/);
    expect(e.message).toContain('quant_method "gptq"');
    expect(e.message).toContain('I32');
    const fp8 = await checkpointOf(complete(c).map((t) => (t.name.endsWith('proj.weight') ? { ...t, dtype: 'F8_E4M3' as const } : t)));
    expect(caught(() => validateWeights(c, fp8)).message).toMatch(/quantized checkpoint.*F8_E4M3/);
  });

  it('a quantization_config with plain float tensors (merged export) passes', async () => {
    const { config: c, warnings, quantizationMethod } = parseModelConfig(
      { model_type: 'llama', hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 10, quantization_config: { quant_method: 'bitsandbytes' } },
      'c.json',
    );
    validateWeights(c, await checkpointOf(complete(c).map((t) => ({ ...t, dtype: 'BF16' as const }))), quantizationMethod);
    expect(warnings).toHaveLength(1);
  });
});
