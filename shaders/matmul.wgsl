// Linear layer: y[m, n] (+)= Σ_k x[m, k] · W[n, k] (+ bias[n]), f32 accumulation, W in its file dtype.
//
// Layout contract (see src/kernels/matmul.ts):
// - x: f32 [M, Kp], W: u32 words [N, Kp] in file dtype, y: f32 [M, ldy]; Kp = K rounded up to 8, pad columns
//   zero, so a row is a whole number of 8-element chunks and no load needs a bounds mask.
// - EPILOGUE 0: y = acc (+ bias);  1: y += acc (+ bias) (residual add);  2: W holds the gate rows and W2 the up
//   rows; y = silu(x·Wᵀ) · (x·W2ᵀ) (SwiGLU MLP). W2 is bound but unused for epilogues 0 and 1.
// - Each workgroup computes ROWS output columns for TM rows of x; dispatch (ceil(N / ROWS), ceil(M / TM)).

override WDTYPE: u32 = 0u; // 0 f32, 1 f16, 2 bf16
override EPILOGUE: u32 = 0u;
override HAS_BIAS: bool = false;
override TM: u32 = 1u; // x rows per workgroup
const ROWS: u32 = 4u; // output columns per workgroup
const WG: u32 = 64u;

struct Dims { tokens: u32, seqs: u32 }
struct Params {
  N: u32, // output columns
  Kp: u32, // padded reduction length, multiple of 8 (elements)
  ldy: u32, // y row stride (elements)
  yOffset: u32, // first y column written by this dispatch (elements; split weights)
  mFromSeqs: u32, // 1: M = dims.seqs (lm_head over sampled rows), 0: M = dims.tokens
  biasOffset: u32, // first bias element for this dispatch (elements)
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> bias: array<u32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read> W2: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> bias2: array<u32>; // up-projection bias (EPILOGUE 2)

var<workgroup> red: array<f32, 512>; // [2 * ROWS][WG] partial sums

const MAX_TM: u32 = 4u;

// Eight consecutive weights of row n starting at chunk c (8 elements), widened to f32.
// `up` selects W2.
fn wchunk(n: u32, c: u32, up: bool) -> array<vec4<f32>, 2> {
  if (WDTYPE == 0u) {
    let i = (n * p.Kp + c * 8u) / 4u;
    if (up) { return array<vec4<f32>, 2>(bitcast<vec4<f32>>(W2[i]), bitcast<vec4<f32>>(W2[i + 1u])); }
    return array<vec4<f32>, 2>(bitcast<vec4<f32>>(W[i]), bitcast<vec4<f32>>(W[i + 1u]));
  }
  let wi = (n * p.Kp + c * 8u) / 8u;
  var w: vec4<u32>;
  if (up) { w = W2[wi]; } else { w = W[wi]; }
  if (WDTYPE == 1u) {
    return array<vec4<f32>, 2>(
      vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
      vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
  }
  let lo = w << vec4<u32>(16u);
  let hi = w & vec4<u32>(0xffff0000u);
  return array<vec4<f32>, 2>(
    bitcast<vec4<f32>>(vec4<u32>(lo.x, hi.x, lo.y, hi.y)),
    bitcast<vec4<f32>>(vec4<u32>(lo.z, hi.z, lo.w, hi.w)));
}

fn loadBias(i: u32, up: bool) -> f32 {
  var w: u32;
  let wi = select(i / 2u, i, WDTYPE == 0u);
  if (up) { w = bias2[wi]; } else { w = bias[wi]; }
  if (WDTYPE == 0u) { return bitcast<f32>(w); }
  if (WDTYPE == 1u) { return unpack2x16float(w)[i % 2u]; }
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, i % 2u == 1u));
}

fn silu(v: f32) -> f32 { return v / (1.0 + exp(-v)); }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let M = select(dims.tokens, dims.seqs, p.mFromSeqs == 1u);
  let n0 = wg.x * ROWS;
  let m0 = wg.y * TM;
  let nChunks = p.Kp / 8u;
  let gated = EPILOGUE == 2u;
  let nRows = select(ROWS, 2u * ROWS, gated);
  var acc: array<f32, 32>; // [TM][nRows], TM <= 4, nRows <= 8
  for (var i = 0u; i < 32u; i++) { acc[i] = 0.0; }
  for (var c = tid; c < nChunks; c += WG) {
    var xs: array<array<vec4<f32>, 2>, MAX_TM>;
    for (var t = 0u; t < TM; t++) {
      let m = min(m0 + t, M - 1u);
      let xi = (m * p.Kp + c * 8u) / 4u;
      xs[t] = array<vec4<f32>, 2>(x[xi], x[xi + 1u]);
    }
    for (var r = 0u; r < nRows; r++) {
      let n = n0 + (r % ROWS);
      if (n >= p.N) { continue; }
      let w = wchunk(n, c, r >= ROWS);
      for (var t = 0u; t < TM; t++) {
        acc[t * 8u + r] += dot(xs[t][0], w[0]) + dot(xs[t][1], w[1]);
      }
    }
  }
  // Tree-reduce each accumulator over the workgroup, one accumulator group at a time.
  for (var t = 0u; t < TM; t++) {
    for (var r = 0u; r < nRows; r++) { red[r * WG + tid] = acc[t * 8u + r]; }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (tid < s) {
        for (var r = 0u; r < nRows; r++) { red[r * WG + tid] += red[r * WG + tid + s]; }
      }
      workgroupBarrier();
    }
    let m = m0 + t;
    if (tid < ROWS && m < M && n0 + tid < p.N) {
      let n = n0 + tid;
      var v = red[tid * WG];
      if (HAS_BIAS) { v += loadBias(p.biasOffset + n, false); }
      let yi = m * p.ldy + p.yOffset + n;
      if (EPILOGUE == 0u) {
        y[yi] = v;
      } else if (EPILOGUE == 1u) {
        y[yi] += v;
      } else {
        var u = red[(tid + ROWS) * WG];
        if (HAS_BIAS) { u += loadBias(p.biasOffset + n, true); }
        y[yi] = silu(v) * u;
      }
    }
    workgroupBarrier();
  }
}
