// The CPU LRU of parsed adapters: registration survives eviction (an evicted adapter is parsed again), concurrent
// gets share one load, pinned adapters are never evicted, failed loads leave nothing cached.
import { describe, expect, it } from 'vitest';
import { PolyloraError } from '../../src/errors.js';
import { resolveModelFiles } from '../../src/engine/load.js';
import type { FileTree } from '../../src/io/source.js';
import { parseModelConfig } from '../../src/model/config.js';
import { AdapterRegistry, type RegistryEvent } from '../../src/lora/cpu-cache.js';
import { golden, sharedPath, sharedTree } from '../helpers/shared.js';
import { adapterTree, peftConfig, tinyConfig, tinyLoras } from './fixtures.js';

const config = tinyConfig();
const tree = (label: string): FileTree => adapterTree(peftConfig(), tinyLoras(['self_attn.q_proj', 'self_attn.v_proj'], [0, 1], 4), `mem/${label}`);

function registry(maxCpuLoras: number, extra: Partial<ConstructorParameters<typeof AdapterRegistry>[0]> = {}) {
  const events: RegistryEvent[] = [];
  const r = new AdapterRegistry({ base: config, maxCpuLoras, onEvent: (e) => events.push(e), ...extra });
  for (const n of ['a', 'b', 'c', 'd']) r.register(n, tree(n));
  return { r, events, loads: (name: string) => events.filter((e) => e.type === 'load' && e.name === name).length };
}

