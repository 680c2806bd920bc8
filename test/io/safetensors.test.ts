// The safetensors header reader and writer: a real file, round trips of odd shapes in every compute dtype, a
// byte-exact rewrite of a file written by the reference implementation, and one test per kind of bad file.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PolyloraError } from '../../src/errors.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { fromFloat32, type DType } from '../../src/io/dtype.js';
import { MAX_HEADER_BYTES, parseSafetensorsHeader } from '../../src/io/safetensors.js';
import { layoutSafetensors, writeSafetensors, type TensorToWrite } from '../../src/io/safetensors-write.js';
import { memorySource, memoryTree } from '../../src/io/source.js';
import { getPlatform } from '../../src/platform/platform.js';
import { sharedPath } from '../helpers/shared.js';

const TINY = 'models/tinystories-656k/model.safetensors';

/** Deterministic values in [-2, 2) (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 4 - 2;
  };
}

function randomTensor(name: string, dtype: DType, shape: number[], rand: () => number): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  return { name, dtype, shape, data: fromFloat32(Float32Array.from({ length: n }, rand), dtype) };
}

/** A file with a hand-written header (string or object) followed by `dataSize` zero bytes. */
function rawFile(header: string | object, dataSize: number): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + dataSize);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  return out;
}

async function parseError(bytes: Uint8Array, name = 'bad.safetensors'): Promise<PolyloraError> {
  const err = await parseSafetensorsHeader(memorySource(name, bytes)).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PolyloraError);
  return err as PolyloraError;
}

describe('reading the real TinyStories file', () => {
  it('parses the header: 20 stored f32 tensors, metadata with the embedding alias', async () => {
    const src = await (await getPlatform().openLocal(sharedPath('models/tinystories-656k'))).open('model.safetensors');
    try {
      const h = await parseSafetensorsHeader(src);
      expect(h.file).toBe(src.name);
      expect(h.tensors.size).toBe(20);
      expect(h.metadata).toEqual({ format: 'pt', 'model.embed_tokens.weight': 'lm_head.weight' });
      expect(h.tensors.get('lm_head.weight')).toEqual({
        name: 'lm_head.weight', dtype: 'F32', shape: [2048, 128], offset: h.dataStart, byteLength: 2048 * 128 * 4,
      });
      expect(h.headerLength % 8).toBe(0);
      const last = [...h.tensors.values()].reduce((a, b) => (a.offset > b.offset ? a : b));
      expect(last.offset + last.byteLength).toBe(src.size);
    } finally {
      await src.close();
    }
  });

  it('rewriting its tensors reproduces the file byte for byte (same layout as the reference writer)', async () => {
    const bytes = new Uint8Array(readFileSync(sharedPath(TINY)));
    const h = await parseSafetensorsHeader(memorySource(TINY, bytes));
    const tensors = [...h.tensors.values()].map((e) => ({
      name: e.name, dtype: e.dtype, shape: e.shape, data: bytes.subarray(e.offset, e.offset + e.byteLength),
    }));
    tensors.reverse(); // input order must not matter
    const again = writeSafetensors(tensors, h.metadata);
    expect(again.byteLength).toBe(bytes.byteLength);
    const firstDiff = again.findIndex((b, i) => b !== bytes[i]);
    expect(firstDiff, `first differing byte at ${firstDiff}`).toBe(-1);
  });
});

describe('write -> parse round trip', () => {
  const shapes = [[], [1], [13], [3, 5], [7, 1, 3], [0, 4], [2, 3, 5, 7]];
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    it(`${dtype}: odd shapes, bytes and offsets come back`, async () => {
      const rand = seeded(dtype.length * 7919);
      const tensors = shapes.map((s, i) => randomTensor(`t${i}.weight`, dtype, s, rand));
      const file = writeSafetensors(tensors, { format: 'pt', note: 'round trip' });
      const h = await parseSafetensorsHeader(memorySource('rt.safetensors', file));
      expect(h.headerLength % 8).toBe(0);
      expect(h.metadata).toEqual({ format: 'pt', note: 'round trip' });
      expect([...h.tensors.keys()].sort()).toEqual(tensors.map((t) => t.name).sort());
      for (const t of tensors) {
        const e = h.tensors.get(t.name)!;
        expect(e.dtype).toBe(dtype);
        expect(e.shape).toEqual(t.shape);
        expect(file.subarray(e.offset, e.offset + e.byteLength)).toEqual(t.data);
      }
    });
  }

  it('mixed dtypes: larger elements first, so every tensor starts at a multiple of its element size', async () => {
    const rand = seeded(5);
    const tensors = [
      randomTensor('a', 'F16', [3], rand), // 6 bytes: would misalign an f32 placed after it
      randomTensor('b', 'F32', [5], rand),
      randomTensor('c', 'BF16', [1, 3], rand),
      { name: 'ids', dtype: 'I64' as const, shape: [3], data: new Uint8Array(24).fill(1) },
    ];
    const file = writeSafetensors(tensors);
    const h = await parseSafetensorsHeader(memorySource('mixed.safetensors', file));
    expect([...h.tensors.keys()]).toEqual(['ids', 'b', 'c', 'a']); // I64 > F32 > BF16 > F16, as the reference sorts
    for (const e of h.tensors.values()) {
      const size = e.dtype === 'I64' ? 8 : e.dtype === 'F32' ? 4 : 2;
      expect((e.offset - h.dataStart) % size, e.name).toBe(0);
    }
    expect(h.metadata).toEqual({});
  });

  it('header is padded with spaces to a multiple of 8 bytes', () => {
    const { prefix } = layoutSafetensors([{ name: 'x', dtype: 'F32', shape: [1], byteLength: 4 }]);
    const json = '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    expect(new TextDecoder().decode(prefix.subarray(8))).toBe(json + ' '.repeat((8 - (json.length % 8)) % 8));
    expect(prefix.byteLength % 8).toBe(0);
  });

  it('the writer refuses a duplicate name and data of the wrong length, naming the tensor', () => {
    const t = { name: 'w', dtype: 'F32' as const, shape: [2], data: new Uint8Array(8) };
    expect(() => writeSafetensors([t, t])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', tensor: 'w' }));
    expect(() => writeSafetensors([{ ...t, data: new Uint8Array(6) }])).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', tensor: 'w', expected: '8 bytes ([2] F32)', found: '6 bytes' }),
    );
  });
});

