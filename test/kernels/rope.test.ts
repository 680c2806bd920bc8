// rope (src/kernels/rope.ts) against the reference applyRope (and rmsnorm for Qwen3's q/k norm), on the contract:
//   for token t at position pos[t], with (c_i, s_i) = rot[pos[t], i], half = hd/2, each head x of qkv[t]:
//     x' = qkNorm ? rmsnorm(x)·normWeight : x;  r[i] = x'[i]·c_i − x'[i+half]·s_i,  r[i+half] = x'[i+half]·c_i + x'[i]·s_i
//   q heads: written back in place; k heads -> kcache[slot[t], kvh, :]; v heads copied raw -> vcache[slot[t], kvh, :].
// Positions are scattered (not one run), slots distinct and shuffled; everything else in qkv (k, v, row padding)
// and every cache slot not written must come back bit for bit. Head dims 2, 6, 16, 64, 128; GQA 1..4; the
// rotation table is src/model/rope.ts ropeTable (what the model runner uploads), and the reference gets the same
// cos/sin by calling applyRope with that module's inv_freq. Fixed seeds.
//
// Tolerance (ε = 2^-24), with a, b the (normalized) inputs of a pair: the GPU rounds the two products and their
// sum (<= 2ε·(|a·c| + |b·s|), also with fused multiply-add), the reference as many times again: 4ε·(|a·c| + |b·s|).
// With q/k norm a and b carry the RMSNorm error too, relative ((hd + 1)/2 + 14)·ε (f32 sum of hd squares, /hd,
// +eps, inverseSqrt 2 ulp, two products, and the reference's 4 roundings; see rmsnorm.test.ts).
//
// The last test compares ropeTable with the reference's ropeCosSin (both claim transformers' f32 inv_freq and
// angle = f32(pos·inv_freq)) bit for bit.
import { describe, expect, it } from 'vitest';
import type { DType } from '../../src/io/dtype.js';
import { ropeOp } from '../../src/kernels/rope.js';
import type { RopeScaling } from '../../src/model/config-types.js';
import { ropeInvFreq as modelInvFreq, ropeTable } from '../../src/model/rope.js';
import { rmsnorm } from '../../src/reference/ops.js';
import { applyRope, ropeCosSin, ropeInvFreq } from '../../src/reference/rope.js';
import { EPS, expectClose, expectExact, randomF32, rng, roundToDType, SENTINEL, useKernelHarness } from '../helpers/kernels.js';

const h = useKernelHarness();

interface Case {
  nh: number;
  nkv: number;
  hd: number;
  T: number;
  theta: number;
  scaling: RopeScaling;
  /** dtype of q_norm/k_norm weights; absent: no q/k norm. */
  norm?: DType;
}

const LLAMA3: RopeScaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 512 };
const MAX_POS = 2048;

async function check(c: Case, seed: number): Promise<void> {
  const { nh, nkv, hd, T } = c;
  const r = rng(seed);
  const half = hd / 2;
  const width = (nh + 2 * nkv) * hd;
  const ldqkv = width + 1 + r.int(7);
  const nSlots = T * 3 + 2;
  const eps = 1e-6;
  const cfg = { headDim: hd, ropeTheta: c.theta, ropeScaling: c.scaling };
  const inv = modelInvFreq(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling);
  const rot = ropeTable(cfg, MAX_POS);
  const positions = Array.from({ length: T }, (_, t) => (t === 0 ? MAX_POS - 1 : r.int(MAX_POS)));
  const slots = r.shuffle([...Array(nSlots).keys()]).slice(0, T);
  const qkv = randomF32(r, T * ldqkv, 2);
  const qn = c.norm ? roundToDType(randomF32(r, hd, 2), c.norm) : null;
  const kn = c.norm ? roundToDType(randomF32(r, hd, 2), c.norm) : null;

  // Reference, token by token (each at its own position).
  const wantQkv = qkv.slice();
  const tolQkv = new Float64Array(qkv.length);
  const wantK = new Float32Array(nSlots * nkv * hd).fill(SENTINEL);
  const tolK = new Float64Array(wantK.length);
  const wantV = wantK.slice();
  const normRel = c.norm ? ((hd + 1) / 2 + 14) * EPS : 0;
  for (let t = 0; t < T; t++) {
    const pos = positions[t]!;
    const row = t * ldqkv;
    const rotate = (x0: Float32Array, heads: number, w: Float32Array | null): { out: Float32Array; tol: Float64Array } => {
      const x = w ? rmsnorm(x0, w, eps) : x0.slice();
      const tol = new Float64Array(x.length);
      for (let hh = 0; hh < heads; hh++) {
        for (let i = 0; i < half; i++) {
          const a = x[hh * hd + i]!;
          const b = x[hh * hd + i + half]!;
          const cs = Math.abs(rot[(pos * half + i) * 2]!);
          const sn = Math.abs(rot[(pos * half + i) * 2 + 1]!);
          tol[hh * hd + i] = (4 * EPS + normRel) * (Math.abs(a) * cs + Math.abs(b) * sn);
          tol[hh * hd + i + half] = (4 * EPS + normRel) * (Math.abs(b) * cs + Math.abs(a) * sn);
        }
      }
      applyRope(x, 1, heads, hd, pos, inv);
      return { out: x, tol };
    };
    const q = rotate(qkv.slice(row, row + nh * hd), nh, qn?.values ?? null);
    wantQkv.set(q.out, row);
    tolQkv.set(q.tol, row);
    const k = rotate(qkv.slice(row + nh * hd, row + (nh + nkv) * hd), nkv, kn?.values ?? null);
    wantK.set(k.out, slots[t]! * nkv * hd);
    tolK.set(k.tol, slots[t]! * nkv * hd);
    wantV.set(qkv.subarray(row + (nh + nkv) * hd, row + width), slots[t]! * nkv * hd);
  }

  const g = h.gpu();
  const qkvBuf = h.storage('qkv', qkv);
  const kBuf = h.storage('kcache', new Float32Array(wantK.length).fill(SENTINEL));
  const vBuf = h.storage('vcache', new Float32Array(wantK.length).fill(SENTINEL));
  const op = await ropeOp(g, {
    label: 'rope',
    nh,
    nkv,
    hd,
    ldqkv,
    eps,
    positions: h.storage('positions', new Uint32Array(positions)),
    slots: h.storage('slots', new Uint32Array(slots)),
    rot: h.storage('rot', rot),
    qkv: qkvBuf,
    kcache: kBuf,
    vcache: vBuf,
    qNorm: qn ? h.vector('q_norm', qn.bytes, c.norm!) : undefined,
    kNorm: kn ? h.vector('k_norm', kn.bytes, c.norm!) : undefined,
    dummy: h.dummy(),
  });
  await h.run(op, { tokens: T, seqs: 1 });
  const what = `rope nh ${nh} nkv ${nkv} hd ${hd}${c.norm ? ` qk-norm ${c.norm}` : ''}`;
  const slotAt = (name: string) => (i: number) => `${name}[slot ${Math.floor(i / (nkv * hd))}, head ${Math.floor(i / hd) % nkv}, ${i % hd}]`;
  expectClose(await h.readF32(qkvBuf, qkv.length), wantQkv, (i) => tolQkv[i]!, `${what}: qkv`, (i) => `qkv[${Math.floor(i / ldqkv)}, ${i % ldqkv}]`);
  expectClose(await h.readF32(kBuf, wantK.length), wantK, (i) => tolK[i]!, `${what}: kcache`, slotAt('kcache'));
  expectExact(await h.readF32(vBuf, wantV.length), wantV, `${what}: vcache`, slotAt('vcache'));
}

