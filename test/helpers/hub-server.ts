// A local stand-in for the Hugging Face Hub: serves folders on disk in the Hub's URL layout and API, so the real
// @huggingface/hub client downloads from it in tests (the real Hub is not reachable here). Listens on 127.0.0.1,
// port 0. The routes are the ones the clients call (@huggingface/hub 2.x; Python's huggingface_hub uses the same):
//   GET  /api/models/{repo}[/revision/{rev}]           model info; `sha` is the commit the revision points to
//   GET  /api/models/{repo}/tree/{rev}[/{dir}]?recursive=&expand=[&cursor=]
//                                                      listing, paginated with `Link: <...>; rel="next"`
//   POST /api/models/{repo}/paths-info/{rev}           {paths, expand} (JSON, or form-encoded as Python sends it)
//   GET|HEAD /{repo}/resolve/{rev}/{path}              small file: its bytes, ETag "<git blob sha1>";
//                                                      LFS file: 302 to /lfs-cdn/{sha256} with X-Linked-Etag
//                                                      "<sha256>" and X-Linked-Size, as the Hub redirects to its CDN
//   GET|HEAD /lfs-cdn/{sha256}                         the CDN: bytes with ETag "<sha256>" (no token needed)
// Every answer about a revision carries X-Repo-Commit; file answers carry Content-Length, Accept-Ranges and honour
// `Range: bytes=a-b` (206 + Content-Range). Errors are JSON `{error}` with X-Error-Code / X-Error-Message like the
// Hub's: RepoNotFound, RevisionNotFound, EntryNotFound (404), GatedRepo / invalid credentials (401). CORS headers
// (and OPTIONS preflights) are answered as the Hub does, so a page on another origin can use it too.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/** A folder served as the repo's `main`, or revision name -> folder (each revision gets its own commit). */
export type RepoFolders = string | Record<string, string>;

export interface HubServerOptions {
  /** Repo id (`org/name`) -> folder(s), e.g. {'raincandy-u/TinyStories-656K': sharedPath('models/tinystories-656k')}. */
  repos: Record<string, RepoFolders>;
  /** When set, every API and resolve request must carry `Authorization: Bearer <token>` (else 401). */
  token?: string;
  /** Tree entries per page (the Hub uses 1000); small values test the client's pagination. */
  pageSize?: number;
  /** Repo paths whose served bytes get their first byte flipped (listings keep the true hashes): integrity tests. */
  corrupt?: string[];
}

export interface LoggedRequest {
  method: string;
  /** Path and query, as received. */
  url: string;
  authorization?: string;
  range?: string;
}

export interface HubServer {
  /** `http://127.0.0.1:<port>`, the value for HF_ENDPOINT / hubUrl. */
  readonly url: string;
  /** Every request received, in order. */
  readonly requests: LoggedRequest[];
  /** The fake commit of a repo revision: sha1 of `<repo>@<revision>`, stable across runs. */
  commit(repo: string, revision?: string): string;
  /** Requests that fetch file bytes (resolve or CDN, HEAD excluded). */
  downloads(): LoggedRequest[];
  close(): Promise<void>;
}

interface FileInfo {
  abs: string;
  size: number;
  /** Git blob sha1 of what git stores: the file itself, or its LFS pointer. */
  oid: string;
  lfs?: { oid: string; size: number; pointerSize: number };
}

interface Revision {
  repo: string;
  name: string;
  commit: string;
  folder: string;
}

/** Extensions the Hub's default .gitattributes stores in LFS; files of 10 MiB or more always are. */
const LFS_FILE = /\.(safetensors|bin|pt|pth|ckpt|gguf|onnx|h5|msgpack|model|pkl|zip|tar|gz)$/;
const LFS_MIN_SIZE = 10 * 1024 * 1024;
const LAST_MODIFIED = '2024-01-01T00:00:00.000Z';
const EXPOSED_HEADERS = [
  'ETag', 'X-Linked-Etag', 'X-Linked-Size', 'X-Repo-Commit', 'Content-Range', 'Content-Length', 'Accept-Ranges', 'Link',
  'X-Error-Code', 'X-Error-Message',
].join(', ');

