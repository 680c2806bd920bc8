// DoRA row norms, computed once per adapter module when a DoRA adapter is first prepared for a GPU slot (not per
// step): out[outRow0 + n] = Σ_k W[row0 + n, k]² (‖W_n‖², f32) for the rows of a base weight W in its file dtype.
// The other statistic DoRA needs, A·Wᵀ, is a plain matmul (kernels/dora.ts runs matmul.wgsl for it).
// One workgroup per row; its WG lanes split K and reduce with laneSum (reduce_*.wgsl). Dispatch (rows).

override WDTYPE: u32 = 0u; // W: 0 f32, 1 f16, 2 bf16
override WG: u32 = 8u;

struct Params {
  Kp: u32, // padded row length of W (elements, multiple of 8)
  row0: u32, // first row of W read (within the bound part)
  outRow0: u32, // out element of the first row read
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn row_norms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let KV = p.Kp / select(8u, 4u, WDTYPE == 0u); // vec4<u32> per row
  var acc = 0.0;
  for (var k = lane; k < KV; k += WG) {
    let d = widen8(W[(p.row0 + wg.x) * KV + k], WDTYPE);
    acc += dot(d[0], d[0]) + dot(d[1], d[1]);
  }
  let total = laneSum(acc, lane);
  if (lane == 0u) { out[p.outRow0 + wg.x] = total; }
}
