// Rotary position embeddings exactly as Hugging Face transformers computes them (modeling_rope_utils.py and
// LlamaRotaryEmbedding / apply_rotary_pos_emb): "rotate_half" layout (dimension i pairs with i + d/2), f32
// inverse frequencies, angle = f32(position · inv_freq[i]).

import type { RopeScaling } from '../model/config-types.js';

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

/** cos and sin [headDim / 2] of position `pos`: angle_i = f32(pos · inv_freq_i). */
export function ropeCosSin(invFreq: Float32Array, pos: number): { cos: Float32Array; sin: Float32Array } {
  const cos = new Float32Array(invFreq.length);
  const sin = new Float32Array(invFreq.length);
  for (let i = 0; i < invFreq.length; i++) {
    const angle = Math.fround(pos * invFreq[i]!);
    cos[i] = Math.cos(angle);
    sin[i] = Math.sin(angle);
  }
  return { cos, sin };
}

/**
 * Rotates, in place, each head of x [n, numHeads·headDim] for positions startPos + t:
 * for i < d/2: x'[i] = x[i]·cos_i − x[i+d/2]·sin_i and x'[i+d/2] = x[i+d/2]·cos_i + x[i]·sin_i
 * (HF's q·cos + rotate_half(q)·sin with cos/sin repeated over both halves).
 */
export function applyRope(x: Float32Array, n: number, numHeads: number, headDim: number, startPos: number, invFreq: Float32Array): void {
  const half = headDim / 2;
  for (let t = 0; t < n; t++) {
    const { cos, sin } = ropeCosSin(invFreq, startPos + t);
    for (let h = 0; h < numHeads; h++) {
      const o = (t * numHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const a = x[o + i]!;
        const b = x[o + i + half]!;
        x[o + i] = Math.fround(a * cos[i]!) - Math.fround(b * sin[i]!);
        x[o + i + half] = Math.fround(b * cos[i]!) + Math.fround(a * sin[i]!);
      }
    }
  }
}
