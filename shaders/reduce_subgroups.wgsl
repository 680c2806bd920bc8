// laneSum for kernels whose workgroup is a single subgroup (WG <= the device's minimum subgroup size): the sum of
// `v` over the workgroup's lanes, returned to every lane. No barrier. Composed with a kernel file by the
// dispatcher when the device has the `subgroups` feature; reduce_workgroup.wgsl is the same function without it.
fn laneSum(v: f32, lane: u32) -> f32 {
  return subgroupAdd(v);
}
