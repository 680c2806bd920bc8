// RMSNorm: y[r, :] = x[src(r), :] · w / sqrt(mean(x[src(r), :]²) + eps), f32, w in its file dtype.
// src(r) = r for `main`, rows[r] for `gather` (the final norm reads only the rows that are sampled).
// x, y: f32 [R, ld] with the first H columns used. One workgroup per row; dispatch (R). The WG lanes split the
// row and laneSum (from reduce_*.wgsl) adds their partial sums of squares: one subgroup and no barrier where the
// device has subgroups (lavapipe emulates every load and barrier lane by lane, so fewer of both is what counts).

override WDTYPE: u32 = 0u; // 0 f32, 1 f16, 2 bf16
override WG: u32 = 64u; // lanes (laneSum's workgroup)

struct Params {
  H: u32, // normalized width (elements)
  ld: u32, // row stride of x and y (elements)
  eps: f32,
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> rows: array<u32>;

fn weight(i: u32) -> f32 {
  return elementOf(w[wordOf(i, WDTYPE)], i, WDTYPE);
}

fn norm(src: u32, dst: u32, tid: u32) {
  var ss = 0.0;
  for (var i = tid; i < p.H; i += WG) {
    let v = x[src * p.ld + i];
    ss += v * v;
  }
  let inv = inverseSqrt(laneSum(ss, tid) / f32(p.H) + p.eps);
  for (var i = tid; i < p.H; i += WG) {
    y[dst * p.ld + i] = x[src * p.ld + i] * inv * weight(i);
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  norm(wg.x, wg.x, tid);
}

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  norm(rows[wg.x], wg.x, tid);
}
