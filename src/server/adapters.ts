// Which adapters the server serves, and how a request's `model` becomes one: the base (or the default adapter),
// a served adapter, or a name the resolvers find. Adapters come from --lora-modules (static), the load API and the
// resolvers (both recorded in the state store, restored at start). Every change of one name runs under that name's
// lock, so concurrent first requests for a resolvable name load it once, and a load and an unload never interleave.
// An adapter that fails to load answers its error and changes nothing; everything else keeps being served.

import { resolve as resolvePath } from 'node:path';
import type { LLM } from '../engine/llm.js';
import { LoRARequest } from '../engine/lora-request.js';
import type { FileTree } from '../io/source.js';
import type { LoraAdapter, LoraTarget } from '../lora/adapter.js';
import { getPlatform } from '../platform/platform.js';
import type { EngineHooks } from './engine-hooks.js';
import { HttpError, toHttpError } from './http-error.js';
import { checkAdapterName, checkLoraPath, isAdapterName } from './names.js';
import type { LoraResolver } from './resolvers.js';
import type { AdapterStateStore } from './state-store.js';

/** An adapter as --lora-modules gives it (vLLM's LoRAModulePath). */
export interface LoraModuleSpec {
  name: string;
  path: string;
  /** The base it belongs to (shown as `parent` when it is one of the served base names). */
  baseModelName?: string;
}

export type AdapterOrigin = 'static' | 'api' | 'resolver';

export interface ServedAdapter {
  name: string;
  /** The request every use of the adapter is made with (one object: the engine's registry sees one source). */
  request: LoRARequest;
  /** /v1/models `root`: the folder, Hub id or label it was read from. */
  root: string;
  /** /v1/models `parent`: the served base name. */
  parent: string;
  origin: AdapterOrigin;
  /** Unix seconds when it was added. */
  created: number;
  rank: number;
  targets: LoraTarget[];
  /** Bytes of its A and B tensors. */
  bytes: number;
}

/** Where a request goes: the name that answers (`model` of the response) and the adapter, or null for the base. */
export interface Route {
  model: string;
  adapter: ServedAdapter | null;
}

export interface AdapterManagerOptions {
  /** The base's served names (--served-model-name); the first is the one responses carry. */
  baseNames: string[];
  resolvers?: LoraResolver[];
  store?: AdapterStateStore | null;
  /** Log lines (loads, unloads, restore problems). */
  onLog?: (message: string) => void;
}

export class AdapterManager {
  readonly baseNames: readonly string[];
  private readonly llm: LLM;
  private readonly hooks: EngineHooks;
  private readonly served = new Map<string, ServedAdapter>();
  private readonly resolvers: LoraResolver[];
  private readonly store: AdapterStateStore | null;
  private readonly log: (m: string) => void;
  private readonly locks = new Map<string, Promise<void>>();
  /** Requests running per adapter name. */
  private readonly active = new Map<string, number>();
  /** Unloaded adapters the engine still runs requests of: removed from the engine when the last one ends. */
  private readonly retiring = new Set<string>();
  /** State records that could not be restored at start (kept; unloading the name drops them). */
  private readonly unrestored = new Set<string>();
  private defaultName: string | null = null;

  constructor(llm: LLM, hooks: EngineHooks, options: AdapterManagerOptions) {
    if (options.baseNames.length === 0) throw new HttpError(500, 'the base model needs at least one served name');
    this.llm = llm;
    this.hooks = hooks;
    this.baseNames = options.baseNames;
    this.resolvers = [...(options.resolvers ?? [])];
    this.store = options.store ?? null;
    this.log = options.onLog ?? (() => {});
  }

  /** The served adapters, in the order they were added. */
  list(): ServedAdapter[] {
    return [...this.served.values()];
  }

  get(name: string): ServedAdapter | undefined {
    return this.served.get(name);
  }

  /** Every name a request may use now: base names, then adapters. */
  names(): string[] {
    return [...this.baseNames, ...this.served.keys()];
  }

