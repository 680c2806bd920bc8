// Causal attention through the paged KV cache, for prefill and decode alike.
//
// For token t (sequence s = seqOf[t], position pos = positions[t]) and query head h (kv head g = h / (nh/nkv)):
//   o[t, h, :] = Σ_j softmax_j(q[t,h,:]·k[s,j,g,:] · scale) · v[s,j,g,:],   j in [lo, pos],
//   lo = 0, or pos − window + 1 with a sliding window;
// k[s, j] lives at slot blockTable[s, j / B]·B + j % B of kcache/vcache (f32 [slots, nkv, hd]).
// Keys are visited in tiles of WG with an online softmax (running max and sum). One workgroup per (head, token);
// dispatch (nh, T). Thread i owns output dims i, i + WG, ... (hd <= 4·WG).

const WG: u32 = 64u;
const MAX_DPT: u32 = 4u; // output dims per thread

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

var<workgroup> qs: array<f32, 256>;
var<workgroup> sc: array<f32, WG>;
var<workgroup> kvRow: array<u32, WG>; // (slot · nkv + g) · hd for each key of the tile

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wg.x;
  let t = wg.y;
  let g = h / (p.nh / p.nkv);
  let s = seqOf[t];
  let pos = positions[t];
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) { lo = pos + 1u - p.window; }
  for (var d = tid; d < p.hd; d += WG) { qs[d] = q[t * p.ldq + h * p.hd + d] * p.scale; }
  var m = -3.4e38;
  var l = 0.0;
  var acc: array<f32, MAX_DPT>;
  for (var i = 0u; i < MAX_DPT; i++) { acc[i] = 0.0; }
  workgroupBarrier();
  for (var base = lo; base <= pos; base += WG) {
    let j = base + tid;
    var score = -3.4e38;
    if (j <= pos) {
      let slot = blockTables[s * p.maxBlocks + j / p.blockSize] * p.blockSize + j % p.blockSize;
      let row = (slot * p.nkv + g) * p.hd;
      kvRow[tid] = row;
      var dotv = 0.0;
      for (var d = 0u; d < p.hd; d++) { dotv += qs[d] * kcache[row + d]; }
      score = dotv;
    }
    sc[tid] = score;
    workgroupBarrier();
    let n = min(WG, pos + 1u - base);
    var tmax = m;
    for (var i = 0u; i < n; i++) { tmax = max(tmax, sc[i]); }
    let corr = exp(m - tmax);
    l *= corr;
    for (var k = 0u; k < MAX_DPT; k++) { acc[k] *= corr; }
    for (var i = 0u; i < n; i++) {
      let e = exp(sc[i] - tmax);
      l += e;
      let row = kvRow[i];
      for (var k = 0u; k < MAX_DPT; k++) {
        let d = tid + k * WG;
        if (d < p.hd) { acc[k] += e * vcache[row + d]; }
      }
    }
    m = tmax;
    workgroupBarrier();
  }
  for (var k = 0u; k < MAX_DPT; k++) {
    let d = tid + k * WG;
    if (d < p.hd) { o[t * p.ldo + h * p.hd + d] = acc[k] / l; }
  }
}
