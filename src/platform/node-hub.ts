// The Hub in Node: files land in the standard Hugging Face cache, in the layout Python's huggingface_hub writes and
// reads, so the two share downloads both ways:
//   <cache>/models--org--name/blobs/<etag>                 the bytes; etag = sha256 of an LFS file, else git blob sha1
//   <cache>/models--org--name/snapshots/<commit>/<path>    relative symlink -> ../../blobs/<etag>
//   <cache>/models--org--name/refs/<revision>              the 40-hex commit, no newline (none for a commit revision)
// <cache> = $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
// else ~/.cache/huggingface/hub.

import { createHash, randomUUID, type Hash } from 'node:crypto';
import { copyFile, mkdir, open, readdir, readFile, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { PolyloraError } from '../errors.js';
import { hubSettings, isCommitHash, openHubRepo, type HubStore, type RemoteFile } from '../io/hub.js';
import type { FileTree } from '../io/source.js';
import { dirTree } from './node-files.js';
import type { HubOptions } from './platform.js';

type Env = (name: string) => string | undefined;
const processEnv: Env = (name) => process.env[name];

/** Downloads (or finds in the HF cache) the files of `org/name[@revision]`; see Platform.openHub. */
export async function openHubNode(repo: string, options: HubOptions): Promise<FileTree> {
  const settings = hubSettings(options, processEnv, await storedToken(processEnv));
  return openHubRepo(nodeHubStore(hubCacheDir(processEnv)), repo, options, settings);
}

/** Python's HF_HOME: $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(env: Env = processEnv): string {
  return expandUser(env('HF_HOME') ?? join(env('XDG_CACHE_HOME') ?? join(homedir(), '.cache'), 'huggingface'));
}

/** Python's HF_HUB_CACHE: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub. */
export function hubCacheDir(env: Env = processEnv): string {
  return expandUser(env('HF_HUB_CACHE') ?? env('HUGGINGFACE_HUB_CACHE') ?? join(hfHome(env), 'hub'));
}

/** `models--org--name`, the folder of a model repo in the cache. */
export function repoFolderName(repo: string): string {
  return ['models', ...repo.split('/')].join('--');
}

/** The HF cache at `cacheDir` as a HubStore. */
export function nodeHubStore(cacheDir: string): HubStore {
  const repoDir = (repo: string) => join(cacheDir, repoFolderName(repo));
  const snapshotDir = (repo: string, commit: string) => join(repoDir(repo), 'snapshots', commit);
  const pointer = (repo: string, commit: string, path: string) => join(snapshotDir(repo, commit), ...path.split('/'));
  const blob = (repo: string, etag: string) => join(repoDir(repo), 'blobs', etag);
  return {
    where: cacheDir,
    async readRef(repo, revision) {
      const commit = await readFile(join(repoDir(repo), 'refs', revision), 'utf8').catch(() => undefined);
      return commit !== undefined && isCommitHash(commit.trim()) ? commit.trim() : undefined;
    },
    async writeRef(repo, revision, commit) {
      const ref = join(repoDir(repo), 'refs', revision);
      if ((await readFile(ref, 'utf8').catch(() => undefined)) === commit) return;
      await mkdir(dirname(ref), { recursive: true });
      const tmp = `${ref}.${randomUUID()}.tmp`;
      await writeFile(tmp, commit);
      await rename(tmp, ref);
    },
    async listSnapshot(repo, commit) {
      const root = snapshotDir(repo, commit);
      if (!(await stat(root).then((s) => s.isDirectory(), () => false))) return undefined;
      return listFiles(root);
    },
    async has(repo, commit, file) {
      const link = pointer(repo, commit, file.path);
      if (await isFile(link)) return true;
      const target = blob(repo, file.etag);
      const s = await stat(target).catch(() => undefined);
      if (!s?.isFile() || s.size !== file.size) return false;
      await linkBlob(target, link);
      return true;
    },
    async put(repo, commit, file, body) {
      const target = blob(repo, file.etag);
      await mkdir(dirname(target), { recursive: true });
      // A private temp name: two processes fetching the same blob each write their own and the renames agree.
      const tmp = `${target}.${randomUUID()}.incomplete`;
      try {
        await writeVerified(tmp, body, file, `${repo}/${file.path}`);
        await rename(tmp, target);
      } finally {
        await rm(tmp, { force: true });
      }
      await linkBlob(target, pointer(repo, commit, file.path));
    },
    tree: (repo, commit) => dirTree(snapshotDir(repo, commit)),
  };
}

/**
 * Writes `body` to `path` while hashing it the way its etag was made: sha256 of the bytes for a 64-hex (LFS) etag,
 * git's blob sha1 (`blob <size>\0` + bytes) for a 40-hex one.
 */
async function writeVerified(path: string, body: ReadableStream<Uint8Array>, file: RemoteFile, where: string) {
  let hash: Hash;
  if (file.etag.length === 64) {
    hash = createHash('sha256');
  } else {
    hash = createHash('sha1');
    hash.update(`blob ${file.size}\0`);
  }
  let size = 0;
  const fh = await open(path, 'wx');
  try {
    const reader = body.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      hash.update(r.value);
      size += r.value.byteLength;
      for (let done = 0; done < r.value.byteLength; ) {
        done += (await fh.write(r.value, done)).bytesWritten;
      }
    }
  } finally {
    await fh.close();
  }
  const digest = hash.digest('hex');
  if (size !== file.size || digest !== file.etag) {
    throw new PolyloraError('HUB_ERROR', 'downloaded file does not match the repo listing', {
      file: where,
      expected: `${file.size} bytes with ${file.etag.length === 64 ? 'sha256' : 'git sha1'} ${file.etag}`,
      found: `${size} bytes with hash ${digest}`,
      hint: 'the transfer was cut or altered (proxy?); run the command again',
    });
  }
}

/** Points the snapshot entry at its blob by a relative symlink (a copy where symlinks are not allowed), as Python does. */
async function linkBlob(blobPath: string, linkPath: string): Promise<void> {
  await mkdir(dirname(linkPath), { recursive: true });
  await rm(linkPath, { force: true });
  try {
    await symlink(relative(dirname(linkPath), blobPath), linkPath);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && (await realpath(linkPath)) === (await realpath(blobPath))) return; // a racing twin
    if (code !== 'EPERM' && code !== 'ENOTSUP') throw e;
    await copyFile(blobPath, linkPath);
  }
}

/** Relative `/`-separated paths of the files under `root` (symlinks followed; dangling ones left out). */
async function listFiles(root: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(join(root, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await listFiles(root, rel)));
    else if (await isFile(join(root, rel))) out.push(rel);
  }
  return out;
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

/** The token `huggingface-cli login` stored: $HF_TOKEN_PATH, else $HF_HOME/token. */
async function storedToken(env: Env): Promise<string | undefined> {
  const path = expandUser(env('HF_TOKEN_PATH') ?? join(hfHome(env), 'token'));
  return readFile(path, 'utf8').then(
    (t) => t.trim() || undefined,
    () => undefined,
  );
}

function expandUser(path: string): string {
  return path === '~' || path.startsWith('~/') ? join(homedir(), path.slice(1)) : path;
}
