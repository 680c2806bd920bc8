// rmsnorm (src/kernels/rmsnorm.ts), modes 'rows' and 'gather', against the reference rmsnorm, on the contract:
//   src = r (rows) or rows[r] (gather);  y[r, i] = x[src, i] / sqrt(Σ_{i<H} x[src, i]² / H + eps) · w[i],  i < H,
// for r < dims.tokens (rows) or dims.seqs (gather); x and y have row stride ld > H, and y's columns >= H and rows
// >= R come back bit for bit as they went in. H in {1, 7, 64, 130, 577}, w in F32/F16/BF16 (rounded first, so the
// reference sees the same weights), rows of very different scales (incl. an all-zero row). Fixed seeds.
//
// Tolerance (ε = 2^-24), relative to m_i = |x_i·w_i| / sqrt(mean(x²) + eps) in f64: the f32 sum of H squares
// errs by <= (H + 1)·ε relative, which moves 1/sqrt(·) by half that; the division by H, the eps addition and
// WGSL's inverseSqrt (2 ulp) add <= 5ε, the two products 2ε, and the reference rounds 4 times:
//   tol_i = ((H + 1)/2 + 12)·ε·m_i.
import { describe, it } from 'vitest';
import type { DType } from '../../src/io/dtype.js';
import { rmsnormOp } from '../../src/kernels/rmsnorm.js';
import { rmsnorm } from '../../src/reference/ops.js';
import { EPS, expectClose, padRows, randomF32, rng, roundToDType, SENTINEL, useKernelHarness } from '../helpers/kernels.js';

const h = useKernelHarness();

/** Row r of x scaled by one of these, so that sums of squares span many binades. */
const ROW_SCALES = [1, 1e-3, 37, 0, 0.25, 1e3, 3];

async function check(H: number, dtype: DType, srcRows: number, gather: number[] | null, seed: number): Promise<void> {
  const r = rng(seed);
  const ld = H + 3 + r.int(6); // any stride > H: the contract does not ask for padding
  const eps = [1e-5, 1e-6][seed % 2]!;
  const x = new Float32Array(srcRows * H);
  for (let t = 0; t < srcRows; t++) x.set(randomF32(r, H, ROW_SCALES[t % ROW_SCALES.length]), t * H);
  const w = roundToDType(randomF32(r, H, 2), dtype);
  const R = gather ? gather.length : srcRows; // output rows
  const src = gather ?? [...Array(R).keys()];
  const xin = new Float32Array(src.length * H);
  src.forEach((s, t) => xin.set(x.subarray(s * H, (s + 1) * H), t * H));
  const ref = rmsnorm(xin, w.values, eps);

  const yRows = Math.max(R, srcRows) + 1;
  const y0 = new Float32Array(yRows * ld).fill(SENTINEL);
  const want = y0.slice();
  const tol = new Float64Array(want.length);
  for (let t = 0; t < R; t++) {
    let ss = 0;
    for (let i = 0; i < H; i++) ss += xin[t * H + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) {
      want[t * ld + i] = ref[t * H + i]!;
      tol[t * ld + i] = ((H + 1) / 2 + 12) * EPS * Math.abs(xin[t * H + i]! * w.values[i]! * inv);
    }
  }

  const g = h.gpu();
  const yBuf = h.storage('y', y0);
  const op = await rmsnormOp(g, {
    label: 'rmsnorm',
    w: h.vector('w', w.bytes, dtype),
    x: h.storage('x', padRows(x, srcRows, H, ld, SENTINEL)),
    y: yBuf,
    ld,
    eps,
    rows: gather ? h.storage('rows', new Uint32Array(gather)) : undefined,
  });
  // In gather mode dims.tokens is the (larger) number of source rows: reading it would write rows >= R.
  await h.run(op, { tokens: srcRows, seqs: R });
  const got = await h.readF32(yBuf, want.length);
  expectClose(got, want, (i) => tol[i]!, `rmsnorm H ${H} ${dtype}${gather ? ' gather' : ''}`, (i) => `y[${Math.floor(i / ld)}, ${i % ld}]`);
}

describe('rmsnorm', () => {
  let seed = 1;
  for (const H of [1, 7, 64, 130, 577]) {
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const s = seed++;
      it(`rows: H ${H}, w ${dtype}, 7 rows`, () => check(H, dtype, 7, null, s));
    }
  }
});

describe('rmsnorm gather (rows from a row list, R = dims.seqs)', () => {
  let seed = 100;
  for (const [H, dtype, gather] of [
    [1, 'F32', [3]],
    [7, 'BF16', [6, 0, 2]],
    [64, 'F16', [5, 5, 1, 4]],
    [130, 'F32', [0, 6]],
    [577, 'BF16', [2, 3, 4, 0, 1, 6, 5]],
  ] as const) {
    const s = seed++;
    it(`gather: H ${H}, w ${dtype}, rows [${gather.join(', ')}] of 7`, () => check(H, dtype, 7, [...gather], s));
  }
});
