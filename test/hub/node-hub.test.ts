// Hub downloads in Node through the real @huggingface/hub client, against test/helpers/hub-server.ts (a local server
// in the Hub's URL layout; the real Hub is not reachable here). Every test runs in a fresh temporary HF_HOME.
//
// Python huggingface_hub compatibility: Python is not installable here, so the layout is checked against what its
// file_download.py writes and reads (the same rules @huggingface/hub's cache code follows):
//   models--<org>--<name>/blobs/<etag>: etag = sha256 of an LFS file, git blob sha1 of any other file;
//   snapshots/<commit>/<file>: a relative symlink ../../blobs/<etag>;
//   refs/<revision>: exactly the 40-hex commit, no newline (Python compares `read_text()` with the commit as is);
//   no refs file when the revision is itself a commit.
// Both directions are also run through @huggingface/hub's own port of that cache code: scanCacheDir and
// downloadFileToCacheDir read our cache, and our offline mode reads a cache written by its snapshotDownload.

import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { downloadFileToCacheDir, scanCacheDir, snapshotDownload } from '@huggingface/hub';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { PolyloraError } from '../../src/errors.js';
import type { FileTree } from '../../src/io/source.js';
import type { HubOptions } from '../../src/platform/platform.js';
import { getPlatform } from '../../src/platform/platform.js';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';
import { sharedPath } from '../helpers/shared.js';

const MODEL = 'raincandy-u/TinyStories-656K';
const MODEL_DIR = sharedPath('models/tinystories-656k');
const MODEL_FILES = [
  'config.json',
  'generation_config.json',
  'model.safetensors',
  'special_tokens_map.json',
  'tokenizer.json',
  'tokenizer_config.json',
];
const LORA = 'polylora-test/tinystories-lora'; // main and tag v1.0 = zara (two commits), branch "pirate" = pirate
const ZARA_DIR = sharedPath('adapters/tinystories-656k/zara');
const PIRATE_DIR = sharedPath('adapters/tinystories-656k/pirate');
const ENV_KEYS = [
  'HF_HOME',
  'HF_HUB_CACHE',
  'HUGGINGFACE_HUB_CACHE',
  'XDG_CACHE_HOME',
  'HF_TOKEN',
  'HUGGING_FACE_HUB_TOKEN',
  'HF_TOKEN_PATH',
  'HF_HUB_OFFLINE',
  'HF_ENDPOINT',
];

let server: HubServer;
let fixtures: string; // fake repos built for single tests: symlinks to shared files plus small made-up files
let home: string; // this test's HF_HOME
const savedEnv: Record<string, string | undefined> = {};

beforeAll(async () => {
  fixtures = await mkdtemp(join(tmpdir(), 'polylora-hub-fixtures-'));
  const only = await fixtureRepo('only-bin', { 'config.json': link(MODEL_DIR, 'config.json'), 'pytorch_model.bin': 'x' });
  const mixed = await fixtureRepo('mixed', {
    ...Object.fromEntries(MODEL_FILES.map((f) => [f, link(MODEL_DIR, f)])),
    'README.md': '# model card\n',
    'pytorch_model.bin': 'pickle',
    'model.gguf': 'gguf',
    'onnx/model.onnx': 'onnx',
    'onnx/config.json': '{}',
  });
  const sharded = await fixtureRepo('sharded', {
    'config.json': link(MODEL_DIR, 'config.json'),
    'model.safetensors.index.json': JSON.stringify({
      metadata: { total_size: 8 },
      weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' },
    }),
    'model-00001-of-00002.safetensors': 'shard-1',
    'model-00002-of-00002.safetensors': 'shard-2',
    'consolidated.safetensors': 'every weight again',
  });
  const adapterExtras = await fixtureRepo('adapter-extras', {
    'adapter_config.json': link(ZARA_DIR, 'adapter_config.json'),
    'adapter_model.safetensors': link(ZARA_DIR, 'adapter_model.safetensors'),
    'adapter_model.bin': 'pickle',
    'README.md': '# adapter card\n',
    'tokenizer.json': link(MODEL_DIR, 'tokenizer.json'),
  });
  server = await startHubServer({
    repos: {
      [MODEL]: MODEL_DIR,
      [LORA]: { main: ZARA_DIR, 'v1.0': ZARA_DIR, pirate: PIRATE_DIR },
      'polylora-test/only-bin': only,
      'polylora-test/mixed': mixed,
      'polylora-test/sharded': sharded,
      'polylora-test/adapter-extras': adapterExtras,
    },
  });
});

