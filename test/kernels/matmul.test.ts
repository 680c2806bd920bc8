// matmul (src/kernels/matmul.ts) against the reference ops linear / add / siluMul, on the dispatcher's contract:
//   acc[m, n] = Σ_k x[m, k]·W[n, k] (+ bias[n]);  'store': y[m, yOffset + n] = acc;  'add': y[...] += acc;
//   'swiglu': y[m, n] = silu(acc) · (Σ_k x[m, k]·W2[n, k]) (no bias),      m < M (dims.tokens or dims.seqs).
// Weights are random f32 rounded to the weight dtype first; the reference gets the rounded values, so only the
// accumulation order differs. Every element of y outside the written block (other columns, rows >= M) must come
// back bit for bit as it went in. Sizes: M in {1, 2, 3, 5, 9} (decode) and 17..100 (prefill), N and K from
// {1, 7, 8, 33, 64, 130, 577, 1001}, weights split into parts, yOffset, rows: 'rows', M = 0; both layouts (K-split
// and row-per-lane) forced at sizes where the dispatcher would pick the other. Fixed seeds.
//
// Tolerances (ε = 2^-24), with S[m, n] = Σ_k |x[m, k]·W[n, k]| + |bias[n]|:
// - acc: the GPU sums K rounded products and the bias in f32 in some order: each of the K − 1 additions, the K
//   product roundings and the bias addition errs by <= ε·S, so |acc_gpu − acc| <= (K + 1)·ε·S (+1 for second-order
//   terms); the reference rounds its f64 sum once: ε·|acc|.   tol_acc = (K + 2)·ε·S + ε·|acc|.
// - add: one more f32 addition on each side: tol_acc + ε·(|y0| + S) + ε·|y|.
// - swiglu: gate g and up u each within tol_acc; silu'(g) <= 1.1, so silu(g) moves by <= 1.1·δg; WGSL's exp errs
//   by <= (3 + 2|g|) ulp and its division by 2.5 ulp, and the reference rounds silu and the product:
//   tol = 1.1·δg·|u| + |silu(g)|·δu + (10 + 2|g|)·ε·|silu(g)·u|.
import { describe, expect, it } from 'vitest';
import { pad8 } from '../../src/gpu/tensors.js';
import type { DType } from '../../src/io/dtype.js';
import { DTYPE_BYTES } from '../../src/io/dtype.js';
import { matmulOp, type MatmulSpec } from '../../src/kernels/matmul.js';
import { add, linear, silu, siluMul } from '../../src/reference/ops.js';
import { EPS, expectClose, padRows, randomF32, rng, roundToDType, SENTINEL, useKernelHarness } from '../helpers/kernels.js';

const h = useKernelHarness();

interface Case {
  M: number;
  N: number;
  K: number;
  dtype: DType;
  epilogue: MatmulSpec['epilogue'];
  bias: boolean;
  /** M = dims.seqs; dims.tokens is set larger so that reading the wrong one writes rows it must not. */
  seqs?: boolean;
  yOffset?: number;
  /** Extra y columns after yOffset + N. */
  ldyExtra?: number;
  /** Split W (and W2) into parts of this many rows. */
  partRows?: number;
  /**
   * Force a layout (MatmulSpec.rowsMinM): 'rows' runs the row-per-lane entry point at every M, 'split' the K-split
   * one at every M; default: the dispatcher's choice. Devices without 8-lane subgroups run the K-split one anyway.
   */
  layout?: 'rows' | 'split';
}

function name(c: Case): string {
  const extra = [
    c.bias ? 'bias' : '',
    c.seqs ? "rows 'rows'" : '',
    c.yOffset ? `yOffset ${c.yOffset}` : '',
    c.ldyExtra ? `ldy +${c.ldyExtra}` : '',
    c.partRows ? `parts of ${c.partRows} rows` : '',
    c.layout ? `${c.layout} layout` : '',
  ].filter(Boolean);
  return `${c.epilogue} ${c.dtype} M ${c.M} N ${c.N} K ${c.K}${extra.length ? `, ${extra.join(', ')}` : ''}`;
}

