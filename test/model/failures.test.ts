// Failures end to end: a lost device fails the running request and every later call with a named error (and no
// hang); bad model folders fail LLM.load with the file and tensor/field named, leaving nothing open. Each test
// owns its device (it is lost or destroyed on purpose). Runs in Node and Chromium.
import { describe, expect, it } from 'vitest';
import { Gpu } from '../../src/gpu/device.js';
import { LLM } from '../../src/engine/llm.js';
import { PolyloraError } from '../../src/errors.js';
import { memoryTree } from '../../src/io/source.js';
import { golden } from '../helpers/shared.js';
import { tinyStories } from '../helpers/model.js';

const c = golden().cases[0]!;

describe('device loss', () => {
  it('a device destroyed under a running request fails it, and later requests, with GPU_ERROR', async () => {
    const gpu = await Gpu.create();
    const llm = await LLM.load(await tinyStories(), { gpu, maxModelLen: 256, maxNumSeqs: 2 });
    try {
      const s = llm.stream({ promptIds: c.prompt_ids }, { temperature: 0, maxTokens: 200, ignoreEos: true });
      let n = 0;
      const iterate = (async () => {
        for await (const ch of s) {
          n += ch.tokenIds.length;
          if (n === 3) gpu.device.destroy(); // behind polylora's back, like a driver reset
        }
      })();
      await expect(iterate).rejects.toThrow(PolyloraError);
      await expect(s.result).rejects.toMatchObject({ code: 'GPU_ERROR' });
      expect(n).toBeLessThan(200);
      await expect(llm.generate({ promptIds: c.prompt_ids }, { maxTokens: 2 })).rejects.toThrow(/device was lost/);
    } finally {
      await llm.close();
      gpu.destroy();
    }
  });
});

describe('bad model folders', () => {
  async function files(): Promise<Record<string, Uint8Array | string>> {
    const tree = await tinyStories();
    const out: Record<string, Uint8Array | string> = {};
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) out[f] = await tree.text(f);
    const src = await tree.open('model.safetensors');
    out['model.safetensors'] = await src.read(0, src.size);
    await src.close();
    return out;
  }

  it('a truncated checkpoint names the file and the tensor that runs past the end', async () => {
    const f = await files();
    const full = f['model.safetensors'] as Uint8Array;
    f['model.safetensors'] = full.subarray(0, full.byteLength - 1000);
    const err = await LLM.load(memoryTree('trunc', f)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolyloraError);
    expect((err as PolyloraError).code).toBe('SAFETENSORS_INVALID');
    expect((err as PolyloraError).message).toMatch(/trunc\/model\.safetensors/);
    expect((err as PolyloraError).tensor).toBeTruthy();
  });

  it('a config with an unknown architecture lists the supported ones', async () => {
    const f = await files();
    f['config.json'] = JSON.stringify({ ...JSON.parse(f['config.json'] as string), model_type: 'gpt2', architectures: ['GPT2LMHeadModel'] });
    await expect(LLM.load(memoryTree('gpt2', f))).rejects.toThrow(/gpt2\/config\.json.*llama.*mistral.*qwen2.*qwen3/s);
  });

  it('a config missing a required field names it', async () => {
    const f = await files();
    const cfg = JSON.parse(f['config.json'] as string) as Record<string, unknown>;
    delete cfg.num_hidden_layers;
    f['config.json'] = JSON.stringify(cfg);
    await expect(LLM.load(memoryTree('nolayers', f))).rejects.toMatchObject({ code: 'CONFIG_INVALID', field: 'num_hidden_layers' });
  });

  it('weights of another shape fail with the tensor, both shapes and "maybe wrong base model?"', async () => {
    const f = await files();
    f['config.json'] = JSON.stringify({ ...JSON.parse(f['config.json'] as string), intermediate_size: 512 });
    await expect(LLM.load(memoryTree('wrongshape', f))).rejects.toThrow(/mlp\.(gate|up|down)_proj\.weight.*expected.*512.*found.*384.*maybe wrong base model/s);
  });
});
