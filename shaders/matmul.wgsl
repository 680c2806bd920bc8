// Linear layer with fused epilogues and the multi-LoRA expand (Punica's BGMV second half):
//
//   acc[m, n] = Σ_k x[m, k] · W[n, k]  (+ Σ_{j < rank} B[slot(m), n, j] · s[m, g(n)·R + j] with LORA)
//   EPILOGUE 0: y[m, yOff + n] = acc (+ bias[n])          1: y[m, yOff + n] += acc (+ bias[n])   (residual)
//   EPILOGUE 2: y[m, n] = silu(acc_gate) · acc_up, acc_up from W2 / B2 (no MLP bias: config.ts refuses it)   (SwiGLU)
//   DoRA (LORA, the row's slot flags member g(n)): acc *= m_n / sqrt(t1 + 2c·t2 + c²·t3) before the bias, with
//   (m_n, t1, t2, t3) the slot's table row in B / B2 at word dOff and c the row's scale multiplier (s header word 4).
//
// x: f32 [M, Kp], W: u32 words [N, Kp] in its file dtype (Kp = K rounded up to 8, pad columns zero, so every row
// is whole vec4<u32> chunks), y: f32 [M, ldy]. f32 accumulation.
//
// Design (measured on lavapipe, where each storage load is emulated lane by lane and costs far more than
// arithmetic; see bench/ and ARCHITECTURE.md): a workgroup owns ROWS consecutive output columns and MT
// consecutive rows of x; its WG lanes split K, lane l taking W vec4 l, l + WG, ... of each row, so every load is
// useful and each x vec4 serves ROWS rows, each W vec4 serves MT rows. The LoRA expand is split across lanes too
// (lane l takes rank pairs (2l, 2l + 1), (2l + 2WG, ...), ...: one B word per pair for 16-bit slots; the token's
// slot header and s pairs are read once per x row and member, not per column) and folded into the accumulators
// before the one reduction (laneSum, from reduce_*.wgsl). Dispatch (ceil(N / ROWS), ceil(M / MT)).
// The second entry point, `rows` (matmul_rows.wgsl, composed after this file: it needs subgroups), is a row-per-lane
// layout for CPU devices, where it is 2-3.5x faster from 5 rows of x; matmul.ts picks one per dispatch.
// The shrink kernel (lora.wgsl) leaves an 8-word header in each row of s: [slot, ranks entry of member 0, 1, 2 (rank
// | DORA_FLAG), scale multiplier, -, -, -], then the G·R shrunk values; so this kernel needs no slot, rank or scale
// buffers (8 storage bindings: WebGPU's default limit). With TERMS the shrink has also done the expand (row-per-lane
// shrink on CPU devices): s[m, tOff + ng] (gate/up: up's at tOff + bRows + ng) holds Σ_j B[slot, ng, j] · s[m, ...]
// for global column ng, and the epilogue adds it where the row has a slot (B is read only for DoRA's table).

override WDTYPE: u32 = 0u; // weights: 0 f32, 1 f16, 2 bf16
override EPILOGUE: u32 = 0u;
override HAS_BIAS: bool = false;
override LORA: bool = false;
override LDTYPE: u32 = 0u; // LoRA B dtype (the slots' dtype)
override MT: u32 = 1u; // x rows per workgroup (<= 4); ROWS · MT · (1 + gated) <= MAXACC
override ROWS: u32 = 4u; // output columns per workgroup
override WG: u32 = 8u; // lanes per workgroup (one subgroup)
override LPAIRS: u32 = 1u; // LoRA rank pairs per lane: ceil(R / (2 · WG))
override SPAIRS: u32 = 8u; // s pairs a lane keeps in registers (<= SPAIRS_MAX); later pairs are loaded per column
override TERMS: bool = false; // the shrink left the expanded terms in s (lora_rows.wgsl): add those, read no B

const NONE: u32 = 0xffffffffu;

