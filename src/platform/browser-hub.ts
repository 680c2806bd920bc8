// The Hub in a browser: the same flow as in Node (src/io/hub.ts, fetch-based @huggingface/hub), with the files kept
// in Cache Storage (cache "polylora-hub") under their immutable resolve URL, `<endpoint>/<repo>/resolve/<commit>/
// <path>`; a revision's commit is kept under `<endpoint>/<repo>/.polylora-ref/<revision>`. Files are read back by
// byte range through Blob.slice, so a multi-GB checkpoint is never held in memory whole.

import { PolyloraError } from '../errors.js';
import { hubSettings, openHubRepo, type HubStore, type RemoteFile } from '../io/hub.js';
import type { ByteSource, FileTree } from '../io/source.js';
import { checkRange } from '../io/source.js';
import type { HubOptions } from './platform.js';

export const BROWSER_CACHE_NAME = 'polylora-hub';

/** Downloads (or finds in Cache Storage) the files of `org/name[@revision]`; see Platform.openHub. */
export async function openHubBrowser(repo: string, options: HubOptions): Promise<FileTree> {
  const settings = hubSettings(options, () => undefined);
  if (typeof caches === 'undefined') {
    throw new PolyloraError('HUB_ERROR', 'Cache Storage is not available', {
      file: repo,
      hint: 'serve the page over https or from localhost (a secure context), or load the model from a URL instead',
    });
  }
  return openHubRepo(cacheStorageStore(await caches.open(BROWSER_CACHE_NAME), settings.endpoint), repo, options, settings);
}

/** A Cache Storage cache as a HubStore; `endpoint` scopes the keys (two hubs never share entries). */
export function cacheStorageStore(cache: Cache, endpoint: string): HubStore {
  const fileKey = (repo: string, commit: string, path: string) =>
    `${endpoint}/${repo}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`;
  const refKey = (repo: string, revision: string) => `${endpoint}/${repo}/.polylora-ref/${encodeURIComponent(revision)}`;
  const blobOf = async (repo: string, commit: string, path: string): Promise<Blob | undefined> => {
    const hit = await cache.match(fileKey(repo, commit, path));
    return hit ? hit.blob() : undefined;
  };
  return {
    where: `Cache Storage "${BROWSER_CACHE_NAME}"`,
    async readRef(repo, revision) {
      return (await cache.match(refKey(repo, revision)))?.text();
    },
    async writeRef(repo, revision, commit) {
      await cache.put(refKey(repo, revision), new Response(commit));
    },
    async listSnapshot(repo, commit) {
      const prefix = fileKey(repo, commit, '');
      const paths = (await cache.keys())
        .map((r) => r.url)
        .filter((u) => u.startsWith(prefix))
        .map((u) => u.slice(prefix.length).split('/').map(decodeURIComponent).join('/'));
      return paths.length ? paths : undefined;
    },
    async has(repo, commit, file) {
      return (await blobOf(repo, commit, file.path))?.size === file.size;
    },
    async put(repo, commit, file, body) {
      const key = fileKey(repo, commit, file.path);
      await cache.put(key, new Response(body, { headers: { 'Content-Type': 'application/octet-stream' } }));
      const stored = await blobOf(repo, commit, file.path);
      if (stored?.size !== file.size) {
        await cache.delete(key);
        throw sizeMismatch(`${repo}/${file.path}`, file, stored?.size);
      }
    },
    tree(repo, commit) {
      const label = `${endpoint}/${repo}@${commit}`;
      const get = async (path: string): Promise<Blob> => {
        const blob = await blobOf(repo, commit, path);
        if (!blob) throw new PolyloraError('FILE_NOT_FOUND', 'not in the browser cache', { file: `${label}/${path}` });
        return blob;
      };
      return {
        label,
        has: async (path) => (await blobOf(repo, commit, path)) !== undefined,
        open: async (path) => blobSource(`${label}/${path}`, await get(path)),
        text: async (path) => (await get(path)).text(),
      };
    },
  };
}

/** A ByteSource over a Blob (Cache Storage hands out disk-backed blobs: slices read only their range). */
function blobSource(name: string, blob: Blob): ByteSource {
  return {
    name,
    size: blob.size,
    async read(offset, length) {
      checkRange(name, blob.size, offset, length);
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
    async close() {},
  };
}

function sizeMismatch(where: string, file: RemoteFile, found: number | undefined): PolyloraError {
  return new PolyloraError('HUB_ERROR', 'downloaded file does not match the repo listing', {
    file: where,
    expected: `${file.size} bytes`,
    found: found === undefined ? 'nothing stored' : `${found} bytes`,
    hint: 'the transfer was cut; reload to try again (browser storage may also be full)',
  });
}
