// Runs in both test projects: the browser file code (folders at URLs read by Range requests, picked files read by
// Blob.slice) against real HTTP servers (test/helpers/range-server.ts, one per behaviour) and real File objects.
// (A real <input webkitdirectory> filled by Playwright: picked-folder.browser.test.ts; the seam's behaviour with no
// page and no navigator.gpu: test/platform-node/.)
import { describe, expect, inject, it } from 'vitest';
import { blobSource, fileListTree, openUrlSource, urlTree } from '../../src/platform/browser-files.js';
import { FILE_SIZE, MODEL, NORM_OFFSET, NORM_SHA256, sha256 } from '../helpers/model-bytes.js';

const server = inject('fileServer');
const platform = inject('platform');

/** URL of `rel` in the shared folder on the test server in `mode`; `tag` keeps this test's request counts apart. */
const at = (mode: string, tag: string, rel: string) => `${server}/${mode}/${platform}-${tag}/${rel}`;

/** How many `method` requests the server has answered for `url`. */
async function served(method: string, url: string): Promise<number> {
  const counts = (await (await fetch(`${server}/requests`)).json()) as Record<string, number>;
  return counts[`${method} ${new URL(url).pathname}`] ?? 0;
}

describe('urlTree / openUrlSource', () => {
  it('reads byte ranges with Range requests from a server that honours them', async () => {
    const url = at('range', 'ok', MODEL);
    const src = await openUrlSource(url);
    expect(src.size).toBe(FILE_SIZE);
    expect(await sha256(await src.read(NORM_OFFSET, 512))).toBe(NORM_SHA256);
    expect(await sha256(await src.read(NORM_OFFSET, 512))).toBe(NORM_SHA256);
    expect((await src.read(FILE_SIZE - 3, 3)).byteLength).toBe(3);
    expect((await src.read(5, 0)).byteLength).toBe(0);
    expect(src.wholeFile).toBe(false);
    expect(await served('HEAD', url)).toBe(1);
    expect(await served('GET', url)).toBe(3); // one per non-empty read, nothing cached
    await expect(src.read(FILE_SIZE - 1, 2)).rejects.toMatchObject({ code: 'SAFETENSORS_INVALID', file: url });
  });

  it('falls back to one whole-file read when the server ignores Range', async () => {
    const url = at('whole', 'fallback', MODEL);
    const src = await openUrlSource(url);
    expect(src.size).toBe(FILE_SIZE);
    expect(src.wholeFile).toBe(false);
    const len = await src.read(0, 8);
    expect(src.wholeFile).toBe(true);
    expect(new DataView(len.buffer, len.byteOffset, 8).getBigUint64(0, true)).toBe(2160n);
    expect(await sha256(await src.read(NORM_OFFSET, 512))).toBe(NORM_SHA256);
    expect(await sha256(await src.read(NORM_OFFSET + 100, 412))).toBe(await sha256((await src.read(NORM_OFFSET, 512)).subarray(100)));
    expect(await served('GET', url)).toBe(1);
  });

  it('takes the size from Content-Range when the server refuses HEAD', async () => {
    const url = at('nohead', 'size', MODEL);
    const src = await openUrlSource(url);
    expect(src.size).toBe(FILE_SIZE);
    expect(await sha256(await src.read(NORM_OFFSET, 512))).toBe(NORM_SHA256);
    expect(src.wholeFile).toBe(false);
    expect(await served('HEAD', url)).toBe(1);
    expect(await served('GET', url)).toBe(2); // bytes=0-0 for the size, then the read
  });

  it('rejects a 206 answer for a different range', async () => {
    const url = at('shifted', 'bad', MODEL);
    const src = await openUrlSource(url);
    await expect(src.read(100, 16)).rejects.toMatchObject({
      code: 'IO_ERROR',
      file: url,
      expected: 'bytes 100-115',
      found: 'bytes 101-116',
    });
  });

  it('opens files by name under a folder URL, and reports missing ones', async () => {
    const dir = at('range', 'tree', 'models');
    const tree = urlTree(`${dir}/`); // the trailing slash is optional
    expect(tree.label).toBe(dir);
    expect(urlTree(dir).label).toBe(dir);
    expect(await tree.has('tinystories-656k/config.json')).toBe(true);
    expect(await tree.has('tinystories-656k/missing.json')).toBe(false);
    expect(JSON.parse(await tree.text('tinystories-656k/config.json'))).toMatchObject({ vocab_size: 2048 });
    const src = await tree.open('tinystories-656k/model.safetensors');
    expect(await sha256(await src.read(NORM_OFFSET, 512))).toBe(NORM_SHA256);
    const missing = `${dir}/tinystories-656k/missing.json`;
    await expect(tree.open('tinystories-656k/missing.json')).rejects.toMatchObject({ code: 'FILE_NOT_FOUND', file: missing });
    await expect(tree.text('tinystories-656k/missing.json')).rejects.toMatchObject({ code: 'FILE_NOT_FOUND', file: missing });
  });

  it('reports a server that cannot be reached with the URL and a hint', async () => {
    // Port 9 (discard) on the loopback address: nothing listens there.
    await expect(openUrlSource('http://127.0.0.1:9/x.bin')).rejects.toMatchObject({
      code: 'IO_ERROR',
      file: 'http://127.0.0.1:9/x.bin',
      hint: expect.stringContaining('Access-Control-Allow-Origin'),
    });
  });
});

describe('fileListTree / blobSource', () => {
  /** In-memory stand-ins for what <input webkitdirectory> yields: File objects carrying webkitRelativePath. */
  function picked(files: Record<string, string | Uint8Array<ArrayBuffer>>): File[] {
    return Object.entries(files).map(([path, data]) => {
      const f = new File([data], path.split('/').pop()!);
      Object.defineProperty(f, 'webkitRelativePath', { value: path });
      return f;
    });
  }

  it('names files relative to the picked folder and reads them by slices', async () => {
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);
    const tree = fileListTree(picked({ 'adapter/adapter_config.json': '{"r": 8}', 'adapter/sub/w.bin': bytes }));
    expect(tree.label).toBe('adapter');
    expect(await tree.has('adapter_config.json')).toBe(true);
    expect(await tree.has('adapter/adapter_config.json')).toBe(false);
    expect(JSON.parse(await tree.text('adapter_config.json'))).toEqual({ r: 8 });
    const src = await tree.open('sub/w.bin');
    expect(src.name).toBe('adapter/sub/w.bin');
    expect(src.size).toBe(1000);
    expect([...(await src.read(997, 3))]).toEqual([...bytes.subarray(997)]);
    await expect(src.read(998, 3)).rejects.toMatchObject({ code: 'SAFETENSORS_INVALID' });
    await expect(tree.open('nope.bin')).rejects.toMatchObject({ code: 'FILE_NOT_FOUND', file: 'adapter/nope.bin' });
  });

  it('keeps plain File names when files come from no single folder', async () => {
    const tree = fileListTree([new File(['{}'], 'config.json'), new File(['x'], 'model.safetensors')], 'dropped');
    expect(tree.label).toBe('dropped');
    expect(await tree.has('config.json')).toBe(true);
    expect(() => fileListTree([new File(['a'], 'a.json'), new File(['b'], 'a.json')])).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', file: 'files/a.json' }),
    );
  });

  it('reads a Blob by slices', async () => {
    const src = blobSource('blob', new Blob([Uint8Array.from([1, 2, 3, 4, 5])]));
    expect([...(await src.read(1, 3))]).toEqual([2, 3, 4]);
  });
});
