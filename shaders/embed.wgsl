// Embedding gather: x[t, 0..H) = E[id, 0..H) widened to f32, for tokens whose id falls in this part of a
// (possibly split) table: rows [rowStart, rowStart + rowCount). E: u32 words [rowCount, Hp], Hp = H rounded up
// to 8. One workgroup per token; dispatch (T).
// id = ids[t], or, when feed[t] != NONE, the token the previous step sampled in row feed[t] (prevOut): the
// engine records a decode step before the previous one is read back. The resolved id is written back to ids[t]
// for later kernels of the step (embedding LoRA).

override WDTYPE: u32 = 0u; // 0 f32, 1 f16, 2 bf16
const WG: u32 = 64u;

struct Params {
  H: u32, // embedding width (elements)
  Hp: u32, // row stride of E (elements)
  ldx: u32, // row stride of x (elements)
  rowStart: u32, // first vocabulary row held by this part
  rowCount: u32, // rows held by this part
}

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read> E: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read> feed: array<u32>;
@group(0) @binding(6) var<storage, read> prevOut: array<u32>;

const NONE: u32 = 0xffffffffu;

fn element(i: u32) -> f32 {
  return elementOf(E[wordOf(i, WDTYPE)], i, WDTYPE);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wg.x;
  let f = feed[t];
  var id: u32;
  if (f == NONE) {
    id = ids[t];
  } else {
    id = prevOut[f];
    if (tid == 0u) { ids[t] = id; }
  }
  if (id < p.rowStart || id >= p.rowStart + p.rowCount) { return; }
  let base = (id - p.rowStart) * p.Hp;
  for (var i = tid; i < p.H; i += WG) {
    x[t * p.ldx + i] = element(base + i);
  }
}
