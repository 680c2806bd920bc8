// The LoRA shrink in the row-per-lane layout (entry point `shrink_rows`) for CPU devices with 8-lane subgroups, like
// matmul_rows.wgsl; composed after lora.wgsl (its bindings and helpers), only where the device has the subgroups
// feature (subgroupShuffle). Same contract as `shrink`. A workgroup computes 16 rows j of member g for token t,
// lane l rows j0 + l and j0 + 8 + l over the whole of Kp (with chunk-major A, the 16 rows' chunk is one contiguous
// run); x comes in blocks of 8 A chunks, each lane loading one or two x vec4s of the block that the others take by
// subgroupShuffle. No reduction. WG must be 8. Dispatch (ceil(R / 16), T, G); with TERMS (1, T, G) or (1, T, 1), where
// each workgroup does all G members of its token in turn.
//
// With NORM the dispatch first does the RMSNorm whose output the shrink reads (a dispatch costs about as much as a
// small kernel on these devices, and q/k/v and gate/up shrink a norm's output right after it):
//   inv = 1 / sqrt(Σ_{i<H} x[t, i]² / H + eps);  xn[t, i] = x[t, i] · inv · w[i]  (i < H; columns H..Kp written 0)
// written by workgroup (0, t, 0); every workgroup of token t computes the same inv (same loads, same order) and
// builds the xn chunks it reads from x and w itself, so none waits for another. x, xn: rows of stride Kp.
//
// With TERMS the workgroup also expands what it shrank (one workgroup per token and member, looping over the rank in
// blocks of 16), so the matmul's epilogue reads one finished term per output instead of B rows:
//   s[t, tOff + o(g) + n] = Σ_{j < rank_g} B_g[slot, n, j] · s[t, 8 + g·R + j]      n in member g's B rows
// where member g's B rows are [0, bRows) of B (g = 0) or B2 (g = 1) with split (gate/up, o(g) = g·bRows), else
// [0, n1), [n1, n2), [n2, bRows) of B (o(g) = 0). A member the token's adapter does not touch gets zeros. On lavapipe
// this streams each token's B rows in one run instead of 32-row pieces inside the matmul, where they cost 2-3x more.
const RROWS: u32 = 2u; // rows per lane

override NORM: bool = false;
override NWDTYPE: u32 = 0u; // the norm weight's dtype (WDTYPE is the slots')

struct NormParams {
  H: u32, // normalized width (elements)
  eps: f32,
}

@group(0) @binding(11) var<uniform> np: NormParams;
@group(0) @binding(13) var<storage, read> normW4: array<vec4<u32>>; // the norm weight's words, 4 at a time
@group(0) @binding(14) var<storage, read_write> xn4: array<vec4<f32>>;

override TERMS: bool = false;
override RP: u32 = 16u; // with TERMS: B's row stride in elements (LoraSlots.rankPadded, a multiple of 8)

struct TermParams {
  tOff: u32, // first term word in a row of s
  bRows: u32, // B rows per slot
  n1: u32, // first B row of member 1 (q/k/v), or bRows
  n2: u32, // first B row of member 2, or bRows
  split: u32, // 1: member 1's rows are B2's (gate/up)
}

@group(0) @binding(15) var<uniform> tp: TermParams;
@group(0) @binding(16) var<storage, read> B4: array<vec4<u32>>; // vec4 views of the group's B and B2
@group(0) @binding(17) var<storage, read> B24: array<vec4<u32>>;

// 8 ranks of B from its 8-element chunk number i (of B2 with up), widened.
fn bChunk(i: u32, up: bool) -> array<vec4<f32>, 2> {
  if (WDTYPE == 0u) {
    if (up) { return array<vec4<f32>, 2>(bitcast<vec4<f32>>(B24[2u * i]), bitcast<vec4<f32>>(B24[2u * i + 1u])); }
    return array<vec4<f32>, 2>(bitcast<vec4<f32>>(B4[2u * i]), bitcast<vec4<f32>>(B4[2u * i + 1u]));
  }
  if (up) { return widen8(B24[i], WDTYPE); }
  return widen8(B4[i], WDTYPE);
}

