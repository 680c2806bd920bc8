// laneSum for kernels whose workgroup is a single subgroup (WG <= the device's minimum subgroup size): the sum of
// `v` over the workgroup's lanes, returned to every lane. No barrier. Composed with a kernel file by the
// dispatcher when the device has the `subgroups` feature; reduce_workgroup.wgsl is the same function without it.
fn laneSum(v: f32, lane: u32) -> f32 {
  return subgroupAdd(v);
}

// Lanes 0..7's values of `v`, to every lane, as two vec4s (lanes 0..3, 4..7): the row-per-lane kernels
// (matmul_rows.wgsl, lora_rows.wgsl) share a chunk of 8 values this way. They run only with subgroups, so
// reduce_workgroup.wgsl has no counterpart.
fn lanes8(v: f32) -> array<vec4<f32>, 2> {
  return array<vec4<f32>, 2>(
    vec4<f32>(subgroupShuffle(v, 0u), subgroupShuffle(v, 1u), subgroupShuffle(v, 2u), subgroupShuffle(v, 3u)),
    vec4<f32>(subgroupShuffle(v, 4u), subgroupShuffle(v, 5u), subgroupShuffle(v, 6u), subgroupShuffle(v, 7u)),
  );
}
