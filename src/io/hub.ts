// Hugging Face Hub repos as folders, the part shared by Node and the browser: `org/name[@revision]` ids, the HF_*
// settings, which files a model or an adapter needs, and the download flow. The network side is the real
// @huggingface/hub client (modelInfo, listFiles, downloadFile); where the bytes land is a HubStore: the HF cache
// directory in Node (src/platform/node-hub.ts), Cache Storage in a browser (src/platform/browser-hub.ts).

import { downloadFile, HubApiError, listFiles, modelInfo } from '@huggingface/hub';
import { PolyloraError } from '../errors.js';
import type { HubOptions } from '../platform/platform.js';
import type { FileTree } from './source.js';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';

/** Files a model needs besides its `*.safetensors` weights (root of the repo only). */
export const MODEL_FILES: readonly string[] = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
  'model.safetensors.index.json',
];
/** Files a PEFT LoRA adapter needs. A repo with `adapter_config.json` at its root is taken to be an adapter. */
export const ADAPTER_FILES: readonly string[] = ['adapter_config.json', 'adapter_model.safetensors'];

const SHARD_INDEX = 'model.safetensors.index.json';
/** Weight formats polylora does not read; their presence (without safetensors) gets a conversion hint. */
const OTHER_WEIGHTS = /\.(bin|pt|pth|ckpt|gguf|ggml|onnx|h5|msgpack|pkl)$/;
const COMMIT_HASH = /^[0-9a-f]{40}$/;
/** A git blob sha1 or an LFS sha256. */
const ETAG = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
/** Relative, `/`-separated, no empty segment, no backslash or NUL. */
const SAFE_PATH = /^[^/\\\0]+(?:\/[^/\\\0]+)*$/;
/** Hub repo names: letters, digits, `-`, `_`, `.`; an optional `org/` in front; `--` and `..` are refused. */
const REPO_ID = /^(?:[\w][\w.-]*\/)?[\w][\w.-]*$/;

export interface RepoSpec {
  /** `org/name` (or a bare legacy `name`). */
  repo: string;
  /** Branch, tag or 40-hex commit. */
  revision: string;
}

/** `org/name[@revision]` -> its parts, or undefined when `spec` is not shaped like a Hub id. */
export function parseHubId(spec: string): { repo: string; revision?: string } | undefined {
  const at = spec.indexOf('@');
  const repo = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? undefined : spec.slice(at + 1);
  if (!REPO_ID.test(repo) || repo.includes('--') || repo.includes('..') || revision === '') return undefined;
  return revision === undefined ? { repo } : { repo, revision };
}

/** Parses `org/name[@revision]`; `revision` (HubOptions.revision) applies when the id carries none. */
export function parseRepoSpec(spec: string, revision?: string): RepoSpec {
  const id = parseHubId(spec);
  if (!id) {
    throw new PolyloraError('INVALID_ARGUMENT', 'not a Hugging Face Hub repo id', {
      field: 'model',
      expected: 'org/name or org/name@revision (branch, tag or commit)',
      found: JSON.stringify(spec),
      hint: 'a local folder must exist on disk; anything else is taken as a Hub repo id',
    });
  }
  const { repo, revision: rev } = id;
  if (rev !== undefined && revision !== undefined && rev !== revision) {
    throw new PolyloraError('INVALID_ARGUMENT', 'two different revisions given', {
      field: 'revision',
      expected: `one revision for ${repo}`,
      found: `"@${rev}" in the id and revision "${revision}"`,
      hint: 'give the revision either after @ or as an option, not both',
    });
  }
  return { repo, revision: rev ?? revision ?? DEFAULT_REVISION };
}

export function isCommitHash(revision: string): boolean {
  return COMMIT_HASH.test(revision);
}

/** The settings one download runs with: HubOptions first, then the environment as Python's huggingface_hub reads it. */
export interface HubSettings {
  /** Without a trailing slash. */
  endpoint: string;
  token?: string;
  offline: boolean;
}

/**
 * HF_ENDPOINT, HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN) and HF_HUB_OFFLINE (1/true/yes/on, any case) fill
 * whatever `options` leaves out; `storedToken` (Node: the file `huggingface-cli login` writes) comes last.
 * `env` is Platform.env: process.env in Node, nothing in a browser.
 */
