// Element types polylora computes with, and exact conversions between them on the CPU.
// On the GPU weights keep their file dtype; shaders widen to f32 as they read (bf16 -> f32 is a 16-bit shift).

import { PolyloraError } from '../errors.js';

export type DType = 'F32' | 'F16' | 'BF16';

export const DTYPE_BYTES: Record<DType, number> = { F32: 4, F16: 2, BF16: 2 };

/** safetensors dtype names polylora can read; everything else is refused with a named error. */
export function asDType(name: string, where: { file: string; tensor: string }): DType {
  if (name === 'F32' || name === 'F16' || name === 'BF16') return name;
  throw new PolyloraError('DTYPE_UNSUPPORTED', 'unsupported dtype', {
    ...where,
    expected: 'F32, F16 or BF16',
    found: name,
    hint: 'quantized or integer tensors are not supported yet; use an unquantized (f32/f16/bf16) checkpoint',
  });
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16ToF32(h: number): number {
  u32[0] = h << 16;
  return f32[0]!;
}

/** Round to nearest even; NaN stays NaN. */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Round to nearest even, with subnormals, overflow to infinity. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

/** Widens raw little-endian tensor bytes to f32. */
export function toFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  if (dtype === 'F32') {
    if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice();
    return new Float32Array(bytes.slice().buffer);
  }
  const n = bytes.byteLength / 2;
  const h = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.slice().buffer);
  const out = new Float32Array(n);
  if (dtype === 'BF16') {
    const o = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) o[i] = h[i]! << 16;
  } else {
    for (let i = 0; i < n; i++) out[i] = f16ToF32(h[i]!);
  }
  return out;
}

/** Narrows f32 values to raw little-endian bytes of `dtype` (round to nearest even). */
export function fromFloat32(x: Float32Array, dtype: DType): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(x.slice().buffer);
  const out = new Uint16Array(x.length);
  const conv = dtype === 'BF16' ? f32ToBf16 : f32ToF16;
  for (let i = 0; i < x.length; i++) out[i] = conv(x[i]!);
  return new Uint8Array(out.buffer);
}
