// Token sampling on the GPU, one workgroup per sequence; only the chosen ids (and their logprobs) are read back.
//
// Contract (src/reference/sampling.ts implements the same, and tests compare them):
//   l_i = logits[s, i] for i < V.
//   temperature <= 0: token = argmax_i l_i (lowest index on ties).
//   otherwise, with l_i /= temperature and e_i = exp(l_i − max l):
//     keep_i  = l_i >= (topK-th largest l)              if 0 < topK < V   (ties at the boundary kept)
//     keep_i &= e_i >= τ_p, τ_p = the largest τ with Σ_{keep_j, e_j >= τ} e_j >= topP · Σ_{keep_j} e_j   if topP < 1
//     keep_i &= e_i >= minP                              (min-p relative to the most likely token)
//     u = uniform(seed, counter) in [0, 1); token = the first i, in index order, at which the running sum of
//     kept e_i exceeds u · Σ kept e_i.
//   logprob[s] = log softmax(raw logits)[token]: the model's own log-probability, before penalties, temperature
//   and truncation; with topN > 0 also the topN most likely tokens (raw; ties: lower index first) and logprobs.
//   A scoring row (score != NONE, for prompt logprobs) takes token = score instead of choosing one.
// Logit biases and penalties change l before everything above (vLLM's order), for the tokens listed in
// pen[penStart, +penLen) as (id, count | inPrompt << 31 | biasOnly << 30, bias (f32 bits), 0), one entry per token:
// first l += bias, then, unless biasOnly, repetition (l > 0 ? l / rep : l · rep, for tokens of the prompt or output)
// and l -= frequency · count + presence · (count > 0) (count: occurrences in the output). They are applied to the
// logits in place (this kernel runs last on them).
// Thresholds are found exactly over the bits of order-preserving float keys, 4 bits per pass (8 passes each).
// Dispatch (S).

override WG: u32 = 256u; // threads per row (a power of two)

struct Params { V: u32, ld: u32 } // vocabulary size, row stride of logits (elements)
struct SeqSampling {
  temperature: f32,
  topK: u32, // 0 = off
  topP: f32, // 1 = off
  minP: f32, // 0 = off
  seed: u32,
  counter: u32, // tokens generated so far by this sequence: the same seed gives the same tokens in any batch
  topN: u32, // top logprobs to report (<= MAX_TOPN)
  penLen: u32, // penalty entries of this row
  presence: f32,
  frequency: f32,
  repetition: f32, // 1 = off
  penStart: u32, // first penalty entry
  score: u32, // NONE: sample; else this token is the row's token (prompt logprobs: the next prompt token)
  _pad1: u32,
  _pad2: u32,
  _pad3: u32,
}

const MAX_TOPN: u32 = 20u;
const IN_PROMPT: u32 = 0x80000000u;
const BIAS_ONLY: u32 = 0x40000000u;
const COUNT_MASK: u32 = 0x3fffffffu;

@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<storage, read> sp: array<SeqSampling>;
@group(0) @binding(4) var<storage, read_write> outTokens: array<u32>;
@group(0) @binding(5) var<storage, read_write> outLogprobs: array<f32>;
@group(0) @binding(6) var<storage, read> pen: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read_write> topIds: array<u32>; // [S, MAX_TOPN]
@group(0) @binding(8) var<storage, read_write> topLps: array<f32>; // [S, MAX_TOPN]