  /** The adapter base-name requests get (--default-lora), or null. */
  get defaultLora(): string | null {
    return this.defaultName;
  }

  /** Requests running now per adapter name. */
  activeCounts(): ReadonlyMap<string, number> {
    return this.active;
  }

  /** Adds a resolver after the configured ones (the plugin API). Names must be unique. */
  addResolver(r: LoraResolver): void {
    if (this.resolvers.some((x) => x.name === r.name)) {
      throw new HttpError(400, `a resolver named "${r.name}" is already registered`);
    }
    this.resolvers.push(r);
  }

  get resolverNames(): string[] {
    return this.resolvers.map((r) => r.name);
  }

  /** --lora-modules: loaded at start; any failure stops the start (as vLLM). Not recorded in the state store. */
  async addStatic(modules: LoraModuleSpec[]): Promise<void> {
    for (const m of modules) {
      const name = checkAdapterName(m.name, '--lora-modules name', this.baseNames);
      if (this.served.has(name)) throw new HttpError(400, `--lora-modules: the name "${name}" is given twice`);
      const parent = m.baseModelName && this.baseNames.includes(m.baseModelName) ? m.baseModelName : this.baseNames[0]!;
      const source = await localOrHub(checkLoraPath(m.path, '--lora-modules path'));
      await this.locked(name, () => this.install(name, source, { root: source, origin: 'static', parent }));
    }
  }

  /**
   * Loads the adapters recorded in the state store. One that fails (folder gone, resolver gone) is reported and
   * skipped; its record is kept so that it comes back once its files do (unloading the name forgets it).
   */
  async restore(): Promise<void> {
    if (!this.store) return;
    for (const r of this.store.list()) {
      if (this.served.has(r.name) || this.baseNames.includes(r.name) || !isAdapterName(r.name)) {
        this.log(`state: skipping adapter "${r.name}" (the name is taken by the base or a --lora-modules entry, or invalid)`);
        continue;
      }
      try {
        await this.locked(r.name, async () => {
          const origin = r.resolver ? 'resolver' : 'api';
          if (r.path !== null) {
            await this.install(r.name, r.path, { root: r.path, origin, record: false });
            return;
          }
          const resolver = this.resolvers.find((x) => x.name === r.resolver);
          const found = resolver ? await resolver.resolve(r.name, this.baseNames[0]!) : null;
          if (!found) throw new HttpError(404, `resolver "${r.resolver}" ${resolver ? 'no longer has it' : 'is not configured'}`);
          const root = found.root ?? (typeof found.source === 'string' ? found.source : null);
          await this.install(r.name, found.source, { root, origin, record: false });
        });
        this.log(`restored adapter "${r.name}" from ${r.path ?? r.resolver}`);
      } catch (e) {
        this.unrestored.add(r.name);
        this.log(`state: adapter "${r.name}" could not be restored (its record is kept): ${toHttpError(e).message}`);
      }
    }
  }

  /** --default-lora: requests for a base name get this adapter (served, or found by a resolver now). */
  async setDefaultLora(name: string | null): Promise<void> {
    if (name === null) {
      this.defaultName = null;
      return;
    }
    const route = await this.route(name);
    if (!route.adapter) throw new HttpError(400, `--default-lora: "${name}" is a base model name, not an adapter`);
    this.defaultName = route.adapter.name;
  }

