// Files in a browser: a folder at an http(s) URL, read by byte range (`fetch` with a Range header), or files the
// user picked from disk (<input type="file" webkitdirectory>) or built in memory, read by Blob.slice.
// Only web APIs are used (fetch, URL, Blob), so this module also runs in Node, which is how part of its tests run.

import type { ByteSource, FileTree } from '../io/source.js';
import { checkRange } from '../io/source.js';
import { PolyloraError } from '../errors.js';

/** A file at a URL. */
export interface HttpByteSource extends ByteSource {
  /**
   * False while reads go out as Range requests (answered 206). True once the server answered a Range request
   * with the whole file (200): the file was then read into memory once and later reads are served from there.
   */
  readonly wholeFile: boolean;
}

/**
 * A folder at a URL: `location` is absolute (`https://host/models/x`) or relative to the page
 * (`./models/x`, `/models/x`); a trailing slash is optional. File names inside it may contain `/`.
 */
export function urlTree(location: string): FileTree {
  const base = folderUrl(location);
  const url = (file: string) => new URL(file.split('/').map(encodeURIComponent).join('/'), base).href;
  return {
    label: base.href.slice(0, -1), // without the trailing slash, like a directory path
    async has(file) {
      const res = await request(url(file), 'HEAD');
      if (res.ok) return true;
      if (res.status === 404 || res.status === 410) return false;
      throw statusError(url(file), res);
    },
    open: (file) => openUrlSource(url(file)),
    async text(file) {
      const res = await request(url(file), 'GET');
      if (!res.ok) throw statusError(url(file), res);
      return res.text();
    },
  };
}

/**
 * Opens one file at an absolute URL. The size comes from a HEAD request's Content-Length, or, where the server
 * gives none (or refuses HEAD), from the Content-Range of a one-byte Range request.
 */
export async function openUrlSource(url: string): Promise<HttpByteSource> {
  let size: number | undefined;
  let whole: Promise<Uint8Array> | undefined;
  const head = await request(url, 'HEAD');
  if (head.status === 404 || head.status === 410) throw statusError(url, head);
  if (head.ok) size = identityLength(head);
  if (size === undefined) {
    const res = await request(url, 'GET', 'bytes=0-0');
    if (res.status === 206) {
      await res.body?.cancel();
      size = rangeOf(url, res)?.total;
      if (size === undefined) {
        throw new PolyloraError('IO_ERROR', 'the server gives no file size', {
          file: url,
          expected: 'a Content-Length on HEAD, or Content-Range "bytes 0-0/<size>" on a Range request',
          found: `Content-Range ${JSON.stringify(res.headers.get('content-range'))}`,
          hint: 'for a cross-origin folder the server must send Access-Control-Expose-Headers: Content-Range',
        });
      }
    } else if (res.status === 416) {
      size = 0; // an empty file has no byte 0
      await res.body?.cancel();
    } else if (res.ok) {
      const bytes = new Uint8Array(await res.arrayBuffer());
      size = bytes.byteLength;
      whole = Promise.resolve(bytes);
    } else {
      throw statusError(url, res);
    }
  }
  const fileSize = size;

  /** The server ignored Range: keep this 200 response's body as the whole file, checked against the size. */
  const keepWhole = async (res: Response): Promise<Uint8Array> => {
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (bytes.byteLength !== fileSize) {
      throw new PolyloraError('IO_ERROR', 'the whole-file answer to a Range request has the wrong length', {
        file: url,
        expected: `${fileSize} bytes`,
        found: `${bytes.byteLength} bytes`,
        hint: 'the file changed on the server while it was being read',
      });
    }
    console.warn(`polylora: ${url}: the server ignores HTTP Range requests; read the whole file (${fileSize} bytes) into memory instead`);
    return bytes;
  };

  return {
    name: url,
    size: fileSize,
    get wholeFile() {
      return whole !== undefined;
    },
    async read(offset, length) {
      checkRange(url, fileSize, offset, length);
      if (length === 0) return new Uint8Array(0);
      if (whole) return (await whole).subarray(offset, offset + length);
      const last = offset + length - 1;
      const res = await request(url, 'GET', `bytes=${offset}-${last}`);
      if (res.status === 200) {
        // Several reads may have been in flight when the first 200 came back; the first body is kept.
        if (whole) await res.body?.cancel();
        else whole = keepWhole(res);
        return (await whole).subarray(offset, offset + length);
      }
      if (res.status !== 206) throw statusError(url, res);
      const range = rangeOf(url, res);
      if (range && (range.first !== offset || range.last !== last)) {
        await res.body?.cancel();
        throw new PolyloraError('IO_ERROR', 'the server answered a different byte range', {
          file: url,
          expected: `bytes ${offset}-${last}`,
          found: `bytes ${range.first}-${range.last}`,
          hint: 'the server (or a proxy or cache in between) does not honour Range requests correctly',
        });
      }
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (bytes.byteLength !== length) {
        throw new PolyloraError('IO_ERROR', 'short read', {
          file: url,
          expected: `${length} bytes at offset ${offset}`,
          found: `${bytes.byteLength} bytes`,
          hint: 'the connection was cut or the file is shorter on the server than its announced size',
        });
      }
      return bytes;
    },
    async close() {
      whole = undefined;
    },
  };
}

