// Causal attention through the paged KV cache, for prefill and decode alike.
//
// For token t (sequence s = seqOf[t], position pos = positions[t]) and query head h (kv head g = h / (nh/nkv)):
//   o[t, h, :] = Σ_j softmax_j(q[t,h,:]·k[s,j,g,:] · scale) · v[s,j,g,:],   j in [lo, pos],
//   lo = 0, or pos − window + 1 with a sliding window;
// k[s, j] lives at slot blockTable[s, j / B]·B + j % B of kcache/vcache (f32 [slots, nkv, hd]).
//
// Design (lavapipe emulates every buffer load lane by lane, including workgroup memory, so the cost is the
// number of loads): a workgroup handles QT consecutive tokens and a chunk of HPW query heads that share one kv
// head, so each key and value row is loaded once for all QT·HPW queries. When the QT tokens belong to different
// sequences the workgroup takes them one at a time. The WG lanes split the head dims (lane l owns 4-dim chunks
// l, l + WG, ...): every load is useful, each score is one laneSum. Keys are visited once, in order, with an
// online softmax kept in registers: the running output and normalizer are rescaled only when a score raises
// the running maximum, so no score goes through memory.
//
// Dispatch (nh / HPW, ceil(tokens / QT)); needs QT · HPW · CPL <= MAXQ and QT · HPW <= MAXH (the dispatcher
// picks HPW and QT; QT = 1 for steps without prefill).

override WG: u32 = 8u; // lanes (laneSum's workgroup: one subgroup, or a workgroup-memory tree)
override HPW: u32 = 1u; // query heads per workgroup, consecutive, all of one kv head
override CPL: u32 = 1u; // 4-dim chunks of a head per lane: ceil(ceil(hd / 4) / WG)
override QT: u32 = 1u; // tokens per workgroup
const MAXQ: u32 = 64u; // QT · HPW · CPL: registers per lane for q and for the output
const MAXH: u32 = 16u; // QT · HPW
const MAXC: u32 = 16u; // CPL