// Member g's B rows [lo, hi), whether they are B2's, and the s word of its first term (row lo's).
struct TermRows { lo: u32, hi: u32, up: bool, at: u32 }

fn termRows(g: u32, h: u32) -> TermRows {
  if (tp.split == 1u) { return TermRows(0u, tp.bRows, g == 1u, h + tp.tOff + g * tp.bRows); }
  let b = array<u32, 4>(0u, tp.n1, tp.n2, tp.bRows);
  return TermRows(b[g], b[g + 1u], false, h + tp.tOff + b[g]);
}

// Adds (first: stores) to member g's terms the part of ranks [j0, j0 + 16) whose s values lanes hold as v0 (rank
// j0 + lane) and v1 (j0 + 8 + lane). Lane l takes rows lo + l, lo + l + 8, ...
fn expandTerms(tr: TermRows, slot: u32, j0: u32, v0: f32, v1: f32, first: bool, lane: u32) {
  let sa = lanes8(v0);
  let sb = lanes8(v1);
  // With RP <= 16 the whole rank is one block (j0 = 0, stores): then the loop's chunk count, second chunk and store
  // are constants. B or B2 is picked outside the loop. In a standalone gate/up shrink on lavapipe both took the
  // expand from 0.26 to 0.17-0.19 ms of CPU per 16-token dispatch (a branch inside costs every lane's masked load).
  let jb = select(j0, 0u, RP <= 16u);
  let store = first || RP <= 16u;
  if (tr.up) { expandRun(true, tr, slot, jb, sa, sb, store, lane); } else { expandRun(false, tr, slot, jb, sa, sb, store, lane); }
}

fn expandRun(up: bool, tr: TermRows, slot: u32, j0: u32, sa: array<vec4<f32>, 2>, sb: array<vec4<f32>, 2>, store: bool, lane: u32) {
  let two = j0 + 8u < RP; // B's rows hold the block's second 8 ranks
  let base = slot * tp.bRows;
  for (var n = tr.lo + lane; n < tr.hi; n += 8u) {
    let c = (base + n) * (RP / 8u) + j0 / 8u;
    let b0 = bChunk(c, up);
    var v = dot(b0[0], sa[0]) + dot(b0[1], sa[1]);
    if (two) {
      let b1 = bChunk(c + 1u, up);
      v += dot(b1[0], sb[0]) + dot(b1[1], sb[1]);
    }
    let i = tr.at + n - tr.lo;
    if (store) { s[i] = v; } else { s[i] += v; }
  }
}

// Shrink input chunk c (elements 4c..4c + 3) of the row whose x chunks start at xb: x itself, or with NORM xn.
fn inChunk(xb: u32, c: u32, inv: f32) -> vec4<f32> {
  if (!NORM) { return x4[xb + c]; }
  var w: vec4<f32>;
  if (NWDTYPE == 0u) {
    w = bitcast<vec4<f32>>(normW4[c]);
  } else {
    w = widen8(normW4[c / 2u], NWDTYPE)[c % 2u];
  }
  // Past H the weight vector ends (its last vec4 may be partial): those columns of xn are 0.
  let i = 4u * c;
  w = select(vec4<f32>(0.0), w, vec4<u32>(i, i + 1u, i + 2u, i + 3u) < vec4<u32>(np.H));
  return x4[xb + c] * inv * w;
}

@compute @workgroup_size(WG)
fn shrink_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lane: u32) {
  let t = wg.y;
  let XV = p.Kp / 4u; // x vec4s per row
  let xb = t * XV;
  var inv = 1.0;
  if (NORM) {
    var ss = 0.0;
    for (var c = lane; c < XV; c += WG) {
      let v = x4[xb + c];
      ss += dot(v, v);
    }
    inv = inverseSqrt(laneSum(ss, lane) / f32(np.H) + np.eps);
    if (wg.x == 0u && wg.z == 0u) {
      for (var c = lane; c < XV; c += WG) { xn4[xb + c] = inChunk(xb, c, inv); }
    }
  }
  // Members wg.z, wg.z + nwg.z, ...: a dispatch with one workgroup per token (z = 1) does the norm once per token.
  for (var g = wg.z; g < p.G; g += nwg.z) { shrinkMember(t, g, wg.x, xb, inv, lane); }
}

