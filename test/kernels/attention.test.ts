// attention (src/kernels/attention.ts) against the reference attention, on the contract:
//   for token t of sequence s = seqOf[t] at position pos = positions[t], query head h, kv head g = h / (nh/nkv):
//   o[t, h·hd + d] = Σ_{j=lo..pos} softmax_j(q[t, h]·K[s, j, g] / sqrt(hd)) · V[s, j, g, d],
//   lo = max(0, pos − window + 1) with a sliding window, K/V[s, j] = cache[blockTables[s, j / B]·B + j % B].
// Several sequences of different lengths share one dispatch, their tokens interleaved in shuffled order or laid
// out sequence after sequence as the runner does (prefill steps then share key loads across a tile of tokens,
// and tiles that straddle two sequences fall back to one token at a time); block tables are shuffled (blocks of one sequence are scattered over the pool, rows of the table in another order
// than the sequences, unused table entries and spare blocks hold valid-looking ids and random data, so a wrong
// read shows). Prefill (many causal queries per sequence), decode (one), and mixes; GQA 1, 2, 3, 4; head dims
// 2..256 incl. non-multiples of 4; block sizes 1, 4, 16; contexts up to 300 (several 64-key tiles). o is written
// only at [t, 0 .. nh·hd): its row padding must come back untouched. Fixed seeds.
//
// Tolerance (ε = 2^-24) for o[t, h, d], from the f64 scores s_j, p_j = softmax(s)_j and window length L:
// - each score is an f32 dot of hd terms after rounding q·scale: δs_j = (hd + 3)·ε·scale·Σ_i |q_i·k_ji|;
//   a softmax input error moves p_j by a relative δs_j + max_k δs_k;
// - the online softmax computes exp(s_j − m_j) with the running maximum m_j at key j, then multiplies it by
//   exp(m_old − m_new) each time a later key raises the maximum (nr_j times: later keys whose score exceeds the
//   running maximum, counted with a margin of the score errors); WGSL's exp errs by <= (3 + 2|x|) ulp plus one
//   rounding per product, and the |x| along the chain add up to |s_j − m|: relative (4·nr_j + 3 + 2|s_j − m|)·ε;
// - the weighted sum and the normalizer are f32 sums of L terms: relative (L + 2)·ε of Σ p_j·|v_jd| and of |o|,
//   and the final division 2.5 ulp plus the reference's one rounding: 4ε·|o|.
//   tol = Σ_j p_j·(δs_j + max δs + (4·nr_j + 3 + 2|s_j − m| + L + 2)·ε)·(|v_jd| + |o_d|) + 4ε·|o_d|.
import { describe, it } from 'vitest';
import { attentionOp } from '../../src/kernels/attention.js';
import { attention } from '../../src/reference/ops.js';
import { EPS, expectClose, randomF32, rng, SENTINEL, useKernelHarness } from '../helpers/kernels.js';

const h = useKernelHarness();

interface Case {
  nh: number;
  nkv: number;
  hd: number;
  B: number;
  /** Per sequence: context length after this step, and how many of its last positions are queried now. */
  seqs: { ctx: number; queries: number }[];
  window?: number;
  /** q values uniform in ±qScale: large values make the softmax peaky. */
  qScale?: number;
  /** Tokens laid out sequence after sequence (as the runner does) instead of shuffled. */
  grouped?: boolean;
}

function name(c: Case): string {
  const kind = c.seqs.every((s) => s.queries === 1) ? 'decode' : c.seqs.every((s) => s.queries > 1) ? 'prefill' : 'mixed';
  const seqs = c.seqs.map((s) => `${s.queries}/${s.ctx}`).join(', ');
  return `${kind}: nh ${c.nh}, nkv ${c.nkv} (GQA ${c.nh / c.nkv}), hd ${c.hd}, block ${c.B}, queries/ctx [${seqs}]` +
    `${c.window ? `, window ${c.window}` : ''}${c.qScale ? `, q ±${c.qScale}` : ''}${c.grouped ? ', grouped' : ''}`;
}

