// PEFT adapter loading and validation against a base ModelConfig: the real adapters in the shared folder (the
// TinyStories three and the third-party ones against stand-in base configs), every mismatched pair, and every
// refusal on adapters built in memory.
import { describe, expect, it } from 'vitest';
import { PolyloraError } from '../../src/errors.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { writeSafetensors } from '../../src/io/safetensors-write.js';
import { memoryTree, type FileTree } from '../../src/io/source.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { parseModelConfig } from '../../src/model/config.js';
import { baseLoraModules, loadLoraAdapter, loraFloat32, looseModelName, type LoadLoraOptions, type LoraAdapter } from '../../src/lora/adapter.js';
import { golden, sharedTree } from '../helpers/shared.js';
import { adapterTree, loraTensors, peftConfig, tinyConfig, tinyLoras } from './fixtures.js';

async function configOf(tree: FileTree): Promise<ModelConfig> {
  return parseModelConfig(JSON.parse(await tree.text('config.json')), `${tree.label}/config.json`).config;
}

async function refused(tree: FileTree, config: ModelConfig, options: LoadLoraOptions = {}): Promise<PolyloraError> {
  try {
    await loadLoraAdapter(tree, config, options);
  } catch (e) {
    if (!(e instanceof PolyloraError)) throw e;
    return e;
  }
  throw new Error(`expected ${tree.label} to be refused`);
}

