// `polylora merge` and the merge it runs: each TinyStories adapter merged into the base reproduces golden.json's
// continuations for that adapter in the reference model (f32 merges: exactly); the numerics of W + s·B·A
// (rounded once, also to bf16 / f16); tied embeddings; config cleaning; and the all-or-nothing output folder.
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mergeCommand, MERGE_USAGE } from '../../src/cli/merge.js';
import { PolyloraError } from '../../src/errors.js';
import { openCheckpoint, type SafetensorsCheckpoint } from '../../src/io/checkpoint.js';
import { bf16ToF32, f16ToF32, fromFloat32, toFloat32 } from '../../src/io/dtype.js';
import { writeSafetensors, type TensorToWrite } from '../../src/io/safetensors-write.js';
import { memoryTree, type FileTree } from '../../src/io/source.js';
import { parseModelConfig } from '../../src/model/config.js';
import { dirTree } from '../../src/platform/node-files.js';
import { EMBED_TOKENS, LM_HEAD, expectedTensors } from '../../src/model/weights-spec.js';
import { loraFloat32, type LoraAdapter } from '../../src/lora/adapter.js';
import { mergeModelFolder, roundOnce } from '../../src/lora/merge.js';
import { ReferenceModel } from '../../src/reference/model.js';
import { greedy } from '../../src/reference/sampling.js';
import { golden, sharedPath, sharedTree } from '../helpers/shared.js';
import { adapterTree, loraTensors, memorySink, peftConfig, randomValues } from './fixtures.js';

const g = golden();
let tmp: string;
const stderr: string[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'polylora-merge-'));
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => {
    stderr.push(String(s));
    return true;
  });
});
afterAll(async () => {
  vi.restoreAllMocks();
  await rm(tmp, { recursive: true, force: true });
});

function generate(m: ReferenceModel, prompt: readonly number[], maxTokens: number): number[] {
  const seq = m.newSequence();
  let logits = m.forward(seq, prompt, 0);
  const out: number[] = [];
  while (out.length < maxTokens) {
    const next = greedy(logits.subarray(logits.length - m.config.vocabSize));
    out.push(next);
    if (next === g.eos_token_id) break;
    logits = m.forward(seq, [next], seq.length);
  }
  return out;
}

async function mergeFails(argv: string[]): Promise<PolyloraError> {
  try {
    await mergeCommand(argv);
  } catch (e) {
    if (e instanceof PolyloraError) return e;
    throw e;
  }
  throw new Error(`expected merge ${argv.join(' ')} to fail`);
}