async function check(c: Case, seed: number): Promise<void> {
  const { nh, nkv, hd, B } = c;
  const r = rng(seed);
  const S = c.seqs.length;
  const kvw = nkv * hd; // floats per cache slot
  const scale = 1 / Math.sqrt(hd);
  const window = c.window ?? 0;

  // Paged cache: every sequence's blocks drawn from a shuffled pool with spares; table rows in shuffled order.
  const blocksOf = c.seqs.map((s) => Math.ceil(s.ctx / B));
  const maxBlocks = Math.max(...blocksOf) + 1;
  const numBlocks = blocksOf.reduce((a, b) => a + b, 0) + 3;
  const pool = r.shuffle([...Array(numBlocks).keys()]);
  const tableRow = r.shuffle([...Array(S).keys()]); // sequence s uses block-table row tableRow[s]
  const tables = new Uint32Array(S * maxBlocks);
  for (let i = 0; i < tables.length; i++) tables[i] = r.int(numBlocks); // valid ids, wrong data
  let next = 0;
  c.seqs.forEach((_, s) => {
    for (let b = 0; b < blocksOf[s]!; b++) tables[tableRow[s]! * maxBlocks + b] = pool[next++]!;
  });
  const kcache = randomF32(r, numBlocks * B * kvw);
  const vcache = randomF32(r, numBlocks * B * kvw);
  const slotOf = (s: number, j: number) => tables[tableRow[s]! * maxBlocks + Math.floor(j / B)]! * B + (j % B);

  // Query tokens, interleaved across sequences in shuffled order.
  const tokens: { s: number; i: number }[] = [];
  c.seqs.forEach((sq, s) => {
    for (let i = 0; i < sq.queries; i++) tokens.push({ s, i });
  });
  if (!c.grouped) r.shuffle(tokens);
  const T = tokens.length;
  const ldq = (nh + 2 * nkv) * hd + r.int(5); // q lives at the start of the qkv row
  const ldo = nh * hd + 1 + r.int(4);
  const qSeq = c.seqs.map((sq) => randomF32(r, sq.queries * nh * hd, c.qScale ?? 1)); // [queries, nh·hd]
  const q = randomF32(r, T * ldq, 7); // k/v parts and padding: random, never read
  const positions = new Uint32Array(T);
  const seqOf = new Uint32Array(T);
  tokens.forEach(({ s, i }, t) => {
    q.set(qSeq[s]!.subarray(i * nh * hd, (i + 1) * nh * hd), t * ldq);
    positions[t] = c.seqs[s]!.ctx - c.seqs[s]!.queries + i;
    seqOf[t] = tableRow[s]!;
  });

  // Reference per sequence, and the tolerance per output.
  const want = new Float32Array(T * ldo).fill(SENTINEL);
  const tol = new Float64Array(want.length);
  const refs = c.seqs.map((sq, s) => {
    const keys = Array.from({ length: sq.ctx }, (_, j) => kcache.slice(slotOf(s, j) * kvw, (slotOf(s, j) + 1) * kvw));
    const values = Array.from({ length: sq.ctx }, (_, j) => vcache.slice(slotOf(s, j) * kvw, (slotOf(s, j) + 1) * kvw));
    const o = attention(qSeq[s]!, keys, values, {
      n: sq.queries,
      startPos: sq.ctx - sq.queries,
      numHeads: nh,
      numKvHeads: nkv,
      headDim: hd,
      slidingWindow: window || null,
    });
    return { keys, values, o };
  });
  tokens.forEach(({ s, i }, t) => {
    const { keys, values, o } = refs[s]!;
    const pos = positions[t]!;
    const lo = window ? Math.max(0, pos - window + 1) : 0;
    const L = pos - lo + 1;
    for (let hh = 0; hh < nh; hh++) {
      const qo = (i * nh + hh) * hd;
      const ko = Math.floor(hh / (nh / nkv)) * hd;
      const sc = new Float64Array(L);
      const ds = new Float64Array(L);
      let m = -Infinity;
      for (let j = lo; j <= pos; j++) {
        let dot = 0;
        let mag = 0;
        for (let d = 0; d < hd; d++) {
          const prod = qSeq[s]![qo + d]! * keys[j]![ko + d]!;
          dot += prod;
          mag += Math.abs(prod);
        }
        sc[j - lo] = dot * scale;
        ds[j - lo] = (hd + 3) * EPS * scale * mag;
        m = Math.max(m, sc[j - lo]!);
      }
      const dsMax = Math.max(...ds);
      // nr[j]: rescalings after key j — later keys that may raise the running maximum (with the score margin).
      const nr = new Float64Array(L);
      let run = -Infinity;
      let raises = 0;
      const raisedAt: number[] = [];
      for (let j = 0; j < L; j++) {
        if (sc[j]! + ds[j]! + dsMax > run) raisedAt.push(j);
        run = Math.max(run, sc[j]!);
      }
      for (let j = L - 1, k = raisedAt.length - 1; j >= 0; j--) {
        while (k >= 0 && raisedAt[k]! > j) {
          raises++;
          k--;
        }
        nr[j] = raises;
      }
      let z = 0;
      for (let j = 0; j < L; j++) z += Math.exp(sc[j]! - m);
      for (let d = 0; d < hd; d++) {
        const od = o[qo + d]!;
        let t0 = 0;
        for (let j = 0; j < L; j++) {
          const p = Math.exp(sc[j]! - m) / z;
          const rel = ds[j]! + dsMax + (4 * nr[j]! + 3 + 2 * Math.abs(sc[j]! - m) + L + 2) * EPS;
          t0 += p * rel * (Math.abs(values[lo + j]![ko + d]!) + Math.abs(od));
        }
        want[t * ldo + hh * hd + d] = od;
        tol[t * ldo + hh * hd + d] = t0 + 4 * EPS * Math.abs(od);
      }
    }
  });

  const g = h.gpu();
  const oBuf = h.storage('o', new Float32Array(T * ldo).fill(SENTINEL));
  const op = await attentionOp(g, {
    label: 'attention',
    nh,
    nkv,
    hd,
    ldq,
    ldo,
    blockSize: B,
    maxBlocks,
    window,
    dims: h.dims({ tokens: T, seqs: S }),
    positions: h.storage('positions', positions),
    seqOf: h.storage('seqOf', seqOf),
    blockTables: h.storage('blockTables', tables),
    q: h.storage('q', q),
    kcache: h.storage('kcache', kcache),
    vcache: h.storage('vcache', vcache),
    o: oBuf,
  });
  await h.run(op, { tokens: T, seqs: S });
  const got = await h.readF32(oBuf, want.length);
  expectClose(got, want, (i) => tol[i]!, name(c), (i) => {
    const t = Math.floor(i / ldo);
    const col = i % ldo;
    const tk = tokens[t]!;
    return `o[token ${t} (seq ${tk.s}, pos ${positions[t]}), head ${Math.floor(col / hd)}, d ${col % hd}]`;
  });
}