describe('rope', () => {
  const none: RopeScaling = { type: 'none' };
  const cases: Case[] = [
    { nh: 1, nkv: 1, hd: 2, T: 3, theta: 10000, scaling: none },
    { nh: 3, nkv: 1, hd: 6, T: 5, theta: 10000, scaling: none },
    { nh: 4, nkv: 2, hd: 16, T: 7, theta: 10000, scaling: { type: 'linear', factor: 4 } },
    { nh: 4, nkv: 4, hd: 64, T: 4, theta: 500000, scaling: LLAMA3 },
    { nh: 8, nkv: 2, hd: 128, T: 3, theta: 1e6, scaling: none },
    { nh: 2, nkv: 1, hd: 6, T: 4, theta: 10000, scaling: none, norm: 'F32' },
    { nh: 3, nkv: 1, hd: 16, T: 3, theta: 1e6, scaling: none, norm: 'BF16' },
    { nh: 4, nkv: 2, hd: 64, T: 5, theta: 1e6, scaling: none, norm: 'F16' },
    { nh: 4, nkv: 1, hd: 128, T: 2, theta: 1e6, scaling: none, norm: 'BF16' },
  ];
  cases.forEach((c, i) => {
    const gqa = c.nh / c.nkv;
    it(`hd ${c.hd}, ${c.nh} q / ${c.nkv} kv heads (GQA ${gqa}), ${c.T} tokens, ${c.scaling.type}${c.norm ? `, q/k norm ${c.norm}` : ''}`, () => check(c, 10 + i));
  });
});

describe('rope table', () => {
  const configs: { headDim: number; ropeTheta: number; ropeScaling: RopeScaling }[] = [
    { headDim: 64, ropeTheta: 10000, ropeScaling: { type: 'none' } },
    { headDim: 128, ropeTheta: 1e6, ropeScaling: { type: 'none' } },
    { headDim: 16, ropeTheta: 10000, ropeScaling: { type: 'linear', factor: 4 } },
    { headDim: 128, ropeTheta: 500000, ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } },
  ];
  for (const c of configs) {
    const label = `hd ${c.headDim}, theta ${c.ropeTheta}, ${c.ropeScaling.type}`;
    const want = () => ropeInvFreq(c.headDim, c.ropeTheta, c.ropeScaling);
    it(`src/model/rope.ts ropeTable equals the reference's ropeCosSin (${label})`, () => {
      const maxPos = 4096;
      const half = c.headDim / 2;
      const table = ropeTable(c, maxPos);
      expect(table.length).toBe(maxPos * half * 2);
      const ref = new Float32Array(table.length);
      for (let p = 0; p < maxPos; p++) {
        const { cos, sin } = ropeCosSin(want(), p);
        for (let i = 0; i < half; i++) {
          ref[(p * half + i) * 2] = cos[i]!;
          ref[(p * half + i) * 2 + 1] = sin[i]!;
        }
      }
      expectExact(table, ref, 'rot table (cos, sin)', (i) => `rot[pos ${Math.floor(i / (2 * half))}, i ${Math.floor(i / 2) % half}].${i % 2 ? 'sin' : 'cos'}`);
    });
  }
});