afterAll(async () => {
  await server?.close();
  await rm(fixtures, { recursive: true, force: true });
});

beforeEach(async () => {
  for (const k of ENV_KEYS) {
    savedEnv[k] = process.env[k];
    delete process.env[k];
  }
  home = await mkdtemp(join(tmpdir(), 'polylora-hf-home-'));
  process.env.HF_HOME = home;
  process.env.HF_ENDPOINT = server.url;
});

afterEach(async () => {
  for (const k of ENV_KEYS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
  await rm(home, { recursive: true, force: true });
});

const openHub = (repo: string, options: HubOptions = {}) => getPlatform().openHub(repo, options);
const repoDir = (repo: string, cache = join(home, 'hub')) => join(cache, `models--${repo.replace('/', '--')}`);

describe('download into the HF cache', () => {
  test('a model comes down through @huggingface/hub in the layout Python huggingface_hub uses', async () => {
    const events: { file: string; loaded: number; total: number }[] = [];
    const tree = await openHub(MODEL, { onProgress: (p) => events.push(p) });
    const commit = server.commit(MODEL);
    const dir = repoDir(MODEL);
    const snapshot = join(dir, 'snapshots', commit);
    expect(tree.label).toBe(snapshot);

    // refs/main holds exactly the commit: Python compares the file's text with the commit as is.
    expect(await readFile(join(dir, 'refs', 'main'), 'utf8')).toBe(commit);
    expect((await readdir(snapshot)).sort()).toEqual(MODEL_FILES);
    const etags: string[] = [];
    for (const f of MODEL_FILES) {
      const source = await readFile(join(MODEL_DIR, f));
      // LFS files (the Hub stores *.safetensors in LFS) are named by sha256, others by their git blob sha1.
      const etag = f.endsWith('.safetensors') ? sha256(source) : gitBlobSha1(source);
      etags.push(etag);
      expect((await lstat(join(snapshot, f))).isSymbolicLink(), f).toBe(true);
      expect(await readlink(join(snapshot, f)), f).toBe(`../../blobs/${etag}`);
      expect(Buffer.compare(await readFile(join(dir, 'blobs', etag)), source), f).toBe(0);
      await expectSameBytes(tree, MODEL_DIR, f);
    }
    expect((await readdir(join(dir, 'blobs'))).sort()).toEqual(etags.sort()); // no .incomplete leftovers

    const src = await tree.open('model.safetensors');
    const source = await readFile(join(MODEL_DIR, 'model.safetensors'));
    expect(src.size).toBe(source.length);
    expect(Buffer.compare(Buffer.from(await src.read(1000, 64)), source.subarray(1000, 1064))).toBe(0);
    await src.close();

    // onProgress: per file, bytes never go back and end at the file size.
    for (const f of MODEL_FILES) {
      const mine = events.filter((e) => e.file === f);
      const size = (await readFile(join(MODEL_DIR, f))).length;
      expect(mine.length, f).toBeGreaterThan(0);
      expect(mine.every((e, i) => e.total === size && (i === 0 || e.loaded >= mine[i - 1]!.loaded)), f).toBe(true);
      expect(mine.at(-1)!.loaded, f).toBe(size);
    }
  });

  test('a second open downloads nothing', async () => {
    await openHub(MODEL);
    const before = server.requests.length;
    const downloadsBefore = server.downloads().length;
    const tree = await openHub(MODEL);
    expect(await tree.has('model.safetensors')).toBe(true);
    expect(server.downloads().length).toBe(downloadsBefore);
    // Only the revision lookup and the listing: no file request at all.
    const calls = server.requests.slice(before).map((r) => r.url.split('?')[0]);
    expect(calls).toEqual([
      `/api/models/${MODEL}/revision/main`,
      `/api/models/${MODEL}/tree/${server.commit(MODEL)}`,
    ]);
  });

  test('a blob already cached for another commit is linked, not downloaded again', async () => {
    await openHub(LORA); // zara at main
    const before = server.downloads().length;
    // Tag v1.0 is another commit with the same zara files.
    const tree = await openHub(`${LORA}@v1.0`);
    expect(server.downloads().length).toBe(before);
    expect(tree.label).toBe(join(repoDir(LORA), 'snapshots', server.commit(LORA, 'v1.0')));
    await expectSameBytes(tree, ZARA_DIR, 'adapter_model.safetensors');
  });

  test('paginated listings are followed', async () => {
    const paged = await startHubServer({ repos: { [MODEL]: MODEL_DIR }, pageSize: 2 });
    try {
      process.env.HF_ENDPOINT = paged.url;
      const tree = await openHub(MODEL);
      for (const f of MODEL_FILES) expect(await tree.has(f), f).toBe(true);
      expect(paged.requests.filter((r) => r.url.includes('/tree/') && r.url.includes('cursor=')).length).toBe(2);
    } finally {
      await paged.close();
    }
  });

  test('a corrupted transfer is refused and leaves no blob and no ref', async () => {
    const bad = await startHubServer({ repos: { [MODEL]: MODEL_DIR }, corrupt: ['model.safetensors'] });
    const dir = repoDir(MODEL);
    try {
      process.env.HF_ENDPOINT = bad.url;
      const err = await openHub(MODEL).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PolyloraError);
      expect((err as PolyloraError).code).toBe('HUB_ERROR');
      expect((err as Error).message).toContain(`${MODEL}/model.safetensors`);
      expect((err as Error).message).toContain('does not match');
      const blobs = await readdir(join(dir, 'blobs'));
      expect(blobs).not.toContain(sha256(await readFile(join(MODEL_DIR, 'model.safetensors'))));
      expect(blobs.filter((b) => b.includes('incomplete'))).toEqual([]);
      await expect(readFile(join(dir, 'refs', 'main'), 'utf8')).rejects.toThrow();
    } finally {
      await bad.close();
    }
    // A good server then completes the same cache, fetching only what is missing.
    process.env.HF_ENDPOINT = server.url;
    const before = server.downloads().length;
    await openHub(MODEL);
    const fetched = server.downloads().slice(before);
    expect(fetched.filter((r) => !r.url.startsWith('/lfs-cdn/') && !r.url.endsWith('/model.safetensors'))).toEqual([]);
    expect(await readFile(join(dir, 'refs', 'main'), 'utf8')).toBe(server.commit(MODEL));
  });
});

