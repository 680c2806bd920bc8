// Widening of values kept in their file dtype (dt: 0 f32, 1 f16, 2 bf16). 16-bit values are packed two per u32
// word, element 2i in the low half; every kernel that reads weights or adapter slots composes this file in
// (gpu.pipeline([..., 'dtype'])). dt is always an override constant at the call site, so the branches fold away.

// The low (odd = false) or high half of word w as f32 (dt 1 or 2).
fn halfOf(w: u32, odd: bool, dt: u32) -> f32 {
  if (dt == 1u) { return unpack2x16float(w)[select(0u, 1u, odd)]; }
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, odd));
}

// Element i of a tensor stored as u32 words (f32 bits, or 16-bit pairs), given the word that holds it.
fn elementOf(word: u32, i: u32, dt: u32) -> f32 {
  if (dt == 0u) { return bitcast<f32>(word); }
  return halfOf(word, i % 2u == 1u, dt);
}

// Index of the word that holds element i.
fn wordOf(i: u32, dt: u32) -> u32 {
  return select(i / 2u, i, dt == 0u);
}

// One vec4<u32> of a row widened to f32: f32 gives 4 elements in .0 (.1 is zero), 16-bit dtypes give 8,
// elements [0, 4) in .0 and [4, 8) in .1.
fn widen8(v: vec4<u32>, dt: u32) -> array<vec4<f32>, 2> {
  if (dt == 0u) { return array<vec4<f32>, 2>(bitcast<vec4<f32>>(v), vec4<f32>(0.0)); }
  if (dt == 1u) {
    return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)),
                               vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)));
  }
  let lo = bitcast<vec4<f32>>(v << vec4<u32>(16u));
  let hi = bitcast<vec4<f32>>(v & vec4<u32>(0xffff0000u));
  return array<vec4<f32>, 2>(vec4<f32>(lo.x, hi.x, lo.y, hi.y), vec4<f32>(lo.z, hi.z, lo.w, hi.w));
}