export function commitOf(repo: string, revision = 'main'): string {
  return createHash('sha1').update(`${repo}@${revision}`).digest('hex');
}

export async function startHubServer(options: HubServerOptions): Promise<HubServer> {
  const revisions = new Map<string, Map<string, Revision>>(); // repo -> (revision name and commit) -> Revision
  for (const [repo, folders] of Object.entries(options.repos)) {
    const byName = new Map<string, Revision>();
    for (const [name, folder] of Object.entries(typeof folders === 'string' ? { main: folders } : folders)) {
      const rev = { repo, name, commit: commitOf(repo, name), folder };
      byName.set(name, rev).set(rev.commit, rev);
    }
    revisions.set(repo, byName);
  }
  const infos = new Map<string, Promise<FileInfo>>();
  const cdn = new Map<string, FileInfo>(); // sha256 -> file, filled as listings and resolves meet LFS files
  const corrupt = new Set(options.corrupt ?? []);
  const corruptAbs = new Set<string>();
  const requests: LoggedRequest[] = [];
  const pageSize = options.pageSize ?? 1000;

  const info = (abs: string): Promise<FileInfo> => {
    let p = infos.get(abs);
    if (!p) infos.set(abs, (p = hashFile(abs)));
    return p.then((i) => {
      if (i.lfs) cdn.set(i.lfs.oid, i);
      return i;
    });
  };

  const server = createServer((req, res) => {
    requests.push({
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      ...(req.headers.authorization === undefined ? {} : { authorization: req.headers.authorization }),
      ...(req.headers.range === undefined ? {} : { range: req.headers.range }),
    });
    // CORS as the Hub answers it, so that browser tests can download from this server too.
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS);
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        'Access-Control-Allow-Methods': 'GET, HEAD, POST, OPTIONS',
        'Access-Control-Allow-Headers': 'Authorization, Range, Content-Type, Accept',
        'Access-Control-Max-Age': '600',
      });
      res.end();
      return;
    }
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) sendError(res, 500, 'InternalError', String(e));
      else res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);
    const method = req.method ?? 'GET';

    if (parts[0] === 'lfs-cdn' && parts.length === 2 && (method === 'GET' || method === 'HEAD')) {
      const file = cdn.get(parts[1]!);
      if (!file) return sendError(res, 404, 'EntryNotFound', 'Entry not found');
      return sendFile(req, res, file, { ETag: `"${file.lfs!.oid}"` });
    }

    const api = parts[0] === 'api' && parts[1] === 'models';
    const rest = api ? parts.slice(2) : parts;
    // A repo id is `org/name` (two segments) or a bare legacy name (one).
    const repo = [rest.slice(0, 2).join('/'), rest[0]!].find((id) => revisions.has(id));
    if (options.token !== undefined && !authorized(req, res, options.token, repo ?? rest.slice(0, 2).join('/'))) return;
    if (repo === undefined) return sendError(res, 404, 'RepoNotFound', 'Repository not found');
    const [action, revName, ...path] = rest.slice(repo.split('/').length);
    const lookup = (name: string | undefined) => revisions.get(repo)!.get(name ?? 'main');

    if (api && (action === undefined || action === 'revision') && method === 'GET') {
      const rev = lookup(action === undefined || revName === 'HEAD' ? 'main' : revName);
      if (!rev) return sendError(res, 404, 'RevisionNotFound', `Invalid rev id: ${revName}`);
      const files = await walk(rev.folder);
      return sendJson(res, {
        _id: rev.commit.slice(0, 24),
        id: repo,
        modelId: repo,
        author: repo.split('/')[0],
        sha: rev.commit,
        lastModified: LAST_MODIFIED,
        createdAt: LAST_MODIFIED,
        private: false,
        gated: options.token === undefined ? false : 'manual',
        disabled: false,
        downloads: 0,
        likes: 0,
        tags: [],
        library_name: 'transformers',
        pipeline_tag: 'text-generation',
        siblings: files.map((rfilename) => ({ rfilename })),
      }, rev.commit);
    }

    if (api && (action === 'tree' || action === 'paths-info')) {
      const rev = lookup(revName);
      if (!rev) return sendError(res, 404, 'RevisionNotFound', `Invalid rev id: ${revName}`);
      const expand = url.searchParams.get('expand') === 'true';
      if (action === 'paths-info' && method === 'POST') {
        const body = await readBody(req);
        const form = new URLSearchParams(body);
        const json = req.headers['content-type']?.startsWith('application/json')
          ? (JSON.parse(body) as { paths: string[]; expand?: boolean })
          : { paths: form.getAll('paths'), expand: form.get('expand') === 'True' || form.get('expand') === 'true' };
        const all = await entries(rev, '', true, json.expand ?? false);
        return sendJson(res, all.filter((e) => json.paths.includes(e.path as string)), rev.commit);
      }
      if (action === 'tree' && method === 'GET') {
        const dir = path.join('/');
        const all = await entries(rev, dir, url.searchParams.get('recursive') === 'true', expand);
        const cursor = Number(url.searchParams.get('cursor') ?? 0);
        const page = all.slice(cursor, cursor + pageSize);
        if (cursor + pageSize < all.length) {
          const next = new URL(url.pathname, serverUrl);
          url.searchParams.forEach((v, k) => k !== 'cursor' && next.searchParams.set(k, v));
          next.searchParams.set('cursor', String(cursor + pageSize));
          res.setHeader('Link', `<${next.href}>; rel="next"`);
        }
        return sendJson(res, page, rev.commit);
      }
    }

    if (!api && action === 'resolve' && (method === 'GET' || method === 'HEAD')) {
      const rev = lookup(revName);
      if (!rev) return sendError(res, 404, 'RevisionNotFound', `Invalid rev id: ${revName}`);
      const rel = path.join('/');
      const abs = join(rev.folder, ...path);
      if (path.length === 0 || path.includes('..') || !(await isFile(abs))) {
        return sendError(res, 404, 'EntryNotFound', 'Entry not found', rev.commit);
      }
      const file = await info(abs);
      if (corrupt.has(rel)) corruptAbs.add(abs);
      res.setHeader('X-Repo-Commit', rev.commit);
      if (file.lfs) {
        res.writeHead(302, {
          Location: `${serverUrl}/lfs-cdn/${file.lfs.oid}`,
          ETag: `"${file.oid}"`,
          'X-Linked-Etag': `"${file.lfs.oid}"`,
          'X-Linked-Size': String(file.size),
          'Content-Length': '0',
        });
        res.end();
        return;
      }
      return sendFile(req, res, file, { ETag: `"${file.oid}"` });
    }
    return sendError(res, 404, 'NotFound', `no route for ${method} ${url.pathname}`);
  }

  /** Tree entries of `dir` (repo-relative) at a revision: directories and files, like the Hub's tree API. */
  async function entries(rev: Revision, dir: string, recursive: boolean, expand: boolean) {
    const files = await walk(rev.folder);
    const prefix = dir ? `${dir}/` : '';
    const out: Record<string, unknown>[] = [];
    const dirs = new Set<string>();
    for (const f of files.filter((p) => p.startsWith(prefix))) {
      const segs = f.slice(prefix.length).split('/');
      for (let i = 1; i < segs.length && (recursive || i === 1); i++) dirs.add(prefix + segs.slice(0, i).join('/'));
      if (!recursive && segs.length > 1) continue;
      const i = await info(join(rev.folder, ...f.split('/')));
      out.push({
        type: 'file',
        oid: i.oid,
        size: i.size,
        path: f,
        ...(i.lfs ? { lfs: i.lfs } : {}),
        ...(expand ? { lastCommit: { id: rev.commit, title: `Upload ${f}`, date: LAST_MODIFIED } } : {}),
      });
    }
    const dirEntries = [...dirs].map((d) => ({
      type: 'directory',
      oid: createHash('sha1').update(`tree ${rev.commit} ${d}`).digest('hex'),
      size: 0,
      path: d,
    }));
    return [...dirEntries, ...out];
  }

  async function sendFile(req: IncomingMessage, res: ServerResponse, file: FileInfo, headers: Record<string, string>) {
    const range = parseRange(req.headers.range, file.size);
    const common = { ...headers, 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
    if (range === 'unsatisfiable') {
      res.writeHead(416, { ...common, 'Content-Range': `bytes */${file.size}` });
      res.end();
      return;
    }
    const [start, end] = range ?? [0, file.size - 1];
    res.writeHead(range ? 206 : 200, {
      ...common,
      'Content-Length': String(end - start + 1),
      ...(range ? { 'Content-Range': `bytes ${start}-${end}/${file.size}` } : {}),
    });
    if (req.method === 'HEAD' || end < start) {
      res.end();
      return;
    }
    const body = createReadStream(file.abs, { start, end });
    if (!corruptAbs.has(file.abs) || start !== 0) return pipeline(body, res);
    let first = true;
    const flipFirstByte = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        if (first) chunk[0]! ^= 0xff;
        first = false;
        done(null, chunk);
      },
    });
    await pipeline(body, flipFirstByte, res);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const serverUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: serverUrl,
    requests,
    commit: (repo, revision = 'main') => {
      const rev = revisions.get(repo)?.get(revision);
      if (!rev) throw new Error(`hub-server: no revision ${revision} of ${repo}`);
      return rev.commit;
    },
    downloads: () =>
      requests.filter(
        (r) => r.method === 'GET' && (r.url.startsWith('/lfs-cdn/') || r.url.split('?')[0]!.includes('/resolve/')),
      ),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((e) => (e ? reject(e) : resolve()));
        server.closeAllConnections();
      }),
  };
}