describe('the TinyStories adapters', () => {
  const g = golden();
  const expected: Record<string, { rank: number; dtype: string; modules: number; targets: string[]; scale: number }> = {
    // zara: r 8, alpha 16 -> 2; all seven projections of both layers, f32.
    zara: { rank: 8, dtype: 'F32', modules: 14, targets: ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'], scale: 2 },
    // pirate: r 4, alpha 8 -> 2; q and v only, f16.
    pirate: { rank: 4, dtype: 'F16', modules: 4, targets: ['self_attn.q_proj', 'self_attn.v_proj'], scale: 2 },
    // robot: r 16, alpha 16, rsLoRA -> 16 / sqrt(16) = 4; all seven, bf16.
    robot: { rank: 16, dtype: 'BF16', modules: 14, targets: ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'], scale: 4 },
  };
  for (const [name, want] of Object.entries(expected)) {
    it(`${name}: rank ${want.rank}, ${want.dtype}, ${want.modules} modules, scale ${want.scale}`, async () => {
      const base = await sharedTree(g.model_path);
      const tree = await sharedTree(g.adapters[name]!.path);
      const a = await loadLoraAdapter(tree, await configOf(base), { baseModelName: base.label, id: 7 });
      expect(a.name).toBe(name);
      expect(a.id).toBe(7);
      expect(a.rank).toBe(want.rank);
      expect(a.modules.size).toBe(want.modules);
      expect(a.targets).toEqual({ targets: want.targets, layers: [0, 1] });
      expect(a.baseModelNameOrPath).toBe('raincandy-u/TinyStories-656K');
      expect(a.warnings).toEqual([]); // the folder name matches base_model_name_or_path loosely
      let bytes = 0;
      const file = await openCheckpoint(tree, { file: 'adapter_model.safetensors' });
      for (const m of a.modules.values()) {
        expect(m.scale).toBe(want.scale);
        expect(m.rank).toBe(want.rank);
        expect(m.a.dtype).toBe(want.dtype);
        expect(m.a.shape).toEqual([want.rank, m.inFeatures]);
        expect(m.b.shape).toEqual([m.outFeatures, want.rank]);
        expect(loraFloat32(m.a)).toEqual(await file.float32(m.a.name));
        expect(loraFloat32(m.b)).toEqual(await file.float32(m.b.name));
        expect(loraFloat32(m.b).some((v) => v !== 0)).toBe(true); // a real, trained B
        bytes += m.a.bytes.byteLength + m.b.bytes.byteLength;
      }
      await file.close();
      expect(a.byteSize).toBe(bytes);
      // Base order: layer 0's modules in LINEAR_MODULES order first.
      expect([...a.modules.keys()][0]).toBe('model.layers.0.self_attn.q_proj');
    });
  }

  it('warns when the base is not the one the adapter names', async () => {
    const base = await sharedTree(g.model_path);
    const a = await loadLoraAdapter(await sharedTree(g.adapters.zara!.path), await configOf(base), { baseModelName: 'meta-llama/Llama-3.2-1B' });
    expect(a.warnings.join('\n')).toMatch(/trained on "raincandy-u\/TinyStories-656K" but the base model is "meta-llama\/Llama-3.2-1B"/);
  });

  it('compares model names loosely: last path component, any case, no revision', () => {
    expect(looseModelName('raincandy-u/TinyStories-656K')).toBe(looseModelName('/data/models/tinystories-656k/'));
    expect(looseModelName('org/Name@main')).toBe('name');
  });
});

describe('third-party adapters against stand-in base configs', () => {
  const pairs: { adapter: string; base: string; rank: number; modules: number }[] = [
    { adapter: 'smollm-135m-instruct-medflash', base: 'smollm-135m-instruct', rank: 16, modules: 60 }, // 30 layers x q,v
    { adapter: 'qwen2.5-0.5b-math-latex', base: 'qwen2.5-0.5b', rank: 8, modules: 48 }, // 24 layers
    { adapter: 'tinyllama-1.1b-chat-emotion', base: 'tinyllama-1.1b-chat', rank: 4, modules: 44 }, // 22 layers
  ];
  const tp = 'adapters/third-party';
  for (const p of pairs) {
    it(`${p.adapter} loads against ${p.base}`, async () => {
      const config = await configOf(await sharedTree(`${tp}/base-configs/${p.base}`));
      const a = await loadLoraAdapter(await sharedTree(`${tp}/${p.adapter}`), config);
      expect(a.rank).toBe(p.rank);
      expect(a.modules.size).toBe(p.modules);
      expect(a.targets.targets).toEqual(['self_attn.q_proj', 'self_attn.v_proj']);
      expect(a.targets.layers).toEqual([...Array(config.numLayers).keys()]);
    });
    for (const other of pairs.filter((o) => o !== p)) {
      it(`${p.adapter} is refused against ${other.base}, naming the tensor and both shapes`, async () => {
        const config = await configOf(await sharedTree(`${tp}/base-configs/${other.base}`));
        const e = await refused(await sharedTree(`${tp}/${p.adapter}`), config);
        expect(e.code).toBe('WEIGHTS_MISMATCH');
        expect(e.tensor).toBe('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
        expect(e.expected).toBe(`[r, ${config.hiddenSize}]`);
        expect(e.found).toMatch(/^\[\d+, \d+\]$/);
        expect(e.message).toMatch(/maybe wrong base model\?/);
        expect(e.message).toContain(`${tp}/${p.adapter}/adapter_model.safetensors`);
      });
    }
  }
});

describe('adapters built in memory', () => {
  const config = tinyConfig();
  const qv = () => tinyLoras(['self_attn.q_proj', 'self_attn.v_proj'], [0, 1], 4);

  it('loads a plain q/v adapter', async () => {
    const a = await loadLoraAdapter(adapterTree(peftConfig(), qv()), config, { name: 'tiny' });
    expect(a.name).toBe('tiny');
    expect(a.modules.size).toBe(4);
    expect(a.source).toBe('mem/tiny-adapter');
    expect(a.warnings).toEqual([]);
  });

  it('reads keys with an adapter-name segment (lora_A.default.weight, lora_embedding_A.default)', async () => {
    const tensors = [
      ...loraTensors({ module: 'model.layers.0.self_attn.q_proj', rank: 4, inFeatures: 8, outFeatures: 8, adapterName: 'default' }).tensors,
      ...loraTensors({ module: 'model.embed_tokens', rank: 4, inFeatures: 16, outFeatures: 8, embedding: true, adapterName: 'default', seed: 5 }).tensors,
    ];
    expect(tensors.map((t) => t.name)).toContain('base_model.model.model.embed_tokens.lora_embedding_A.default');
    const a = await loadLoraAdapter(adapterTree(peftConfig({ target_modules: ['q_proj', 'embed_tokens'] }), tensors), config);
    expect([...a.modules.keys()]).toEqual(['model.layers.0.self_attn.q_proj', 'model.embed_tokens']);
    const e = a.modules.get('model.embed_tokens')!;
    expect(e.kind).toBe('embedding');
    expect([e.inFeatures, e.outFeatures]).toEqual([16, 8]); // A [r, vocab], B [hidden, r]
    expect(a.targets.targets).toEqual(['self_attn.q_proj', 'embed_tokens']);
  });

  it('loads lm_head and embed_tokens LoRA', async () => {
    const tensors = [
      ...loraTensors({ module: 'lm_head', rank: 3, inFeatures: 8, outFeatures: 16 }).tensors,
      ...loraTensors({ module: 'model.embed_tokens', rank: 2, inFeatures: 16, outFeatures: 8, embedding: true }).tensors,
    ];
    const a = await loadLoraAdapter(adapterTree(peftConfig({ target_modules: ['lm_head', 'embed_tokens'], rank_pattern: { lm_head: 3, embed_tokens: 2 } }), tensors), config);
    expect(a.modules.get('lm_head')).toMatchObject({ rank: 3, scale: 8 / 3, inFeatures: 8, outFeatures: 16, layer: null });
    expect(a.modules.get('model.embed_tokens')).toMatchObject({ rank: 2, scale: 4 });
    expect(a.targets).toEqual({ targets: ['lm_head', 'embed_tokens'], layers: [] });
  });

  it('applies rank_pattern and alpha_pattern per module', async () => {
    const tensors = [
      ...loraTensors({ module: 'model.layers.0.self_attn.q_proj', rank: 2, inFeatures: 8, outFeatures: 8 }).tensors,
      ...loraTensors({ module: 'model.layers.1.self_attn.q_proj', rank: 4, inFeatures: 8, outFeatures: 8 }).tensors,
      ...loraTensors({ module: 'model.layers.1.mlp.down_proj', rank: 6, inFeatures: 12, outFeatures: 8 }).tensors,
    ];
    const cfg = peftConfig({
      target_modules: ['q_proj', 'down_proj'],
      r: 4,
      lora_alpha: 8,
      rank_pattern: { 'layers.0.self_attn.q_proj': 2, down_proj: 6 },
      alpha_pattern: { 'model.layers.1.mlp.down_proj': 3, q_proj: 16 },
      use_rslora: true,
    });
    const a = await loadLoraAdapter(adapterTree(cfg, tensors), config);
    expect(a.modules.get('model.layers.0.self_attn.q_proj')).toMatchObject({ rank: 2, alpha: 16, scale: 16 / Math.sqrt(2) });
    expect(a.modules.get('model.layers.1.self_attn.q_proj')).toMatchObject({ rank: 4, alpha: 16, scale: 8 });
    expect(a.modules.get('model.layers.1.mlp.down_proj')).toMatchObject({ rank: 6, alpha: 3, scale: 3 / Math.sqrt(6) });
    expect(a.rank).toBe(6);
  });

  it('target_modules as a regex: tensors of untargeted modules are dropped with a warning', async () => {
    const cfg = peftConfig({ target_modules: '.*\\.layers\\.1\\.self_attn\\.(q|v)_proj' });
    const a = await loadLoraAdapter(adapterTree(cfg, qv()), config);
    expect([...a.modules.keys()]).toEqual(['model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']);
    expect(a.warnings.join('\n')).toMatch(/2 module\(s\) have LoRA tensors but adapter_config.json does not target them.*model\.layers\.0\.self_attn\.q_proj/);
  });

  it('"all-linear" targets the seven projections but not lm_head', async () => {
    const all = Object.keys({ 'self_attn.q_proj': 0, 'self_attn.k_proj': 0, 'self_attn.v_proj': 0, 'self_attn.o_proj': 0, 'mlp.gate_proj': 0, 'mlp.up_proj': 0, 'mlp.down_proj': 0 });
    const tensors = [...tinyLoras(all, [0, 1], 4), ...loraTensors({ module: 'lm_head', rank: 4, inFeatures: 8, outFeatures: 16 }).tensors];
    const a = await loadLoraAdapter(adapterTree(peftConfig({ target_modules: 'all-linear' }), tensors), config);
    expect(a.modules.size).toBe(14);
    expect(a.modules.has('lm_head')).toBe(false);
    expect(a.warnings.join('\n')).toMatch(/does not target them.*lm_head/);
  });

  it('layers_to_transform keeps the listed layers only', async () => {
    const a = await loadLoraAdapter(adapterTree(peftConfig({ layers_to_transform: [1], layers_pattern: 'layers' }), tinyLoras(['self_attn.q_proj', 'self_attn.v_proj'], [1], 4)), config);
    expect(a.targets.layers).toEqual([1]);
    expect(a.warnings).toEqual([]);
    // The same config with layer-0 tensors too: those are dropped, as peft never creates those layers.
    const b = await loadLoraAdapter(adapterTree(peftConfig({ layers_to_transform: 1 }), qv()), config);
    expect(b.targets.layers).toEqual([1]);
    expect(b.warnings.join('\n')).toMatch(/does not target them/);
  });

  it('warns about targeted modules without tensors (peft leaves them at B = 0)', async () => {
    const a = await loadLoraAdapter(adapterTree(peftConfig(), tinyLoras(['self_attn.q_proj', 'self_attn.v_proj'], [0], 4)), config);
    expect(a.warnings.join('\n')).toMatch(/2 targeted module\(s\) have no LoRA tensors.*model\.layers\.1\.self_attn\.q_proj/);
  });

  it('fan_in_fan_out: true reads the same [r, in] / [out, r] tensors, with peft\'s warning', async () => {
    const plain = await loadLoraAdapter(adapterTree(peftConfig(), qv()), config);
    const fifo = await loadLoraAdapter(adapterTree(peftConfig({ fan_in_fan_out: true }), qv()), config);
    expect(fifo.warnings.join('\n')).toMatch(/fan_in_fan_out is true/);
    for (const [path, m] of plain.modules) {
      expect(loraFloat32(fifo.modules.get(path)!.a)).toEqual(loraFloat32(m.a));
      expect(loraFloat32(fifo.modules.get(path)!.b)).toEqual(loraFloat32(m.b));
    }
  });

  it('lists the base modules a LoRA can target with their A / B sizes', () => {
    const mods = baseLoraModules(config);
    expect(mods).toHaveLength(2 * 7 + 2);
    expect(mods.find((m) => m.path === 'model.layers.1.mlp.down_proj')).toMatchObject({ inFeatures: 12, outFeatures: 8, layer: 1, kind: 'linear' });
    expect(mods.at(-1)).toMatchObject({ path: 'model.embed_tokens', kind: 'embedding', inFeatures: 16, outFeatures: 8 });
  });
});

describe('refusals', () => {
  const config = tinyConfig();
  const q0 = (o: Partial<Parameters<typeof loraTensors>[0]> = {}) =>
    loraTensors({ module: 'model.layers.0.self_attn.q_proj', rank: 4, inFeatures: 8, outFeatures: 8, ...o }).tensors;

  it('an A without its B, naming the missing tensor', async () => {
    const e = await refused(adapterTree(peftConfig(), [q0()[0]!]), config);
    expect(e.code).toBe('WEIGHTS_MISMATCH');
    expect(e.tensor).toBe('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    expect(e.expected).toBe('"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"');
  });

  it('a B without its A', async () => {
    const e = await refused(adapterTree(peftConfig(), [q0()[1]!]), config);
    expect(e.message).toMatch(/lora_B without its lora_A/);
  });

  it('A of the wrong input size', async () => {
    const e = await refused(adapterTree(peftConfig(), q0({ aShape: [4, 9] })), config);
    expect(e.tensor).toMatch(/q_proj\.lora_A\.weight$/);
    expect([e.expected, e.found]).toEqual(['[r, 8]', '[4, 9]']);
    expect(e.message).toMatch(/maybe wrong base model\? the base is llama, hidden_size 8/);
  });

  it('B of the wrong output size (k_proj sized as q_proj)', async () => {
    const t = loraTensors({ module: 'model.layers.0.self_attn.k_proj', rank: 4, inFeatures: 8, outFeatures: 8 }).tensors;
    const e = await refused(adapterTree(peftConfig({ target_modules: ['k_proj'] }), t), config);
    expect(e.tensor).toMatch(/k_proj\.lora_B\.weight$/);
    expect([e.expected, e.found]).toEqual(['[4, r]', '[8, 4]']);
  });

  it('a transposed A says so', async () => {
    const t = loraTensors({ module: 'model.layers.0.mlp.up_proj', rank: 4, inFeatures: 8, outFeatures: 12, aShape: [8, 4] }).tensors;
    const e = await refused(adapterTree(peftConfig({ target_modules: ['up_proj'] }), t), config);
    expect(e.message).toMatch(/looks transposed/);
  });

  it('A and B ranks that differ', async () => {
    const e = await refused(adapterTree(peftConfig(), q0({ bShape: [8, 3] })), config);
    expect(e.message).toMatch(/ranks differ/);
    expect(e.found).toBe('[8, 3]');
  });

  it('a rank other than the config says', async () => {
    const e = await refused(adapterTree(peftConfig({ r: 8 }), q0()), config);
    expect(e.message).toMatch(/rank differs from adapter_config.json/);
    expect([e.expected, e.found]).toEqual(['rank 8 (r)', 'rank 4 ([4, 8])']);
  });

  it('a rank above maxLoraRank, naming both', async () => {
    const e = await refused(adapterTree(peftConfig({ r: 4 }), q0()), config, { maxLoraRank: 2 });
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.field).toBe('maxLoraRank');
    expect(e.message).toMatch(/expected rank <= maxLoraRank \(2\), found rank 4/);
  });

  it('a module the base does not have', async () => {
    const t = loraTensors({ module: 'model.layers.0.mlp.fc1', rank: 4, inFeatures: 8, outFeatures: 12 }).tensors;
    const e = await refused(adapterTree(peftConfig({ target_modules: ['fc1'] }), t), config);
    expect(e.message).toMatch(/module "model\.layers\.0\.mlp\.fc1", which the base model does not have/);
    expect(e.tensor).toBe('base_model.model.model.layers.0.mlp.fc1.lora_A.weight');
    expect(e.message).toMatch(/maybe wrong base model\?/);
  });

  it('a layer past the base\'s last', async () => {
    const t = loraTensors({ module: 'model.layers.2.self_attn.q_proj', rank: 4, inFeatures: 8, outFeatures: 8 }).tensors;
    const e = await refused(adapterTree(peftConfig(), t), config);
    expect(e.message).toMatch(/layer the base does not have/);
    expect([e.expected, e.found]).toEqual(['layer index < 2', 'layer 2']);
  });

  it('target_modules that select nothing in the base', async () => {
    const e = await refused(adapterTree(peftConfig({ target_modules: ['c_attn'] }), q0()), config);
    expect(e.field).toBe('target_modules');
    expect(e.message).toMatch(/selects no module of the base model/);
  });

  it('adapter_model.bin only, with a conversion recipe', async () => {
    const e = await refused(adapterTree(peftConfig(), null, 'mem/pickled', { 'adapter_model.bin': new Uint8Array([0x80, 0x02]) }), config);
    expect(e.file).toBe('mem/pickled/adapter_model.bin');
    expect(e.message).toMatch(/pickle/);
    expect(e.hint).toMatch(/safe_serialization=True/);
    expect(e.hint).toMatch(/safetensors\.torch\.save_file/);
  });

  it('a folder without adapter_config.json', async () => {
    const e = await refused(memoryTree('mem/empty', { 'adapter_model.safetensors': writeSafetensors(q0()) }), config);
    expect(e.code).toBe('FILE_NOT_FOUND');
    expect(e.message).toMatch(/not a PEFT adapter folder/);
  });

  const magnitude = (module: string, n: number, suffix = '', shape = [n]) => ({
    name: `base_model.model.${module}.lora_magnitude_vector${suffix}`,
    dtype: 'F32' as const,
    shape,
    data: new Uint8Array(new Float32Array(shape.reduce((a, b) => a * b, 1)).map((_, i) => 1 + i / 8).buffer),
  });
  const Q0 = 'model.layers.0.self_attn.q_proj';

  it('DoRA: magnitude vectors under every name peft has saved them, read as f32', async () => {
    for (const [suffix, seg] of [['', ''], ['.weight', ''], ['.default', '.default'], ['.default.weight', '.default']] as const) {
      const tensors = [...loraTensors({ module: Q0, rank: 4, inFeatures: 8, outFeatures: 8, adapterName: seg.slice(1) || undefined }).tensors, magnitude(Q0, 8, suffix)];
      const a = await loadLoraAdapter(adapterTree(peftConfig({ use_dora: true, target_modules: ['q_proj'] }), tensors), config);
      expect(a.dora, suffix).toBe(true);
      expect([...a.modules.get(Q0)!.magnitude!]).toEqual(Array.from({ length: 8 }, (_, i) => 1 + i / 8));
    }
  });

  it('DoRA: a module without its magnitude, a magnitude of the wrong shape, and one without its lora_A / lora_B', async () => {
    const dora = peftConfig({ use_dora: true, target_modules: ['q_proj', 'v_proj'] });
    let e = await refused(adapterTree(dora, q0()), config);
    expect([e.code, e.tensor, e.found]).toEqual(['WEIGHTS_MISMATCH', `base_model.model.${Q0}.lora_magnitude_vector`, 'no such tensor']);
    e = await refused(adapterTree(dora, [...q0(), magnitude(Q0, 4)]), config);
    expect([e.tensor, e.expected, e.found]).toEqual([`base_model.model.${Q0}.lora_magnitude_vector`, `base_model.model.${Q0}.lora_magnitude_vector [8]`, '[4]']);
    expect(e.hint).toMatch(/wrong base model/);
    e = await refused(adapterTree(dora, [...q0(), magnitude(Q0, 8, '', [8, 1])]), config);
    expect(e.found).toBe('[8, 1]');
    const v0 = 'model.layers.0.self_attn.v_proj';
    e = await refused(adapterTree(dora, [...q0(), magnitude(Q0, 8), magnitude(v0, 4)]), config);
    expect([e.tensor, e.message]).toEqual([`base_model.model.${v0}.lora_magnitude_vector`, expect.stringMatching(/without lora_A/)]);
  });

  it('DoRA: magnitudes in an adapter whose config says use_dora false, and DoRA on embed_tokens', async () => {
    let e = await refused(adapterTree(peftConfig(), [...q0(), magnitude(Q0, 8)]), config);
    expect([e.tensor, e.field]).toEqual([`base_model.model.${Q0}.lora_magnitude_vector`, 'use_dora']);
    const emb = loraTensors({ module: 'model.embed_tokens', rank: 4, inFeatures: 16, outFeatures: 8, embedding: true }).tensors;
    e = await refused(adapterTree(peftConfig({ use_dora: true, target_modules: ['embed_tokens'] }), [...emb, magnitude('model.embed_tokens', 8)]), config);
    expect(e.message).toMatch(/DoRA on embed_tokens is not supported/);
    expect(e.hint).toMatch(/merge_and_unload/);
  });

  it('bias "all" / "lora_only": a file without bias vectors loads as plain LoRA (with a warning), trained biases are refused by name', async () => {
    for (const b of ['all', 'lora_only']) {
      const a = await loadLoraAdapter(adapterTree(peftConfig({ bias: b }), q0()), config);
      expect(a.modules.size).toBe(1);
      expect(a.warnings.join('\n')).toMatch(new RegExp(`bias is "${b}", but the file holds no bias vectors`));
    }
    const bias = { name: 'base_model.model.model.layers.0.self_attn.q_proj.bias', dtype: 'F32' as const, shape: [8], data: new Uint8Array(32) };
    const e = await refused(adapterTree(peftConfig({ bias: 'all' }), [...q0(), bias]), config);
    expect([e.tensor, e.message]).toEqual([bias.name, expect.stringMatching(/trained bias vector in the adapter/)]);
    expect(e.hint).toMatch(/bias="none"/);
  });

  it('modules_to_save, and a saved full module in the file', async () => {
    const e = await refused(adapterTree(peftConfig({ modules_to_save: ['lm_head'] }), q0()), config);
    expect([e.field, e.found]).toEqual(['modules_to_save', '["lm_head"]']);
    const head = { name: 'base_model.model.lm_head.modules_to_save.default.weight', dtype: 'F32' as const, shape: [16, 8], data: new Uint8Array(16 * 8 * 4) };
    expect((await refused(adapterTree(peftConfig(), [...q0(), head]), config)).tensor).toBe(head.name);
  });

  it('two adapters in one file', async () => {
    const t = [...q0({ adapterName: 'default' }), ...loraTensors({ module: 'model.layers.0.self_attn.v_proj', rank: 4, inFeatures: 8, outFeatures: 4, adapterName: 'other' }).tensors];
    expect((await refused(adapterTree(peftConfig(), t), config)).message).toMatch(/more than one adapter/);
    const dup = [...q0({ adapterName: 'default' }), ...q0()];
    expect((await refused(adapterTree(peftConfig(), dup), config)).message).toMatch(/two lora_A tensors for one module|more than one adapter/);
  });

  it('lora_A / lora_B on the embedding (peft writes lora_embedding_A / B there)', async () => {
    const t = loraTensors({ module: 'model.embed_tokens', rank: 4, inFeatures: 16, outFeatures: 8 }).tensors;
    expect((await refused(adapterTree(peftConfig({ target_modules: ['embed_tokens'] }), t), config)).message).toMatch(/wrong LoRA tensor kind/);
  });

  it('a non-finite value', async () => {
    const t = q0({ a: Float32Array.from({ length: 32 }, (_, i) => (i === 5 ? NaN : 0.1)) });
    const e = await refused(adapterTree(peftConfig(), t), config);
    expect(e.message).toMatch(/non-finite/);
    expect(e.found).toBe('NaN at element 5');
  });

  it('an integer tensor', async () => {
    const t = q0();
    t[0] = { ...t[0]!, dtype: 'I32' };
    expect((await refused(adapterTree(peftConfig(), t), config)).code).toBe('DTYPE_UNSUPPORTED');
  });

  it('ensure_weight_tying with a LoRA on a tied embedding', async () => {
    const tied = tinyConfig({ tie_word_embeddings: true });
    const t = loraTensors({ module: 'lm_head', rank: 4, inFeatures: 8, outFeatures: 16 }).tensors;
    const e = await refused(adapterTree(peftConfig({ target_modules: ['lm_head'], ensure_weight_tying: true }), t), tied);
    expect(e.field).toBe('ensure_weight_tying');
  });

  it('is a pure function: a refused load can be retried with the right base', async () => {
    const tree = adapterTree(peftConfig(), q0());
    await refused(tree, tinyConfig({ hidden_size: 16, num_attention_heads: 4 }));
    const ok: LoraAdapter = await loadLoraAdapter(tree, config);
    expect(ok.modules.size).toBe(1);
  });
});
