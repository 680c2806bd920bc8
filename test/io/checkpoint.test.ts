// Checkpoints: the real TinyStories model (tensor list from its config.json, the embedding alias), the shared
// adapters, a sharded copy built in memory, dtype conversion, byte-range reads, and bad indexes and aliases.

import { describe, expect, it } from 'vitest';
import { PolyloraError } from '../../src/errors.js';
import { openCheckpoint, type SafetensorsCheckpoint } from '../../src/io/checkpoint.js';
import { bf16ToF32, f16ToF32, fromFloat32, type DType } from '../../src/io/dtype.js';
import { convertCheckpoint, writeSafetensors, type TensorToWrite } from '../../src/io/safetensors-write.js';
import { memoryTree, type ByteSource, type FileTree } from '../../src/io/source.js';
import { sharedTree } from '../helpers/shared.js';

const TINY_DIR = 'models/tinystories-656k';

interface LlamaConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  vocab_size: number;
}

/** name -> shape a Llama checkpoint must hold, derived from config.json (Linear weights are [out, in]). */
function llamaShapes(c: LlamaConfig): Map<string, number[]> {
  const hd = c.hidden_size / c.num_attention_heads;
  const m = new Map<string, number[]>([
    ['model.embed_tokens.weight', [c.vocab_size, c.hidden_size]],
    ['lm_head.weight', [c.vocab_size, c.hidden_size]],
    ['model.norm.weight', [c.hidden_size]],
  ]);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    m.set(`${p}input_layernorm.weight`, [c.hidden_size]);
    m.set(`${p}post_attention_layernorm.weight`, [c.hidden_size]);
    m.set(`${p}self_attn.q_proj.weight`, [c.num_attention_heads * hd, c.hidden_size]);
    m.set(`${p}self_attn.k_proj.weight`, [c.num_key_value_heads * hd, c.hidden_size]);
    m.set(`${p}self_attn.v_proj.weight`, [c.num_key_value_heads * hd, c.hidden_size]);
    m.set(`${p}self_attn.o_proj.weight`, [c.hidden_size, c.num_attention_heads * hd]);
    m.set(`${p}mlp.gate_proj.weight`, [c.intermediate_size, c.hidden_size]);
    m.set(`${p}mlp.up_proj.weight`, [c.intermediate_size, c.hidden_size]);
    m.set(`${p}mlp.down_proj.weight`, [c.hidden_size, c.intermediate_size]);
  }
  return m;
}

async function tinyConfig(): Promise<LlamaConfig> {
  return JSON.parse(await (await sharedTree(TINY_DIR)).text('config.json')) as LlamaConfig;
}

/** Every stored tensor of `ckpt` as writer input (raw bytes). */
async function toWrite(ckpt: SafetensorsCheckpoint, names: Iterable<string>): Promise<TensorToWrite[]> {
  const out: TensorToWrite[] = [];
  for (const n of names) {
    const s = ckpt.stored.get(n)!;
    out.push({ name: n, dtype: s.dtype, shape: s.shape, data: (await ckpt.rawBytes(n)).slice() });
  }
  return out;
}

/** Index of the first differing byte, -1 when equal (vitest's deep equality is slow on megabyte arrays). */
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)) return -1;
  const n = Math.min(a.byteLength, b.byteLength);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

async function rejection(p: Promise<unknown>): Promise<PolyloraError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(PolyloraError);
  return e as PolyloraError;
}

