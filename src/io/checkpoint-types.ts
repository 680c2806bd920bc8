// The shape of a loaded checkpoint (one safetensors file or a sharded set), as every layer above io/ sees it.

import type { DType } from './dtype.js';

export interface TensorInfo {
  /** Name as the model asks for it (an alias resolves to its target's bytes). */
  name: string;
  dtype: DType;
  /** Row-major, outermost first, as in safetensors (a Linear weight is [out, in]). */
  shape: number[];
  /** The file (shard) holding the bytes, for messages. */
  file: string;
  /** Absolute byte offset of the first element in that file. */
  offset: number;
  /** In bytes; always elements(shape) * DTYPE_BYTES[dtype]. */
  byteLength: number;
}

export interface Checkpoint {
  /** Folder or file label for messages. */
  readonly label: string;
  /** Every tensor by name, aliases included. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** The `__metadata__` string map(s), merged across shards. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Raw little-endian bytes in the file's dtype; throws FILE/SAFETENSORS errors naming the tensor. */
  bytes(name: string): Promise<Uint8Array>;
  /** Values widened to f32. */
  float32(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}