  /**
   * POST /v1/load_lora_adapter: reads and validates the adapter, serves it and records it. `loadInplace` (vLLM's
   * load_inplace) replaces an adapter of the same name; without it a taken name is a 400.
   */
  async load(name: string, path: string, loadInplace = false): Promise<ServedAdapter> {
    checkAdapterName(name, 'lora_name', this.baseNames);
    checkLoraPath(path, 'lora_path');
    return this.locked(name, async () => {
      const old = this.served.get(name);
      if (old && !loadInplace) {
        throw new HttpError(
          400,
          `The lora adapter '${name}' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.`,
          { param: 'lora_name' },
        );
      }
      const source = await localOrHub(path);
      if (!old) return this.install(name, source, { root: source, origin: 'api' });
      if (old.origin === 'static' || this.defaultName === name || this.active.has(name)) {
        throw new HttpError(
          400,
          `adapter "${name}" comes from --lora-modules, is the default adapter, or has requests running; it cannot be replaced now`,
          { param: 'lora_name' },
        );
      }
      // In place: the old version leaves the engine first (so the files are read again); a failed load leaves the name unloaded.
      this.retire(old);
      try {
        return await this.install(name, source, { root: source, origin: 'api' });
      } catch (e) {
        await this.store?.remove(name);
        throw e;
      }
    });
  }

  /** POST /v1/unload_lora_adapter: stops serving `name` (requests already running finish) and forgets its record. */
  async unload(name: string): Promise<void> {
    if (typeof name !== 'string' || name === '') {
      throw new HttpError(400, "'lora_name' needs to be provided to unload a LoRA adapter.", { param: 'lora_name' });
    }
    await this.locked(name, async () => {
      const s = this.served.get(name);
      if (!s) {
        if (this.unrestored.delete(name)) {
          await this.store?.remove(name);
          return;
        }
        throw new HttpError(404, `The lora adapter '${name}' cannot be found.`, { param: 'lora_name' });
      }
      if (this.defaultName === name) {
        throw new HttpError(400, `adapter "${name}" is the default adapter (--default-lora); it cannot be unloaded`, { param: 'lora_name' });
      }
      await this.store?.remove(name);
      this.retire(s);
      this.log(`unloaded adapter "${name}"`);
    });
  }

  /**
   * Where a request for `model` goes. A name nobody serves is offered to the resolvers in order (under the name's
   * lock: concurrent first requests load it once); 404 lists the served names when none has it.
   */
  async route(model: string | undefined): Promise<Route> {
    if (model === undefined || this.baseNames.includes(model)) {
      const d = this.defaultName === null ? null : this.served.get(this.defaultName)!;
      return d ? { model: d.name, adapter: d } : { model: this.baseNames[0]!, adapter: null };
    }
    const served = this.served.get(model);
    if (served) return { model, adapter: served };
    if (this.resolvers.length === 0 || !isAdapterName(model) || this.hooks.maxLoraRank === null) throw this.unknown(model, []);
    return this.locked(model, async () => {
      const now = this.served.get(model);
      if (now) return { model, adapter: now };
      const notes: string[] = [];
      let found = false;
      for (const r of this.resolvers) {
        let res;
        try {
          res = await r.resolve(model, this.baseNames[0]!);
        } catch (e) {
          notes.push(`${r.name}: ${toHttpError(e).message}`);
          continue;
        }
        if (!res) continue;
        found = true;
        try {
          const root = res.root ?? (typeof res.source === 'string' ? res.source : null);
          const s = await this.install(model, res.source, { root, origin: 'resolver', resolver: r.name });
          this.log(`resolved adapter "${model}" with ${r.name}`);
          return { model, adapter: s };
        } catch (e) {
          notes.push(`${r.name}: ${toHttpError(e).message}`);
        }
      }
      if (found) {
        throw new HttpError(400, `LoRA adapter '${model}' was found but could not be loaded: ${notes.join('; ')}`, { param: 'model' });
      }
      throw this.unknown(model, notes);
    });
  }

  /** Counts a request of `adapter` as running until `done` settles (an unloaded adapter leaves the engine after its last one). */
  track(adapter: ServedAdapter | null, done: Promise<unknown>): void {
    if (!adapter) return;
    const name = adapter.name;
    this.active.set(name, (this.active.get(name) ?? 0) + 1);
    const end = () => {
      const left = (this.active.get(name) ?? 1) - 1;
      if (left > 0) this.active.set(name, left);
      else this.active.delete(name);
      // After the engine's own cleanup of the request (it unpins the adapter in a later callback).
      if (left <= 0 && this.retiring.has(name)) setImmediate(() => this.removeFromEngine(name));
    };
    done.then(end, end);
  }

