// Streaming ceiling: each workgroup sums a contiguous chunk of the buffer (lanes adjacent, vec4<u32> loads,
// UNROLL loads in flight per lane), one f32 out per workgroup so nothing can be optimized away.
// Dispatch (G) workgroups; the fastest layout on lavapipe (scratch measurements: 32 workgroups of 64, unroll 4).
override WG: u32 = 64u;
override UNROLL: u32 = 4u;

@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let per = arrayLength(&src) / nwg.x;
  let e = (wid.x + 1u) * per;
  var acc = vec4<f32>(0.0);
  var i = wid.x * per + lid;
  loop {
    if (i + (UNROLL - 1u) * WG >= e) { break; }
    for (var u = 0u; u < UNROLL; u++) { acc += bitcast<vec4<f32>>(src[i + u * WG]); }
    i += UNROLL * WG;
  }
  for (; i < e; i += WG) { acc += bitcast<vec4<f32>>(src[i]); }
  red[lid] = acc.x + acc.y + acc.z + acc.w;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[wid.x] = red[0]; }
}
