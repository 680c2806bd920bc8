// The safetensors header: an 8-byte little-endian length n, n bytes of UTF-8 JSON (padded with spaces), then
// the data section. The JSON maps each tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets in
// bytes, relative to the data section) plus an optional "__metadata__" string map. Only the header is read
// here; tensors are read later by byte range (checkpoint.ts).
//
// Validation follows the reference implementation (huggingface/safetensors): header at most 100 MB and inside
// the file, every entry well formed, elements x dtype size == end - begin, offsets inside the data section,
// no two tensors overlapping. Unlike the reference, gaps between tensors and bytes after the last one are
// accepted (they cannot be misread). A dtype the format defines but polylora does not compute with (I8, F64,
// ...) is not an error here: its byte length is still checked with its own element size, and the error comes
// only when the tensor is asked for (a stray integer buffer in an otherwise usable checkpoint must not block it).

import type { ByteSource } from './source.js';
import { PolyloraError, type ErrorDetails } from '../errors.js';

/**
 * Bits per element of every dtype the safetensors format defines, in the reference library's declaration
 * order: its writer sorts tensors by descending position in this list, then by name (see safetensors-write.ts).
 */
export const SAFETENSORS_DTYPE_BITS = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
} as const;

export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPE_BITS;

/** The reference implementation refuses larger headers; so do we (a corrupt length must not allocate GBs). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Key of the header's string map; never a tensor. */
export const METADATA_KEY = '__metadata__';

/** One tensor as the header describes it. */
export interface SafetensorsEntry {
  name: string;
  /** As written in the header; only F32/F16/BF16 can be read as numbers (see dtype.ts asDType). */
  dtype: SafetensorsDType;
  /** Row-major, outermost first. */
  shape: number[];
  /** Absolute byte offset in the file: 8 + header length + begin. */
  offset: number;
  /** In bytes: elements(shape) * bits(dtype) / 8 == end - begin. */
  byteLength: number;
}

export interface SafetensorsFile {
  /** The ByteSource's name, for messages. */
  file: string;
  /** JSON header length in bytes, padding included. */
  headerLength: number;
  /** Absolute offset of the data section: 8 + headerLength. */
  dataStart: number;
  /** In header order. */
  tensors: ReadonlyMap<string, SafetensorsEntry>;
  /** The `__metadata__` map ({} when absent), in header order. */
  metadata: Readonly<Record<string, string>>;
}

export function isSafetensorsDType(s: string): s is SafetensorsDType {
  return Object.hasOwn(SAFETENSORS_DTYPE_BITS, s);
}

/** Number of elements of `shape`, or undefined when it is not a safe integer (a corrupt shape). */
export function elementCount(shape: readonly number[]): number | undefined {
  let n = 1;
  for (const d of shape) n *= d;
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Bytes `shape` takes in `dtype`, or undefined when they are not a whole, safe number (corrupt shape). */
export function tensorByteLength(dtype: SafetensorsDType, shape: readonly number[]): number | undefined {
  const n = elementCount(shape);
  if (n === undefined) return undefined;
  const bits = n * SAFETENSORS_DTYPE_BITS[dtype];
  return Number.isSafeInteger(bits) && bits % 8 === 0 ? bits / 8 : undefined;
}

const TRUNCATED_HINT = 'the file is truncated (an interrupted download?) or not a safetensors file';
const CORRUPT_HINT = 'the header is corrupt; re-download or re-export the file';

/** Reads and validates the header of a safetensors file: two reads (8 bytes, then the header), no tensor data. */
export async function parseSafetensorsHeader(src: ByteSource): Promise<SafetensorsFile> {
  const file = src.name;
  if (src.size < 8) {
    throw invalid('file too short to hold the 8-byte header length', {
      file,
      field: 'header length',
      expected: 'at least 8 bytes',
      found: `${src.size} bytes`,
      hint: TRUNCATED_HINT,
    });
  }
  const prefix = await src.read(0, 8);
  const n64 = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    throw invalid('header length over the limit', {
      file,
      field: 'header length',
      expected: `at most ${MAX_HEADER_BYTES} bytes`,
      found: `${n64} bytes`,
      hint: 'this is not a safetensors file, or its first 8 bytes are corrupt',
    });
  }
  const headerLength = Number(n64);
  if (8 + headerLength > src.size) {
    throw invalid('header runs past the end of the file', {
      file,
      field: 'header length',
      expected: `at most ${src.size - 8} bytes (the file is ${src.size} bytes)`,
      found: `${headerLength} bytes`,
      hint: TRUNCATED_HINT,
    });
  }
  const json = parseJson(file, await src.read(8, headerLength));
  const dataStart = 8 + headerLength;
  const dataSize = src.size - dataStart;

  let metadata: Record<string, string> = {};
  const tensors = new Map<string, SafetensorsEntry>();
  for (const [key, value] of Object.entries(json)) {
    if (key === METADATA_KEY) metadata = parseMetadata(file, value);
    else tensors.set(key, parseEntry(file, key, value, dataStart, dataSize));
  }
  checkOverlaps(file, [...tensors.values()]);
  return { file, headerLength, dataStart, tensors, metadata };
}