export function hubSettings(
  options: HubOptions,
  env: (name: string) => string | undefined,
  storedToken?: string,
): HubSettings {
  const set = (v: string | undefined) => (v === undefined || v.trim() === '' ? undefined : v.trim());
  const endpoint = (set(options.endpoint) ?? set(env('HF_ENDPOINT')) ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
  const token = set(options.token) ?? set(env('HF_TOKEN')) ?? set(env('HUGGING_FACE_HUB_TOKEN')) ?? set(storedToken);
  const offline = options.offline ?? ['1', 'true', 'yes', 'on'].includes((env('HF_HUB_OFFLINE') ?? '').toLowerCase());
  if (token !== undefined && !token.startsWith('hf_')) {
    throw new PolyloraError('INVALID_ARGUMENT', 'malformed Hugging Face token', {
      field: 'HF_TOKEN',
      expected: 'a token starting with "hf_"',
      found: `a token starting with "${token.slice(0, 3)}"`,
      hint: 'copy a token from https://huggingface.co/settings/tokens into HF_TOKEN',
    });
  }
  return token === undefined ? { endpoint, offline } : { endpoint, token, offline };
}

/**
 * Which files of a repo to fetch. `files` (HubOptions.files) decides when given. Otherwise an adapter repo (one with
 * adapter_config.json) gets ADAPTER_FILES and a model repo gets MODEL_FILES plus its root `*.safetensors`; a repo
 * without safetensors weights is refused with a conversion hint. `where` names the repo (or cache) in errors.
 */
export function selectFiles(where: string, paths: readonly string[], files?: (path: string) => boolean): string[] {
  if (files) {
    const picked = paths.filter(files);
    if (picked.length === 0) {
      throw new PolyloraError('HUB_ERROR', 'no file of the repo matches the file selection', {
        file: where,
        found: preview(paths),
        hint: 'check the `files` predicate against the names above',
      });
    }
    return picked;
  }
  const present = new Set(paths);
  if (present.has('adapter_config.json')) {
    if (!present.has('adapter_model.safetensors')) throw noSafetensors(where, paths, 'adapter');
    return [...ADAPTER_FILES];
  }
  const weights = paths.filter((p) => !p.includes('/') && p.endsWith('.safetensors'));
  if (weights.length === 0) throw noSafetensors(where, paths, 'model');
  if (!present.has('config.json')) {
    throw new PolyloraError('HUB_ERROR', 'the repo has no config.json', {
      file: where,
      expected: 'a transformers model (config.json + *.safetensors) or a PEFT adapter (adapter_config.json)',
      found: preview(paths),
      hint: 'polylora loads transformers-format checkpoints; pick the repo that holds the original weights',
    });
  }
  return [...MODEL_FILES.filter((f) => present.has(f)), ...weights];
}

/**
 * With a sharded checkpoint, keeps only the shards its index names (repos such as Mistral's also carry a
 * `consolidated.safetensors` copy of every weight). `indexText` is model.safetensors.index.json.
 */
export function applyShardIndex(where: string, indexText: string, picked: readonly string[]): string[] {
  let shards: Set<string>;
  try {
    const index = JSON.parse(indexText) as { weight_map?: Record<string, string> };
    if (typeof index.weight_map !== 'object' || index.weight_map === null) throw new Error('no "weight_map" object');
    shards = new Set(Object.values(index.weight_map));
  } catch (e) {
    throw new PolyloraError('HUB_ERROR', 'unreadable shard index', {
      file: `${where}/${SHARD_INDEX}`,
      expected: 'JSON with a "weight_map" object (tensor name -> shard file)',
      found: e instanceof Error ? e.message : String(e),
      cause: e,
    });
  }
  const missing = [...shards].filter((s) => !picked.includes(s));
  if (missing.length > 0) {
    throw new PolyloraError('HUB_ERROR', 'the shard index names files the repo does not have', {
      file: `${where}/${SHARD_INDEX}`,
      expected: 'every shard of weight_map in the repo',
      found: `missing ${preview(missing)}`,
      hint: 'the repo upload is incomplete; try another revision',
    });
  }
  return picked.filter((p) => !p.endsWith('.safetensors') || shards.has(p));
}

/** One file of a repo at a commit. */
export interface RemoteFile {
  /** Path inside the repo, `/`-separated. */
  path: string;
  /** In bytes (of the real file, not of an LFS pointer). */
  size: number;
  /**
   * Content id, exactly the blob name Python's huggingface_hub uses: sha256 (64 hex) of an LFS file, the git blob
   * sha1 (40 hex) of any other file.
   */
  etag: string;
}

/** Where a platform keeps downloaded Hub files, by repo and commit. */
export interface HubStore {
  /** Shown in messages: the cache directory, or the name of the browser cache. */
  readonly where: string;
  /** The commit a branch or tag was last resolved to, if recorded. */
  readRef(repo: string, revision: string): Promise<string | undefined>;
  writeRef(repo: string, revision: string, commit: string): Promise<void>;
  /** Paths of the files cached for this commit, or undefined when nothing is. */
  listSnapshot(repo: string, commit: string): Promise<string[] | undefined>;
  /** True when the file is cached for this commit (a store may link an already cached copy of the same content). */
  has(repo: string, commit: string, file: RemoteFile): Promise<boolean>;
  /** Stores a file from its bytes; rejects, storing nothing, when they do not match `file.size` (or `file.etag`). */
  put(repo: string, commit: string, file: RemoteFile, body: ReadableStream<Uint8Array>): Promise<void>;
  tree(repo: string, commit: string): FileTree;
}

/**
 * Opens `org/name[@revision]` as a folder: online, resolves the revision to a commit, lists the repo, fetches the
 * selected files that the store lacks and records the revision -> commit ref; offline (or when the endpoint cannot
 * be reached) serves the files the store already has for the revision.
 */
export async function openHubRepo(
  store: HubStore,
  spec: string,
  options: HubOptions,
  settings: HubSettings,
): Promise<FileTree> {
  const { repo, revision } = parseRepoSpec(spec, options.revision);
  const label = `${repo}@${revision}`;
  if (settings.offline) {
    const cached = await fromStore(store, repo, revision, options.files);
    if (cached) return cached;
    throw new PolyloraError('HUB_ERROR', 'not in the cache, and offline mode (HF_HUB_OFFLINE) forbids downloading', {
      file: label,
      expected: `${refOrCommit(revision)} and its snapshot in ${store.where}`,
      found: 'nothing cached for this revision',
      hint:
        `download it once online (unset HF_HUB_OFFLINE), e.g. \`huggingface-cli download ${repo} --revision ` +
        `${revision}\`, or point HF_HUB_CACHE / HF_HOME at a cache that has it`,
    });
  }
  let commit: string;
  let listing: Map<string, RemoteFile>;
  const credentials = {
    hubUrl: settings.endpoint,
    ...(settings.token === undefined ? {} : { accessToken: settings.token }),
  };
  try {
    commit = isCommitHash(revision)
      ? revision
      : (await modelInfo({ name: repo, revision, additionalFields: ['sha'], ...credentials })).sha;
    listing = new Map();
    for await (const e of listFiles({ repo, revision: commit, recursive: true, ...credentials })) {
      if (e.type !== 'file') continue;
      const etag = e.lfs?.oid ?? e.oid;
      // Both end up in file names: refuse anything that could step outside the cache.
      if (etag === undefined || !ETAG.test(etag)) throw listingError(label, e.path, `oid ${JSON.stringify(etag)}`);
      if (!SAFE_PATH.test(e.path) || e.path.split('/').some((s) => s === '.' || s === '..')) {
        throw listingError(label, e.path, 'a path that leaves the repo folder');
      }
      listing.set(e.path, { path: e.path, size: e.lfs?.size ?? e.size, etag });
    }
  } catch (e) {
    if (!isNetworkError(e)) throw hubError(e, label, settings);
    const cached = await fromStore(store, repo, revision, options.files).catch(() => undefined);
    if (cached) return cached;
    throw unreachable(e, label, settings, 'nothing usable is cached for this revision yet');
  }

  let picked = selectFiles(label, [...listing.keys()], options.files);
  const fetchAll = async (paths: string[]) => {
    for (const p of paths) await fetchFile(store, repo, commit, listing.get(p)!, options, credentials, settings);
  };
  // Small files first: the shard index decides which weights to fetch.
  await fetchAll(picked.filter((p) => !p.endsWith('.safetensors')));
  const tree = store.tree(repo, commit);
  if (!options.files && picked.includes(SHARD_INDEX)) {
    picked = applyShardIndex(label, await tree.text(SHARD_INDEX), picked);
  }
  await fetchAll(picked.filter((p) => p.endsWith('.safetensors')));
  if (revision !== commit) await store.writeRef(repo, revision, commit);
  return tree;
}

async function fetchFile(
  store: HubStore,
  repo: string,
  commit: string,
  file: RemoteFile,
  options: HubOptions,
  credentials: { hubUrl: string; accessToken?: string },
  settings: HubSettings,
): Promise<void> {
  if (await store.has(repo, commit, file)) return;
  const where = `${repo}/${file.path}`;
  let blob: Blob | null;
  try {
    blob = await downloadFile({ repo, path: file.path, revision: commit, ...credentials });
  } catch (e) {
    throw isNetworkError(e)
      ? unreachable(e, where, settings, 'files finished so far stay cached; run again to fetch the rest')
      : hubError(e, where, settings);
  }
  if (!blob) throw listingError(where, file.path, 'listed, but the download answered 404');
  let loaded = 0;
  const onProgress = options.onProgress;
  onProgress?.({ file: file.path, loaded, total: file.size });
  const counted = blob.stream().pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, out) {
        loaded += chunk.byteLength;
        onProgress?.({ file: file.path, loaded, total: file.size });
        out.enqueue(chunk);
      },
    }),
  );
  try {
    await store.put(repo, commit, file, counted);
  } catch (e) {
    if (e instanceof PolyloraError) throw e;
    throw new PolyloraError('HUB_ERROR', 'download failed', {
      file: where,
      expected: `${file.size} bytes`,
      found: `${loaded} bytes, then: ${e instanceof Error ? e.message : String(e)}`,
      hint: 'run the command again; finished files are kept in the cache',
      cause: e,
    });
  }
}