/** 401 unless the request carries the token; the messages are the Hub's. */
function authorized(req: IncomingMessage, res: ServerResponse, token: string, repo: string): boolean {
  const auth = req.headers.authorization;
  if (auth === `Bearer ${token}`) return true;
  if (auth === undefined) {
    sendError(res, 401, 'GatedRepo', `Access to model ${repo} is restricted. You must be authenticated to access it.`);
  } else {
    sendError(res, 401, 'InvalidCredentials', 'Invalid credentials in Authorization header');
  }
  return false;
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` -> inclusive [start, end]; undefined without a Range header. */
function parseRange(header: string | undefined, size: number): [number, number] | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'unsatisfiable';
  const [start, end] =
    m[1] === '' ? [Math.max(0, size - Number(m[2])), size - 1] : [Number(m[1]), m[2] === '' ? size - 1 : Number(m[2])];
  if (start >= size || start > end) return 'unsatisfiable';
  return [start, Math.min(end, size - 1)];
}

async function hashFile(abs: string): Promise<FileInfo> {
  const bytes = await readFile(abs);
  const gitOid = (content: Buffer | string) =>
    createHash('sha1').update(`blob ${Buffer.byteLength(content)}\0`).update(content).digest('hex');
  if (!LFS_FILE.test(abs) && bytes.length < LFS_MIN_SIZE) return { abs, size: bytes.length, oid: gitOid(bytes) };
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${bytes.length}\n`;
  return {
    abs,
    size: bytes.length,
    oid: gitOid(pointer),
    lfs: { oid: sha256, size: bytes.length, pointerSize: Buffer.byteLength(pointer) },
  };
}

/** Repo-relative `/` paths of the files under `root`, sorted (symlinks followed). */
async function walk(root: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    const s = await stat(join(root, rel));
    if (s.isDirectory()) out.push(...(await walk(root, rel)));
    else if (s.isFile()) out.push(rel);
  }
  return out.sort();
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res: ServerResponse, body: unknown, commit: string): void {
  const text = JSON.stringify(body);
  res.writeHead(200, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(text)),
    'X-Repo-Commit': commit,
  });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, code: string, message: string, commit?: string): void {
  const text = JSON.stringify({ error: message });
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(text)),
    'X-Error-Code': code,
    'X-Error-Message': message,
    ...(commit === undefined ? {} : { 'X-Repo-Commit': commit }),
  });
  res.end(text);
}
