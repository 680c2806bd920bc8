// Causal attention through the paged KV cache, for prefill and decode alike.
//
// For token t (sequence s = seqOf[t], position pos = positions[t]) and query head h (kv head g = h / (nh/nkv)):
//   o[t, h, :] = Σ_j softmax_j(q[t,h,:]·k[s,j,g,:] · scale) · v[s,j,g,:],   j in [lo, pos],
//   lo = 0, or pos − window + 1 with a sliding window;
// k[s, j] lives at slot blockTable[s, j / B]·B + j % B of kcache/vcache (f32 [slots, nkv, hd]).
//
// Design (lavapipe emulates every buffer load lane by lane, so the cost is the number of loads): a workgroup
// handles one token and a chunk of HPW query heads that share one kv head, so each key and value row is loaded
// once for all of them. The WG lanes split the head dims (lane l owns 4-dim chunks l, l + WG, ...): every load is
// useful, each score is one laneSum. Keys are visited in tiles of TILE: pass 1 computes the tile's scores (kept in
// workgroup memory) and their maximum, the running output and normalizer are rescaled once per tile, pass 2 adds
// the weighted values. So each weight goes through one exp per tile it survives, as in any tiled online softmax.
//
// Dispatch (nh / HPW, T); needs HPW · CPL <= MAXQ and HPW <= MAXH (the dispatcher picks HPW).

override WG: u32 = 8u; // lanes (laneSum's workgroup: one subgroup, or a workgroup-memory tree)
override HPW: u32 = 1u; // query heads per workgroup, consecutive, all of one kv head
override CPL: u32 = 1u; // 4-dim chunks of a head per lane: ceil(ceil(hd / 4) / WG)
const MAXQ: u32 = 64u; // HPW · CPL: registers per lane for q and for the output
const MAXH: u32 = 8u;
const MAXC: u32 = 16u; // CPL
const TILE: u32 = 64u; // keys per rescaling step

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

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> seqOf: array<u32>;
@group(0) @binding(4) var<storage, read> blockTables: array<u32>;
@group(0) @binding(5) var<storage, read> q: array<f32>;
@group(0) @binding(6) var<storage, read> kcache: array<f32>;
@group(0) @binding(7) var<storage, read> vcache: array<f32>;
@group(0) @binding(8) var<storage, read_write> o: array<f32>;

var<workgroup> scores: array<f32, TILE * MAXH>; // [head][key of the tile]

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
  let t = wg.y;
  let h0 = wg.x * HPW;
  let pos = positions[t];
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) { lo = pos + 1u - p.window; }
  let g = h0 / (p.nh / p.nkv);
  // This lane's chunks of q (times scale) and of the unnormalized output, per head; running max and normalizer.
  var qv: array<vec4<f32>, MAXQ>;
  var acc: array<vec4<f32>, MAXQ>;
  var m: array<f32, MAXH>;
  var l: array<f32, MAXH>;
  for (var h = 0u; h < HPW; h++) {
    m[h] = -3.4e38;
    l[h] = 0.0;
    for (var i = 0u; i < CPL; i++) {
      var v = vec4<f32>(0.0);
      for (var e = 0u; e < 4u; e++) {
        let d = (lane + i * WG) * 4u + e;
        if (d < p.hd) { v[e] = q[t * p.ldq + (h0 + h) * p.hd + d] * p.scale; }
      }
      qv[h * CPL + i] = v;
      acc[h * CPL + i] = vec4<f32>(0.0);
    }
  }
  // Key j's slot, followed incrementally: block-table entry `blk`, offset `off` in that block, entry value `cur`.
  let B = p.blockSize;
  var blk = seqOf[t] * p.maxBlocks + lo / B;
  var off = lo % B;
  var cur = blockTables[blk];
  for (var base = lo; base <= pos; base += TILE) {
    let n = min(TILE, pos + 1u - base);
    let blk0 = blk;
    let off0 = off;
    let cur0 = cur;
    var tmax: array<f32, MAXH>;
    for (var h = 0u; h < HPW; h++) { tmax[h] = m[h]; }
    for (var kk = 0u; kk < n; kk++) {
      let row = ((cur * B + off) * p.nkv + g) * p.hd;
      off += 1u;
      if (off == B) { off = 0u; blk += 1u; cur = blockTables[blk]; }
      var kc: array<vec4<f32>, MAXC>;
      for (var i = 0u; i < CPL; i++) { kc[i] = chunk(false, row, lane + i * WG); }
      for (var h = 0u; h < HPW; h++) {
        var sum = 0.0;
        for (var i = 0u; i < CPL; i++) { sum += dot(qv[h * CPL + i], kc[i]); }
        let sc = laneSum(sum, lane);
        if (lane == 0u) { scores[h * TILE + kk] = sc; }
        tmax[h] = max(tmax[h], sc);
      }
    }
    workgroupBarrier();
    for (var h = 0u; h < HPW; h++) {
      let corr = exp(m[h] - tmax[h]);
      l[h] *= corr;
      for (var i = 0u; i < CPL; i++) { acc[h * CPL + i] *= corr; }
      m[h] = tmax[h];
    }
    blk = blk0;
    off = off0;
    cur = cur0;
    for (var kk = 0u; kk < n; kk++) {
      let row = ((cur * B + off) * p.nkv + g) * p.hd;
      off += 1u;
      if (off == B) { off = 0u; blk += 1u; cur = blockTables[blk]; }
      var vc: array<vec4<f32>, MAXC>;
      for (var i = 0u; i < CPL; i++) { vc[i] = chunk(true, row, lane + i * WG); }
      for (var h = 0u; h < HPW; h++) {
        let e = exp(scores[h * TILE + kk] - m[h]);
        l[h] += e;
        for (var i = 0u; i < CPL; i++) { acc[h * CPL + i] += e * vc[i]; }
      }
    }
    workgroupBarrier();
  }
  for (var h = 0u; h < HPW; h++) {
    for (var i = 0u; i < CPL; i++) {
      let v = acc[h * CPL + i] / l[h];
      for (var e = 0u; e < 4u; e++) {
        let d = (lane + i * WG) * 4u + e;
        if (d < p.hd) { o[t * p.ldo + (h0 + h) * p.hd + d] = v[e]; }
      }
    }
  }
}