describe('AdapterRegistry', () => {
  it('registers with increasing ids, and refuses duplicates and empty names', () => {
    const { r } = registry(2);
    expect(r.names()).toEqual(['a', 'b', 'c', 'd']);
    expect(['a', 'b', 'c', 'd'].map((n) => r.idOf(n))).toEqual([1, 2, 3, 4]);
    expect(() => r.register('a', tree('a'))).toThrow(/already registered/);
    expect(() => r.register(' ', tree('x'))).toThrow(PolyloraError);
    expect(() => new AdapterRegistry({ base: config, maxCpuLoras: 0 })).toThrow(/maxCpuLoras/);
  });

  it('loads once, then answers from memory; the adapter carries its name and id', async () => {
    const { r, events } = registry(2);
    const a1 = await r.get('a');
    const a2 = await r.get('a');
    expect(a2).toBe(a1);
    expect([a1.name, a1.id, a1.source]).toEqual(['a', 1, 'mem/a']);
    expect(r.stats).toEqual({ hits: 1, misses: 1, loads: 1, failures: 0, evictions: 0 });
    expect(events.map((e) => e.type)).toEqual(['load-start', 'load', 'hit']);
    expect(r.cachedBytes).toBe(a1.byteSize);
  });

  it('concurrent gets of one name share one load', async () => {
    const { r, loads } = registry(2);
    const all = await Promise.all([r.get('b'), r.get('b'), r.get('b'), r.get('b')]);
    expect(new Set(all).size).toBe(1);
    expect(loads('b')).toBe(1);
    expect(r.stats.misses).toBe(1);
  });

  it('evicts the least recently used beyond maxCpuLoras, and re-parses an evicted adapter on its next get', async () => {
    const { r, events, loads } = registry(2);
    await r.get('a');
    await r.get('b');
    await r.get('a'); // a is now the most recent
    await r.get('c'); // evicts b
    expect(r.cachedNames()).toEqual(['a', 'c']);
    expect(events.filter((e) => e.type === 'evict').map((e) => e.name)).toEqual(['b']);
    expect(r.has('b')).toBe(true); // still registered
    const b = await r.get('b'); // evicts a
    expect(b.name).toBe('b');
    expect(loads('b')).toBe(2);
    expect(r.cachedNames()).toEqual(['c', 'b']);
    expect(r.stats.evictions).toBe(2);
  });

  it('never evicts a pinned adapter; over capacity while everything is pinned, back to capacity on unpin', async () => {
    const { r } = registry(1);
    await r.acquire('a');
    expect(r.pinCount('a')).toBe(1);
    await r.get('b'); // a is pinned; b is what this get brought in: both stay
    expect(r.cachedNames()).toEqual(['a', 'b']);
    await r.get('c'); // b evicted, a pinned, c just loaded
    expect(r.cachedNames()).toEqual(['a', 'c']);
    r.unpin('a');
    expect(r.cachedNames()).toEqual(['c']);
    expect(() => r.unpin('a')).toThrow(/unpin without a matching pin/);
  });

  it('pins are counted', async () => {
    const { r } = registry(1);
    r.pin('a');
    r.pin('a');
    await r.get('a');
    await r.get('b');
    r.unpin('a');
    expect(r.isCached('a')).toBe(true);
    r.unpin('a');
    expect(r.isCached('a')).toBe(false);
  });

  it('a failed load caches nothing, reaches every waiter, and the next get tries again', async () => {
    let calls = 0;
    const r = new AdapterRegistry({
      base: config,
      maxCpuLoras: 2,
      resolve: async (source) => {
        calls++;
        return calls === 1 ? adapterTree(peftConfig({ modules_to_save: ['lm_head'] }), []) : tree(source);
      },
    });
    r.register('x', 'flaky');
    const [p1, p2] = [r.get('x'), r.get('x')];
    await expect(p1).rejects.toMatchObject({ field: 'modules_to_save' });
    await expect(p2).rejects.toMatchObject({ field: 'modules_to_save' });
    expect(r.isCached('x')).toBe(false);
    expect(r.stats.failures).toBe(1);
    expect((await r.get('x')).source).toBe('mem/flaky');
    expect(calls).toBe(2);
  });

  it('acquire drops its pin when the load fails', async () => {
    const r = new AdapterRegistry({ base: config, maxCpuLoras: 1 });
    r.register('bad', adapterTree(peftConfig({ modules_to_save: ['lm_head'] }), []));
    await expect(r.acquire('bad')).rejects.toThrow(/modules_to_save/);
    expect(r.pinCount('bad')).toBe(0);
  });

  it('unregister forgets an adapter, but not while it is pinned; unknown names are named', async () => {
    const { r } = registry(2);
    await r.acquire('a');
    expect(() => r.unregister('a')).toThrow(/in use/);
    r.unpin('a');
    r.unregister('a');
    expect(r.has('a')).toBe(false);
    expect(r.cachedNames()).toEqual([]);
    await expect(r.get('a')).rejects.toThrow(/no adapter of this name is registered.*registered: b, c, d/);
  });

  it('an adapter unregistered while loading is handed to its waiters but not kept', async () => {
    const { r } = registry(2);
    const p = r.get('a');
    r.unregister('a');
    expect((await p).name).toBe('a');
    expect(r.cachedNames()).toEqual([]);
  });

  it('string sources go through the resolver (local folders here), validated against the base, warnings reported', async () => {
    const g = golden();
    const base = await sharedTree(g.model_path);
    const ts = parseModelConfig(JSON.parse(await base.text('config.json')), 'config.json').config;
    const warnings: string[] = [];
    const r = new AdapterRegistry({ base: ts, baseName: 'someone/other-model', maxCpuLoras: 3, maxLoraRank: 16, resolve: (s) => resolveModelFiles(s), onWarning: (w) => warnings.push(w) });
    for (const name of Object.keys(g.adapters)) r.register(name, sharedPath(g.adapters[name]!.path));
    const ranks = await Promise.all(r.names().map(async (n) => (await r.get(n)).rank));
    expect(ranks).toEqual([8, 4, 16]);
    expect(warnings).toHaveLength(3);
    expect(warnings.find((w) => w.startsWith('adapter "zara": '))).toMatch(/trained on "raincandy-u\/TinyStories-656K" but the base model is "someone\/other-model"/);
    const small = new AdapterRegistry({ base: ts, maxCpuLoras: 1, maxLoraRank: 8, resolve: (s) => resolveModelFiles(s) });
    small.register('robot', sharedPath(g.adapters.robot!.path));
    await expect(small.get('robot')).rejects.toMatchObject({ field: 'maxLoraRank' });
  });
});