describe('file selection', () => {
  test('a model repo gets its config, tokenizer and safetensors, not other formats or subfolders', async () => {
    const tree = await openHub('polylora-test/mixed');
    const snapshot = join(repoDir('polylora-test/mixed'), 'snapshots', server.commit('polylora-test/mixed'));
    expect((await readdir(snapshot)).sort()).toEqual(MODEL_FILES);
    expect(await tree.has('pytorch_model.bin')).toBe(false);
  });

  test('a sharded model gets the shards its index names, not a consolidated copy', async () => {
    const repo = 'polylora-test/sharded';
    await openHub(repo);
    const snapshot = join(repoDir(repo), 'snapshots', server.commit(repo));
    expect((await readdir(snapshot)).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
    ]);
  });

  test('an adapter repo gets adapter_config.json and adapter_model.safetensors only', async () => {
    const repo = 'polylora-test/adapter-extras';
    await openHub(repo);
    const snapshot = join(repoDir(repo), 'snapshots', server.commit(repo));
    expect((await readdir(snapshot)).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  });

  test('options.files overrides the default selection', async () => {
    const tree = await openHub(MODEL, { files: (p) => p === 'config.json' || p === 'tokenizer.json' });
    const snapshot = join(repoDir(MODEL), 'snapshots', server.commit(MODEL));
    expect((await readdir(snapshot)).sort()).toEqual(['config.json', 'tokenizer.json']);
    expect(await tree.has('model.safetensors')).toBe(false);
    await expect(openHub(MODEL, { files: (p) => p.endsWith('.gguf') })).rejects.toThrow(/no file of the repo matches/);
  });

  test('a repo with only pytorch_model.bin is refused with a conversion hint, before any download', async () => {
    const before = server.downloads().length;
    const err = (await openHub('polylora-test/only-bin').catch((e: unknown) => e)) as PolyloraError;
    expect(err).toBeInstanceOf(PolyloraError);
    expect(err.code).toBe('HUB_ERROR');
    expect(err.message).toContain('polylora-test/only-bin@main');
    expect(err.message).toContain('no safetensors weights');
    expect(err.found).toBe('pytorch_model.bin');
    expect(err.hint).toContain('safe_serialization=True');
    expect(server.downloads().length).toBe(before);
  });
});