struct Dims { tokens: u32, rows: u32 }
struct Params {
  N: u32, // output columns of this part
  Kp: u32, // padded reduction length (elements, multiple of 8)
  ldy: u32, // y row stride (elements)
  yOffset: u32, // first y column written (elements)
  mFromRows: u32, // 1: M = dims.rows (lm_head over the sampled rows), 0: M = dims.tokens
  nBase: u32, // global index of this part's first column (split weights; bias and LoRA B use it)
  // LoRA (unused without LORA):
  R: u32, // rank stride of s and of the slots
  Rp: u32, // row stride of B (elements)
  ldS: u32, // row stride of s (elements, header included)
  bRows: u32, // B rows per slot (all members)
  n1: u32, // first global column of member 1 (k of q/k/v), or bRows
  n2: u32, // first global column of member 2 (v), or bRows
  dOff: u32, // u32 word of the DoRA table [S][bRows][4] (f32) in B and B2
  tOff: u32, // TERMS: first word of the expanded terms in a row of s
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> W2: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> bias: array<u32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read> loraS: array<f32>; // [M, ldS]: header [slot, ranks...], then values
@group(0) @binding(8) var<storage, read> B: array<u32>;
@group(0) @binding(9) var<storage, read> B2: array<u32>;

const S_HEADER: u32 = 8u;
const RANK_MASK: u32 = 0xffffu;
const DORA_FLAG: u32 = 0x10000u;

const MAXACC: u32 = 128u;
const SPAIRS_MAX: u32 = 8u; // register room for s pairs

// W (or W2) vec4<u32> number i widened to f32: elements [0, 4) in .0, [4, 8) in .1 (16-bit dtypes).
fn loadW(i: u32, up: bool) -> array<vec4<f32>, 2> {
  if (up) { return widen8(W2[i], WDTYPE); }
  return widen8(W[i], WDTYPE);
}

fn loadBias(i: u32) -> f32 {
  return elementOf(bias[wordOf(i, WDTYPE)], i, WDTYPE);
}

// Rank entries j and j + 1 of B row b0 (j even; Rp is a multiple of 8, so one word holds both for 16-bit slots).
fn loadPair(b0: u32, j: u32, up: bool) -> vec2<f32> {
  let i = b0 + j;
  if (LDTYPE == 0u) {
    if (up) { return vec2<f32>(bitcast<f32>(B2[i]), bitcast<f32>(B2[i + 1u])); }
    return vec2<f32>(bitcast<f32>(B[i]), bitcast<f32>(B[i + 1u]));
  }
  var w: u32;
  if (up) { w = B2[i / 2u]; } else { w = B[i / 2u]; }
  return vec2<f32>(halfOf(w, false, LDTYPE), halfOf(w, true, LDTYPE));
}

// s[m, g·R + j], s[m, g·R + j + 1] (zero past the member's rank; B is zero there too, but s may hold anything).
fn loadSPair(s0: u32, j: u32, rank: u32) -> vec2<f32> {
  var v = vec2<f32>(0.0);
  if (j < rank) { v.x = loraS[s0 + j]; }
  if (j + 1u < rank) { v.y = loraS[s0 + j + 1u]; }
  return v;
}

// Member of the fused projection that global column n of matrix W (up = W2) belongs to.
fn memberOf(n: u32, up: bool) -> u32 {
  var g = select(0u, 1u, up);
  if (n >= p.n1) { g = 1u; }
  if (n >= p.n2) { g = 2u; }
  return g;
}

fn silu(v: f32) -> f32 { return v / (1.0 + exp(-v)); }

// A DoRA row: its slot, its scale multiplier c, and mask (bit g set when the slot applies DoRA to member g), gathered
// by the LoRA expand from s's header, so rows without DoRA cost no load in the epilogue.
struct DoraRow { slot: u32, c: f32, mask: u32 }

// DoRA's factor for this part's column n (up: of W2) in row d, or 1 where the row's adapter has no DoRA.
fn doraFactor(d: DoraRow, n: u32, up: bool) -> f32 {
  let ng = p.nBase + n;
  if (((d.mask >> memberOf(ng, up)) & 1u) == 0u) { return 1.0; }
  let c = d.c;
  let i = p.dOff + (d.slot * p.bRows + ng) * 4u;
  var t: vec4<u32>;
  if (up) { t = vec4<u32>(B2[i], B2[i + 1u], B2[i + 2u], B2[i + 3u]); } else { t = vec4<u32>(B[i], B[i + 1u], B[i + 2u], B[i + 3u]); }
  return doraScale(bitcast<vec4<f32>>(t), c);
}

// DoRA's factor from a table row t = (m_n, t1, t2, t3) and the row's scale multiplier c.
fn doraScale(t: vec4<f32>, c: f32) -> f32 {
  return t.x / sqrt(t.y + 2.0 * c * t.z + c * c * t.w);
}

// The epilogue for output (m, n) of this part: v = the accumulated sum (DoRA applied), u = the up projection's
// (swiglu); bias, then store / add / SwiGLU into y.
fn finish(m: u32, n: u32, v: f32, u: f32) {
  var o = v;
  if (HAS_BIAS) { o += loadBias(p.nBase + n); }
  let yi = m * p.ldy + p.yOffset + n;
  if (EPILOGUE == 0u) {
    y[yi] = o;
  } else if (EPILOGUE == 1u) {
    y[yi] += o;
  } else {
    y[yi] = silu(o) * u;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let M = select(dims.tokens, dims.rows, p.mFromRows == 1u);
  let gated = EPILOGUE == 2u;
  let nW = select(1u, 2u, gated); // weight matrices read: W, and W2 when gated
  let n0 = wg.x * ROWS;
  let m0 = wg.y * MT;
  let XPV = select(2u, 1u, WDTYPE == 0u); // x vec4s per W vec4
  let KV = p.Kp / (4u * XPV); // W vec4s per row
  let XV = p.Kp / 4u; // x vec4s per row
  var acc: array<f32, MAXACC>; // [matrix][row][m]
  for (var i = 0u; i < nW * ROWS * MT; i++) { acc[i] = 0.0; }
  for (var k = lane; k < KV; k += WG) {
    var xr: array<array<vec4<f32>, 2>, 4>;
    for (var m = 0u; m < MT; m++) {
      let xb = min(m0 + m, M - 1u) * XV + k * XPV;
      xr[m][0] = x[xb];
      if (XPV == 2u) { xr[m][1] = x[xb + 1u]; }
    }
    for (var w = 0u; w < nW; w++) {
      for (var r = 0u; r < ROWS; r++) {
        let d = loadW(min(n0 + r, p.N - 1u) * KV + k, w == 1u);
        for (var m = 0u; m < MT; m++) {
          var v = dot(d[0], xr[m][0]);
          if (XPV == 2u) { v += dot(d[1], xr[m][1]); }
          acc[(w * ROWS + r) * MT + m] += v;
        }
      }
    }
  }
  var dora: array<DoraRow, 4>; // per x row (mask 0: no DoRA)
  if (LORA) {
    // Lane l takes rank pairs (2l, 2l + 1), (2l + 2WG, ...), ...: one B word per pair for 16-bit slots. The token's
    // slot is read once per row of x and its s pairs once per member, so a column costs one load per pair.
    for (var m = 0u; m < MT; m++) {
      if (m0 + m >= M) { break; }
      let h = (m0 + m) * p.ldS;
      let slot = bitcast<u32>(loraS[h]);
      if (slot == NONE) { continue; }
      var cg = NONE;
      var rank = 0u;
      var s0 = 0u;
      var sv: array<vec2<f32>, SPAIRS_MAX>;
      for (var w = 0u; w < nW; w++) {
        for (var r = 0u; r < ROWS; r++) {
          if (n0 + r >= p.N) { break; }
          let n = p.nBase + n0 + r;
          let g = memberOf(n, w == 1u);
          if (g != cg) {
            cg = g;
            let e = bitcast<u32>(loraS[h + 1u + g]);
            rank = e & RANK_MASK;
            if ((e & DORA_FLAG) != 0u) { dora[m] = DoraRow(slot, loraS[h + 4u], dora[m].mask | (1u << g)); }
            s0 = h + S_HEADER + g * p.R;
            if (!TERMS) {
              for (var t = 0u; t < min(LPAIRS, SPAIRS); t++) { sv[t] = loadSPair(s0, 2u * (lane + t * WG), rank); }
            }
          }
          if (TERMS) { continue; }
          let b0 = (slot * p.bRows + n) * p.Rp;
          var a = 0.0;
          for (var t = 0u; t < LPAIRS; t++) {
            let j = 2u * (lane + t * WG);
            if (j >= rank) { break; }
            var sp: vec2<f32>;
            if (t < SPAIRS) { sp = sv[t]; } else { sp = loadSPair(s0, j, rank); }
            a += dot(loadPair(b0, j, w == 1u), sp);
          }
          acc[(w * ROWS + r) * MT + m] += a;
        }
      }
    }
  }
  // One reduction over the lanes (every lane gets every total); lane t finishes outputs t, t + WG, ...
  for (var i = 0u; i < nW * ROWS * MT; i++) { acc[i] = laneSum(acc[i], lane); }
  for (var t = lane; t < ROWS * MT; t += WG) {
    let r = t / MT;
    let m = m0 + t % MT;
    let n = n0 + r;
    if (n >= p.N || m >= M) { continue; }
    var v = acc[t];
    var u = 0.0;
    if (gated) { u = acc[ROWS * MT + t]; }
    if (LORA) {
      if (TERMS) {
        let h = m * p.ldS;
        if (bitcast<u32>(loraS[h]) != NONE) {
          v += loraS[h + p.tOff + p.nBase + n];
          if (gated) { u += loraS[h + p.tOff + p.bRows + p.nBase + n]; }
        }
      }
      v *= doraFactor(dora[t % MT], n, false);
      if (gated) { u *= doraFactor(dora[t % MT], n, true); }
    }
    finish(m, n, v, u);
  }
}

