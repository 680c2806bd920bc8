// Shared harness for the kernel tests (test/kernels/*.test.ts), usable in both test projects (no node:* imports):
// a seeded PRNG and random tensors, rounding to a weight dtype, padded row layouts, a comparison that prints the
// first mismatches, the sampler's PCG hash, and a per-file GPU harness that uploads buffers, runs ops in one
// compute pass inside a validation error scope, reads buffers back, and destroys what a test created after it.
//
// Tolerances are formulas in units of ε = 2^-24 (f32 unit roundoff): the reference ops accumulate in f64 and round
// once, so a GPU kernel differs from them by its own f32 rounding errors, bounded by (number of roundings on the
// path) · ε · (sum of the magnitudes they touch).

import { afterEach, expect } from 'vitest';
import type { Gpu } from '../../src/gpu/device.js';
import type { GpuMatrix, GpuVector } from '../../src/gpu/tensors.js';
import { destroyMatrix, uploadMatrix, uploadVector } from '../../src/gpu/tensors.js';
import type { DType } from '../../src/io/dtype.js';
import { fromFloat32, toFloat32 } from '../../src/io/dtype.js';
import type { Op, StepDims } from '../../src/kernels/op.js';
import { useGpu } from './gpu.js';

/** f32 unit roundoff: |fl(a ∘ b) − a ∘ b| <= ε·|a ∘ b|. */
export const EPS = 2 ** -24;

/** An f32-exact value no kernel computes, written into outputs a kernel must leave untouched. */
export const SENTINEL = -1234.5;

// ---------------------------------------------------------------------------------------------------------------
// Deterministic random data.

export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Fisher–Yates shuffle, in place; returns `a`. */
  shuffle<T>(a: T[]): T[];
}

/** mulberry32, a small PRNG with a 32-bit state: the same seed gives the same data in Node and in the browser. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const r: Rng = {
    next,
    uniform: (lo, hi) => lo + (hi - lo) * next(),
    int: (n) => Math.floor(next() * n),
    shuffle(arr) {
      for (let i = arr.length - 1; i > 0; i--) {
        const j = r.int(i + 1);
        [arr[i], arr[j]] = [arr[j]!, arr[i]!];
      }
      return arr;
    },
  };
  return r;
}

/** n values uniform in [-scale, scale), rounded to f32. */
export function randomF32(r: Rng, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r.uniform(-scale, scale);
  return out;
}

/**
 * `x` rounded to `dtype` (round to nearest even): the raw little-endian bytes to upload and the values they hold,
 * widened back to f32 exactly, for the reference. With these, a kernel and the reference see the same weights and
 * differ only in accumulation order.
 */
export function roundToDType(x: Float32Array, dtype: DType): { bytes: Uint8Array; values: Float32Array } {
  const bytes = fromFloat32(x, dtype);
  return { bytes, values: toFloat32(bytes, dtype) };
}

/** [rows, cols] -> [rows, ld] with columns >= cols set to `fill`. */
export function padRows(x: Float32Array, rows: number, cols: number, ld: number, fill = 0): Float32Array {
  const out = new Float32Array(rows * ld).fill(fill);
  for (let r = 0; r < rows; r++) out.set(x.subarray(r * cols, (r + 1) * cols), r * ld);
  return out;
}

/** [rows, ld] -> [rows, cols]: the first cols columns of each row. */
export function unpadRows(x: Float32Array, rows: number, cols: number, ld: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(x.subarray(r * ld, r * ld + cols), r * cols);
  return out;
}

/** Formats a flat index of a row-major [rows, cols] array as `name[r, c]`. */
export function at2(name: string, cols: number): (i: number) => string {
  return (i) => `${name}[${Math.floor(i / cols)}, ${i % cols}]`;
}

// ---------------------------------------------------------------------------------------------------------------
// Comparisons.

const SHOW = 8;

/**
 * Passes when |got[i] − want[i]| <= tol(i) for every i (NaN never passes); otherwise fails with the number of
 * mismatches and the first ones: index, got, want, |error| and tolerance.
 */
export function expectClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: (i: number) => number,
  what: string,
  where: (i: number) => string = (i) => `[${i}]`,
): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  const lines: string[] = [];
  let count = 0;
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    const t = tol(i);
    if (err <= t || got[i] === want[i]) continue;
    count++;
    if (lines.length < SHOW) {
      lines.push(`${where(i)}: got ${got[i]} want ${want[i]} |err| ${err.toExponential(3)} tol ${t.toExponential(3)}`);
    }
  }
  const msg = `${what}: ${count} of ${got.length} values out of tolerance${count ? `; first ${lines.length}:\n  ${lines.join('\n  ')}` : ''}`;
  expect(count, msg).toBe(0);
}