struct Dims { tokens: u32, rows: u32 }
struct Params {
  nh: u32, // query heads
  nkv: u32, // key/value heads
  hd: u32, // head dim (elements)
  ldq: u32, // row stride of q (the qkv buffer) (elements)
  ldo: u32, // row stride of o (elements)
  blockSize: u32, // tokens per KV block
  maxBlocks: u32, // row stride of blockTables (blocks)
  window: u32, // sliding window in tokens, 0 = none
  scale: f32, // 1 / sqrt(hd)
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> seqOf: array<u32>;
@group(0) @binding(4) var<storage, read> blockTables: array<u32>;
@group(0) @binding(5) var<storage, read> q: array<f32>;
@group(0) @binding(6) var<storage, read> kcache: array<f32>;
@group(0) @binding(7) var<storage, read> vcache: array<f32>;
@group(0) @binding(8) var<storage, read_write> o: array<f32>;

// Dims 4c .. 4c + 3 of the K (or V) row starting at element `row`; dims >= hd read as 0. (Measured on lavapipe:
// this shape beat a branch-free form and one that drops the element-wise path when hd % 4 == 0.)
fn chunk(isV: bool, row: u32, c: u32) -> vec4<f32> {
  let i = row + c * 4u;
  if (c * 4u + 3u < p.hd) {
    if (isV) { return vec4<f32>(vcache[i], vcache[i + 1u], vcache[i + 2u], vcache[i + 3u]); }
    return vec4<f32>(kcache[i], kcache[i + 1u], kcache[i + 2u], kcache[i + 3u]);
  }
  var v = vec4<f32>(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (c * 4u + e < p.hd) {
      if (isV) { v[e] = vcache[i + e]; } else { v[e] = kcache[i + e]; }
    }
  }
  return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let tile0 = wg.y * QT;
  let nq = min(QT, dims.tokens - tile0);
  let h0 = wg.x * HPW;
  let g = h0 / (p.nh / p.nkv);
  // The tile shares key loads when all its tokens belong to one sequence (the runner lays a sequence's tokens
  // out consecutively); otherwise its tokens are taken one per pass.
  let seq = seqOf[tile0];
  var same = true;
  for (var i = 1u; i < QT; i++) {
    if (i < nq && seqOf[tile0 + i] != seq) { same = false; }
  }
  let passes = select(nq, 1u, same);
  let per = select(1u, nq, same);
  for (var ps = 0u; ps < passes; ps++) {
    let t0 = tile0 + ps;
    let s = seqOf[t0];
    // Per query i < per (and head h): its key range, q chunks (times scale), unnormalized output, running max
    // and normalizer; index qh = i · HPW + h. Keys [kLo, kHi] cover every query's range.
    var pos: array<u32, MAXH>;
    var lo: array<u32, MAXH>;
    var kLo = 0xffffffffu;
    var kHi = 0u;
    var qv: array<vec4<f32>, MAXQ>;
    var acc: array<vec4<f32>, MAXQ>;
    var m: array<f32, MAXH>;
    var l: array<f32, MAXH>;
    for (var i = 0u; i < QT; i++) {
      if (i < per) {
        pos[i] = positions[t0 + i];
        lo[i] = 0u;
        if (p.window > 0u && pos[i] + 1u > p.window) { lo[i] = pos[i] + 1u - p.window; }
        kLo = min(kLo, lo[i]);
        kHi = max(kHi, pos[i]);
      }
      for (var h = 0u; h < HPW; h++) {
        let qh = i * HPW + h;
        m[qh] = -3.4e38;
        l[qh] = 0.0;
        for (var c = 0u; c < CPL; c++) {
          var v = vec4<f32>(0.0);
          if (i < per) {
            for (var e = 0u; e < 4u; e++) {
              let d = (lane + c * WG) * 4u + e;
              if (d < p.hd) { v[e] = q[(t0 + i) * p.ldq + (h0 + h) * p.hd + d] * p.scale; }
            }
          }
          qv[qh * CPL + c] = v;
          acc[qh * CPL + c] = vec4<f32>(0.0);
        }
      }
    }
    // Key j's slot, followed incrementally: block-table entry `blk`, offset `off` in that block, entry `cur`.
    let B = p.blockSize;
    var blk = s * p.maxBlocks + kLo / B;
    var off = kLo % B;
    var cur = blockTables[blk];
    for (var j = kLo; j <= kHi; j++) {
      let row = ((cur * B + off) * p.nkv + g) * p.hd;
      off += 1u;
      if (off == B) { off = 0u; blk += 1u; cur = blockTables[blk]; }
      var kc: array<vec4<f32>, MAXC>;
      var vc: array<vec4<f32>, MAXC>;
      for (var c = 0u; c < CPL; c++) { kc[c] = chunk(false, row, lane + c * WG); vc[c] = chunk(true, row, lane + c * WG); }
      for (var i = 0u; i < QT; i++) {
        if (i < per && j <= pos[i] && j >= lo[i]) {
          for (var h = 0u; h < HPW; h++) {
            let qh = i * HPW + h;
            var sum = 0.0;
            for (var c = 0u; c < CPL; c++) { sum += dot(qv[qh * CPL + c], kc[c]); }
            let sc = laneSum(sum, lane);
            // A new maximum rescales what was summed so far (exp(old − new) <= 1); otherwise nothing moves.
            if (sc > m[qh]) {
              let corr = exp(m[qh] - sc);
              l[qh] *= corr;
              for (var c = 0u; c < CPL; c++) { acc[qh * CPL + c] *= corr; }
              m[qh] = sc;
            }
            let e = exp(sc - m[qh]);
            l[qh] += e;
            for (var c = 0u; c < CPL; c++) { acc[qh * CPL + c] += e * vc[c]; }
          }
        }
      }
    }
    for (var i = 0u; i < QT; i++) {
      if (i < per) {
        for (var h = 0u; h < HPW; h++) {
          let qh = i * HPW + h;
          for (var c = 0u; c < CPL; c++) {
            let v = acc[qh * CPL + c] / l[qh];
            for (var e = 0u; e < 4u; e++) {
              let d = (lane + c * WG) * 4u + e;
              if (d < p.hd) { o[(t0 + i) * p.ldo + (h0 + h) * p.hd + d] = v[e]; }
            }
          }
        }
      }
    }
  }
}
