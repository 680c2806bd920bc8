// Streaming ceiling: every workgroup sums a contiguous slice of the buffer (vec4 loads), one f32 out per
// workgroup so nothing can be optimized away. Dispatch (ceil(words / (WG · PER_THREAD · 4))).
override WG: u32 = 256u;
override PER_THREAD: u32 = 64u; // vec4 loads per invocation

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n = arrayLength(&src);
  let base = wg.x * WG * PER_THREAD;
  var acc = vec4<f32>(0.0);
  for (var i = 0u; i < PER_THREAD; i++) {
    let j = base + i * WG + tid;
    if (j < n) { acc += src[j]; }
  }
  red[tid] = acc.x + acc.y + acc.z + acc.w;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) { red[tid] += red[tid + s]; }
    workgroupBarrier();
  }
  if (tid == 0u) { out[wg.x] = red[0]; }
}