describe('TinyStories-656K', () => {
  it('holds exactly the tensors and shapes its config.json implies, all f32', async () => {
    const c = await tinyConfig();
    expect(c).toMatchObject({ hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 8, num_key_value_heads: 4, intermediate_size: 384, vocab_size: 2048 });
    const ckpt = await openCheckpoint(await sharedTree(TINY_DIR));
    try {
      const want = llamaShapes(c);
      expect([...ckpt.tensors.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [name, shape] of want) {
        const t = ckpt.tensors.get(name)!;
        expect(t.shape, name).toEqual(shape);
        expect(t.dtype, name).toBe('F32');
        expect(t.byteLength, name).toBe(shape.reduce((a, b) => a * b, 1) * 4);
      }
      expect(ckpt.stored.size).toBe(want.size - 1); // the embedding is not stored
      expect(ckpt.tensors.get('model.layers.0.self_attn.k_proj.weight')!.shape).toEqual([4 * 16, 128]); // 4 kv heads x head_dim 16
      expect(ckpt.metadata).toEqual({ format: 'pt', 'model.embed_tokens.weight': 'lm_head.weight' });
    } finally {
      await ckpt.close();
    }
  });

  it('model.embed_tokens.weight is an alias reading the same bytes as lm_head.weight', async () => {
    const ckpt = await openCheckpoint(await sharedTree(TINY_DIR));
    try {
      expect([...ckpt.aliases]).toEqual([['model.embed_tokens.weight', 'lm_head.weight']]);
      const emb = ckpt.tensors.get('model.embed_tokens.weight')!;
      const head = ckpt.tensors.get('lm_head.weight')!;
      expect({ ...emb, name: head.name }).toEqual(head);
      const [a, b] = [await ckpt.bytes('model.embed_tokens.weight'), await ckpt.bytes('lm_head.weight')];
      expect(a.byteLength).toBe(2048 * 128 * 4);
      expect(firstDiff(a, b)).toBe(-1);
      const f = await ckpt.float32('model.embed_tokens.weight');
      expect(f.length).toBe(2048 * 128);
      expect(f.every(Number.isFinite)).toBe(true);
      expect(f.some((x) => x !== 0)).toBe(true);
    } finally {
      await ckpt.close();
    }
  });

  it('reads only the header and then each tensor by its byte range, never the whole file', async () => {
    const reads: [number, number][] = [];
    const tree = await sharedTree(TINY_DIR);
    const counting: FileTree = {
      ...tree,
      async open(file) {
        const src = await tree.open(file);
        const wrapped: ByteSource = {
          name: src.name,
          size: src.size,
          read: (offset, length) => (reads.push([offset, length]), src.read(offset, length)),
          close: () => src.close(),
        };
        return wrapped;
      },
    };
    const ckpt = await openCheckpoint(counting);
    try {
      expect(reads).toEqual([[0, 8], [8, 2160]]);
      reads.length = 0;
      const t = ckpt.tensors.get('model.layers.1.self_attn.v_proj.weight')!;
      await ckpt.float32(t.name);
      expect(reads).toEqual([[t.offset, 64 * 128 * 4]]);
    } finally {
      await ckpt.close();
    }
  });

  it('unknown name: WEIGHTS_MISMATCH naming the tensor, closest names as hint', async () => {
    const ckpt = await openCheckpoint(await sharedTree(TINY_DIR));
    try {
      const e = await rejection(ckpt.bytes('model.layers.0.self_attn.q_proj.weights'));
      expect(e).toMatchObject({ code: 'WEIGHTS_MISMATCH', tensor: 'model.layers.0.self_attn.q_proj.weights' });
      expect(e.file).toContain('tinystories-656k');
      expect(e.hint).toMatch(/^closest names: "model\.layers\.0\.self_attn\.q_proj\.weight", /);
      expect(() => ckpt.info('transformer.wte.weight')).toThrow(expect.objectContaining({ code: 'WEIGHTS_MISMATCH', tensor: 'transformer.wte.weight' }));
    } finally {
      await ckpt.close();
    }
  });

  for (const dtype of ['BF16', 'F16'] as const) {
    it(`converted to ${dtype} in memory: every value rounded to nearest, alias and metadata kept`, async () => {
      const ckpt = await openCheckpoint(await sharedTree(TINY_DIR));
      try {
        const bytes = await convertCheckpoint(ckpt, dtype);
        expect(bytes.byteLength).toBeLessThan(ckpt.tensors.get('lm_head.weight')!.byteLength * 2); // about half of 2.6 MB
        const conv = await openCheckpoint(memoryTree('converted', { 'model.safetensors': bytes }));
        expect(conv.metadata).toEqual(ckpt.metadata);
        expect([...conv.tensors.keys()].sort()).toEqual([...ckpt.tensors.keys()].sort());
        const widen = dtype === 'BF16' ? bf16ToF32 : f16ToF32;
        // Round to nearest: |x - q(x)| <= half an ulp = 2^-(p) |x| with p = 8 (bf16) or 11 (f16) significant bits,
        // plus half the smallest f16 subnormal (2^-25) for values below the f16 normal range.
        const relTol = dtype === 'BF16' ? 2 ** -8 : 2 ** -11;
        const absTol = dtype === 'BF16' ? 0 : 2 ** -25;
        for (const [name, t] of conv.tensors) {
          expect(t.dtype, name).toBe(dtype);
          const orig = await ckpt.float32(name);
          const raw = await conv.bytes(name);
          expect(firstDiff(raw, fromFloat32(orig, dtype)), name).toBe(-1);
          const h = new Uint16Array(raw.slice().buffer);
          const bad: string[] = [];
          for (let i = 0; i < orig.length && bad.length < 5; i++) {
            const err = Math.abs(orig[i]! - widen(h[i]!));
            if (!(err <= relTol * Math.abs(orig[i]!) + absTol)) bad.push(`[${i}] ${orig[i]} -> ${widen(h[i]!)}`);
          }
          expect(bad, `${name}: first mismatches`).toEqual([]);
        }
        expect(firstDiff(await conv.bytes('model.embed_tokens.weight'), await conv.bytes('lm_head.weight'))).toBe(-1);
        await conv.close();
      } finally {
        await ckpt.close();
      }
    });
  }
});

describe('adapters', () => {
  const cases: [string, number, DType][] = [
    ['adapters/tinystories-656k/zara', 28, 'F32'],
    ['adapters/tinystories-656k/pirate', 8, 'F16'],
    ['adapters/tinystories-656k/robot', 28, 'BF16'],
    ['adapters/third-party/smollm-135m-instruct-medflash', 120, 'F32'],
    ['adapters/third-party/qwen2.5-0.5b-math-latex', 96, 'F32'],
    ['adapters/third-party/tinyllama-1.1b-chat-emotion', 88, 'F32'],
  ];
  it.each(cases)('%s opens with file: adapter_model.safetensors; PEFT names, A [r, in], B [out, r]', async (dir, count, dtype) => {
    const tree = await sharedTree(dir);
    const r = (JSON.parse(await tree.text('adapter_config.json')) as { r: number }).r;
    const ckpt = await openCheckpoint(tree, { file: 'adapter_model.safetensors' });
    try {
      expect(ckpt.tensors.size).toBe(count);
      expect(ckpt.aliases.size).toBe(0);
      const peft = /^base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.lora_[AB]\.weight$/;
      for (const [name, t] of ckpt.tensors) {
        expect(name).toMatch(peft);
        expect(t.dtype, name).toBe(dtype);
        expect(t.shape.length, name).toBe(2);
        if (name.includes('lora_A')) expect(t.shape[0], name).toBe(r);
        else expect(t.shape[1], name).toBe(r);
      }
      const first = [...ckpt.tensors.keys()][0]!;
      const f = await ckpt.float32(first);
      expect(f.length).toBe(ckpt.tensors.get(first)!.shape.reduce((a, b) => a * b, 1));
    } finally {
      await ckpt.close();
    }
  });

  it('a folder without the file: FILE_NOT_FOUND naming both forms', async () => {
    const e = await rejection(openCheckpoint(await sharedTree('adapters/tinystories-656k/zara')));
    expect(e).toMatchObject({ code: 'FILE_NOT_FOUND', expected: 'model.safetensors or model.safetensors.index.json' });
    expect(e.file).toMatch(/zara\/model\.safetensors$/);
  });
});

describe('sharded checkpoints', () => {
  /** TinyStories split into three shards (layer 0, layer 1, the rest with the alias metadata) plus an index. */
  async function shardedTiny(): Promise<{ files: Record<string, Uint8Array | string>; single: SafetensorsCheckpoint }> {
    const single = await openCheckpoint(await sharedTree(TINY_DIR));
    const names = [...single.stored.keys()];
    const groups = [
      names.filter((n) => n.startsWith('model.layers.0.')),
      names.filter((n) => n.startsWith('model.layers.1.')),
      names.filter((n) => !n.startsWith('model.layers.')),
    ];
    const files: Record<string, Uint8Array | string> = {};
    const weightMap: Record<string, string> = {};
    for (const [i, g] of groups.entries()) {
      const shard = `model-0000${i + 1}-of-00003.safetensors`;
      files[shard] = writeSafetensors(await toWrite(single, g), i === 2 ? single.metadata : { format: 'pt' });
      for (const n of g) weightMap[n] = shard;
    }
    files['model.safetensors.index.json'] = JSON.stringify({ metadata: { total_size: 2624000 }, weight_map: weightMap });
    return { files, single };
  }

  it('opens through the index: same tensors, same bytes, the alias resolves across shards', async () => {
    const { files, single } = await shardedTiny();
    const ckpt = await openCheckpoint(memoryTree('sharded', files));
    try {
      expect([...ckpt.tensors.keys()].sort()).toEqual([...single.tensors.keys()].sort());
      expect(ckpt.metadata).toEqual(single.metadata);
      expect(ckpt.tensors.get('model.layers.1.mlp.up_proj.weight')!.file).toBe('sharded/model-00002-of-00003.safetensors');
      for (const name of ckpt.tensors.keys()) expect(firstDiff(await ckpt.bytes(name), await single.bytes(name)), name).toBe(-1);
    } finally {
      await ckpt.close();
      await single.close();
    }
  });

  it('index pointing at a missing shard: FILE_NOT_FOUND naming the shard and a tensor', async () => {
    const { files, single } = await shardedTiny();
    await single.close();
    delete files['model-00002-of-00003.safetensors'];
    const e = await rejection(openCheckpoint(memoryTree('sharded', files)));
    expect(e).toMatchObject({ code: 'FILE_NOT_FOUND', file: 'sharded/model-00002-of-00003.safetensors', field: 'model.safetensors.index.json weight_map' });
    expect(e.tensor).toMatch(/^model\.layers\.1\./);
    expect(e.message).toMatch(/shard named in the index is missing: expected a file holding 9 tensor\(s\)/);
  });

  it('index naming a tensor absent from its shard', async () => {
    const { files, single } = await shardedTiny();
    await single.close();
    const index = JSON.parse(files['model.safetensors.index.json'] as string) as { weight_map: Record<string, string> };
    index.weight_map['model.layers.2.mlp.up_proj.weight'] = 'model-00002-of-00003.safetensors';
    files['model.safetensors.index.json'] = JSON.stringify(index);
    const e = await rejection(openCheckpoint(memoryTree('sharded', files)));
    expect(e).toMatchObject({
      code: 'SAFETENSORS_INVALID', file: 'sharded/model-00002-of-00003.safetensors', tensor: 'model.layers.2.mlp.up_proj.weight',
      expected: '"model.layers.2.mlp.up_proj.weight" in model-00002-of-00003.safetensors',
    });
    expect(e.message).toMatch(/not in its shard/);
  });

  it('index putting a tensor in the wrong shard', async () => {
    const { files, single } = await shardedTiny();
    await single.close();
    const index = JSON.parse(files['model.safetensors.index.json'] as string) as { weight_map: Record<string, string> };
    index.weight_map['model.norm.weight'] = 'model-00001-of-00003.safetensors';
    files['model.safetensors.index.json'] = JSON.stringify(index);
    const e = await rejection(openCheckpoint(memoryTree('sharded', files)));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: 'model.norm.weight', found: 'it in sharded/model-00003-of-00003.safetensors' });
  });

  it('the same tensor in two shards', async () => {
    const { files, single } = await shardedTiny();
    files['model-00001-of-00003.safetensors'] = writeSafetensors(
      await toWrite(single, [...single.stored.keys()].filter((n) => n.startsWith('model.layers.0.') || n === 'model.norm.weight')),
    );
    await single.close();
    const e = await rejection(openCheckpoint(memoryTree('sharded', files)));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: 'model.norm.weight' });
    expect(e.message).toMatch(/stored in two shards.*model-00001-of-00003.*model-00003-of-00003/);
  });

  it.each([
    ['not JSON', '{"weight_map": ', 'index'],
    ['without weight_map', '{"metadata": {}}', 'weight_map'],
    ['with an empty weight_map', '{"weight_map": {}}', 'weight_map'],
    ['with a shard outside the folder', '{"weight_map": {"a.weight": "../secret.safetensors"}}', 'weight_map'],
  ])('an index %s', async (_, text, field) => {
    const e = await rejection(openCheckpoint(memoryTree('sharded', { 'model.safetensors.index.json': text })));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'sharded/model.safetensors.index.json', field });
  });
});