describe('revisions', () => {
  test('@branch and @commit pin what is downloaded; refs/<branch> records the commit', async () => {
    const pirateCommit = server.commit(LORA, 'pirate');
    const pirate = await openHub(`${LORA}@pirate`);
    await expectSameBytes(pirate, PIRATE_DIR, 'adapter_model.safetensors');
    expect(await readFile(join(repoDir(LORA), 'refs', 'pirate'), 'utf8')).toBe(pirateCommit);

    const main = await openHub(LORA);
    await expectSameBytes(main, ZARA_DIR, 'adapter_model.safetensors');
    expect(await readFile(join(repoDir(LORA), 'refs', 'main'), 'utf8')).toBe(server.commit(LORA));

    const before = server.requests.length;
    const pinned = await openHub(`${LORA}@${pirateCommit}`);
    expect(pinned.label).toBe(pirate.label);
    // A commit needs no revision lookup, and no ref is written for it (as in Python).
    expect(server.requests.slice(before).map((r) => r.url.split('?')[0])).toEqual([
      `/api/models/${LORA}/tree/${pirateCommit}`,
    ]);
    expect((await readdir(join(repoDir(LORA), 'refs'))).sort()).toEqual(['main', 'pirate']);

    const viaOption = await openHub(LORA, { revision: 'pirate' });
    expect(viaOption.label).toBe(pirate.label);
    await expect(openHub(`${LORA}@pirate`, { revision: 'main' })).rejects.toThrow(/two different revisions/);
  });

  test('an unknown revision is a clear error', async () => {
    const err = (await openHub(`${LORA}@nope`).catch((e: unknown) => e)) as PolyloraError;
    expect(err.code).toBe('HUB_ERROR');
    expect(err.message).toContain(`${LORA}@nope`);
    expect(err.message).toContain('HTTP 404');
    expect(err.message).toContain('Invalid rev id: nope');
  });
});

describe('offline and unreachable', () => {
  test('HF_HUB_OFFLINE=1 serves from the cache without a single request', async () => {
    const online = await openHub(MODEL);
    process.env.HF_HUB_OFFLINE = '1';
    const before = server.requests.length;
    const offline = await openHub(MODEL);
    expect(offline.label).toBe(online.label);
    await expectSameBytes(offline, MODEL_DIR, 'model.safetensors');
    expect(server.requests.length).toBe(before);
  });

  test('HF_HUB_OFFLINE=1 with an empty cache names the repo, revision and cache dir', async () => {
    process.env.HF_HUB_OFFLINE = '1';
    const before = server.requests.length;
    const err = (await openHub(`${MODEL}@v2`).catch((e: unknown) => e)) as PolyloraError;
    expect(err).toBeInstanceOf(PolyloraError);
    expect(err.code).toBe('HUB_ERROR');
    expect(err.message).toContain(`${MODEL}@v2`);
    expect(err.message).toContain('refs/v2');
    expect(err.message).toContain(join(home, 'hub'));
    expect(err.hint).toContain('HF_HUB_OFFLINE');
    expect(server.requests.length).toBe(before);
  });

  test('an unreachable endpoint falls back to the cache, or says it cannot be reached', async () => {
    const gone = await startHubServer({ repos: {} });
    const deadUrl = gone.url;
    await gone.close();
    process.env.HF_ENDPOINT = deadUrl;
    const err = (await openHub(MODEL).catch((e: unknown) => e)) as PolyloraError;
    expect(err).toBeInstanceOf(PolyloraError);
    expect(err.code).toBe('HUB_ERROR');
    expect(err.message).toContain(`cannot reach ${deadUrl}`);
    expect(err.message).toContain(`${MODEL}@main`);
    expect(err.message).toContain('ECONNREFUSED');

    process.env.HF_ENDPOINT = server.url;
    const online = await openHub(MODEL);
    process.env.HF_ENDPOINT = deadUrl;
    expect((await openHub(MODEL)).label).toBe(online.label);
  });
});

