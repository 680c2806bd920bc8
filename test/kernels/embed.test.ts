// embed (src/kernels/embed.ts) against the reference embedding, on the contract:
//   x[t, i] = E[id, i] widened to f32, i < H, t < dims.tokens (x row stride ldx > H), ids[t] = id afterwards,
//   id = feed[t] == NONE ? ids[t] : prevOut[feed[t]]  (a token sampled by the previous step, fed back on the GPU),
// with the table in F32/F16/BF16 and split into parts (one dispatch per part, each writing only the tokens whose
// id it holds). Ids hit the first and last row of every part, repeat, and come in no order. Widening is exact, so
// the comparison is bit for bit, and x's columns >= H and rows >= T must come back untouched. Fixed seeds.
import { describe, expect, it } from 'vitest';
import { pad8 } from '../../src/gpu/tensors.js';
import type { DType } from '../../src/io/dtype.js';
import { DTYPE_BYTES } from '../../src/io/dtype.js';
import { embedOp } from '../../src/kernels/embed.js';
import { embedding } from '../../src/reference/ops.js';
import { expectExact, randomF32, rng, roundToDType, SENTINEL, useKernelHarness } from '../helpers/kernels.js';

const h = useKernelHarness();

async function check(vocab: number, H: number, dtype: DType, partRows: number | null, seed: number): Promise<void> {
  const r = rng(seed);
  const table = roundToDType(randomF32(r, vocab * H, 3), dtype);
  const maxPartBytes = partRows ? partRows * pad8(H) * DTYPE_BYTES[dtype] : undefined;
  const E = h.matrix('E', table.bytes, dtype, vocab, H, maxPartBytes);
  expect(E.parts.length, 'parts').toBe(partRows ? Math.ceil(vocab / partRows) : 1);
  // First and last id of every part, a few random ones, a repeat; shuffled.
  const ids: number[] = [];
  for (const p of E.parts) ids.push(p.rowStart, p.rowStart + p.rows - 1);
  for (let i = 0; i < 5; i++) ids.push(r.int(vocab));
  ids.push(ids[0]!);
  r.shuffle(ids);
  const T = ids.length;
  // Every third token comes from the previous step's samples instead: its ids[] entry holds garbage.
  const prevOut = new Uint32Array(T + 3).fill(0xdeadbeef);
  const feed = new Uint32Array(T).fill(0xffffffff);
  const given = ids.map((id, t) => {
    if (t % 3 !== 1) return id;
    feed[t] = (t * 7) % prevOut.length;
    prevOut[feed[t]!] = id;
    return (id + 1 + r.int(vocab)) % 0xffffffff; // not the id: only the feedback may be used
  });
  const ldx = H + 1 + r.int(9);
  const ref = embedding(table.values, H, ids);

  const x0 = new Float32Array((T + 1) * ldx).fill(SENTINEL);
  const want = x0.slice();
  for (let t = 0; t < T; t++) want.set(ref.subarray(t * H, (t + 1) * H), t * ldx);
  const xBuf = h.storage('x', x0);
  const idsBuf = h.storage('ids', new Uint32Array(given));
  const op = await embedOp(h.gpu(), {
    label: 'embed',
    E,
    ids: idsBuf,
    feed: h.storage('feed', feed),
    prevOut: h.storage('prevOut', prevOut),
    x: xBuf,
    ldx,
  });
  await h.run(op, { tokens: T, seqs: 1 });
  const got = await h.readF32(xBuf, want.length);
  expectExact(got, want, `embed vocab ${vocab} H ${H} ${dtype}`, (i) => `x[${Math.floor(i / ldx)}, ${i % ldx}] (id ${ids[Math.floor(i / ldx)]})`);
  // Fed tokens' ids are resolved in place for the kernels after embed (embedding LoRA).
  expectExact(await h.readU32(idsBuf, T), Uint32Array.from(ids), 'ids after embed', (t) => `ids[${t}] (feed ${feed[t]})`);
}

describe('embed', () => {
  let seed = 1;
  for (const [vocab, H, dtype, partRows] of [
    [5, 1, 'F32', null],
    [37, 7, 'F16', null],
    [50, 64, 'BF16', null],
    [301, 130, 'F32', null],
    [37, 7, 'F32', 4],
    [50, 130, 'F16', 16],
    [301, 33, 'BF16', 100],
    [9, 64, 'BF16', 1],
  ] as const) {
    const s = seed++;
    it(`vocab ${vocab}, H ${H}, ${dtype}${partRows ? `, parts of ${partRows} rows` : ''}`, () => check(vocab, H, dtype, partRows, s));
  }
});
