// Multi-LoRA "shrink" (Punica's BGMV/SGMV first half): every token row projects its input onto the A matrices of
// its own adapter slot; the matching "expand" (·Bᵀ, added into the base output) is fused into matmul.wgsl's
// epilogue, or on CPU devices done by lora_rows.wgsl's shrink itself (TERMS), leaving the epilogue one term to add.
// Also the embedding LoRA: a gather of A's column for the token id, and an expand that adds into x.
//
// Slots hold up to S adapters: A is u32 words [S][G][R][Kp] (or chunk-major per [S][G] block: see aAt) in the base's dtype (G stacked members of a fused
// projection: q,k,v -> 3; gate,up -> 2; o, down -> 1), rank R = maxLoraRank, rows padded to Kp = pad8(K).
// ranks[slot · rankStride + rankBase + g] is member g's rank in that slot (0: the adapter does not touch it), with
// DORA_FLAG set when the module uses DoRA.
//
// Each row of s starts with an 8-word header the expand reads instead of slot and rank tables:
//   s[t, 0] = slot(t) = slotOf[t] (NONE: no adapter), s[t, 1 + g] = ranks entry of member g in that slot (u32 bits,
//   flag included), s[t, 4] = mult[t] (f32; DoRA's norm depends on it); words 5..7 are unused.
// shrink:        s[t, 8 + g·R + j] = mult[t] · Σ_k x[t, k] · A[slot(t), g, j, k]      j < rank_g
// embed_shrink:  s[t, 8 + j]       = mult[t] · A[slot(t), 0, j, ids[t]]                (A is [R][Vp]: column gather)
// expand_add:    y[t, n]          += Σ_{j < rank} B[slot(t), n, j] · s[t, 8 + j]       (B is [N][Rp], scale folded in)
// Values of rows whose slot is NONE, or of members with rank 0, are never written nor read.

override WDTYPE: u32 = 0u; // 0 f32, 1 f16, 2 bf16 (the slots' dtype)
override WG: u32 = 8u; // lanes (one subgroup for laneSum); embed kernels use it too
const NONE: u32 = 0xffffffffu;
const HEADER: u32 = 8u; // words before the values in each row of s
const RANK_MASK: u32 = 0xffffu; // a ranks entry: rank | DORA_FLAG (1 << 16)

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
@group(0) @binding(5) var<storage, read> A: array<u32>; // scalar view (embedding gather, expand)
@group(0) @binding(6) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> A4: array<vec4<u32>>; // vec4 view of the same A (shrink)
@group(0) @binding(7) var<storage, read_write> s: array<f32>;

fn elem(i: u32) -> f32 {
  return elementOf(A[wordOf(i, WDTYPE)], i, WDTYPE);
}

// Writes token t's s header for member g (lane 0 of the member's `first` workgroup; the slot word with member 0)
// and returns the member's rank in the token's slot (0 when the token has no adapter).
fn shrinkHeader(t: u32, g: u32, first: bool, lane: u32) -> u32 {
  let slot = slotOf[t];
  let h = t * p.ldS;
  if (lane == 0u && first && g == 0u) { s[h] = bitcast<f32>(slot); }
  if (slot == NONE) { return 0u; }
  let entry = ranks[slot * p.rankStride + p.rankBase + g];
  if (lane == 0u && first) {
    s[h + 1u + g] = bitcast<f32>(entry);
    if (g == 0u) { s[h + 4u] = mult[t]; }
  }
  return entry & RANK_MASK;
}

// Shrink, in the matmul's K-split form (loads are what costs on lavapipe): a workgroup computes ROWS consecutive
// rows j of member g for token t; its WG lanes split Kp in vec4<u32> chunks and reduce once with laneSum.
// Dispatch (ceil(R / ROWS), T, G).
const ROWS: u32 = 4u;

override ACHUNKS: bool = false; // A blocks chunk-major (LoraSlots.aChunks)

fn aChunk(i: u32) -> array<vec4<f32>, 2> {
  return widen8(A4[i], WDTYPE);
}

// Index in A4 of chunk c (16 bytes) of row j of member block b = slot · G + g, whose rows are KV chunks long: rows
// one after the other, or chunk-major (the R rows' chunk c side by side).
fn aAt(b: u32, j: u32, c: u32, KV: u32) -> u32 {
  if (ACHUNKS) { return (b * KV + c) * p.R + j; }
  return (b * p.R + j) * KV + c;
}

@compute @workgroup_size(WG)
fn shrink(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let t = wg.y;
  let g = wg.z;
  let j0 = wg.x * ROWS;
  let slot = slotOf[t];
  let rank = shrinkHeader(t, g, wg.x == 0u, lane);
  let h = t * p.ldS;
  // rank (0 without an adapter) is the same for every lane: the early return keeps control flow uniform.
  if (j0 >= rank) { return; }
  let XPV = select(2u, 1u, WDTYPE == 0u); // x vec4s per A vec4
  let KV = p.Kp / (4u * XPV);
  var acc = array<f32, ROWS>(0.0, 0.0, 0.0, 0.0);
  for (var k = lane; k < KV; k += WG) {
    let xb = t * (p.Kp / 4u) + k * XPV;
    let x0 = x4[xb];
    var x1 = vec4<f32>(0.0);
    if (XPV == 2u) { x1 = x4[xb + 1u]; }
    for (var r = 0u; r < ROWS; r++) {
      let d = aChunk(aAt(slot * p.G + g, min(j0 + r, rank - 1u), k, KV));
      acc[r] += dot(d[0], x0) + dot(d[1], x1);
    }
  }
  let m = mult[t];
  for (var r = 0u; r < ROWS; r++) {
    let total = laneSum(acc[r], lane);
    if (lane == 0u && j0 + r < rank) { s[h + HEADER + g * p.R + j0 + r] = m * total; }
  }
}

@group(0) @binding(8) var<storage, read> ids: array<u32>;

@compute @workgroup_size(WG)
fn embed_shrink(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wg.x;
  let slot = slotOf[t];
  if (slot == NONE) { return; }
  let rank = ranks[slot * p.rankStride + p.rankBase] & RANK_MASK;
  for (var j = tid; j < rank; j += WG) {
    s[t * p.ldS + HEADER + j] = mult[t] * elem((slot * p.R + j) * p.N + ids[t]);
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
  let rank = ranks[slot * p.rankStride + p.rankBase] & RANK_MASK;
  var acc = 0.0;
  for (var j = 0u; j < rank; j++) { acc += elem((slot * p.N + n) * p.Rp + j) * s[t * p.ldS + HEADER + j]; }
  y[t * p.ldy + n] += acc;
}
