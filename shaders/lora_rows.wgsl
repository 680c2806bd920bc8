// The LoRA shrink in the row-per-lane layout (entry point `shrink_rows`) for CPU devices with 8-lane subgroups, like
// matmul_rows.wgsl; composed after lora.wgsl (its bindings and helpers), only where the device has the subgroups
// feature (subgroupShuffle). Same contract as `shrink`. A workgroup computes 16 rows j of member g for token t,
// lane l rows j0 + l and j0 + 8 + l over the whole of Kp (with chunk-major A, the 16 rows' chunk is one contiguous
// run); x comes in blocks of 8 A chunks, each lane loading one or two x vec4s of the block that the others take by
// subgroupShuffle. No reduction. WG must be 8. Dispatch (ceil(R / 16), T, G).
//
// With NORM the dispatch first does the RMSNorm whose output the shrink reads (a dispatch costs about as much as a
// small kernel on these devices, and q/k/v and gate/up shrink a norm's output right after it):
//   inv = 1 / sqrt(Σ_{i<H} x[t, i]² / H + eps);  xn[t, i] = x[t, i] · inv · w[i]  (i < H; columns H..Kp written 0)
// written by workgroup (0, t, 0); every workgroup of token t computes the same inv (same loads, same order) and
// builds the xn chunks it reads from x and w itself, so none waits for another. x, xn: rows of stride Kp.
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
fn shrink_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let t = wg.y;
  let g = wg.z;
  let j0 = wg.x * RROWS * 8u;
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
    if (wg.x == 0u && g == 0u) {
      for (var c = lane; c < XV; c += WG) { xn4[xb + c] = inChunk(xb, c, inv); }
    }
  }
  let slot = slotOf[t];
  let rank = shrinkHeader(t, g, wg.x == 0u, lane);
  let h = t * p.ldS;
  if (j0 >= rank) { return; } // rank is 0 without an adapter
  let XPV = select(2u, 1u, WDTYPE == 0u); // x vec4s per A vec4
  let KV = p.Kp / (4u * XPV);
  let b = slot * p.G + g;
  let j1 = min(j0 + lane, rank - 1u);
  let j2 = min(j0 + 8u + lane, rank - 1u);
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
  let acc = array<f32, RROWS>(acc0, acc1);
  let m = mult[t];
  for (var r = 0u; r < RROWS; r++) {
    let j = j0 + r * 8u + lane;
    if (j < rank) { s[h + HEADER + g * p.R + j] = m * acc[r]; }
  }
}
