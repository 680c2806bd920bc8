// Multi-LoRA "shrink" (Punica's BGMV/SGMV first half): every token row projects its input onto the A matrices of
// its own adapter slot; the matching "expand" (·Bᵀ, added into the base output) is fused into matmul.wgsl's
// epilogue. Also the embedding LoRA: a gather of A's column for the token id, and an expand that adds into x.
//
// Slots hold up to S adapters: A is u32 words [S][G][R][Kp] in the base's dtype (G stacked members of a fused
// projection: q,k,v -> 3; gate,up -> 2; o, down -> 1), rank R = maxLoraRank, rows padded to Kp = pad8(K).
// ranks[slot · rankStride + rankBase + g] is member g's rank in that slot (0: the adapter does not touch it).
//
// shrink:        s[t, g·R + j] = mult[t] · Σ_k x[t, k] · A[slot(t), g, j, k]    j < rank, slot(t) = slotOf[t]
// embed_shrink:  s[t, j]       = mult[t] · A[slot(t), 0, j, ids[t]]              (A is [R][Vp]: column gather)
// expand_add:    y[t, n]      += Σ_{j < rank} B[slot(t), n, j] · s[t, j]         (B is [N][Rp], scale folded in)
// Tokens with slotOf[t] = NONE are skipped (their s rows are never read).

override WDTYPE: u32 = 0u; // 0 f32, 1 f16, 2 bf16 (the slots' dtype)
const WG: u32 = 64u;
const NONE: u32 = 0xffffffffu;

struct Params {
  Kp: u32, // padded input width = row stride of x and of A (elements)
  R: u32, // rank stride of the slots (max rank)
  G: u32, // members in the group
  ldS: u32, // row stride of s (elements)
  rankBase: u32, // this group's first entry in a slot's rank row
  rankStride: u32, // rank entries per slot
  N: u32, // expand: output columns; embed_shrink: vocabulary rows of A (Vp)
  ldy: u32, // expand: row stride of y (elements)
  Rp: u32, // expand: row stride of B (elements)
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> slotOf: array<u32>;
@group(0) @binding(3) var<storage, read> mult: array<f32>;
@group(0) @binding(4) var<storage, read> ranks: array<u32>;
@group(0) @binding(5) var<storage, read> A: array<u32>;
@group(0) @binding(6) var<storage, read> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> s: array<f32>;

fn elem(i: u32) -> f32 {
  if (WDTYPE == 0u) { return bitcast<f32>(A[i]); }
  let w = A[i / 2u];
  if (WDTYPE == 1u) { return unpack2x16float(w)[i % 2u]; }
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, i % 2u == 1u));
}

// One workgroup per (token, member); thread j computes s[t, g·R + j] for j = tid, tid + WG, ... < rank.
@compute @workgroup_size(WG)
fn shrink(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wg.x;
  let g = wg.y;
  let slot = slotOf[t];
  if (slot == NONE) { return; }
  let rank = ranks[slot * p.rankStride + p.rankBase + g];
  let m = mult[t];
  for (var j = tid; j < rank; j += WG) {
    let a0 = ((slot * p.G + g) * p.R + j) * p.Kp;
    var acc = 0.0;
    for (var k = 0u; k < p.Kp; k++) { acc += x[t * p.Kp + k] * elem(a0 + k); }
    s[t * p.ldS + g * p.R + j] = m * acc;
  }
}

@group(0) @binding(8) var<storage, read> ids: array<u32>;

@compute @workgroup_size(WG)
fn embed_shrink(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wg.x;
  let slot = slotOf[t];
  if (slot == NONE) { return; }
  let rank = ranks[slot * p.rankStride + p.rankBase];
  for (var j = tid; j < rank; j += WG) {
    s[t * p.ldS + j] = mult[t] * elem((slot * p.R + j) * p.N + ids[t]);
  }
}

@group(0) @binding(9) var<storage, read_write> y: array<f32>;

// One workgroup per (column block, token); dispatch (ceil(N / WG), T). Here A holds B: [S][N][Rp].
@compute @workgroup_size(WG)
fn expand_add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wg.y;
  let n = wg.x * WG + tid;
  let slot = slotOf[t];
  if (slot == NONE || n >= p.N) { return; }
  let rank = ranks[slot * p.rankStride + p.rankBase];
  var acc = 0.0;
  for (var j = 0u; j < rank; j++) { acc += elem((slot * p.N + n) * p.Rp + j) * s[t * p.ldS + j]; }
  y[t * p.ldy + n] += acc;
}
