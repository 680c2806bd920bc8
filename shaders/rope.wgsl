// Rotary embedding (HF rotate-half) on q and k, optional per-head RMSNorm before it (qwen3's q_norm/k_norm), and
// the write of this step's k and v into the paged KV cache.
//
// qkv: f32 [T, ldqkv]: q heads at [0, nh·hd), k heads at [nh·hd, (nh+nkv)·hd), v heads after them.
// For token t at position pos and head h, with (c, s) = rot[pos, i] (cos and sin of pos·inv_freq[i], precomputed
// on the CPU in f64 with any rope scaling applied) and half = hd / 2:
//   out[i] = x[i]·c − x[i+half]·s,  out[i+half] = x[i+half]·c + x[i]·s,   i < half
// q is rotated in place; rotated k and raw v go to kcache/vcache[slot[t], kvh, :] (f32 [slots, nkv, hd]).
// One workgroup per (head, token): heads [0, nh) are q heads, [nh, nh+nkv) k heads (+ the matching v head).

override QK_NORM: bool = false;
override NORM_WDTYPE: u32 = 0u; // dtype of q_norm/k_norm weights: 0 f32, 1 f16, 2 bf16
const WG: u32 = 32u;

struct Params {
  nh: u32, // query heads
  nkv: u32, // key/value heads
  hd: u32, // head dim (elements)
  ldqkv: u32, // row stride of qkv (elements)
  eps: f32, // RMSNorm epsilon (QK_NORM)
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> slots: array<u32>;
@group(0) @binding(4) var<storage, read> rot: array<vec2<f32>>; // [maxPos, hd/2] (cos, sin)
@group(0) @binding(5) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(6) var<storage, read_write> kcache: array<f32>;
@group(0) @binding(7) var<storage, read_write> vcache: array<f32>;
@group(0) @binding(8) var<storage, read> qnorm: array<u32>;
@group(0) @binding(9) var<storage, read> knorm: array<u32>;

var<workgroup> red: array<f32, WG>;

fn normWeight(isK: bool, i: u32) -> f32 {
  let wi = wordOf(i, NORM_WDTYPE);
  if (isK) { return elementOf(knorm[wi], i, NORM_WDTYPE); }
  return elementOf(qnorm[wi], i, NORM_WDTYPE);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let head = wg.x;
  let t = wg.y;
  let isK = head >= p.nh;
  let half = p.hd / 2u;
  let src = t * p.ldqkv + head * p.hd; // k heads follow q heads in qkv
  var scale = 1.0;
  if (QK_NORM) {
    var ss = 0.0;
    for (var i = tid; i < p.hd; i += WG) { let v = qkv[src + i]; ss += v * v; }
    red[tid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (tid < s) { red[tid] += red[tid + s]; }
      workgroupBarrier();
    }
    scale = inverseSqrt(red[0] / f32(p.hd) + p.eps);
  }
  let rotBase = positions[t] * half;
  let kvh = head - p.nh;
  let dst = (slots[t] * p.nkv + kvh) * p.hd;
  for (var i = tid; i < half; i += WG) {
    var a = qkv[src + i] * scale;
    var b = qkv[src + i + half] * scale;
    if (QK_NORM) {
      a *= normWeight(isK, i);
      b *= normWeight(isK, i + half);
    }
    let cs = rot[rotBase + i];
    let ra = a * cs.x - b * cs.y;
    let rb = b * cs.x + a * cs.y;
    if (isK) {
      kcache[dst + i] = ra;
      kcache[dst + i + half] = rb;
    } else {
      // Every thread reads its two elements before writing them, so in-place is safe.
      qkv[src + i] = ra;
      qkv[src + i + half] = rb;
    }
  }
  if (isK) {
    let vsrc = t * p.ldqkv + (p.nh + p.nkv + kvh) * p.hd;
    for (var i = tid; i < p.hd; i += WG) { vcache[dst + i] = qkv[vsrc + i]; }
  }
}
