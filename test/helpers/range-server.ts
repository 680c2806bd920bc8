// Vitest globalSetup (runs in Node for both test projects): a small HTTP server over the shared data folder, so the
// browser file code (src/platform/browser-files.ts) is tested against real servers that behave differently.
// Its address is provided to tests as inject('fileServer'). Paths: /<mode>/<tag>/<path in the shared folder>,
// where <tag> is any word (a test names its own so that request counts do not mix) and <mode> is
//   range   — answers a single `Range: bytes=a-b` with 206 and Content-Range, HEAD with Content-Length;
//   whole   — ignores Range and always sends the whole file with 200 (as some static hosts do);
//   nohead  — like range, but refuses HEAD with 405 (as presigned-URL stores do);
//   shifted — answers every Range request with the range one byte later (a broken server).
// GET /requests returns {"<METHOD> <path>": count} for everything served so far. CORS is open: the Chromium
// page runs on the Vitest server's origin, not this one.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Base URL of this server, e.g. http://127.0.0.1:40123 (no trailing slash). */
    fileServer: string;
  }
}

const MODES = ['range', 'whole', 'nohead', 'shifted'] as const;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const root = resolve(project.getProvidedContext().sharedDir);
  const counts: Record<string, number> = {};
  const server = createServer(async (req, res) => {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Headers', 'Range');
    res.setHeader('Access-Control-Expose-Headers', 'Content-Range, Content-Length, Accept-Ranges');
    if (req.method === 'OPTIONS') return void res.writeHead(204).end();
    const path = new URL(req.url ?? '/', 'http://server').pathname;
    if (path === '/requests') return void res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(counts));
    const key = `${req.method} ${path}`;
    counts[key] = (counts[key] ?? 0) + 1;
    const m = /^\/([a-z]+)\/[^/]+\/(.+)$/.exec(path);
    const mode = MODES.find((x) => x === m?.[1]);
    const file = m ? resolve(root, decodeURIComponent(m[2]!)) : '';
    if (!mode || !file.startsWith(root + sep)) return void res.writeHead(400).end();
    if (mode === 'nohead' && req.method === 'HEAD') return void res.writeHead(405).end();
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch {
      return void res.writeHead(404).end();
    }
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!range || mode === 'whole') {
      res.writeHead(200, { 'Content-Length': bytes.length, 'Accept-Ranges': mode === 'whole' ? 'none' : 'bytes' });
      return void res.end(req.method === 'HEAD' ? undefined : bytes);
    }
    const first = Number(range[1]) + (mode === 'shifted' ? 1 : 0);
    const last = Math.min(Number(range[2]) + (mode === 'shifted' ? 1 : 0), bytes.length - 1);
    if (first > last) return void res.writeHead(416, { 'Content-Range': `bytes */${bytes.length}` }).end();
    res.writeHead(206, { 'Content-Length': last - first + 1, 'Content-Range': `bytes ${first}-${last}/${bytes.length}` });
    res.end(req.method === 'HEAD' ? undefined : bytes.subarray(first, last + 1));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  project.provide('fileServer', `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  return () => new Promise<void>((ok) => server.close(() => ok()));
}