// Rows [16·wx, 16·wx + 16) of member g for token t (with TERMS all of them, and their terms).
fn shrinkMember(t: u32, g: u32, wx: u32, xb: u32, inv: f32, lane: u32) {
  let j0 = wx * RROWS * 8u;
  let XV = p.Kp / 4u;
  let slot = slotOf[t];
  let rank = shrinkHeader(t, g, wx == 0u, lane);
  let h = t * p.ldS;
  if (TERMS && slot != NONE && rank == 0u) {
    // The adapter leaves this member alone: its terms are 0.
    let tr = termRows(g, h);
    for (var n = tr.lo + lane; n < tr.hi; n += 8u) { s[tr.at + n - tr.lo] = 0.0; }
  }
  if (j0 >= rank) { return; } // rank is 0 without an adapter
  let XPV = select(2u, 1u, WDTYPE == 0u); // x vec4s per A vec4
  let KV = p.Kp / (4u * XPV);
  let b = slot * p.G + g;
  let m = mult[t];
  // Without TERMS one block of 16 rows (wg.x); with TERMS every block of the rank, each expanded before the next.
  for (var jb = j0; jb < select(j0 + 1u, rank, TERMS); jb += RROWS * 8u) {
    let j1 = min(jb + lane, rank - 1u);
    let j2 = min(jb + 8u + lane, rank - 1u);
    // One loop over the A chunks with a small body: on lavapipe every load is a few dozen instructions per lane, and
    // bodies holding many of them (an unrolled block of 8 chunks) ran 2-3x slower per byte than this one.
    var acc0 = 0.0;
    var acc1 = 0.0;
    var x0 = vec4<f32>(0.0);
    var x1 = vec4<f32>(0.0);
    for (var c = 0u; c < KV; c++) {
      let i = c % 8u;
      if (i == 0u) {
        // The next block of 8 chunks: lane l loads its x vec4s (one per chunk for f32, two for 16-bit A).
        let q = c * XPV + lane;
        x0 = vec4<f32>(0.0);
        if (q < XV) { x0 = inChunk(xb, q, inv); }
        x1 = vec4<f32>(0.0);
        if (XPV == 2u && q + 8u < XV) { x1 = inChunk(xb, q + 8u, inv); }
      }
      var xa: vec4<f32>;
      var xc = vec4<f32>(0.0);
      if (XPV == 1u) {
        xa = subgroupShuffle(x0, i);
      } else {
        let src = select(x1, x0, i < 4u);
        xa = subgroupShuffle(src, (2u * i) % 8u);
        xc = subgroupShuffle(src, (2u * i + 1u) % 8u);
      }
      let d0 = aChunk(aAt(b, j1, c, KV));
      acc0 += dot(d0[0], xa) + dot(d0[1], xc);
      let d1 = aChunk(aAt(b, j2, c, KV));
      acc1 += dot(d1[0], xa) + dot(d1[1], xc);
    }
    // Rows past the rank repeat its last one: zero there (the expand multiplies B's zero padding by them).
    let v0 = select(0.0, m * acc0, jb + lane < rank);
    let v1 = select(0.0, m * acc1, jb + 8u + lane < rank);
    if (jb + lane < rank) { s[h + HEADER + g * p.R + jb + lane] = v0; }
    if (jb + 8u + lane < rank) { s[h + HEADER + g * p.R + jb + 8u + lane] = v1; }
    if (TERMS) { expandTerms(termRows(g, h), slot, jb, v0, v1, jb == 0u, lane); }
  }
}