/** The cached snapshot for `revision`, if the store has one holding the selected files. */
async function fromStore(
  store: HubStore,
  repo: string,
  revision: string,
  files: HubOptions['files'],
): Promise<FileTree | undefined> {
  const commit = isCommitHash(revision) ? revision : await store.readRef(repo, revision);
  if (commit === undefined) return undefined;
  const paths = await store.listSnapshot(repo, commit);
  if (paths === undefined) return undefined;
  const where = `${repo}@${revision} (cached snapshot ${commit} in ${store.where})`;
  const picked = selectFiles(where, paths, files);
  const tree = store.tree(repo, commit);
  if (!files && picked.includes(SHARD_INDEX)) applyShardIndex(where, await tree.text(SHARD_INDEX), picked);
  return tree;
}

/** fetch() rejects with a TypeError when no HTTP answer came (refused, DNS, reset); Hub answers are HubApiErrors. */
function isNetworkError(e: unknown): boolean {
  return e instanceof TypeError;
}

function unreachable(e: unknown, where: string, settings: HubSettings, cacheNote: string): PolyloraError {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return new PolyloraError('HUB_ERROR', `cannot reach ${settings.endpoint}`, {
    file: where,
    found: [String((e as Error).message), cause?.code ?? cause?.message].filter(Boolean).join(': '),
    hint: `check the network (and HF_ENDPOINT if set); ${cacheNote}; HF_HUB_OFFLINE=1 uses only the cache`,
    cause: e,
  });
}