describe('attention', () => {
  const cases: Case[] = [
    // decode: one query per sequence, contexts around tile and block edges
    { nh: 4, nkv: 4, hd: 64, B: 16, seqs: [{ ctx: 1, queries: 1 }, { ctx: 17, queries: 1 }, { ctx: 200, queries: 1 }, { ctx: 64, queries: 1 }, { ctx: 65, queries: 1 }] },
    { nh: 8, nkv: 2, hd: 256, B: 1, seqs: [{ ctx: 257, queries: 1 }, { ctx: 3, queries: 1 }] },
    { nh: 6, nkv: 2, hd: 3, B: 4, seqs: [{ ctx: 129, queries: 1 }, { ctx: 5, queries: 1 }, { ctx: 300, queries: 1 }], qScale: 8 },
    // prefill: causal, many queries per sequence
    { nh: 2, nkv: 1, hd: 6, B: 4, seqs: [{ ctx: 150, queries: 150 }, { ctx: 70, queries: 3 }] },
    { nh: 3, nkv: 3, hd: 2, B: 1, seqs: [{ ctx: 5, queries: 5 }, { ctx: 129, queries: 2 }] },
    { nh: 4, nkv: 1, hd: 67, B: 16, seqs: [{ ctx: 97, queries: 40 }, { ctx: 33, queries: 33 }], qScale: 3 },
    // mixed prefill and decode in one dispatch
    { nh: 6, nkv: 2, hd: 130, B: 16, seqs: [{ ctx: 70, queries: 70 }, { ctx: 300, queries: 1 }, { ctx: 9, queries: 9 }] },
    { nh: 4, nkv: 2, hd: 5, B: 4, seqs: [{ ctx: 1, queries: 1 }, { ctx: 66, queries: 66 }, { ctx: 128, queries: 1 }], qScale: 6 },
    // sliding window
    { nh: 4, nkv: 2, hd: 16, B: 4, seqs: [{ ctx: 200, queries: 60 }, { ctx: 50, queries: 1 }], window: 37 },
    { nh: 2, nkv: 2, hd: 8, B: 16, seqs: [{ ctx: 300, queries: 1 }, { ctx: 130, queries: 10 }], window: 65 },
    { nh: 3, nkv: 1, hd: 7, B: 1, seqs: [{ ctx: 40, queries: 40 }], window: 1 },
    { nh: 4, nkv: 1, hd: 32, B: 16, seqs: [{ ctx: 200, queries: 70 }, { ctx: 64, queries: 1 }, { ctx: 65, queries: 1 }], window: 64 },
    { nh: 2, nkv: 1, hd: 12, B: 4, seqs: [{ ctx: 30, queries: 30 }], window: 100 },
    // sequence after sequence: tiles of tokens share key loads; odd counts leave partial tiles and tiles that
    // straddle two sequences (QT 4 for hd 6 and 16 below, 2 for hd 67, 1 for hd 256)
    { nh: 2, nkv: 1, hd: 6, B: 4, seqs: [{ ctx: 150, queries: 150 }, { ctx: 70, queries: 3 }, { ctx: 9, queries: 1 }], grouped: true },
    { nh: 4, nkv: 1, hd: 67, B: 16, seqs: [{ ctx: 97, queries: 41 }, { ctx: 33, queries: 33 }], qScale: 3, grouped: true },
    { nh: 6, nkv: 2, hd: 16, B: 1, seqs: [{ ctx: 1, queries: 1 }, { ctx: 66, queries: 65 }, { ctx: 128, queries: 1 }, { ctx: 7, queries: 7 }], qScale: 6, grouped: true },
    { nh: 4, nkv: 2, hd: 16, B: 4, seqs: [{ ctx: 200, queries: 61 }, { ctx: 50, queries: 1 }], window: 37, grouped: true },
    { nh: 8, nkv: 2, hd: 256, B: 16, seqs: [{ ctx: 40, queries: 39 }, { ctx: 3, queries: 3 }], grouped: true },
  ];
  cases.forEach((c, i) => it(name(c), () => check(c, 40 + i)));
});