describe('aliases', () => {
  const w = { name: 'lm_head.weight', dtype: 'F32' as const, shape: [2, 2], data: fromFloat32(new Float32Array([1, 2, 3, 4]), 'F32') };

  it('an alias to a missing tensor is an error naming both', async () => {
    const file = writeSafetensors([w], { format: 'pt', 'model.embed_tokens.weight': 'model.lm_head.weight' });
    const e = await rejection(openCheckpoint(memoryTree('m', { 'model.safetensors': file })));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'm/model.safetensors', tensor: 'model.embed_tokens.weight', field: '__metadata__' });
    expect(e.message).toContain('alias "model.embed_tokens.weight" -> "model.lm_head.weight": target is not in the checkpoint');
  });

  it('ordinary metadata is not an alias; asking for a metadata key whose value is no tensor names both', async () => {
    const file = writeSafetensors([w], { format: 'pt', 'modelspec.title': 'My model', tied: 'lm_head' });
    const ckpt = await openCheckpoint(memoryTree('m', { 'model.safetensors': file }));
    expect(ckpt.aliases.size).toBe(0);
    expect([...ckpt.tensors.keys()]).toEqual(['lm_head.weight']);
    const e = await rejection(ckpt.bytes('tied'));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: 'tied' });
    expect(e.message).toContain('alias "tied" -> "lm_head"');
  });
});
