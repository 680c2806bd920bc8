// The Hub stand-in (test/helpers/hub-server.ts) speaks the parts of the Hub protocol that clients rely on beyond
// what @huggingface/hub's download path exercises: HEAD, suffix and bad ranges, Python's form-encoded paths-info,
// CORS preflights, error codes.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';
import { sharedPath } from '../helpers/shared.js';

const MODEL = 'raincandy-u/TinyStories-656K';
const DIR = sharedPath('models/tinystories-656k');
let server: HubServer;
let weights: Buffer;
let config: Buffer;

beforeAll(async () => {
  server = await startHubServer({ repos: { [MODEL]: DIR } });
  weights = await readFile(`${DIR}/model.safetensors`);
  config = await readFile(`${DIR}/config.json`);
});
afterAll(() => server?.close());

describe('hub-server', () => {
  test('HEAD on an LFS file: 302 with X-Linked-Etag (sha256), X-Linked-Size and X-Repo-Commit, as Python reads it', async () => {
    const r = await fetch(`${server.url}/${MODEL}/resolve/main/model.safetensors`, { method: 'HEAD', redirect: 'manual' });
    expect(r.status).toBe(302);
    expect(r.headers.get('x-linked-etag')).toBe(`"${createHash('sha256').update(weights).digest('hex')}"`);
    expect(r.headers.get('x-linked-size')).toBe(String(weights.length));
    expect(r.headers.get('x-repo-commit')).toBe(server.commit(MODEL));
    const cdn = await fetch(r.headers.get('location')!, { method: 'HEAD' });
    expect(cdn.status).toBe(200);
    expect(cdn.headers.get('content-length')).toBe(String(weights.length));
    expect(cdn.headers.get('accept-ranges')).toBe('bytes');
  });

  test('ranges: a-b, a-, -n, and an unsatisfiable one', async () => {
    const url = `${server.url}/${MODEL}/resolve/main/config.json`;
    const get = (range: string) => fetch(url, { headers: { Range: range } });
    const ab = await get('bytes=10-19');
    expect(ab.status).toBe(206);
    expect(ab.headers.get('content-range')).toBe(`bytes 10-19/${config.length}`);
    expect(Buffer.from(await ab.arrayBuffer()).equals(config.subarray(10, 20))).toBe(true);
    const open = await get(`bytes=${config.length - 5}-`);
    expect(Buffer.from(await open.arrayBuffer()).equals(config.subarray(-5))).toBe(true);
    const suffix = await get('bytes=-7');
    expect(Buffer.from(await suffix.arrayBuffer()).equals(config.subarray(-7))).toBe(true);
    const bad = await get(`bytes=${config.length}-`);
    expect(bad.status).toBe(416);
    expect(bad.headers.get('content-range')).toBe(`bytes */${config.length}`);
    await bad.body?.cancel();
  });

  test('a small file carries its git blob sha1 as ETag', async () => {
    const r = await fetch(`${server.url}/${MODEL}/resolve/main/config.json`, { method: 'HEAD' });
    const gitSha1 = createHash('sha1').update(`blob ${config.length}\0`).update(config).digest('hex');
    expect(r.headers.get('etag')).toBe(`"${gitSha1}"`);
  });

  test('paths-info accepts JSON (@huggingface/hub) and form-encoded (Python) bodies', async () => {
    const url = `${server.url}/api/models/${MODEL}/paths-info/main`;
    const json = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ paths: ['config.json', 'nope'], expand: true }),
    }).then((r) => r.json());
    const form = await fetch(url, {
      method: 'POST',
      body: new URLSearchParams([
        ['paths', 'config.json'],
        ['paths', 'model.safetensors'],
        ['expand', 'True'],
      ]),
    }).then((r) => r.json());
    expect(json.map((e: { path: string }) => e.path)).toEqual(['config.json']);
    expect(json[0].lastCommit.id).toBe(server.commit(MODEL));
    expect(form.map((e: { path: string }) => e.path)).toEqual(['config.json', 'model.safetensors']);
    expect(form[1].lfs.size).toBe(weights.length);
  });

  test('errors carry the Hub error codes; CORS preflights are answered', async () => {
    const code = async (path: string) => (await fetch(`${server.url}${path}`)).headers.get('x-error-code');
    expect(await code('/api/models/nobody/nothing/revision/main')).toBe('RepoNotFound');
    expect(await code(`/api/models/${MODEL}/revision/nope`)).toBe('RevisionNotFound');
    expect(await code(`/${MODEL}/resolve/main/nope.json`)).toBe('EntryNotFound');
    const pre = await fetch(`${server.url}/${MODEL}/resolve/main/config.json`, { method: 'OPTIONS' });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-headers')).toContain('Range');
  });
});
