// The adapters a server knows, and the parsed ones it keeps in CPU memory (S-LoRA's host-memory tier).
//
// Registration (name -> where to read it) is permanent until unregister(); the parsed LoraAdapter objects live
// in an LRU of at most `maxCpuLoras` entries. An evicted adapter is parsed again from its source on its next
// get(). Pinned adapters (pin() counts; e.g. one pin per running sequence or per GPU slot holding it) are never
// evicted: when every cached adapter is pinned the cache holds more than maxCpuLoras until pins are released,
// and evicts then. Concurrent get()s of one name share one load; a failed load caches nothing and the next
// get() tries again. A load never evicts the adapter it brought in (with everything else pinned the cache then
// holds one more than maxCpuLoras until the next eviction).

import { PolyloraError } from '../errors.js';
import type { FileTree } from '../io/source.js';
import type { ModelConfig } from '../model/config-types.js';
import { loadLoraAdapter, type LoraAdapter } from './adapter.js';

/** Where an adapter's files are: a FileTree, or a string the registry's `resolve` turns into one (path, Hub id). */
export type AdapterSource = FileTree | string;

export type RegistryEvent =
  | { type: 'hit'; name: string }
  | { type: 'load-start'; name: string }
  | { type: 'load'; name: string; ms: number; bytes: number }
  | { type: 'load-failed'; name: string; error: unknown }
  | { type: 'evict'; name: string; bytes: number };

export interface RegistryStats {
  /** get() answered from the cache. */
  hits: number;
  /** get() that started a load (concurrent waiters on that load are not counted again). */
  misses: number;
  /** Loads that completed. */
  loads: number;
  failures: number;
  evictions: number;
}

export interface AdapterRegistryOptions {
  /** The base model every adapter is validated against. */
  base: ModelConfig;
  /** The base's name or path, for the loose base_model_name_or_path check (warning only). */
  baseName?: string;
  /** Parsed adapters kept in memory (>= 1). */
  maxCpuLoras: number;
  /** Largest rank accepted (the GPU slots' rank). */
  maxLoraRank?: number;
  /** Turns a string source into files; the engine passes resolveModelFiles (local folder or Hub id). */
  resolve?: (source: string) => Promise<FileTree>;
  onEvent?: (e: RegistryEvent) => void;
  /** Adapter warnings, once per load (default: none reported). */
  onWarning?: (message: string) => void;
}

interface Entry {
  name: string;
  id: number;
  source: AdapterSource;
  pins: number;
  adapter: LoraAdapter | null;
  loading: Promise<LoraAdapter> | null;
}

export class AdapterRegistry {
  readonly stats: RegistryStats = { hits: 0, misses: 0, loads: 0, failures: 0, evictions: 0 };
  private readonly entries = new Map<string, Entry>();
  /** Names of cached adapters, least recently used first. */
  private readonly lru: string[] = [];
  private nextId = 1;

  constructor(private readonly options: AdapterRegistryOptions) {
    if (!Number.isInteger(options.maxCpuLoras) || options.maxCpuLoras < 1) {
      throw new PolyloraError('INVALID_ARGUMENT', 'maxCpuLoras must be a positive integer', { field: 'maxCpuLoras', found: String(options.maxCpuLoras) });
    }
  }

  /** Registers `name`; returns its numeric id (1, 2, ... in registration order; never reused). */
  register(name: string, source: AdapterSource): number {
    if (typeof name !== 'string' || name.trim() === '') {
      throw new PolyloraError('INVALID_ARGUMENT', 'adapter name must be a non-empty string', { field: 'name', found: JSON.stringify(name) });
    }
    if (this.entries.has(name)) {
      throw new PolyloraError('INVALID_ARGUMENT', 'an adapter of this name is already registered', {
        field: 'name',
        found: JSON.stringify(name),
        hint: 'unregister it first, or pick another name',
      });
    }
    const id = this.nextId++;
    this.entries.set(name, { name, id, source, pins: 0, adapter: null, loading: null });
    return id;
  }