function parseJson(file: string, bytes: Uint8Array): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (e) {
    throw invalid('header is not valid UTF-8', {
      file,
      field: 'header',
      expected: 'UTF-8 JSON text',
      found: 'invalid byte sequences',
      cause: e,
      hint: CORRUPT_HINT,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw invalid('header is not valid JSON', {
      file,
      field: 'header',
      expected: 'a JSON object',
      found: `${(e as Error).message}; header starts ${JSON.stringify(text.slice(0, 40))}`,
      cause: e,
      hint: 'this is not a safetensors file, or its header is corrupt',
    });
  }
  if (!isPlainObject(json)) {
    throw invalid('header is not a JSON object', {
      file,
      field: 'header',
      expected: 'a JSON object {"<tensor>": {dtype, shape, data_offsets}, ...}',
      found: describe(json),
      hint: CORRUPT_HINT,
    });
  }
  return json;
}

function parseMetadata(file: string, value: unknown): Record<string, string> {
  if (!isPlainObject(value)) {
    throw invalid('metadata is not a string map', {
      file,
      field: METADATA_KEY,
      expected: 'an object of string values',
      found: describe(value),
      hint: CORRUPT_HINT,
    });
  }
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') {
      throw invalid('metadata value is not a string', {
        file,
        field: `${METADATA_KEY}.${k}`,
        expected: 'a string',
        found: describe(v),
        hint: 'safetensors metadata maps strings to strings; the writer must stringify other values',
      });
    }
  }
  // Object.fromEntries defines own properties, so a key such as "__proto__" stays an ordinary key.
  return Object.fromEntries(Object.entries(value as Record<string, string>));
}

function parseEntry(file: string, tensor: string, value: unknown, dataStart: number, dataSize: number): SafetensorsEntry {
  const fail = (what: string, field: string, expected: string, found: string, hint = CORRUPT_HINT): PolyloraError =>
    invalid(what, { file, tensor, field, expected, found, hint });
  if (!isPlainObject(value)) {
    throw fail('tensor entry is not an object', 'header', '{dtype, shape, data_offsets}', describe(value));
  }
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string') {
    throw fail('dtype missing or not a string', 'dtype', 'a dtype name such as "F32"', describe(dtype));
  }
  if (!isSafetensorsDType(dtype)) {
    const known = `one of ${Object.keys(SAFETENSORS_DTYPE_BITS).join(', ')}`;
    throw fail('not a safetensors dtype', 'dtype', known, JSON.stringify(dtype),
      'the file was written by a tool using a dtype the safetensors format does not define');
  }
  if (!Array.isArray(shape) || !shape.every(isIndex)) {
    throw fail('shape missing or malformed', 'shape', 'an array of non-negative integers', describe(shape));
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
    throw fail('data_offsets missing or malformed', 'data_offsets', '[begin, end] of non-negative integers', describe(offsets));
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw fail('data_offsets reversed', 'data_offsets', 'begin <= end', `[${begin}, ${end}]`);
  if (end > dataSize) {
    throw fail('tensor data runs past the end of the file', 'data_offsets',
      `end <= ${dataSize} (the data section's size)`, `[${begin}, ${end}]`, TRUNCATED_HINT);
  }
  const byteLength = tensorByteLength(dtype, shape);
  if (byteLength !== end - begin) {
    const bits = SAFETENSORS_DTYPE_BITS[dtype];
    const expected = byteLength === undefined
      ? `a whole number of bytes (shape [${shape.join(', ')}] of ${bits}-bit ${dtype})`
      : `${byteLength} bytes (${elementCount(shape)} elements of ${dtype} at ${bits / 8} bytes, shape [${shape.join(', ')}])`;
    const found = `${end - begin} bytes ([${begin}, ${end}])`;
    throw fail('dtype and shape disagree with the byte length', 'data_offsets', expected, found);
  }
  return { name: tensor, dtype, shape, offset: dataStart + begin, byteLength };
}

/** Non-empty tensors must occupy disjoint byte ranges (empty ones may sit anywhere). */
function checkOverlaps(file: string, entries: SafetensorsEntry[]): void {
  const sorted = entries.filter((e) => e.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.offset < prev.offset + prev.byteLength) {
      throw invalid('tensor data overlaps another tensor', {
        file,
        tensor: cur.name,
        field: 'data_offsets',
        expected: `begin >= ${prev.offset + prev.byteLength} (absolute), the end of "${prev.name}"`,
        found: `begin ${cur.offset} (absolute), inside "${prev.name}" [${prev.offset}, ${prev.offset + prev.byteLength})`,
        hint: CORRUPT_HINT,
      });
    }
  }
}

function invalid(what: string, d: ErrorDetails): PolyloraError {
  return new PolyloraError('SAFETENSORS_INVALID', what, d);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isIndex(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** A short description of a JSON value for messages. */
function describe(v: unknown): string {
  if (v === undefined) return 'nothing (missing)';
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array ${truncate(JSON.stringify(v))}`;
  if (typeof v === 'object') return `an object ${truncate(JSON.stringify(v))}`;
  return `${typeof v} ${truncate(JSON.stringify(v))}`;
}

function truncate(s: string): string {
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
