// Weights on the GPU in their file dtype, as u32 words. Matrices are row-major [rows, colsPadded] with each row
// padded with zeros to a multiple of 8 elements (so kernels read whole 16- or 32-byte chunks without masks), and
// split by rows into parts when one binding would exceed the device's maxStorageBufferBindingSize.

import type { DType } from '../io/dtype.js';
import { DTYPE_BYTES } from '../io/dtype.js';
import type { Gpu } from './device.js';

export const pad8 = (n: number): number => Math.ceil(n / 8) * 8;

/** WGSL `override WDTYPE` value for a dtype. */
export const WDTYPE: Record<DType, number> = { F32: 0, F16: 1, BF16: 2 };

export interface MatrixPart {
  buffer: GPUBuffer;
  rowStart: number;
  rows: number;
}

export interface GpuMatrix {
  label: string;
  dtype: DType;
  rows: number; // output features (N)
  cols: number; // input features (K)
  colsPadded: number; // row stride in elements, pad8(cols)
  parts: MatrixPart[];
}

export interface GpuVector {
  label: string;
  dtype: DType;
  length: number;
  buffer: GPUBuffer;
}

/** Uploads raw little-endian `bytes` of a [rows, cols] matrix. `maxPartBytes` overrides the binding limit (tests). */
export function uploadMatrix(
  gpu: Gpu,
  label: string,
  bytes: Uint8Array,
  dtype: DType,
  rows: number,
  cols: number,
  maxPartBytes = gpu.info.maxStorageBufferBindingSize,
): GpuMatrix {
  const eb = DTYPE_BYTES[dtype];
  const colsPadded = pad8(cols);
  const rowBytes = colsPadded * eb;
  const rowsPerPart = Math.max(1, Math.floor(Math.min(maxPartBytes, gpu.info.maxBufferSize) / rowBytes));
  const parts: MatrixPart[] = [];
  for (let r0 = 0; r0 < rows; r0 += rowsPerPart) {
    const n = Math.min(rowsPerPart, rows - r0);
    const buffer = gpu.device.createBuffer({
      label: parts.length ? `${label}#${parts.length}` : label,
      size: n * rowBytes,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      mappedAtCreation: true,
    });
    const dst = new Uint8Array(buffer.getMappedRange());
    if (colsPadded === cols) {
      dst.set(bytes.subarray(r0 * rowBytes, (r0 + n) * rowBytes));
    } else {
      for (let r = 0; r < n; r++) dst.set(bytes.subarray((r0 + r) * cols * eb, (r0 + r + 1) * cols * eb), r * rowBytes);
    }
    buffer.unmap();
    parts.push({ buffer, rowStart: r0, rows: n });
  }
  return { label, dtype, rows, cols, colsPadded, parts };
}

export function uploadVector(gpu: Gpu, label: string, bytes: Uint8Array, dtype: DType): GpuVector {
  return { label, dtype, length: bytes.byteLength / DTYPE_BYTES[dtype], buffer: gpu.upload(label, bytes) };
}

export function destroyMatrix(m: GpuMatrix): void {
  for (const p of m.parts) p.buffer.destroy();
}