var<workgroup> redF: array<f32, WG>;
var<workgroup> redU: array<u32, WG>;
var<workgroup> digitPart: array<f32, 16u * WG>; // radixSelect: per digit, per thread
var<workgroup> digitSum: array<f32, 16>;
var<workgroup> params: SeqSampling;
var<workgroup> found: u32;

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// Float -> u32 key with the same order (negative floats flipped).
fn key(v: f32) -> u32 {
  var b = bitcast<u32>(v);
  if (b == 0x80000000u) { b = 0u; } // -0 and +0 are equal
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn unkey(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

fn sumAll(v: f32, tid: u32) -> f32 {
  redF[tid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) { redF[tid] += redF[tid + s]; }
    workgroupBarrier();
  }
  let r = redF[0];
  workgroupBarrier();
  return r;
}
fn maxAll(v: f32, tid: u32) -> f32 {
  redF[tid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) { redF[tid] = max(redF[tid], redF[tid + s]); }
    workgroupBarrier();
  }
  let r = redF[0];
  workgroupBarrier();
  return r;
}
fn minAllU(v: u32, tid: u32) -> u32 {
  redU[tid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) { redU[tid] = min(redU[tid], redU[tid + s]); }
    workgroupBarrier();
  }
  let r = redU[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let s = wg.x;
  let row = s * p.ld;
  if (tid == 0u) { params = sp[s]; }
  let sp_ = workgroupUniformLoad(&params);
  let greedy = sp_.temperature <= 0.0;
  let invT = select(1.0 / sp_.temperature, 1.0, greedy);

  // 1. Raw log-softmax normalizer, and the raw top-N.
  let rawMax = maxAll(localMax(row, tid), tid);
  let lse = rawMax + log(sumAll(sumExp(row, rawMax, tid), tid));
  var prevV = 0.0;
  var prevI = 0u;
  for (var k = 0u; k < sp_.topN; k++) {
    // The largest (value, lower index first) strictly after (prevV, prevI) in that order.
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var i = tid; i < p.V; i += WG) {
      let v = logits[row + i];
      let after = k == 0u || v < prevV || (v == prevV && i > prevI);
      if (after && (v > bv || bi == 0xffffffffu)) { bv = v; bi = i; }
    }
    let m = maxAll(select(-3.4e38, bv, bi != 0xffffffffu), tid);
    let idx = minAllU(select(0xffffffffu, bi, bi != 0xffffffffu && bv == m), tid);
    if (tid == 0u) {
      topIds[s * MAX_TOPN + k] = idx;
      topLps[s * MAX_TOPN + k] = m - lse;
    }
    prevV = m;
    prevI = idx;
  }

  // 2. Biases and penalties, in place.
  for (var j = tid; j < sp_.penLen; j += WG) {
    let e = pen[sp_.penStart + j];
    logits[row + e.x] = penalize(logits[row + e.x], e, sp_);
  }
  storageBarrier();
  workgroupBarrier();

  // 3. The token.
  var tok: u32;
  if (sp_.score != 0xffffffffu) {
    tok = sp_.score;
  } else if (greedy) {
    // Each thread keeps the first maximum of its elements (from its first element, so a row of -inf still
    // yields an index); a thread with no element holds logit 0 with index 'none' and loses every tie.
    var bestV = logits[row];
    var bestI = 0xffffffffu;
    if (tid < p.V) { bestV = logits[row + tid]; bestI = tid; }
    for (var i = tid + WG; i < p.V; i += WG) {
      let v = logits[row + i];
      if (v > bestV) { bestV = v; bestI = i; }
    }
    let mx = maxAll(bestV, tid);
    tok = minAllU(select(0xffffffffu, bestI, bestV == mx), tid);
  } else {
    tok = sampleRow(row, invT, maxAll(localMax(row, tid), tid) * invT, tid, sp_);
  }
  if (tid == 0u) {
    outTokens[s] = tok;
    var raw = logits[row + tok];
    for (var j = 0u; j < sp_.penLen; j++) {
      let e = pen[sp_.penStart + j];
      if (e.x == tok) { raw = unpenalize(raw, e, sp_); }
    }
    outLogprobs[s] = raw - lse;
  }
}

// Largest logit among this thread's elements.
fn localMax(row: u32, tid: u32) -> f32 {
  var m = -3.4e38;
  for (var i = tid; i < p.V; i += WG) { m = max(m, logits[row + i]); }
  return m;
}

fn penalize(l: f32, e: vec4<u32>, q: SeqSampling) -> f32 {
  var v = l + bitcast<f32>(e.z);
  if ((e.y & BIAS_ONLY) != 0u) { return v; }
  let count = f32(e.y & COUNT_MASK);
  if (q.repetition != 1.0) { v = select(v * q.repetition, v / q.repetition, v > 0.0); }
  return v - q.frequency * count - select(0.0, q.presence, count > 0.0);
}

// The raw logit back from a biased and penalized one (for the sampled token's logprob).
fn unpenalize(v: f32, e: vec4<u32>, q: SeqSampling) -> f32 {
  var w = v;
  if ((e.y & BIAS_ONLY) == 0u) {
    let count = f32(e.y & COUNT_MASK);
    w += q.frequency * count + select(0.0, q.presence, count > 0.0);
    if (q.repetition != 1.0) { w = select(w / q.repetition, w * q.repetition, w > 0.0); }
  }
  return w - bitcast<f32>(e.z);
}

