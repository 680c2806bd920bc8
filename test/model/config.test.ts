// config.json parsing: real configs from the shared data, and the defaults and errors of each architecture.
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { parseModelConfig } from '../../src/model/config.js';
import { linearShape, type LinearModule } from '../../src/model/weights-spec.js';
import { sharedTree } from '../helpers/shared.js';
import { caught } from '../helpers/errors.js';

async function sharedConfig(dir: string): Promise<ReturnType<typeof parseModelConfig>> {
  const tree = await sharedTree(dir);
  return parseModelConfig(JSON.parse(await tree.text('config.json')), `${dir}/config.json`);
}

const base = { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100 };

describe('real configs', () => {
  it('TinyStories-656K (llama, GQA, tied)', async () => {
    const { config, warnings, quantizationMethod } = await sharedConfig('models/tinystories-656k');
    expect(config).toEqual({
      arch: 'llama',
      hiddenSize: 128,
      intermediateSize: 384,
      numLayers: 2,
      numHeads: 8,
      numKvHeads: 4,
      headDim: 16,
      vocabSize: 2048,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      ropeScaling: { type: 'none' },
      maxPositionEmbeddings: 512,
      tieWordEmbeddings: true,
      attentionBias: false,
      oProjBias: false,
      qkNorm: false,
      slidingWindow: null,
      bosTokenId: 1,
      eosTokenIds: [2],
      torchDtype: 'float32',
    });
    expect(warnings).toEqual([]);
    expect(quantizationMethod).toBeNull();
  });

  it('Qwen2.5-0.5B: q/k/v bias always on for qwen2, sliding window off (use_sliding_window false)', async () => {
    const { config } = await sharedConfig('adapters/third-party/base-configs/qwen2.5-0.5b');
    expect(config).toMatchObject({ arch: 'qwen2', headDim: 64, numKvHeads: 2, attentionBias: true, oProjBias: false, tieWordEmbeddings: true, ropeTheta: 1e6, slidingWindow: null, eosTokenIds: [151643] });
  });

  // The third-party adapters' LoRA shapes were produced by PEFT on the real bases: lora_A [r, in], lora_B [out, r]
  // must agree with the projection shapes derived from the parsed base config.
  for (const [adapter, baseDir] of [
    ['smollm-135m-instruct-medflash', 'smollm-135m-instruct'],
    ['qwen2.5-0.5b-math-latex', 'qwen2.5-0.5b'],
    ['tinyllama-1.1b-chat-emotion', 'tinyllama-1.1b-chat'],
  ] as const) {
    it(`${baseDir}: projection shapes agree with the real adapter ${adapter}`, async () => {
      const { config } = await sharedConfig(`adapters/third-party/base-configs/${baseDir}`);
      const ad = await openCheckpoint(await sharedTree(`adapters/third-party/${adapter}`), { file: 'adapter_model.safetensors' });
      let checked = 0;
      for (const [name, t] of ad.tensors) {
        const m = /\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_([AB])\.weight$/.exec(name);
        if (!m) continue;
        expect(Number(m[1])).toBeLessThan(config.numLayers);
        const [out, inF] = linearShape(config, m[2] as LinearModule);
        expect(m[3] === 'A' ? t.shape[1] : t.shape[0], name).toBe(m[3] === 'A' ? inF : out);
        checked++;
      }
      expect(checked).toBeGreaterThanOrEqual(2 * config.numLayers * 2); // q and v, A and B, every layer
      await ad.close();
    });
  }
});

describe('architecture detection', () => {
  it('uses model_type, else architectures[0]', () => {
    expect(parseModelConfig({ ...base, model_type: 'mistral' }, 'c.json').config.arch).toBe('mistral');
    const { model_type: _omit, ...noType } = base;
    expect(parseModelConfig({ ...noType, architectures: ['Qwen3ForCausalLM'] }, 'c.json').config.arch).toBe('qwen3');
  });

  it('refuses an unknown architecture, listing the supported ones', () => {
    const e = caught(() => parseModelConfig({ ...base, model_type: 'gpt2' }, 'm/config.json'));
    expect(e.code).toBe('ARCH_UNSUPPORTED');
    expect(e.message).toContain('m/config.json');
    expect(e.message).toContain('"gpt2"');
    expect(e.message).toMatch(/llama, mistral, qwen2, qwen3/);
    const { model_type: _omit, ...noType } = base;
    expect(caught(() => parseModelConfig({ ...noType, architectures: ['GPT2LMHeadModel'] }, 'c.json')).message).toContain('GPT2LMHeadModel');
    expect(caught(() => parseModelConfig(noType, 'c.json')).code).toBe('ARCH_UNSUPPORTED');
  });
});