/** Passes when got[i] === want[i] for every i (Object.is for floats, so NaN equals NaN and -0 differs from 0). */
export function expectExact(got: ArrayLike<number>, want: ArrayLike<number>, what: string, where: (i: number) => string = (i) => `[${i}]`): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  const lines: string[] = [];
  let count = 0;
  for (let i = 0; i < got.length; i++) {
    if (Object.is(got[i], want[i])) continue;
    count++;
    if (lines.length < SHOW) lines.push(`${where(i)}: got ${got[i]} want ${want[i]}`);
  }
  const msg = `${what}: ${count} of ${got.length} values differ${count ? `; first ${lines.length}:\n  ${lines.join('\n  ')}` : ''}`;
  expect(count, msg).toBe(0);
}

// ---------------------------------------------------------------------------------------------------------------
// The sampler's random numbers (shaders/sample.wgsl), bit for bit.

/** PCG-RXS-M-XS 32-bit hash: `pcg` in shaders/sample.wgsl, with u32 wrap-around. */
export function pcg(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** The sampler's uniform for (seed, counter): 24 random bits / 2^24, in [0, 1), exact in f32. */
export function sampleUniform(seed: number, counter: number): number {
  return (pcg((seed ^ pcg(counter)) >>> 0) >>> 8) / 16777216;
}

// ---------------------------------------------------------------------------------------------------------------
// GPU harness.

export interface KernelHarness {
  gpu(): Gpu;
  /** A storage buffer (COPY_SRC | COPY_DST too) holding `data`. */
  storage(label: string, data: ArrayBufferView): GPUBuffer;
  /** The uniform {tokens, seqs} buffer of a step (16 bytes, UNIFORM | COPY_DST). */
  dims(d: StepDims): GPUBuffer;
  /** A 16-byte storage buffer for unused bindings. */
  dummy(): GPUBuffer;
  /** uploadMatrix (raw `bytes` of `dtype`, rows padded to 8 elements, split into parts of <= maxPartBytes). */
  matrix(label: string, bytes: Uint8Array, dtype: DType, rows: number, cols: number, maxPartBytes?: number): GpuMatrix;
  /** uploadVector (raw `bytes` of `dtype`). */
  vector(label: string, bytes: Uint8Array, dtype: DType): GpuVector;
  /** Encodes `ops` in order into one compute pass, submits, and fails on any validation error. */
  run(ops: Op | Op[], d: StepDims): Promise<void>;
  readF32(buf: GPUBuffer, count?: number): Promise<Float32Array>;
  readU32(buf: GPUBuffer, count?: number): Promise<Uint32Array>;
}

/** Call at the top level of a test file: one device for the file; buffers made through it die after each test. */
export function useKernelHarness(): KernelHarness {
  const gpu = useGpu();
  const buffers: GPUBuffer[] = [];
  const matrices: GpuMatrix[] = [];
  afterEach(() => {
    for (const b of buffers.splice(0)) b.destroy();
    for (const m of matrices.splice(0)) destroyMatrix(m);
  });
  const keep = (b: GPUBuffer): GPUBuffer => {
    buffers.push(b);
    return b;
  };
  const read = async (buf: GPUBuffer, bytes: number): Promise<ArrayBuffer> => gpu().read(buf, 0, bytes);
  return {
    gpu,
    storage: (label, data) => keep(gpu().upload(label, data)),
    dims: (d) => keep(gpu().upload('dims', new Uint32Array([d.tokens, d.seqs, 0, 0]), GPUBufferUsage.UNIFORM)),
    dummy: () => keep(gpu().upload('dummy', new Uint32Array(4))),
    matrix(label, bytes, dtype, rows, cols, maxPartBytes) {
      const m = uploadMatrix(gpu(), label, bytes, dtype, rows, cols, maxPartBytes);
      matrices.push(m);
      return m;
    },
    vector(label, bytes, dtype) {
      const v = uploadVector(gpu(), label, bytes, dtype);
      keep(v.buffer);
      return v;
    },
    async run(ops, d) {
      const g = gpu();
      g.device.pushErrorScope('validation');
      const enc = g.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      for (const op of Array.isArray(ops) ? ops : [ops]) op.encode(pass, d);
      pass.end();
      g.queue.submit([enc.finish()]);
      await g.queue.onSubmittedWorkDone();
      const err = await g.device.popErrorScope();
      expect(err?.message ?? null, 'WebGPU validation error').toBeNull();
    },
    readF32: async (buf, count = buf.size / 4) => new Float32Array(await read(buf, count * 4)),
    readU32: async (buf, count = buf.size / 4) => new Uint32Array(await read(buf, count * 4)),
  };
}