// Temperature, top-k, top-p, min-p and the seeded inverse CDF (the contract above); mx = max scaled logit.
fn sampleRow(row: u32, invT: f32, mx: f32, tid: u32, sp_: SeqSampling) -> u32 {
  // Top-k: the key of the k-th largest scaled logit.
  var kKey = 0u;
  if (sp_.topK > 0u && sp_.topK < p.V) { kKey = radixSelect(row, invT, mx, 0u, false, f32(sp_.topK), tid); }
  // Mass kept by top-k, then the top-p threshold over e (non-negative, so its bits order like its values).
  var mass = 0.0;
  for (var i = tid; i < p.V; i += WG) { mass += kept(row + i, invT, mx, kKey, 0u); }
  let total = sumAll(mass, tid);
  var pKey = 0u;
  if (sp_.topP < 1.0) { pKey = radixSelect(row, invT, mx, kKey, true, sp_.topP * total, tid); }
  pKey = max(pKey, bitcast<u32>(max(sp_.minP, 0.0)));

  // Inverse CDF in index order: each thread owns a contiguous chunk; exclusive scan of chunk sums.
  let chunk = (p.V + WG - 1u) / WG;
  let begin = min(tid * chunk, p.V);
  let end = min(begin + chunk, p.V);
  var part = 0.0;
  for (var i = begin; i < end; i++) { part += kept(row + i, invT, mx, kKey, pKey); }
  redF[tid] = part;
  workgroupBarrier();
  // Hillis-Steele inclusive scan.
  for (var off = 1u; off < WG; off <<= 1u) {
    var v = redF[tid];
    if (tid >= off) { v += redF[tid - off]; }
    workgroupBarrier();
    redF[tid] = v;
    workgroupBarrier();
  }
  let kTotal = redF[WG - 1u];
  let u = f32(pcg(sp_.seed ^ pcg(sp_.counter)) >> 8u) * (1.0 / 16777216.0);
  let goal = u * kTotal;
  if (tid == 0u) { found = 0xffffffffu; }
  workgroupBarrier();
  var run = redF[tid] - part; // exclusive prefix
  if (goal >= run && goal < run + part) {
    for (var i = begin; i < end; i++) {
      let e = kept(row + i, invT, mx, kKey, pKey);
      run += e;
      // Only one thread's chunk contains the goal, so a plain store is enough.
      if (e > 0.0 && goal < run) { found = i; break; }
    }
  }
  workgroupBarrier();
  var tok = found;
  if (tok == 0xffffffffu) {
    // Rounding put the goal past the last kept token: take the last kept one.
    tok = lastKept(row, invT, mx, kKey, pKey);
  }
  return tok;
}

// The largest u32 T such that the weight of the elements whose value v has bits(v) >= T is at least `need`:
// by count (mass = false; v = key(l·invT), each element weighs 1) or by mass (v = w = e_i kept by top-k). Built
// 4 bits at a time from the top (8 passes; each sums the weights of the elements that match the bits chosen so
// far, per next digit), which equals bisecting bit by bit.
fn radixSelect(row: u32, invT: f32, mx: f32, kKey: u32, mass: bool, need: f32, tid: u32) -> u32 {
  var prefix = 0u;
  var above = 0.0; // weight of the elements above the current prefix's range
  for (var level = 0u; level < 8u; level++) {
    let shift = 28u - 4u * level;
    let high = ~((2u << (shift + 3u)) - 1u); // the bits already chosen (none in the first pass)
    for (var d = 0u; d < 16u; d++) { digitPart[d * WG + tid] = 0.0; }
    for (var i = tid; i < p.V; i += WG) {
      var v: u32;
      var w = 1.0;
      if (mass) {
        w = kept(row + i, invT, mx, kKey, 0u);
        v = bitcast<u32>(w);
      } else {
        v = key(logits[row + i] * invT);
      }
      if ((v & high) == (prefix & high)) {
        let j = ((v >> shift) & 15u) * WG + tid;
        digitPart[j] += w;
      }
    }
    workgroupBarrier();
    if (tid < 16u) {
      var t = 0.0;
      for (var j = 0u; j < WG; j++) { t += digitPart[tid * WG + j]; }
      digitSum[tid] = t;
    }
    workgroupBarrier();
    var chosen = 0u;
    for (var d = 15i; d >= 0i; d--) {
      if (above + digitSum[u32(d)] >= need) {
        chosen = u32(d);
        break;
      }
      above += digitSum[u32(d)];
    }
    prefix |= chosen << shift;
    workgroupBarrier();
  }
  return prefix;
}

fn sumExp(row: u32, mx: f32, tid: u32) -> f32 {
  var z = 0.0;
  for (var i = tid; i < p.V; i += WG) { z += exp(logits[row + i] - mx); }
  return z;
}

// e_i if token i survives top-k (kKey) and has e_i >= bits-threshold eKey, else 0.
fn kept(i: u32, invT: f32, mx: f32, kKey: u32, eKey: u32) -> f32 {
  let l = logits[i] * invT;
  if (key(l) < kKey) { return 0.0; }
  let e = exp(l - mx);
  return select(0.0, e, bitcast<u32>(e) >= eKey);
}

fn lastKept(row: u32, invT: f32, mx: f32, kKey: u32, pKey: u32) -> u32 {
  for (var i = p.V; i > 0u; i--) {
    if (kept(row + i - 1u, invT, mx, kKey, pKey) > 0.0) { return i - 1u; }
  }
  return 0u;
}

