// Local files in Node: a folder is a directory path; a file is read by byte range through a FileHandle.

import { open, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { ByteSource, FileTree } from '../io/source.js';
import { checkRange } from '../io/source.js';
import { PolyloraError } from '../errors.js';

export async function openFileSource(path: string): Promise<ByteSource> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw notFound(path, e);
  }
  const size = (await fh.stat()).size;
  return {
    name: path,
    size,
    async read(offset, length) {
      checkRange(path, size, offset, length);
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(out, done, length - done, offset + done);
        if (bytesRead === 0) checkRange(path, offset + done, offset + done, 1); // file shrank under us
        done += bytesRead;
      }
      return out;
    },
    async close() {
      await fh.close();
    },
  };
}

export function dirTree(dir: string): FileTree {
  const root = resolve(dir);
  return {
    label: dir,
    async has(file) {
      try {
        return (await stat(join(root, file))).isFile();
      } catch {
        return false;
      }
    },
    open: (file) => openFileSource(join(root, file)),
    async text(file) {
      try {
        return await readFile(join(root, file), 'utf8');
      } catch (e) {
        throw notFound(join(dir, file), e);
      }
    },
  };
}

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

function notFound(path: string, cause: unknown): PolyloraError {
  return new PolyloraError('FILE_NOT_FOUND', 'cannot open file', {
    file: path,
    found: (cause as NodeJS.ErrnoException)?.code ?? String(cause),
    cause,
  });
}
