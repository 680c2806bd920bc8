// DoRA row statistics, computed once per adapter module when the adapter is first prepared for a GPU slot
// (not per step). For rows n of a base weight W (file dtype) and the adapter's A (f32 [rank, Kp], pad columns zero):
//
//   out[n, 0]     = Σ_k W[n, k]²                 (‖W_n‖²)
//   out[n, 1 + j] = Σ_k A[j, k] · W[n, k]         (P = A·Wᵀ, j < rank)
//
// with which the slot manager gets ‖W_n + c·(B·A)_n‖² = ‖W_n‖² + 2c·B_n·P_n + c²·B_n·(A·Aᵀ)·B_nᵀ for any scale c.
// One workgroup per row and block of CHUNK ranks; its WG lanes split K and reduce with laneSum (reduce_*.wgsl).
// Dispatch (rows, ceil(rank / CHUNK)).

override WDTYPE: u32 = 0u; // W: 0 f32, 1 f16, 2 bf16
override WG: u32 = 8u;
const CHUNK: u32 = 16u;

struct Params {
  Kp: u32, // padded row length of W and A (elements, multiple of 8)
  row0: u32, // first row of W read (within the bound part)
  rank: u32,
  outRow0: u32, // out row of the first row read
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn row_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let j0 = wg.y * CHUNK;
  let XPV = select(2u, 1u, WDTYPE == 0u); // A vec4s per W vec4
  let KV = p.Kp / (4u * XPV);
  let AV = p.Kp / 4u;
  var acc: array<f32, 17>; // [0]: Σ W², [1 + j]: Σ A[j0 + j]·W
  for (var k = lane; k < KV; k += WG) {
    let d = widen8(W[(p.row0 + wg.x) * KV + k], WDTYPE);
    acc[0] += dot(d[0], d[0]) + dot(d[1], d[1]);
    for (var j = 0u; j < CHUNK; j++) {
      if (j0 + j >= p.rank) { break; }
      let ab = (j0 + j) * AV + k * XPV;
      var v = dot(d[0], A[ab]);
      if (XPV == 2u) { v += dot(d[1], A[ab + 1u]); }
      acc[1u + j] += v;
    }
  }
  for (var i = 0u; i < 17u; i++) { acc[i] = laneSum(acc[i], lane); }
  if (lane == 0u) {
    let o = (p.outRow0 + wg.x) * (1u + p.rank);
    if (wg.y == 0u) { out[o] = acc[0]; }
    for (var j = 0u; j < CHUNK; j++) {
      if (j0 + j < p.rank) { out[o + 1u + j0 + j] = acc[1u + j]; }
    }
  }
}
