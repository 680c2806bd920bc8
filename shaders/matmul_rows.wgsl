// The row-per-lane layout of the matmul (entry point `rows`), for devices whose GPU is the CPU (lavapipe): composed
// after matmul.wgsl (its bindings, Params and helpers) and before dtype.wgsl and reduce_subgroups.wgsl, only on
// devices with the subgroups feature (subgroupShuffle).
//
// Same contract as `main`. Lane l of a workgroup owns RL output columns n0 + l + WG·r (r < RL) for MT rows of x,
// with the whole of K: each W vec4 is loaded once per MT rows of x, and each x vec4 once per workgroup (lane l loads
// rows m0 + l + WG·g, every lane takes them from it with subgroupShuffle, which costs little next to a load there).
// The accumulators are complete sums (no reduction), held in registers: their loops have constant trip counts.
// The LoRA expand: per row of x and member, the s values come in chunks of 8 (lane l loads value l, the others take
// it by shuffle) and each lane adds B[slot, n, chunk] · chunk to its columns; B is read through vec4 views. With
// TERMS each lane adds its columns' terms from s instead (2-3x less lavapipe CPU for the expand, shrink included).
// WG must be 8 (one subgroup, one chunk of s per lane count). Dispatch (ceil(N / (RL · WG)), ceil(M / MT)).
override RL: u32 = 4u; // W rows per lane (rows entry)
const RL_MAX: u32 = 4u;
const MT_MAX: u32 = 16u;
const XG_MAX: u32 = 2u; // x vec4 groups per lane: MT / WG

@group(0) @binding(8) var<storage, read> B4: array<vec4<u32>>; // vec4 views of B and B2 (rows entry)
@group(0) @binding(9) var<storage, read> B24: array<vec4<u32>>;

fn loadB4(i: u32, up: bool) -> vec4<u32> {
  if (up) { return B24[i]; }
  return B4[i];
}

// Σ_{j < 8} B[row b0 (elements), c + j] · s8 (c a multiple of 8; zero past Rp is not read: Rp is a multiple of 8).
fn chunkDot(b0: u32, c: u32, s8: array<vec4<f32>, 2>, up: bool) -> f32 {
  if (LDTYPE == 0u) {
    let i = (b0 + c) / 4u;
    return dot(bitcast<vec4<f32>>(loadB4(i, up)), s8[0]) + dot(bitcast<vec4<f32>>(loadB4(i + 1u, up)), s8[1]);
  }
  let b = widen8(loadB4((b0 + c) / 8u, up), LDTYPE);
  return dot(b[0], s8[0]) + dot(b[1], s8[1]);
}

// DoRA factor of global column ng (up: of W2) for a row with adapter slot and scale multiplier c (table via B4).
fn doraFactor4(slot: u32, ng: u32, c: f32, up: bool) -> f32 {
  return doraScale(bitcast<vec4<f32>>(loadB4(p.dOff / 4u + slot * p.bRows + ng, up)), c);
}

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let M = select(dims.tokens, dims.rows, p.mFromRows == 1u);
  let gated = EPILOGUE == 2u;
  let XPV = select(2u, 1u, WDTYPE == 0u);
  let KV = p.Kp / (4u * XPV);
  let XV = p.Kp / 4u;
  let ROWS_WG = RL * WG;
  let n0 = wg.x * ROWS_WG;
  let m0 = wg.y * MT;
  let XG = (MT + WG - 1u) / WG;
  var wr: array<u32, RL_MAX>;
  for (var r = 0u; r < RL; r++) { wr[r] = min(n0 + r * WG + lane, p.N - 1u) * KV; }
  var xb: array<u32, XG_MAX>;
  for (var g = 0u; g < XG; g++) { xb[g] = min(m0 + g * WG + lane, M - 1u) * XV; }
  var acc: array<array<f32, MT_MAX>, RL_MAX>;
  var acc2: array<array<f32, MT_MAX>, RL_MAX>;
  for (var k = 0u; k < KV; k++) {
    var d: array<array<vec4<f32>, 2>, RL_MAX>;
    var d2: array<array<vec4<f32>, 2>, RL_MAX>;
    for (var r = 0u; r < RL; r++) {
      d[r] = loadW(wr[r] + k, false);
      if (gated) { d2[r] = loadW(wr[r] + k, true); }
    }
    for (var g = 0u; g < XG; g++) {
      let xa = x[xb[g] + k * XPV];
      var xc = vec4<f32>(0.0);
      if (XPV == 2u) { xc = x[xb[g] + k * XPV + 1u]; }
      for (var j = 0u; j < WG; j++) {
        let m = g * WG + j;
        let u = subgroupShuffle(xa, j);
        var v = vec4<f32>(0.0);
        if (XPV == 2u) { v = subgroupShuffle(xc, j); }
        for (var r = 0u; r < RL; r++) {
          acc[r][m] += dot(d[r][0], u) + dot(d[r][1], v);
          if (gated) { acc2[r][m] += dot(d2[r][0], u) + dot(d2[r][1], v); }
        }
      }
    }
  }
  for (var m = 0u; m < MT; m++) {
    let row = m0 + m;
    if (row >= M) { break; }
    var vs: array<f32, RL_MAX>;
    var us: array<f32, RL_MAX>;
    for (var r = 0u; r < RL; r++) {
      vs[r] = acc[r][m];
      us[r] = acc2[r][m];
    }
    if (LORA) {
      let h = row * p.ldS;
      let slot = bitcast<u32>(loraS[h]);
      if (slot != NONE) {
        let c = loraS[h + 4u];
        if (TERMS) {
          for (var r = 0u; r < RL; r++) {
            let ng = p.nBase + min(n0 + r * WG + lane, p.N - 1u);
            vs[r] += loraS[h + p.tOff + ng];
            if (gated) { us[r] += loraS[h + p.tOff + p.bRows + ng]; }
          }
        }
        let nLast = p.nBase + min(n0 + ROWS_WG, p.N) - 1u;
        for (var w = 0u; w < select(1u, 2u, gated); w++) {
          let up = w == 1u;
          // The members this workgroup's columns fall in (the same for every lane).
          for (var g = memberOf(p.nBase + n0, up); g <= memberOf(nLast, up); g++) {
            let e = bitcast<u32>(loraS[h + 1u + g]);
            let rank = e & RANK_MASK;
            let s0 = h + S_HEADER + g * p.R;
            for (var ch = 0u; ch < select(rank, 0u, TERMS); ch += 8u) {
              var sv = 0.0;
              if (ch + lane < rank) { sv = loraS[s0 + ch + lane]; }
              let s8 = lanes8(sv);
              for (var r = 0u; r < RL; r++) {
                let ng = p.nBase + min(n0 + r * WG + lane, p.N - 1u);
                if (memberOf(ng, up) != g) { continue; }
                let a = chunkDot((slot * p.bRows + ng) * p.Rp, ch, s8, up);
                if (up) { us[r] += a; } else { vs[r] += a; }
              }
            }
            if ((e & DORA_FLAG) != 0u) {
              for (var r = 0u; r < RL; r++) {
                let ng = p.nBase + min(n0 + r * WG + lane, p.N - 1u);
                if (memberOf(ng, up) != g) { continue; }
                let f = doraFactor4(slot, ng, c, up);
                if (up) { us[r] *= f; } else { vs[r] *= f; }
              }
            }
          }
        }
      }
    }
    for (var r = 0u; r < RL; r++) {
      let n = n0 + r * WG + lane;
      if (n < p.N) { finish(row, n, vs[r], us[r]); }
    }
  }
}