describe('polylora merge: the TinyStories adapters reproduce golden.json', () => {
  const modules: Record<string, number> = { zara: 14, pirate: 4, robot: 14 };
  for (const name of Object.keys(g.adapters)) {
    it(`${name}: merged f32 model, every ${name} case token for token`, async () => {
      const out = join(tmp, `tinystories-${name}`);
      stderr.length = 0;
      await mergeCommand(['--model', sharedPath(g.model_path), '--lora', sharedPath(g.adapters[name]!.path), '--out', out]);
      expect(stderr.join('')).toMatch(new RegExp(`merged "${name}" .* into ${modules[name]} tensors; wrote`));
      expect(stderr.join('')).not.toMatch(/warning/);
      expect((await readdir(out)).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
      expect((await readdir(tmp)).filter((f) => f.startsWith('.'))).toEqual([]); // no temp folder left

      const tree = dirTree(out);
      const configJson = JSON.parse(await tree.text('config.json')) as Record<string, unknown>;
      expect(configJson.torch_dtype).toBe('float32'); // the base's dtype, whatever the adapter's (robot is bf16)
      expect(configJson.tie_word_embeddings).toBe(true); // no embed / lm_head LoRA: still tied
      const ckpt = await openCheckpoint(tree);
      expect(ckpt.aliases.get(EMBED_TOKENS)).toBe(LM_HEAD); // TinyStories' alias survives
      expect([...ckpt.stored.values()].every((t) => t.dtype === 'F32')).toBe(true);
      const model = await ReferenceModel.load(parseModelConfig(configJson, 'merged').config, ckpt);
      await ckpt.close();
      for (const c of g.cases.filter((x) => x.adapter === name)) {
        const got = generate(model, c.prompt_ids, c.max_tokens);
        expect(got, `${c.name} / ${name}`).toEqual(c.expected_ids);
      }
    });
  }
});

/**
 * The adapted tensors of a merge, with the base weight, the adapter's A and B and the merged values; checks on the
 * way that every other tensor is byte-identical to the base's.
 */
async function* adaptedTensors(base: SafetensorsCheckpoint, merged: SafetensorsCheckpoint, adapter: LoraAdapter) {
  for (const name of merged.stored.keys()) {
    const m = adapter.modules.get(name.replace(/\.weight$/, ''));
    if (!m) {
      expect(Buffer.compare(await merged.bytes(name), await base.bytes(name)), name).toBe(0);
      continue;
    }
    yield { name, m, w: await base.float32(name), a: loraFloat32(m.a), b: loraFloat32(m.b), got: await merged.float32(name) };
  }
}

describe('merge numerics', () => {
  it('W + s·B·A for every adapted tensor, rounded once; untouched tensors byte-identical', async () => {
    const baseTree = await sharedTree(g.model_path);
    const base = await openCheckpoint(baseTree);
    const out = memorySink();
    const { adapter: pirate } = await mergeModelFolder(baseTree, await sharedTree(g.adapters.pirate!.path), out.sink);
    const merged = await openCheckpoint(out.tree());
    expect([...merged.stored.keys()].sort()).toEqual([...base.stored.keys()].sort());
    for await (const { name, m, w, a, b, got } of adaptedTensors(base, merged, pirate)) {
      for (let o = 0; o < m.outFeatures; o++) {
        for (let i = 0; i < m.inFeatures; i++) {
          let d = 0;
          for (let r = 0; r < m.rank; r++) d += b[o * m.rank + r]! * a[r * m.inFeatures + i]!;
          if (got[o * m.inFeatures + i] !== Math.fround(w[o * m.inFeatures + i]! + m.scale * d)) {
            expect.fail(`${name}[${o}, ${i}]: got ${got[o * m.inFeatures + i]}, expected ${Math.fround(w[o * m.inFeatures + i]! + m.scale * d)}`);
          }
        }
      }
    }
    await base.close();
    await merged.close();
  });

  it('DoRA: each merged row is W + s·B·A rescaled to length m (peft\'s merge), rounded once; other tensors untouched', async () => {
    const baseTree = await sharedTree(g.model_path);
    const base = await openCheckpoint(baseTree);
    const H = 128;
    const modules: [string, number, number][] = [['model.layers.0.self_attn.q_proj', H, H], ['model.layers.1.mlp.down_proj', H, 384]];
    const tensors: TensorToWrite[] = [];
    modules.forEach(([module, out, inF], i) => {
      tensors.push(...loraTensors({ module, rank: 4, inFeatures: inF, outFeatures: out, seed: 30 + i }).tensors);
      const m = randomValues(out, 40 + i, 1).map((v) => 1.5 + v); // lengths in [0.5, 2.5)
      tensors.push({ name: `base_model.model.${module}.lora_magnitude_vector`, dtype: 'F32', shape: [out], data: new Uint8Array(m.buffer) });
    });
    const out = memorySink();
    const { adapter } = await mergeModelFolder(baseTree, adapterTree(peftConfig({ use_dora: true, target_modules: ['q_proj', 'down_proj'] }), tensors), out.sink);
    expect(adapter.dora).toBe(true);
    const merged = await openCheckpoint(out.tree());
    for await (const { name, m, w, a, b, got } of adaptedTensors(base, merged, adapter)) {
      const K = m.inFeatures;
      for (let o = 0; o < m.outFeatures; o++) {
        const v = new Float64Array(K);
        let ss = 0;
        for (let i = 0; i < K; i++) {
          let d = 0;
          for (let r = 0; r < m.rank; r++) d += b[o * m.rank + r]! * a[r * K + i]!;
          v[i] = w[o * K + i]! + m.scale * d;
          ss += v[i]! * v[i]!;
        }
        // Each element is the f64 value rounded once to f32 (2^-24 relative), plus f64 noise far below that.
        let len = 0;
        for (let i = 0; i < K; i++) {
          const want: number = (m.magnitude![o]! * v[i]!) / Math.sqrt(ss);
          const gotV = got[o * K + i]!;
          len += gotV * gotV;
          if (Math.abs(gotV - want) > 2 ** -23 * Math.abs(want)) expect.fail(`${name}[${o}, ${i}]: got ${gotV}, expected ${want}`);
        }
        // So the row's length is m to within the same relative error.
        expect(Math.abs(Math.sqrt(len) - m.magnitude![o]!)).toBeLessThanOrEqual(2 ** -23 * m.magnitude![o]!);
      }
    }
    await base.close();
    await merged.close();
  });

  it('rounds f64 to bf16 / f16 once, even where f64 -> f32 -> 16 bits would round twice', () => {
    // 1 + 2^-8 + 2^-30: f32 rounds it to 1 + 2^-8, exactly halfway between bf16 neighbours 1 and 1 + 2^-7, and
    // ties-to-even would then give 1; the correct single rounding is up.
    expect(bf16ToF32(new Uint16Array(roundOnce(Float64Array.of(1 + 2 ** -8 + 2 ** -30), 'BF16').buffer)[0]!)).toBe(1 + 2 ** -7);
    expect(bf16ToF32(new Uint16Array(roundOnce(Float64Array.of(-(1 + 2 ** -8 + 2 ** -30)), 'BF16').buffer)[0]!)).toBe(-(1 + 2 ** -7));
    expect(bf16ToF32(new Uint16Array(roundOnce(Float64Array.of(1 + 2 ** -8 - 2 ** -30), 'BF16').buffer)[0]!)).toBe(1);
    expect(f16ToF32(new Uint16Array(roundOnce(Float64Array.of(1 + 2 ** -11 + 2 ** -40), 'F16').buffer)[0]!)).toBe(1 + 2 ** -10);
    // Exact ties still go to even, and exactly representable values stay.
    expect(bf16ToF32(new Uint16Array(roundOnce(Float64Array.of(1 + 2 ** -8), 'BF16').buffer)[0]!)).toBe(1);
    expect(new Float32Array(roundOnce(Float64Array.of(0.1, -3.5, 0), 'F32').buffer)).toEqual(Float32Array.of(0.1, -3.5, 0));
    // Agreement with the f32 path wherever f32 is exact: random bf16-representable sums.
    const x = randomValues(1000, 3, 4, 'F32');
    expect(roundOnce(Float64Array.from(x), 'BF16')).toEqual(fromFloat32(x, 'BF16'));
  });

  it('--dtype bf16 writes every weight as bf16 and says so in config.json', async () => {
    const out = join(tmp, 'robot-bf16');
    await mergeCommand(['--model', sharedPath(g.model_path), '--lora', sharedPath(g.adapters.robot!.path), '--out', out, '--dtype', 'bf16']);
    const tree = dirTree(out);
    expect(JSON.parse(await tree.text('config.json')).torch_dtype).toBe('bfloat16');
    const ckpt = await openCheckpoint(tree);
    expect([...ckpt.stored.values()].every((t) => t.dtype === 'BF16')).toBe(true);
    const f32Merge = memorySink();
    await mergeModelFolder(await sharedTree(g.model_path), await sharedTree(g.adapters.robot!.path), f32Merge.sink);
    const f32 = await openCheckpoint(f32Merge.tree());
    // Each bf16 value is the f64 merge x rounded once, so it is within half a bf16 ulp of x: 2^(floor(log2|x|) - 8)
    // (8 significant bits). The f32 merge v is within 2^-24·|x| of x; allow both.
    const name = 'model.layers.0.self_attn.q_proj.weight';
    const [hi, lo] = [await f32.float32(name), await ckpt.float32(name)];
    let changed = 0;
    hi.forEach((v, i) => {
      const halfUlp = v === 0 ? 0 : 2 ** (Math.floor(Math.log2(Math.abs(v))) - 8);
      if (Math.abs(lo[i]! - v) > halfUlp + Math.abs(v) * 2 ** -24) expect.fail(`${name}[${i}]: bf16 ${lo[i]} vs f32 merge ${v}`);
      if (lo[i] !== v) changed++;
    });
    expect(changed).toBeGreaterThan(0); // it really is bf16
    await ckpt.close();
    await f32.close();
  });

  it('--scale 0 gives the base weights back', async () => {
    const out = join(tmp, 'zara-scale0');
    await mergeCommand(['--model', sharedPath(g.model_path), '--lora', sharedPath(g.adapters.zara!.path), '--out', out, '--scale', '0']);
    const a = await readFile(join(out, 'model.safetensors'));
    const b = await readFile(join(sharedPath(g.model_path), 'model.safetensors'));
    expect(Buffer.compare(a, b)).toBe(0);
  });
});

describe('untied and cleaned output', () => {
  /** A tiny untied llama with random weights, stored f16, and a config with extra fields to clean. */
  function tinyBase(extra: Record<string, unknown> = {}): FileTree {
    const json = { model_type: 'llama', hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 16, tie_word_embeddings: false, torch_dtype: 'float16', ...extra };
    const config = parseModelConfig(json, 'tiny').config;
    const tensors: TensorToWrite[] = expectedTensors(config).map((t, i) => {
      const n = t.shape.reduce((x, y) => x * y, 1);
      return { name: t.name, dtype: 'F16', shape: t.shape, data: fromFloat32(randomValues(n, 100 + i, 0.5, 'F16'), 'F16') };
    });
    return memoryTree('mem/tiny-base', { 'config.json': JSON.stringify(json), 'model.safetensors': writeSafetensors(tensors), 'tokenizer.json': '{}' });
  }

  it('an embedding LoRA on an untied base changes embed_tokens only; quantization_config is dropped, dtype kept', async () => {
    const base = tinyBase({ quantization_config: { quant_method: 'bitsandbytes' }, dtype: 'float16' });
    const emb = loraTensors({ module: 'model.embed_tokens', rank: 2, inFeatures: 16, outFeatures: 8, embedding: true });
    const adapter = adapterTree(peftConfig({ target_modules: ['embed_tokens'], r: 2, lora_alpha: 4 }), emb.tensors);
    const out = memorySink();
    const report = await mergeModelFolder(base, adapter, out.sink, { baseName: 'org/tiny' });
    expect(report.untied).toBe(false);
    expect(report.mergedTensors).toEqual([EMBED_TOKENS]);
    expect(report.files).toEqual(['model.safetensors', 'config.json', 'tokenizer.json']);
    expect(report.warnings.join('\n')).toMatch(/quantization_config/);
    const cfg = JSON.parse(out.files['config.json'] as string) as Record<string, unknown>;
    expect(cfg.quantization_config).toBeUndefined();
    expect([cfg.torch_dtype, cfg.dtype, cfg.tie_word_embeddings]).toEqual(['float16', 'float16', false]);
    const [b, m] = [await openCheckpoint(base), await openCheckpoint(out.tree())];
    expect(Buffer.compare(await m.bytes(LM_HEAD), await b.bytes(LM_HEAD))).toBe(0);
    const E = await b.float32(EMBED_TOKENS);
    const got = toFloat32(await m.bytes(EMBED_TOKENS), 'F16');
    for (let t = 0; t < 16; t++) {
      for (let j = 0; j < 8; j++) {
        let d = 0; // peft: (Aᵀ[t] @ Bᵀ)[j]
        for (let r = 0; r < 2; r++) d += emb.a[r * 16 + t]! * emb.b[j * 2 + r]!;
        expect(got[t * 8 + j]).toBe(toFloat32(roundOnce(Float64Array.of(E[t * 8 + j]! + 2 * d), 'F16'), 'F16')[0]);
      }
    }
    await b.close();
    await m.close();
  });

  it('an lm_head LoRA on a tied base unties it: embed_tokens keeps E, lm_head gets E + ΔW', async () => {
    const tied = tinyBase({ tie_word_embeddings: true });
    // Store only the embedding, as a tied transformers checkpoint does.
    const src = await openCheckpoint(tied);
    const kept: TensorToWrite[] = [];
    for (const s of src.stored.values()) if (s.name !== LM_HEAD) kept.push({ name: s.name, dtype: s.dtype, shape: s.shape, data: await src.rawBytes(s.name) });
    const base = memoryTree('mem/tied', { 'config.json': await tied.text('config.json'), 'model.safetensors': writeSafetensors(kept) });
    const head = loraTensors({ module: 'lm_head', rank: 2, inFeatures: 8, outFeatures: 16 });
    const out = memorySink();
    const report = await mergeModelFolder(base, adapterTree(peftConfig({ target_modules: ['lm_head'], r: 2 }), head.tensors), out.sink);
    expect(report.untied).toBe(true);
    expect(report.mergedTensors).toEqual([LM_HEAD]);
    expect(JSON.parse(out.files['config.json'] as string).tie_word_embeddings).toBe(false);
    const m = await openCheckpoint(out.tree());
    expect(Buffer.compare(await m.bytes(EMBED_TOKENS), await src.bytes(EMBED_TOKENS))).toBe(0);
    expect(Buffer.compare(await m.bytes(LM_HEAD), await src.bytes(EMBED_TOKENS))).not.toBe(0);
    // The merged folder passes the loader's checks as an untied model.
    expect(parseModelConfig(JSON.parse(out.files['config.json'] as string), 'm').config.tieWordEmbeddings).toBe(false);
    await m.close();
    await src.close();
  });

  it('refuses an adapter for another base before writing anything', async () => {
    const out = memorySink();
    const adapter = await sharedTree('adapters/third-party/tinyllama-1.1b-chat-emotion');
    await expect(mergeModelFolder(await sharedTree(g.model_path), adapter, out.sink)).rejects.toMatchObject({ code: 'WEIGHTS_MISMATCH' });
    expect(Object.keys(out.files)).toEqual([]);
  });
});

describe('the output folder', () => {
  const args = (out: string, extra: string[] = []) => ['--model', sharedPath(g.model_path), '--lora', sharedPath(g.adapters.pirate!.path), '--out', out, ...extra];

  it('is not overwritten without --force, and replaced with it', async () => {
    const out = join(tmp, 'existing');
    await mkdir(out);
    await writeFile(join(out, 'old.txt'), 'old');
    const e = await mergeFails(args(out));
    expect(e.field).toBe('--out');
    expect(await readdir(out)).toEqual(['old.txt']);
    await mergeCommand(args(out, ['--force']));
    expect(await readdir(out)).toContain('model.safetensors');
    expect(await readdir(out)).not.toContain('old.txt');
    expect((await readdir(tmp)).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  it('is left untouched, with no temp folder, when the merge fails', async () => {
    const out = join(tmp, 'kept');
    await mkdir(out);
    await writeFile(join(out, 'old.txt'), 'old');
    const e = await mergeFails(['--model', sharedPath(g.model_path), '--lora', sharedPath('adapters/third-party/qwen2.5-0.5b-math-latex'), '--out', out, '--force']);
    expect(e.code).toBe('WEIGHTS_MISMATCH');
    expect(await readdir(out)).toEqual(['old.txt']);
    expect((await readdir(tmp)).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  it('needs --model, --lora and --out, and a known --dtype', async () => {
    expect((await mergeFails(['--model', 'x'])).message).toMatch(/--model, --lora and --out are required/);
    expect((await mergeFails(args(join(tmp, 'd'), ['--dtype', 'fp8']))).field).toBe('--dtype');
    expect(MERGE_USAGE).toMatch(/^polylora merge --model/);
  });
});