  private unknown(model: string, notes: string[]): HttpError {
    const names = this.names();
    const shown = names.slice(0, 20).join(', ') + (names.length > 20 ? `, ... (${names.length} in all)` : '');
    return new HttpError(
      404,
      `The model \`${model}\` does not exist. Served models: ${shown}.` + (notes.length ? ` Resolvers: ${notes.join('; ')}` : ''),
      { param: 'model' },
    );
  }

  /**
   * Reads and validates the adapter through the engine, then serves it, and records it in the state store when
   * `record` (default: for runtime origins). `root` is what the record keeps to load it again (null: ask `resolver`).
   */
  private async install(name: string, source: string | FileTree, o: InstallOptions): Promise<ServedAdapter> {
    // The engine may still know the name: an unloaded version whose last requests are ending, or one a request
    // routed just before an unload registered again. It must be gone before another source can take the name.
    if (this.llm.listLoras().includes(name) && !this.removeFromEngine(name)) {
      throw new HttpError(400, `adapter "${name}" was unloaded and requests of it are still running; retry when they finish`, {
        param: 'lora_name',
      });
    }
    const request = new LoRARequest(name, undefined, source);
    const adapter = await this.hooks.loadLora(request);
    const root = o.root ?? (typeof source === 'string' ? source : source.label);
    const served = describe(name, request, adapter, root, o.parent ?? this.baseNames[0]!, o.origin);
    if ((o.record ?? o.origin !== 'static') && this.store) {
      try {
        await this.store.put({ name, path: o.root, resolver: o.resolver ?? null, added: new Date().toISOString() });
      } catch (e) {
        this.llm.removeLora(name);
        throw e;
      }
    }
    this.unrestored.delete(name);
    this.served.set(name, served);
    this.log(`serving adapter "${name}" (rank ${adapter.rank}, ${adapter.targets.targets.join('/')}) from ${served.root}`);
    return served;
  }

  /** Stops serving `s`; the engine forgets it now, or after its last running request. */
  private retire(s: ServedAdapter): void {
    this.served.delete(s.name);
    this.retiring.add(s.name);
    if (!this.active.has(s.name)) this.removeFromEngine(s.name);
  }

  /** True when `name` is gone from the engine (false while requests of it still hold it). */
  private removeFromEngine(name: string): boolean {
    if (this.active.has(name)) return false;
    try {
      if (this.llm.listLoras().includes(name)) this.llm.removeLora(name);
      this.retiring.delete(name);
      return true;
    } catch (e) {
      this.log(`adapter "${name}": still in use by the engine, removed later (${toHttpError(e).message})`);
      return false;
    }
  }

  /** Runs `fn` after every earlier call for the same name has finished. */
  private async locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.locks.set(name, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(name) === tail) this.locks.delete(name);
    }
  }
}

interface InstallOptions {
  /** Folder path or Hub id that loads it again (recorded, shown as `root`); null: only `resolver` finds it again. */
  root: string | null;
  origin: AdapterOrigin;
  /** The resolver that found it. */
  resolver?: string;
  /** Served base name it belongs to (default: the first). */
  parent?: string;
  /** Record it in the state store (default: unless static). */
  record?: boolean;
}

/** A path that names a local folder becomes absolute (so the record survives a change of working directory). */
async function localOrHub(path: string): Promise<string> {
  return (await getPlatform().isLocal(path)) ? resolvePath(path) : path;
}

function describe(
  name: string,
  request: LoRARequest,
  adapter: LoraAdapter,
  root: string,
  parent: string,
  origin: AdapterOrigin,
): ServedAdapter {
  return {
    name,
    request,
    root,
    parent,
    origin,
    created: Math.floor(Date.now() / 1000),
    rank: adapter.rank,
    targets: adapter.targets.targets,
    bytes: adapter.byteSize,
  };
}