/** Σ_k |x[m, k]·W[n, k]| + |b[n]| in f64, [M, N]. */
function magnitudes(x: Float32Array, w: Float32Array, b: Float32Array | null, M: number, N: number, K: number): Float64Array {
  const s = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let a = b ? Math.abs(b[n]!) : 0;
      for (let k = 0; k < K; k++) a += Math.abs(x[m * K + k]! * w[n * K + k]!);
      s[m * N + n] = a;
    }
  }
  return s;
}

async function check(c: Case, seed: number): Promise<void> {
  const { M, N, K, dtype, epilogue } = c;
  const g = h.gpu();
  const r = rng(seed);
  const Kp = pad8(K);
  const yOffset = c.yOffset ?? 0;
  const ldy = yOffset + N + (c.ldyExtra ?? 0);
  const tokens = c.seqs ? M + 3 : M;
  const yRows = tokens + 1; // one row past every row the kernel may touch

  const x = randomF32(r, M * K);
  const gated = epilogue === 'swiglu';
  const w = roundToDType(randomF32(r, N * K), dtype);
  const w2 = gated ? roundToDType(randomF32(r, N * K), dtype) : null;
  const b = c.bias ? roundToDType(randomF32(r, N, 0.5), dtype) : null;
  const y0 = epilogue === 'add' ? randomF32(r, yRows * ldy, 2) : new Float32Array(yRows * ldy).fill(SENTINEL);

  const lin = (wv: Float32Array, bv: Float32Array | null) => linear(x, M, { weight: wv, bias: bv, outFeatures: N, inFeatures: K });
  const acc = lin(w.values, b?.values ?? null);
  const S = magnitudes(x, w.values, b?.values ?? null, M, N, K);
  const tolAcc = (j: number, a: number) => (K + 2) * EPS * S[j]! + EPS * Math.abs(a);
  let block: Float32Array; // [M, N] expected values of the written block
  let tolBlock: (j: number) => number;
  if (epilogue === 'store') {
    block = acc;
    tolBlock = (j) => tolAcc(j, acc[j]!);
  } else if (epilogue === 'add') {
    const old = new Float32Array(M * N);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) old[m * N + n] = y0[m * ldy + yOffset + n]!;
    block = add(old, acc);
    tolBlock = (j) => tolAcc(j, acc[j]!) + EPS * (Math.abs(old[j]!) + S[j]!) + EPS * Math.abs(block[j]!);
  } else {
    const up = lin(w2!.values, null);
    const Su = magnitudes(x, w2!.values, null, M, N, K);
    block = siluMul(acc, up);
    tolBlock = (j) => {
      const gv = acc[j]!;
      const uv = up[j]!;
      const dg = tolAcc(j, gv);
      const du = (K + 2) * EPS * Su[j]! + EPS * Math.abs(uv);
      return 1.1 * dg * Math.abs(uv) + Math.abs(silu(gv)) * du + (10 + 2 * Math.abs(gv)) * EPS * Math.abs(silu(gv) * uv);
    };
  }
  const want = y0.slice();
  const tol = new Float64Array(want.length); // 0 outside the block: untouched exactly
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      want[m * ldy + yOffset + n] = block[m * N + n]!;
      tol[m * ldy + yOffset + n] = tolBlock(m * N + n);
    }
  }

  const partBytes = c.partRows ? c.partRows * Kp * DTYPE_BYTES[dtype] : undefined;
  const W = h.matrix('W', w.bytes, dtype, N, K, partBytes);
  const expectedParts = c.partRows ? Math.ceil(N / c.partRows) : 1;
  if (W.parts.length !== expectedParts) throw new Error(`test setup: ${W.parts.length} parts, wanted ${expectedParts}`);
  const yBuf = h.storage('y', y0);
  const op = await matmulOp(g, {
    label: 'matmul',
    W,
    W2: w2 ? h.matrix('W2', w2.bytes, dtype, N, K, partBytes) : undefined,
    bias: b ? h.vector('bias', b.bytes, dtype) : undefined,
    x: h.storage('x', padRows(x, M, K, Kp)),
    y: yBuf,
    ldy,
    yOffset,
    epilogue,
    rows: c.seqs ? 'rows' : 'tokens',
    dims: h.dims({ tokens, seqs: M }),
    dummy: h.dummy(),
    rowsMinM: c.layout === 'rows' ? 1 : c.layout === 'split' ? Infinity : undefined,
  });
  await h.run(op, { tokens, seqs: M });
  const got = await h.readF32(yBuf, want.length);
  expectClose(got, want, (i) => tol[i]!, name(c), (i) => `y[${Math.floor(i / ldy)}, ${i % ldy}]`);
}

