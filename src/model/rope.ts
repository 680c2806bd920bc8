// Rotary position embedding frequencies, shared by the GPU model and the reference: inverse frequencies with the
// configured scaling, and the (cos, sin) table the rope kernel reads. Computed like transformers does in f32
// (inv_freq in f32, angle = f32(pos · inv_freq)), with cos/sin evaluated in f64 and rounded once.

import type { ModelConfig } from './config-types.js';

/** inv_freq[i] = theta^(−2i/d) for i < d/2, then rope scaling (llama3 / linear), as f32 values. */
export function ropeInvFreq(c: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  const d = c.headDim;
  const inv = new Float32Array(d / 2);
  for (let i = 0; i < d / 2; i++) inv[i] = 1 / c.ropeTheta ** ((2 * i) / d);
  const s = c.ropeScaling;
  if (s.type === 'linear') {
    for (let i = 0; i < inv.length; i++) inv[i] = inv[i]! / s.factor;
  } else if (s.type === 'llama3') {
    // transformers' _compute_llama3_parameters.
    const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    for (let i = 0; i < inv.length; i++) {
      const f = inv[i]!;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowWavelen) {
        inv[i] = f / s.factor;
      } else if (wavelen >= highWavelen) {
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = ((1 - smooth) * f) / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

/** Angle of frequency i at position pos, as transformers computes it (one f32 rounding). */
export function ropeAngle(pos: number, invFreq: number): number {
  return Math.fround(pos * invFreq);
}

/** f32 [maxPos, d/2, 2] of (cos, sin) for the rope kernel. */
export function ropeTable(c: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>, maxPos: number): Float32Array {
  const inv = ropeInvFreq(c);
  const half = inv.length;
  const out = new Float32Array(maxPos * half * 2);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const a = ropeAngle(p, inv[i]!);
      out[(p * half + i) * 2] = Math.cos(a);
      out[(p * half + i) * 2 + 1] = Math.sin(a);
    }
  }
  return out;
}