  /** Forgets `name` and drops its parsed copy. A pinned adapter cannot be unregistered. */
  unregister(name: string): void {
    const e = this.entry(name);
    if (e.pins > 0) {
      throw new PolyloraError('INVALID_ARGUMENT', 'adapter is in use', { field: 'name', found: `"${name}" pinned ${e.pins} time(s)`, hint: 'unpin it (finish its requests) first' });
    }
    this.entries.delete(name);
    this.dropFromLru(name);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Registered names, in registration order. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  idOf(name: string): number {
    return this.entry(name).id;
  }

  /** Where `name` is read from, as registered. */
  sourceOf(name: string): AdapterSource {
    return this.entry(name).source;
  }

  /** True when the parsed adapter is in memory now. */
  isCached(name: string): boolean {
    return this.entries.get(name)?.adapter != null;
  }

  /** Names of the parsed adapters in memory, least recently used first. */
  cachedNames(): string[] {
    return [...this.lru];
  }

  /** Bytes of A/B tensors held by the cached adapters. */
  get cachedBytes(): number {
    return this.lru.reduce((sum, n) => sum + this.entries.get(n)!.adapter!.byteSize, 0);
  }

  pinCount(name: string): number {
    return this.entry(name).pins;
  }

  /** The parsed adapter, from memory or read from its source (and validated against the base). */
  async get(name: string): Promise<LoraAdapter> {
    const e = this.entry(name);
    if (e.adapter) {
      this.stats.hits++;
      this.emit({ type: 'hit', name });
      this.touch(name);
      return e.adapter;
    }
    if (e.loading) return e.loading;
    this.stats.misses++;
    e.loading = this.load(e);
    return e.loading;
  }

  /** Keeps `name` from eviction until a matching unpin(). May be called before the adapter is loaded. */
  pin(name: string): void {
    this.entry(name).pins++;
  }

  unpin(name: string): void {
    const e = this.entry(name);
    if (e.pins === 0) {
      throw new PolyloraError('INVALID_ARGUMENT', 'unpin without a matching pin', { field: 'name', found: `"${name}" is not pinned` });
    }
    e.pins--;
    if (e.pins === 0) this.evictOverCapacity();
  }

  /** pin() + get(): the adapter cannot be evicted from the moment it arrives; the pin is dropped if the load fails. */
  /** pin + get when the parsed adapter is in memory now (synchronously); null otherwise (nothing pinned). */
  tryAcquire(name: string): LoraAdapter | null {
    const e = this.entries.get(name);
    if (!e?.adapter) return null;
    e.pins++;
    this.stats.hits++;
    this.emit({ type: 'hit', name });
    this.touch(name);
    return e.adapter;
  }

  async acquire(name: string): Promise<LoraAdapter> {
    this.pin(name);
    try {
      return await this.get(name);
    } catch (e) {
      if (this.entries.has(name)) this.unpin(name);
      throw e;
    }
  }

  private async load(e: Entry): Promise<LoraAdapter> {
    const { name } = e;
    this.emit({ type: 'load-start', name });
    const t0 = performance.now();
    try {
      const tree = typeof e.source === 'string' ? await this.resolveSource(e.source) : e.source;
      const adapter = await loadLoraAdapter(tree, this.options.base, {
        name,
        id: e.id,
        maxLoraRank: this.options.maxLoraRank,
        baseModelName: this.options.baseName,
      });
      if (this.entries.get(name) !== e) return adapter; // unregistered while loading: hand it out, keep nothing
      e.adapter = adapter;
      this.lru.push(name);
      this.stats.loads++;
      this.emit({ type: 'load', name, ms: performance.now() - t0, bytes: adapter.byteSize });
      for (const w of adapter.warnings) this.options.onWarning?.(`adapter "${name}": ${w}`);
      this.evictOverCapacity(name);
      return adapter;
    } catch (error) {
      this.stats.failures++;
      this.emit({ type: 'load-failed', name, error });
      throw error;
    } finally {
      e.loading = null;
    }
  }

  private resolveSource(source: string): Promise<FileTree> {
    if (!this.options.resolve) {
      throw new PolyloraError('INVALID_ARGUMENT', 'adapter source is a string but the registry has no resolver', {
        field: 'resolve',
        found: JSON.stringify(source),
        hint: 'pass `resolve` (e.g. resolveModelFiles) in AdapterRegistryOptions, or register a FileTree',
      });
    }
    return this.options.resolve(source);
  }

  /**
   * Evicts least recently used, unpinned adapters while more than maxCpuLoras are cached. `keep` (the adapter a
   * load just brought in) is spared, so a get() never throws away what it returns.
   */
  private evictOverCapacity(keep?: string): void {
    let excess = this.lru.length - this.options.maxCpuLoras;
    for (let i = 0; excess > 0 && i < this.lru.length; ) {
      const e = this.entries.get(this.lru[i]!)!;
      if (e.pins > 0 || e.name === keep) {
        i++;
        continue;
      }
      const bytes = e.adapter!.byteSize;
      e.adapter = null;
      this.lru.splice(i, 1);
      excess--;
      this.stats.evictions++;
      this.emit({ type: 'evict', name: e.name, bytes });
    }
  }

  private touch(name: string): void {
    this.dropFromLru(name);
    this.lru.push(name);
  }

  private dropFromLru(name: string): void {
    const i = this.lru.indexOf(name);
    if (i >= 0) this.lru.splice(i, 1);
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) {
      const known = [...this.entries.keys()];
      throw new PolyloraError('INVALID_ARGUMENT', 'no adapter of this name is registered', {
        field: 'name',
        found: JSON.stringify(name),
        hint: known.length ? `registered: ${known.slice(0, 8).join(', ')}${known.length > 8 ? ', ...' : ''}` : 'no adapter is registered',
      });
    }
    return e;
  }

  private emit(e: RegistryEvent): void {
    this.options.onEvent?.(e);
  }
}
