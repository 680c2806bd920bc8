// Writes safetensors files the way the reference implementation (huggingface/safetensors) does, so a file
// polylora writes is byte-identical to Python's `save_file` of the same tensors and metadata: tensors sorted by
// descending dtype rank (keeps every tensor aligned to its element size) then by name, compact JSON with
// `__metadata__` first, header padded with spaces to a multiple of 8 bytes.

import { PolyloraError } from '../errors.js';
import { fromFloat32, toFloat32, type DType } from './dtype.js';
import { isComputeDType, type SafetensorsCheckpoint } from './checkpoint.js';
import {
  METADATA_KEY,
  SAFETENSORS_DTYPE_BITS,
  isSafetensorsDType,
  tensorByteLength,
  type SafetensorsDType,
} from './safetensors.js';

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDType;
  /** Row-major, outermost first. */
  shape: number[];
  /** Little-endian element bytes; byteLength must equal elements(shape) * bits(dtype) / 8. */
  data: Uint8Array;
}

/** Where a header puts each tensor: what a streaming writer needs (write `prefix`, then the data in `order`). */
export interface SafetensorsLayout {
  /** 8-byte little-endian header length + JSON header + space padding; length is a multiple of 8. */
  prefix: Uint8Array;
  /** Indices into the input, in the order their bytes follow the prefix. */
  order: number[];
  /** Total bytes of the data section. */
  dataSize: number;
}

const DTYPE_RANK: Record<string, number> = Object.fromEntries(Object.keys(SAFETENSORS_DTYPE_BITS).map((d, i) => [d, i]));

/**
 * Lays out a header for tensors of the given names, dtypes, shapes and byte lengths. Throws INVALID_ARGUMENT
 * (naming the tensor) for a duplicate or reserved name, an unknown dtype, a bad shape, or a length mismatch.
 */
export function layoutSafetensors(
  tensors: readonly { name: string; dtype: SafetensorsDType; shape: readonly number[]; byteLength: number }[],
  metadata: Readonly<Record<string, string>> = {},
): SafetensorsLayout {
  const seen = new Set<string>();
  for (const t of tensors) {
    const bad = (what: string, expected: string, found: string): PolyloraError =>
      new PolyloraError('INVALID_ARGUMENT', what, {
        tensor: t.name,
        expected,
        found,
        hint: 'fix the tensor list passed to the writer',
      });
    if (t.name === METADATA_KEY) throw bad('reserved tensor name', 'any name but __metadata__', t.name);
    if (seen.has(t.name)) throw bad('duplicate tensor name', 'each name once', 'a second tensor of this name');
    seen.add(t.name);
    if (!isSafetensorsDType(t.dtype)) {
      throw bad('not a safetensors dtype', Object.keys(SAFETENSORS_DTYPE_BITS).join(', '), String(t.dtype));
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad('bad shape', 'non-negative integers', `[${t.shape.join(', ')}]`);
    }
    const expected = tensorByteLength(t.dtype, t.shape);
    if (expected !== t.byteLength) {
      const want = `${expected ?? 'a whole number of'} bytes ([${t.shape.join(', ')}] ${t.dtype})`;
      throw bad('data length does not match dtype and shape', want, `${t.byteLength} bytes`);
    }
  }
  const order = tensors.map((_, i) => i);
  order.sort((i, j) => {
    const a = tensors[i]!;
    const b = tensors[j]!;
    return DTYPE_RANK[b.dtype]! - DTYPE_RANK[a.dtype]! || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  });
  // Built by hand rather than JSON.stringify(object): JS objects move integer-like keys ("0", "1") to the front.
  const parts: string[] = [];
  const meta = Object.entries(metadata);
  if (meta.length) {
    const map = meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',');
    parts.push(`${JSON.stringify(METADATA_KEY)}:{${map}}`);
  }
  let offset = 0;
  for (const i of order) {
    const t = tensors[i]!;
    const offsets = `[${offset},${offset + t.byteLength}]`;
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":${offsets}}`);
    offset += t.byteLength;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const headerLength = json.byteLength + ((8 - (json.byteLength % 8)) % 8);
  const prefix = new Uint8Array(8 + headerLength).fill(0x20, 8 + json.byteLength);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerLength), true);
  prefix.set(json, 8);
  return { prefix, order, dataSize: offset };
}

/** A whole safetensors file in memory (for files that fit in one ArrayBuffer; stream bigger ones via layoutSafetensors). */
export function writeSafetensors(tensors: readonly TensorToWrite[], metadata?: Readonly<Record<string, string>>): Uint8Array {
  const { prefix, order, dataSize } = layoutSafetensors(
    tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.data.byteLength })),
    metadata,
  );
  const out = new Uint8Array(prefix.byteLength + dataSize);
  out.set(prefix, 0);
  let at = prefix.byteLength;
  for (const i of order) {
    const data = tensors[i]!.data;
    out.set(data, at);
    at += data.byteLength;
  }
  return out;
}

/**
 * The checkpoint as one safetensors file with every F32/F16/BF16 tensor converted to `dtype` (round to nearest
 * even, dtype.ts), tensors of other dtypes copied unchanged, aliases left out of the tensors and kept in the
 * metadata (so they still resolve), metadata kept (shards' maps merged).
 */
export async function convertCheckpoint(ckpt: SafetensorsCheckpoint, dtype: DType): Promise<Uint8Array> {
  const out: TensorToWrite[] = [];
  for (const s of ckpt.stored.values()) {
    const raw = await ckpt.rawBytes(s.name);
    if (!isComputeDType(s.dtype)) {
      out.push({ name: s.name, dtype: s.dtype, shape: s.shape, data: raw });
    } else {
      const data = s.dtype === dtype ? raw : fromFloat32(toFloat32(raw, s.dtype), dtype);
      out.push({ name: s.name, dtype, shape: s.shape, data });
    }
  }
  return writeSafetensors(out, ckpt.metadata);
}
