// Rotary position embedding frequencies, shared by the GPU model and the reference: inverse frequencies with the
// configured scaling exactly as transformers computes them in f32 (modeling_rope_utils.py), and the (cos, sin)
// table the rope kernel reads: angle = f32(pos · inv_freq), cos/sin evaluated in f64 and rounded once.

import type { ModelConfig, RopeScaling } from './config-types.js';

/**
 * inv_freq [headDim / 2] in f32, as transformers' rope init functions return it:
 * - default: 1 / theta^(2i / d), the exponent computed in f32 as torch's `arange(0, d, 2).float() / d`;
 * - linear: default / factor (_compute_linear_scaling_rope_parameters);
 * - llama3: _compute_llama3_parameters — wavelengths 2π/inv_freq longer than original_max / low_freq_factor are
 *   divided by factor, shorter than original_max / high_freq_factor kept, and the band between interpolated
 *   with smooth = (original_max / wavelen - low) / (high - low): (1 - smooth) · f / factor + smooth · f.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScaling): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround((2 * i) / headDim);
    inv[i] = 1 / Math.fround(Math.pow(theta, exponent));
  }
  if (scaling.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / scaling.factor;
  } else if (scaling.type === 'llama3') {
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldLen } = scaling;
    const lowFreqWavelen = oldLen / lowFreqFactor;
    const highFreqWavelen = oldLen / highFreqFactor;
    for (let i = 0; i < half; i++) {
      const f = inv[i]!;
      const wavelen = Math.fround((2 * Math.PI) / f);
      const scaled = wavelen > lowFreqWavelen ? Math.fround(f / factor) : f;
      const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
      if (isMedium) {
        const smooth = Math.fround((oldLen / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor));
        // (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama, evaluated left to right in f32.
        inv[i] = Math.fround(Math.fround(Math.fround(1 - smooth) * scaled) / factor) + Math.fround(smooth * scaled);
      } else {
        inv[i] = scaled;
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
  const inv = ropeInvFreq(c.headDim, c.ropeTheta, c.ropeScaling);
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