describe('defaults (as transformers)', () => {
  it('llama: kv heads = heads, head_dim = hidden / heads, theta 10000, untied, no biases, no window', () => {
    const { config } = parseModelConfig(base, 'c.json');
    expect(config).toMatchObject({ numKvHeads: 4, headDim: 16, ropeTheta: 10000, ropeScaling: { type: 'none' }, tieWordEmbeddings: false, attentionBias: false, oProjBias: false, slidingWindow: null, eosTokenIds: [], bosTokenId: null });
  });

  it('llama attention_bias puts biases on q, k, v and o', () => {
    expect(parseModelConfig({ ...base, attention_bias: true }, 'c.json').config).toMatchObject({ attentionBias: true, oProjBias: true });
  });

  it('qwen2: untied by default; sliding window only with use_sliding_window and max_window_layers', () => {
    const q = { ...base, model_type: 'qwen2' };
    expect(parseModelConfig(q, 'c.json').config).toMatchObject({ tieWordEmbeddings: false, attentionBias: true, oProjBias: false, slidingWindow: null });
    expect(parseModelConfig({ ...q, sliding_window: 64 }, 'c.json').config.slidingWindow).toBeNull();
    expect(parseModelConfig({ ...q, use_sliding_window: true, sliding_window: 64, max_window_layers: 0 }, 'c.json').config.slidingWindow).toBe(64);
    expect(parseModelConfig({ ...q, use_sliding_window: true, sliding_window: 64, max_window_layers: 2 }, 'c.json').config.slidingWindow).toBeNull();
    const e = caught(() => parseModelConfig({ ...q, use_sliding_window: true, sliding_window: 64, max_window_layers: 1 }, 'c.json'));
    expect(e.field).toBe('max_window_layers');
  });

  it('qwen3: q/k norm, head_dim default 128, attention_bias default false', () => {
    const { config } = parseModelConfig({ ...base, model_type: 'qwen3' }, 'c.json');
    expect(config).toMatchObject({ qkNorm: true, headDim: 128, attentionBias: false, oProjBias: false, tieWordEmbeddings: false });
    expect(parseModelConfig({ ...base, model_type: 'qwen3', head_dim: 32, attention_bias: true }, 'c.json').config).toMatchObject({ headDim: 32, attentionBias: true, oProjBias: true });
  });

  it('mistral: sliding window 4096 unless set (null = full attention), never biases', () => {
    const m = { ...base, model_type: 'mistral', attention_bias: true };
    expect(parseModelConfig(m, 'c.json').config).toMatchObject({ slidingWindow: 4096, attentionBias: false, oProjBias: false });
    expect(parseModelConfig({ ...m, sliding_window: null }, 'c.json').config.slidingWindow).toBeNull();
    expect(parseModelConfig({ ...m, sliding_window: 100 }, 'c.json').config.slidingWindow).toBe(100);
  });

  it('eos_token_id may be a number or a list', () => {
    expect(parseModelConfig({ ...base, eos_token_id: [128001, 128009] }, 'c.json').config.eosTokenIds).toEqual([128001, 128009]);
    expect(parseModelConfig({ ...base, eos_token_id: 7 }, 'c.json').config.eosTokenIds).toEqual([7]);
  });
});

describe('rope scaling', () => {
  const llama3 = { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
  it('llama3 under rope_type or type, linear, default and null', () => {
    const want = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    expect(parseModelConfig({ ...base, rope_scaling: { rope_type: 'llama3', ...llama3 } }, 'c.json').config.ropeScaling).toEqual(want);
    expect(parseModelConfig({ ...base, rope_scaling: { type: 'llama3', ...llama3 } }, 'c.json').config.ropeScaling).toEqual(want);
    expect(parseModelConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } }, 'c.json').config.ropeScaling).toEqual({ type: 'linear', factor: 2 });
    expect(parseModelConfig({ ...base, rope_scaling: { rope_type: 'default' } }, 'c.json').config.ropeScaling).toEqual({ type: 'none' });
    expect(parseModelConfig({ ...base, rope_scaling: null }, 'c.json').config.ropeScaling).toEqual({ type: 'none' });
  });

  it("transformers v5's rope_parameters carries theta and scaling", () => {
    const { config } = parseModelConfig({ ...base, rope_parameters: { rope_type: 'llama3', rope_theta: 500000, ...llama3 } }, 'c.json');
    expect(config.ropeTheta).toBe(500000);
    expect(config.ropeScaling.type).toBe('llama3');
    expect(parseModelConfig({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }, 'c.json').config).toMatchObject({ ropeTheta: 1e6, ropeScaling: { type: 'none' } });
  });

  it('refuses other kinds, naming the field and the supported values', () => {
    const e = caught(() => parseModelConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'm/config.json'));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.field).toBe('rope_scaling.rope_type');
    expect(e.message).toMatch(/"default", "linear" or "llama3"/);
    expect(e.message).toContain('"yarn"');
    expect(caught(() => parseModelConfig({ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'c.json')).field).toBe('rope_scaling.low_freq_factor');
  });
});

describe('errors and warnings', () => {
  it('a missing required field names the file and the field', () => {
    for (const field of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'vocab_size']) {
      const cfg: Record<string, unknown> = { ...base };
      delete cfg[field];
      const e = caught(() => parseModelConfig(cfg, 'models/x/config.json'));
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.file).toBe('models/x/config.json');
      expect(e.field).toBe(field);
      expect(e.message).toContain('missing');
    }
  });

  it('bad values: wrong type, heads not divisible by kv heads, activation, MLP bias, not an object', () => {
    expect(caught(() => parseModelConfig({ ...base, hidden_size: '64' }, 'c.json')).field).toBe('hidden_size');
    expect(caught(() => parseModelConfig({ ...base, num_key_value_heads: 3 }, 'c.json')).field).toBe('num_key_value_heads');
    const act = caught(() => parseModelConfig({ ...base, hidden_act: 'gelu' }, 'c.json'));
    expect(act.field).toBe('hidden_act');
    expect(act.message).toContain('"gelu"');
    expect(caught(() => parseModelConfig({ ...base, mlp_bias: true }, 'c.json')).field).toBe('mlp_bias');
    expect(caught(() => parseModelConfig([1, 2], 'c.json')).code).toBe('CONFIG_INVALID');
    expect(caught(() => parseModelConfig({ ...base, eos_token_id: 'x' }, 'c.json')).field).toBe('eos_token_id');
  });

  it('a quantization_config is a warning, not an error', () => {
    const { warnings, quantizationMethod } = parseModelConfig({ ...base, quantization_config: { quant_method: 'bitsandbytes', load_in_4bit: true } }, 'u/config.json');
    expect(quantizationMethod).toBe('bitsandbytes');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/u\/config\.json.*quantization_config.*bitsandbytes/);
  });
});