const MS = [1, 2, 3, 5, 9];

describe('matmul: shapes (store, F32)', () => {
  const cases: Case[] = [];
  for (const K of [1, 7, 8, 33, 64, 130, 577, 1001]) {
    for (const N of [1, 7, 33, 130]) cases.push({ M: MS[cases.length % MS.length]!, N, K, dtype: 'F32', epilogue: 'store', bias: false });
  }
  cases.push(
    { M: 3, N: 577, K: 33, dtype: 'F32', epilogue: 'store', bias: false },
    { M: 9, N: 1001, K: 130, dtype: 'F32', epilogue: 'store', bias: false },
    { M: 2, N: 64, K: 1001, dtype: 'F32', epilogue: 'store', bias: false },
    { M: 5, N: 1001, K: 577, dtype: 'F32', epilogue: 'store', bias: false },
  );
  cases.forEach((c, i) => it(name(c), () => check(c, 100 + i)));
});

describe('matmul: epilogues × weight dtypes × bias', () => {
  const shapes = [
    [1, 33, 577],
    [5, 130, 64],
    [9, 7, 1001],
    [2, 64, 130],
    [3, 577, 33],
    [1, 1, 7],
  ] as const;
  let i = 0;
  for (const epilogue of ['store', 'add', 'swiglu'] as const) {
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      for (const bias of epilogue === 'swiglu' ? [false] : [false, true]) {
        const [M, N, K] = shapes[i % shapes.length]!;
        const c: Case = { M, N, K, dtype, epilogue, bias };
        const seed = 200 + i++;
        it(name(c), () => check(c, seed));
      }
    }
  }
});

describe('matmul: prefill-sized M (a faster kernel may switch to a tiled path)', () => {
  const cases: Case[] = [
    { M: 17, N: 130, K: 577, dtype: 'F32', epilogue: 'store', bias: true },
    { M: 64, N: 64, K: 64, dtype: 'BF16', epilogue: 'add', bias: false },
    { M: 100, N: 33, K: 1001, dtype: 'F16', epilogue: 'swiglu', bias: false },
    { M: 31, N: 1001, K: 33, dtype: 'F32', epilogue: 'add', bias: true, partRows: 100, yOffset: 5, ldyExtra: 3 },
  ];
  cases.forEach((c, i) => it(name(c), () => check(c, 400 + i)));
});

