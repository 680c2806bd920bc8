// Runs in both test projects: reads byte ranges of a real checkpoint in the shared folder through sharedTree()
// (a directory on disk in Node, /@fs/ URLs on the Vitest server in Chromium) and checks them against values
// computed independently with Python's hashlib/struct from the same file.
import { expect, it } from 'vitest';
import { sharedTree } from '../helpers/shared.js';

const HEADER_LEN = 2160; // u64 little-endian at offset 0
const FILE_SIZE = 8 + HEADER_LEN + 2_624_000; // header + last tensor's end offset
// model.norm.weight: f32 [128] at data offsets [2623488, 2624000)
const NORM_OFFSET = 8 + HEADER_LEN + 2_623_488;
const NORM_SHA256 = '2d2f0547256f543ff354d42e44f2b36ed0f7c57b5d1d5da779942d69d509e290';
const NORM_FIRST = [0.640625, 0.69921875, 0.68359375, 0.6484375];

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', bytes.slice()); // a copy: digest() wants a plain ArrayBuffer
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

it('reads byte ranges of model.safetensors through sharedTree()', async () => {
  const tree = await sharedTree('models/tinystories-656k');
  expect(await tree.has('model.safetensors')).toBe(true);
  expect(await tree.has('no-such-file.bin')).toBe(false);
  const src = await tree.open('model.safetensors');
  try {
    expect(src.size).toBe(FILE_SIZE);
    const len = await src.read(0, 8);
    expect(new DataView(len.buffer, len.byteOffset, 8).getBigUint64(0, true)).toBe(BigInt(HEADER_LEN));
    const header = JSON.parse(new TextDecoder().decode(await src.read(8, HEADER_LEN))) as Record<string, { data_offsets: number[] }>;
    expect(header['model.norm.weight']?.data_offsets).toEqual([NORM_OFFSET - 8 - HEADER_LEN, NORM_OFFSET - 8 - HEADER_LEN + 512]);

    const norm = await src.read(NORM_OFFSET, 512);
    expect(await sha256(norm)).toBe(NORM_SHA256);
    const f = new Float32Array(norm.slice().buffer);
    expect([...f.subarray(0, 4)]).toEqual(NORM_FIRST);
    // The same bytes read in three pieces that do not fall on 4-byte boundaries.
    const parts = [await src.read(NORM_OFFSET, 7), await src.read(NORM_OFFSET + 7, 300), await src.read(NORM_OFFSET + 307, 205)];
    expect(await sha256(new Uint8Array(parts.flatMap((p) => [...p])))).toBe(NORM_SHA256);

    await expect(src.read(FILE_SIZE - 4, 8)).rejects.toMatchObject({ code: 'SAFETENSORS_INVALID' });
  } finally {
    await src.close();
  }
  expect(JSON.parse(await tree.text('config.json'))).toMatchObject({ hidden_size: 128, num_hidden_layers: 2 });
});
