// laneSum without subgroups: a tree reduction in workgroup memory (WG a power of two), returned to every lane.
// Must be called in uniform control flow. See reduce_subgroups.wgsl.
var<workgroup> laneRed: array<f32, WG>;

fn laneSum(v: f32, lane: u32) -> f32 {
  laneRed[lane] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { laneRed[lane] += laneRed[lane + s]; }
    workgroupBarrier();
  }
  let total = laneRed[0];
  workgroupBarrier();
  return total;
}