describe('access', () => {
  test('HF_TOKEN is sent on every request; without it a gated repo is a clear 401', async () => {
    const gated = await startHubServer({ repos: { [MODEL]: MODEL_DIR }, token: 'hf_polylora_test' });
    try {
      process.env.HF_ENDPOINT = gated.url;
      const err = (await openHub(MODEL).catch((e: unknown) => e)) as PolyloraError;
      expect(err).toBeInstanceOf(PolyloraError);
      expect(err.code).toBe('HUB_ERROR');
      expect(err.message).toContain(`${MODEL}@main`);
      expect(err.message).toContain('HTTP 401');
      expect(err.hint).toContain('set HF_TOKEN');

      process.env.HF_TOKEN = 'hf_wrong';
      const wrong = (await openHub(MODEL).catch((e: unknown) => e)) as PolyloraError;
      expect(wrong.message).toContain('Invalid credentials');
      expect(wrong.hint).toContain('has no access');

      process.env.HF_TOKEN = 'hf_polylora_test';
      const before = gated.requests.length;
      const tree = await openHub(MODEL);
      await expectSameBytes(tree, MODEL_DIR, 'model.safetensors');
      const hubCalls = gated.requests.slice(before).filter((r) => !r.url.startsWith('/lfs-cdn/'));
      expect(hubCalls.length).toBeGreaterThan(2);
      expect(hubCalls.filter((r) => r.authorization !== 'Bearer hf_polylora_test')).toEqual([]);
    } finally {
      await gated.close();
    }
  });

  test('the token stored by `huggingface-cli login` ($HF_HOME/token) is used when HF_TOKEN is unset', async () => {
    const gated = await startHubServer({ repos: { [MODEL]: MODEL_DIR }, token: 'hf_from_file' });
    try {
      process.env.HF_ENDPOINT = gated.url;
      await writeFile(join(home, 'token'), 'hf_from_file\n');
      await openHub(MODEL, { files: (p) => p === 'config.json' });
      expect(gated.requests.every((r) => r.authorization === 'Bearer hf_from_file')).toBe(true);
    } finally {
      await gated.close();
    }
  });

  test('a malformed token and an unknown repo are clear errors', async () => {
    process.env.HF_TOKEN = 'not-a-token';
    await expect(openHub(MODEL)).rejects.toThrow(/malformed Hugging Face token/);
    delete process.env.HF_TOKEN;

    const err = (await openHub('nobody/nothing').catch((e: unknown) => e)) as PolyloraError;
    expect(err.code).toBe('HUB_ERROR');
    expect(err.message).toContain('nobody/nothing@main');
    expect(err.message).toContain('HTTP 404');
    expect(err.message).toContain('Repository not found');
    expect(err.hint).toContain('check the repo id');
  });
});

describe('cache shared with the huggingface_hub layout (through @huggingface/hub cache code)', () => {
  test('its scanCacheDir and downloadFileToCacheDir read our cache', async () => {
    await openHub(MODEL);
    const commit = server.commit(MODEL);
    const scan = await scanCacheDir(join(home, 'hub'));
    expect(scan.warnings).toEqual([]);
    expect(scan.repos.map((r) => r.id)).toEqual([{ name: MODEL, type: 'model' }]);
    const [rev] = scan.repos[0]!.revisions;
    expect(rev!.commitOid).toBe(commit);
    expect(rev!.refs).toEqual(['main']);
    expect(rev!.files.map((f) => f.path.split('/').at(-1)).sort()).toEqual(MODEL_FILES);

    // Given a commit, it finds our snapshot entry and asks the server nothing.
    const before = server.requests.length;
    const path = await downloadFileToCacheDir({
      repo: MODEL,
      path: 'config.json',
      revision: commit,
      hubUrl: server.url,
      cacheDir: join(home, 'hub'),
    });
    expect(path).toBe(join(repoDir(MODEL), 'snapshots', commit, 'config.json'));
    expect(server.requests.length).toBe(before);
  });

  test('we read offline a cache its snapshotDownload wrote', async () => {
    const cache = join(home, 'other-cache');
    await snapshotDownload({ repo: MODEL, hubUrl: server.url, cacheDir: cache });
    process.env.HF_HUB_CACHE = cache;
    process.env.HF_HUB_OFFLINE = 'true';
    const tree = await openHub(MODEL);
    expect(tree.label).toBe(join(repoDir(MODEL, cache), 'snapshots', server.commit(MODEL)));
    for (const f of MODEL_FILES) await expectSameBytes(tree, MODEL_DIR, f);
  });
});

async function expectSameBytes(tree: FileTree, dir: string, file: string): Promise<void> {
  const want = await readFile(join(dir, file));
  const src = await tree.open(file);
  const got = await src.read(0, src.size);
  await src.close();
  expect(Buffer.compare(Buffer.from(got), want), file).toBe(0);
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** What `git hash-object` prints: sha1 of `blob <size>\0` + content. */
function gitBlobSha1(bytes: Uint8Array): string {
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}

/** A file of a fixture repo: a symlink to a shared file, or literal contents. */
interface Link {
  link: string;
}
function link(dir: string, file: string): Link {
  return { link: join(dir, file) };
}

async function fixtureRepo(name: string, files: Record<string, Link | string>): Promise<string> {
  const root = join(fixtures, name);
  for (const [path, content] of Object.entries(files)) {
    const abs = join(root, ...path.split('/'));
    await mkdir(join(abs, '..'), { recursive: true });
    if (typeof content === 'string') await writeFile(abs, content);
    else await symlink(content.link, abs);
  }
  return root;
}