/**
 * A folder from files picked on disk (`<input type="file" webkitdirectory>`, whose File objects carry
 * `webkitRelativePath` = "<picked folder>/<path>") or from File objects made in memory (named by `name`).
 * When every file lies under one top folder, that folder is the tree's label and is left out of the file names,
 * so `has('config.json')` finds "<picked folder>/config.json".
 */
export function fileListTree(files: File[] | FileList, label = 'files'): FileTree {
  const list = Array.from(files);
  let paths = list.map((f) => f.webkitRelativePath || f.name);
  const top = paths[0]?.split('/')[0];
  if (top !== undefined && paths.every((p) => p.startsWith(`${top}/`))) {
    paths = paths.map((p) => p.slice(top.length + 1));
    label = top;
  }
  const byPath = new Map<string, File>();
  paths.forEach((p, i) => {
    if (byPath.has(p)) {
      throw new PolyloraError('INVALID_ARGUMENT', 'two files with the same path', {
        file: `${label}/${p}`,
        hint: 'pick one folder (or pass each file once)',
      });
    }
    byPath.set(p, list[i]!);
  });
  const get = (file: string): File => {
    const f = byPath.get(file);
    if (!f) {
      throw new PolyloraError('FILE_NOT_FOUND', 'no such file among the picked files', {
        file: `${label}/${file}`,
        found: `${byPath.size} files: ${[...byPath.keys()].slice(0, 8).join(', ')}${byPath.size > 8 ? ', ...' : ''}`,
      });
    }
    return f;
  };
  return {
    label,
    async has(file) {
      return byPath.has(file);
    },
    async open(file) {
      return blobSource(`${label}/${file}`, get(file));
    },
    async text(file) {
      return get(file).text();
    },
  };
}

/** A ByteSource over a Blob (a picked File or one built in memory), read by slices without loading it whole. */
export function blobSource(name: string, blob: Blob): ByteSource {
  return {
    name,
    size: blob.size,
    async read(offset, length) {
      checkRange(name, blob.size, offset, length);
      const bytes = new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
      if (bytes.byteLength !== length) {
        throw new PolyloraError('IO_ERROR', 'short read', {
          file: name,
          expected: `${length} bytes at offset ${offset}`,
          found: `${bytes.byteLength} bytes`,
          hint: 'the file changed on disk after it was picked; pick it again',
        });
      }
      return bytes;
    },
    async close() {},
  };
}

/** The folder URL with a trailing slash, resolved against the page (or worker) address when relative. */
function folderUrl(location: string): URL {
  const dir = location.endsWith('/') ? location : `${location}/`;
  const page = (globalThis as { location?: { href: string } }).location?.href;
  try {
    return new URL(dir, page);
  } catch (e) {
    throw new PolyloraError('INVALID_ARGUMENT', 'not a folder URL', {
      file: location,
      expected: 'an http(s) URL, or a path relative to the page',
      found: page ? `a string that does not resolve against ${page}` : 'a relative path, and no page to resolve it against',
      cause: e,
    });
  }
}

async function request(url: string, method: 'GET' | 'HEAD', range?: string): Promise<Response> {
  try {
    return await fetch(url, range === undefined ? { method } : { method, headers: { Range: range } });
  } catch (e) {
    throw new PolyloraError('IO_ERROR', `${method} failed`, {
      file: url,
      found: String(e),
      hint:
        'check that the server is running and the URL is right; a folder on another origin must send ' +
        'Access-Control-Allow-Origin (and Access-Control-Expose-Headers: Content-Range, Content-Length)',
      cause: e,
    });
  }
}

/** Content-Length when it counts the file's own bytes (no Content-Encoding), else undefined. */
function identityLength(res: Response): number | undefined {
  const encoding = res.headers.get('content-encoding');
  if (encoding && encoding !== 'identity') return undefined;
  const len = res.headers.get('content-length');
  return len !== null && /^\d+$/.test(len) ? Number(len) : undefined;
}

/** Parses `Content-Range: bytes first-last/total`; undefined when the header is absent (e.g. not exposed by CORS). */
function rangeOf(url: string, res: Response): { first: number; last: number; total: number | undefined } | undefined {
  const header = res.headers.get('content-range');
  if (header === null) return undefined;
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim());
  if (!m) {
    throw new PolyloraError('IO_ERROR', 'malformed Content-Range', {
      file: url,
      expected: '"bytes <first>-<last>/<total>"',
      found: JSON.stringify(header),
    });
  }
  return { first: Number(m[1]), last: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

/** The error for a failed status; the response body is dropped so the connection is freed. */
function statusError(url: string, res: Response): PolyloraError {
  res.body?.cancel().catch(() => undefined);
  const found = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
  if (res.status === 404 || res.status === 410) {
    return new PolyloraError('FILE_NOT_FOUND', 'cannot open file', { file: url, found });
  }
  return new PolyloraError('IO_ERROR', 'the server refused the request', {
    file: url,
    expected: 'HTTP 200 or 206',
    found,
    hint: res.status === 403 ? 'the server forbids this path (a dev server may need it in its allow list)' : undefined,
  });
}
