// The LoRA shrink in the row-per-lane layout (entry point `shrink_rows`) for CPU devices with 8-lane subgroups, like
// matmul_rows.wgsl; composed after lora.wgsl (its bindings and helpers), only where the device has the subgroups
// feature (subgroupShuffle). Same contract as `shrink`. A workgroup computes 16 rows j of member g for token t,
// lane l rows j0 + l and j0 + 8 + l over the whole of Kp; x comes in blocks of 8 A chunks, each lane loading one or
// two x vec4s of the block that the others take by subgroupShuffle. No reduction. WG must be 8. Dispatch
// (ceil(R / 16), T, G).
const RROWS: u32 = 2u; // rows per lane

@compute @workgroup_size(WG)
fn shrink_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let t = wg.y;
  let g = wg.z;
  let j0 = wg.x * RROWS * 8u;
  let slot = slotOf[t];
  let rank = shrinkHeader(t, g, wg.x == 0u, lane);
  let h = t * p.ldS;
  if (slot == NONE || j0 >= rank) { return; }
  let XPV = select(2u, 1u, WDTYPE == 0u); // x vec4s per A vec4
  let KV = p.Kp / (4u * XPV);
  let xb = t * (p.Kp / 4u);
  let xLast = xb + p.Kp / 4u - 1u;
  var row: array<u32, RROWS>;
  for (var r = 0u; r < RROWS; r++) { row[r] = ((slot * p.G + g) * p.R + min(j0 + r * 8u + lane, rank - 1u)) * KV; }
  var acc: array<f32, RROWS>;
  for (var kb = 0u; kb < KV; kb += 8u) {
    let q = xb + kb * XPV + lane;
    let x0 = x4[min(q, xLast)];
    var x1 = vec4<f32>(0.0);
    if (XPV == 2u) { x1 = x4[min(q + 8u, xLast)]; }
    for (var i = 0u; i < 8u; i++) {
      if (kb + i >= KV) { break; }
      var xa: vec4<f32>;
      var xc = vec4<f32>(0.0);
      if (XPV == 1u) {
        xa = subgroupShuffle(x0, i);
      } else if (i < 4u) {
        xa = subgroupShuffle(x0, 2u * i);
        xc = subgroupShuffle(x0, 2u * i + 1u);
      } else {
        xa = subgroupShuffle(x1, 2u * i - 8u);
        xc = subgroupShuffle(x1, 2u * i - 7u);
      }
      for (var r = 0u; r < RROWS; r++) {
        let d = aChunk(row[r] + kb + i);
        acc[r] += dot(d[0], xa) + dot(d[1], xc);
      }
    }
  }
  let m = mult[t];
  for (var r = 0u; r < RROWS; r++) {
    let j = j0 + r * 8u + lane;
    if (j < rank) { s[h + HEADER + g * p.R + j] = m * acc[r]; }
  }
}