function hubError(e: unknown, where: string, settings: HubSettings): PolyloraError {
  if (e instanceof PolyloraError) return e;
  if (!(e instanceof HubApiError)) {
    return new PolyloraError('HUB_ERROR', 'unexpected answer from the Hub', {
      file: where,
      found: e instanceof Error ? e.message : String(e),
      hint: `is ${settings.endpoint} a Hugging Face Hub (HF_ENDPOINT)?`,
      cause: e,
    });
  }
  const status = e.statusCode;
  const found = `HTTP ${status}: ${e.message}`;
  if (status === 401 || status === 403) {
    return new PolyloraError('HUB_ERROR', 'access denied', {
      file: where,
      found,
      hint:
        settings.token === undefined
          ? 'the repo is gated or private (or does not exist): set HF_TOKEN to a token from ' +
            'https://huggingface.co/settings/tokens, and accept the model terms on its Hub page if it is gated'
          : 'the token in HF_TOKEN has no access: accept the model terms on its Hub page, or check the token scopes',
      cause: e,
    });
  }
  if (status === 404) {
    return new PolyloraError('HUB_ERROR', 'not found on the Hub', {
      file: where,
      found,
      hint: 'check the repo id and revision (org/name@revision); a private repo also needs HF_TOKEN',
      cause: e,
    });
  }
  return new PolyloraError('HUB_ERROR', 'the Hub refused the request', {
    file: where,
    found,
    hint: 'try again later; HF_HUB_OFFLINE=1 uses what is already cached',
    cause: e,
  });
}

function listingError(where: string, path: string, found: string): PolyloraError {
  return new PolyloraError('HUB_ERROR', 'inconsistent answer from the Hub', {
    file: where,
    field: path,
    found,
    hint: 'the repo changed during the download; run the command again',
  });
}

function noSafetensors(where: string, paths: readonly string[], kind: 'model' | 'adapter'): PolyloraError {
  const others = paths.filter((p) => OTHER_WEIGHTS.test(p));
  return new PolyloraError('HUB_ERROR', `the ${kind} has no safetensors weights`, {
    file: where,
    expected: kind === 'adapter' ? 'adapter_model.safetensors' : '*.safetensors',
    found: others.length ? preview(others) : preview(paths),
    hint:
      kind === 'adapter'
        ? 'polylora reads only safetensors: load the adapter with peft and save it again with ' +
          '`model.save_pretrained(dir, safe_serialization=True)`'
        : 'polylora reads only safetensors: convert with https://huggingface.co/spaces/safetensors/convert, or ' +
          '`AutoModelForCausalLM.from_pretrained(repo).save_pretrained(dir, safe_serialization=True)` in transformers',
  });
}

function refOrCommit(revision: string): string {
  return isCommitHash(revision) ? `commit ${revision}` : `refs/${revision}`;
}

function preview(items: readonly string[]): string {
  const head = items.slice(0, 8).join(', ');
  return items.length > 8 ? `${head}, ... (${items.length} in all)` : head || '(no files)';
}
