// Rotary position embeddings exactly as Hugging Face transformers computes them (modeling_rope_utils.py and
// LlamaRotaryEmbedding / apply_rotary_pos_emb): "rotate_half" layout (dimension i pairs with i + d/2), f32
// inverse frequencies, angle = f32(position · inv_freq[i]).

// The inverse frequencies are configuration math shared with the GPU model (src/model/rope.ts); the golden
// tests pin them to transformers through the independent reference data.
import { ropeInvFreq } from '../model/rope.js';

export { ropeInvFreq };

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