describe('matmul: split weights, yOffset, rows from dims.seqs', () => {
  const cases: Case[] = [
    { M: 3, N: 33, K: 130, dtype: 'F32', epilogue: 'store', bias: true, partRows: 5 },
    { M: 5, N: 130, K: 64, dtype: 'BF16', epilogue: 'add', bias: true, partRows: 16 },
    { M: 2, N: 35, K: 33, dtype: 'F16', epilogue: 'swiglu', bias: false, partRows: 8 },
    { M: 9, N: 7, K: 577, dtype: 'F32', epilogue: 'swiglu', bias: false, partRows: 3 },
    { M: 1, N: 130, K: 33, dtype: 'F16', epilogue: 'store', bias: false, partRows: 1 },
    { M: 3, N: 33, K: 64, dtype: 'F32', epilogue: 'store', bias: true, yOffset: 7, ldyExtra: 5 },
    { M: 5, N: 64, K: 7, dtype: 'BF16', epilogue: 'add', bias: false, yOffset: 64, ldyExtra: 3 },
    { M: 2, N: 17, K: 130, dtype: 'F32', epilogue: 'swiglu', bias: false, ldyExtra: 9 },
    { M: 3, N: 130, K: 33, dtype: 'F32', epilogue: 'store', bias: false, seqs: true },
    { M: 1, N: 1001, K: 64, dtype: 'BF16', epilogue: 'store', bias: false, seqs: true },
    { M: 5, N: 33, K: 130, dtype: 'F16', epilogue: 'add', bias: true, seqs: true },
    { M: 9, N: 77, K: 33, dtype: 'F32', epilogue: 'store', bias: true, seqs: true, yOffset: 11, ldyExtra: 2, partRows: 20 },
  ];
  cases.forEach((c, i) => it(name(c), () => check(c, 300 + i)));
});

it('swiglu with a bias is refused (no supported architecture has an MLP bias; config.ts refuses mlp_bias)', async () => {
  const W = h.matrix('W', new Uint8Array(8 * 8 * 4), 'F32', 8, 8);
  const spec = { label: 'swiglu+bias', W, W2: W, bias: h.vector('b', new Uint8Array(32), 'F32'), x: h.dummy(), y: h.dummy(), ldy: 8, epilogue: 'swiglu' as const, dims: h.dims({ tokens: 1, seqs: 1 }), dummy: h.dummy() };
  await expect(matmulOp(h.gpu(), spec)).rejects.toThrow(/no bias/);
});

it('matmul with M = 0 (dims.tokens 0) writes nothing', async () => {
  const r = rng(500);
  const [N, K] = [7, 33];
  const w = roundToDType(randomF32(r, N * K), 'F32');
  const y0 = randomF32(r, 2 * N);
  const yBuf = h.storage('y', y0);
  const op = await matmulOp(h.gpu(), {
    label: 'matmul',
    W: h.matrix('W', w.bytes, 'F32', N, K),
    x: h.storage('x', new Float32Array(2 * pad8(K)).fill(1)),
    y: yBuf,
    ldy: N,
    epilogue: 'add',
    dims: h.dims({ tokens: 0, seqs: 0 }),
    dummy: h.dummy(),
  });
  await h.run(op, { tokens: 0, seqs: 0 });
  expectClose(await h.readF32(yBuf, y0.length), y0, () => 0, 'y after an empty step');
});

describe('matmul: both layouts at every batch size (row-per-lane where the device has 8-lane subgroups)', () => {
  // The dispatcher picks the K-split layout up to 4 rows of x and, on CPU devices, the row-per-lane one from 5; here
  // each runs where the other would: rows at M 1..4 (x rows 8 per workgroup, most of them past M) and at M 8, 16,
  // 17 (one full workgroup of 8 or 16 rows, and one more), K-split at batch sizes. N not a multiple of the 32 (16
  // for swiglu) columns of a rows workgroup, K not a multiple of 8.
  const cases: Case[] = [];
  const shapes = [
    [1, 33, 577],
    [2, 7, 130],
    [3, 130, 33],
    [4, 64, 64],
    [8, 35, 1001],
    [16, 77, 7],
    [17, 130, 130],
  ] as const;
  let i = 0;
  for (const layout of ['rows', 'split'] as const) {
    for (const [M, N, K] of shapes) {
      if (layout === 'split' && M < 5) continue;
      for (const epilogue of ['store', 'add', 'swiglu'] as const) {
        const dtype = (['F32', 'F16', 'BF16'] as const)[i % 3]!;
        cases.push({ M, N, K, dtype, epilogue, bias: epilogue !== 'swiglu' && i % 2 === 0, layout, partRows: i % 4 === 1 ? 24 : undefined, seqs: i % 5 === 2 });
        i++;
      }
    }
  }
  cases.forEach((c, j) => it(name(c), () => check(c, 500 + j)));
});