describe('bad files: a typed error naming the file and the tensor or field', () => {
  const one = (entry: object, extra: object = {}) => ({ 'w.weight': entry, ...extra });
  const ok = { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] };

  it('file shorter than the 8-byte length', async () => {
    const e = await parseError(new Uint8Array(5), 'short.safetensors');
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'short.safetensors', field: 'header length', found: '5 bytes' });
    expect(e.message).toMatch(/short\.safetensors: field "header length": file too short.*hint: the file is truncated/);
  });

  it('truncated file: cut inside the data names the first tensor that no longer fits', async () => {
    const rand = seeded(1);
    const whole = writeSafetensors([randomTensor('a', 'F32', [4], rand), randomTensor('b', 'F32', [4], rand)]);
    const e = await parseError(whole.subarray(0, whole.byteLength - 5), 'cut.safetensors');
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'cut.safetensors', tensor: 'b', field: 'data_offsets' });
    expect(e.expected).toBe('end <= 27 (the data section\'s size)');
    expect(e.found).toBe('[16, 32]');
    expect(e.message).toMatch(/truncated/);
  });

  it('truncated file: cut inside the header', async () => {
    const whole = writeSafetensors([{ name: 'a', dtype: 'F32', shape: [1], data: new Uint8Array(4) }]);
    const e = await parseError(whole.subarray(0, 20), 'cut.safetensors');
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'cut.safetensors', field: 'header length' });
    expect(e.message).toMatch(/header runs past the end of the file: expected at most 12 bytes \(the file is 20 bytes\)/);
  });

  it('header length past the end of the file', async () => {
    const f = rawFile(one(ok), 24);
    new DataView(f.buffer).setBigUint64(0, BigInt(f.byteLength), true);
    const e = await parseError(f);
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'bad.safetensors', field: 'header length', found: `${f.byteLength} bytes` });
  });

  it('header length over the 100 MB cap (no allocation, no wait)', async () => {
    const f = rawFile(one(ok), 24);
    new DataView(f.buffer).setBigUint64(0, 2n ** 62n, true);
    const e = await parseError(f);
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', field: 'header length', expected: `at most ${MAX_HEADER_BYTES} bytes` });
    expect(e.found).toBe(`${2n ** 62n} bytes`);
  });

  it('header that is not JSON', async () => {
    const e = await parseError(rawFile('PK\u0003\u0004 this is a zip', 0));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'bad.safetensors', field: 'header' });
    expect(e.message).toMatch(/header is not valid JSON.*header starts "PK/);
  });

  it('header that is not UTF-8', async () => {
    const f = rawFile('{"a":1}', 0);
    f[10] = 0xff;
    expect(await parseError(f)).toMatchObject({ code: 'SAFETENSORS_INVALID', field: 'header', message: expect.stringMatching(/UTF-8/) });
  });

  it.each([
    ['an array', '[1, 2]', 'an array [1,2]'],
    ['a number', '42', 'number 42'],
    ['null', 'null', 'null'],
  ])('header that is %s, not an object', async (_, header, found) => {
    const e = await parseError(rawFile(header, 0));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'bad.safetensors', field: 'header', found });
  });

  it('tensor entry that is not an object', async () => {
    const e = await parseError(rawFile({ 'w.weight': [0, 24] }, 24));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: 'w.weight', found: 'an array [0,24]' });
  });

  it.each([
    ['dtype', { shape: [2, 3], data_offsets: [0, 24] }, 'nothing (missing)'],
    ['dtype', { ...ok, dtype: 4 }, 'number 4'],
    ['shape', { dtype: 'F32', data_offsets: [0, 24] }, 'nothing (missing)'],
    ['shape', { ...ok, shape: [2, -3] }, 'an array [2,-3]'],
    ['shape', { ...ok, shape: [2, 1.5] }, 'an array [2,1.5]'],
    ['data_offsets', { dtype: 'F32', shape: [2, 3] }, 'nothing (missing)'],
    ['data_offsets', { ...ok, data_offsets: [0] }, 'an array [0]'],
    ['data_offsets', { ...ok, data_offsets: '0-24' }, 'string "0-24"'],
  ])('missing or malformed %s (%j)', async (field, entry, found) => {
    const e = await parseError(rawFile(one(entry), 24));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'bad.safetensors', tensor: 'w.weight', field, found });
    expect(e.message).toContain(`tensor "w.weight": field "${field}"`);
  });

  it('offsets reversed', async () => {
    const e = await parseError(rawFile(one({ ...ok, data_offsets: [24, 0] }), 24));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: 'w.weight', field: 'data_offsets', expected: 'begin <= end' });
  });

  it('offsets overlapping another tensor', async () => {
    const header = { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [12, 28] } };
    const e = await parseError(rawFile(header, 28));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'bad.safetensors', tensor: 'b', field: 'data_offsets' });
    expect(e.message).toMatch(/overlaps another tensor.*inside "a"/);
  });

  it('empty tensors may share an offset; gaps between tensors are accepted', async () => {
    const header = {
      a: { dtype: 'F32', shape: [0, 3], data_offsets: [4, 4] },
      b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
      c: { dtype: 'BF16', shape: [2], data_offsets: [12, 16] },
    };
    const h = await parseSafetensorsHeader(memorySource('ok.safetensors', rawFile(header, 16)));
    expect([...h.tensors.keys()]).toEqual(['a', 'b', 'c']);
  });

  it('offsets past the end of the data section', async () => {
    const e = await parseError(rawFile(one({ ...ok, data_offsets: [8, 32] }), 24));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: 'w.weight', field: 'data_offsets', found: '[8, 32]' });
    expect(e.expected).toBe("end <= 24 (the data section's size)");
  });

  it('dtype and shape disagreeing with the byte length', async () => {
    const e = await parseError(rawFile(one({ ...ok, dtype: 'F16' }), 24));
    expect(e).toMatchObject({
      code: 'SAFETENSORS_INVALID', tensor: 'w.weight', field: 'data_offsets',
      expected: '12 bytes (6 elements of F16 at 2 bytes, shape [2, 3])', found: '24 bytes ([0, 24])',
    });
  });

  it('a dtype the format does not define is refused at parse time', async () => {
    const e = await parseError(rawFile(one({ ...ok, dtype: 'Q4_K' }), 24));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: 'w.weight', field: 'dtype', found: '"Q4_K"' });
  });

  it('an unsupported dtype (I8) still has its byte length checked with its own element size', async () => {
    const e = await parseError(rawFile(one({ dtype: 'I8', shape: [2, 3], data_offsets: [0, 24] }), 24));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: 'w.weight', expected: '6 bytes (6 elements of I8 at 1 bytes, shape [2, 3])' });
  });

  it('an unsupported dtype is an error only when the tensor is read; the rest of the file stays usable', async () => {
    const rand = seeded(3);
    const w = randomTensor('w.weight', 'F32', [2, 3], rand);
    const file = writeSafetensors([w, { name: 'position_ids', dtype: 'I64', shape: [3], data: new Uint8Array(24) }]);
    const ckpt = await openCheckpoint(memoryTree('m', { 'model.safetensors': file }));
    expect([...ckpt.tensors.keys()]).toEqual(['w.weight']);
    expect(ckpt.stored.get('position_ids')?.dtype).toBe('I64');
    expect(await ckpt.bytes('w.weight')).toEqual(w.data);
    for (const read of [() => ckpt.bytes('position_ids'), () => ckpt.float32('position_ids')]) {
      const e = await read().catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'DTYPE_UNSUPPORTED', file: 'm/model.safetensors', tensor: 'position_ids', found: 'I64' });
      expect((e as Error).message).toMatch(/m\/model\.safetensors: tensor "position_ids": unsupported dtype: expected F32, F16 or BF16, found I64/);
    }
    expect(await ckpt.rawBytes('position_ids')).toEqual(new Uint8Array(24));
  });

  it.each([
    ['not an object', '"format=pt"', '__metadata__', 'string "format=pt"'],
    ['a non-string value', '{"format":"pt","step":100}', '__metadata__.step', 'number 100'],
  ])('__metadata__ %s', async (_, meta, field, found) => {
    const header = `{"__metadata__":${meta},"w.weight":${JSON.stringify(ok)}}`;
    const e = await parseError(rawFile(header, 24));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', file: 'bad.safetensors', field, found });
  });

  it('a shape whose element count overflows is refused, not wrapped', async () => {
    const e = await parseError(rawFile(one({ dtype: 'F32', shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 0] }), 0));
    expect(e).toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: 'w.weight', found: '0 bytes ([0, 0])' });
    expect(e.expected).toMatch(/whole number of bytes/);
  });
});
