// Where bytes come from. A model or adapter is a folder of files; a folder may be a local directory (Node),
// files picked in a browser, an HTTP base URL, the Hugging Face cache, or buffers in memory. Everything above
// io/ reads through these two interfaces and never knows which.

import { PolyloraError } from '../errors.js';

/** A random-access file: safetensors tensors are read by byte range, never the whole file at once. */
export interface ByteSource {
  /** Shown in error messages: a path, URL or `hub:org/name/file`. */
  readonly name: string;
  /** Total length in bytes. */
  readonly size: number;
  /** Reads exactly `length` bytes at `offset`; rejects if the range leaves the file. */
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** A folder of files (model or adapter). */
export interface FileTree {
  /** Shown in messages: a directory path, URL, or Hub id. */
  readonly label: string;
  has(file: string): Promise<boolean>;
  open(file: string): Promise<ByteSource>;
  text(file: string): Promise<string>;
}

/** A ByteSource over bytes already in memory. */
export function memorySource(name: string, bytes: Uint8Array): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    async read(offset, length) {
      checkRange(name, bytes.byteLength, offset, length);
      return bytes.subarray(offset, offset + length);
    },
    async close() {},
  };
}

/** A FileTree over in-memory files, e.g. an adapter passed as buffers or a model converted in a test. */
export function memoryTree(label: string, files: Record<string, Uint8Array | string>): FileTree {
  const enc = new TextEncoder();
  const get = (file: string): Uint8Array => {
    const f = files[file];
    if (f === undefined) {
      throw new PolyloraError('FILE_NOT_FOUND', 'no such file', { file: `${label}/${file}` });
    }
    return typeof f === 'string' ? enc.encode(f) : f;
  };
  return {
    label,
    async has(file) {
      return files[file] !== undefined;
    },
    async open(file) {
      return memorySource(`${label}/${file}`, get(file));
    },
    async text(file) {
      return new TextDecoder().decode(get(file));
    },
  };
}

export function checkRange(name: string, size: number, offset: number, length: number): void {
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new PolyloraError('SAFETENSORS_INVALID', 'read outside the file', {
      file: name,
      expected: `a byte range inside [0, ${size})`,
      found: `[${offset}, ${offset + length})`,
      hint: 'the file is truncated or its header is corrupt',
    });
  }
}
