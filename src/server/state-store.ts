// The adapter registry on disk: every adapter added at runtime (load API or resolver) is one record in
// `<stateDir>/adapters.json`, so a restarted server — even after kill -9 — serves the same adapters. Each change
// rewrites the file atomically (write a temp file in the same folder, fsync it, rename it over the old one, fsync
// the folder), so a reader sees the old file or the new one, never a torn one. Writes are serialized.
//
//   { "version": 1, "base": "<base model>", "adapters": [
//       { "name": "zara", "path": "/srv/loras/zara", "resolver": null, "added": "2025-01-01T00:00:00.000Z" } ] }

import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PolyloraError } from '../errors.js';

export const STATE_FILE = 'adapters.json';
const VERSION = 1;

export interface AdapterRecord {
  name: string;
  /** Folder path or Hub id that loads the adapter; null when only `resolver` can find it again. */
  path: string | null;
  /** The resolver that found it (its name, e.g. `fs:/srv/loras`), or null when added through the load API. */
  resolver: string | null;
  /** ISO time it was added. */
  added: string;
}

interface StateFile {
  version: number;
  base: string;
  adapters: AdapterRecord[];
}

export class AdapterStateStore {
  readonly dir: string;
  readonly file: string;
  private readonly base: string;
  private records: AdapterRecord[] = [];
  private writes: Promise<void> = Promise.resolve();
  private tmpCounter = 0;

  private constructor(dir: string, base: string) {
    this.dir = dir;
    this.file = join(dir, STATE_FILE);
    this.base = base;
  }

  /**
   * Opens (creating the folder if needed) the state of `dir`. `base` is recorded; a file written for another base is
   * still read (every adapter is validated against the base anyway) and `onWarning` says so.
   */
  static async open(dir: string, base: string, onWarning: (m: string) => void = () => {}): Promise<AdapterStateStore> {
    const store = new AdapterStateStore(dir, base);
    await mkdir(dir, { recursive: true });
    let text: string;
    try {
      text = await readFile(store.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return store;
      throw new PolyloraError('IO_ERROR', 'cannot read the adapter state', { file: store.file, cause: e });
    }
    const state = parseState(text, store.file);
    if (state.base !== base) onWarning(`${store.file} was written for base "${state.base}", now serving "${base}"`);
    store.records = state.adapters;
    return store;
  }

  /** The records, in the order they were added. */
  list(): readonly AdapterRecord[] {
    return this.records;
  }

  /** Adds or replaces the record of `r.name`, durable when the promise resolves. */
  put(r: AdapterRecord): Promise<void> {
    this.records = [...this.records.filter((x) => x.name !== r.name), r];
    return this.save();
  }

  /** Drops the record of `name` (no-op when absent), durable when the promise resolves. */
  remove(name: string): Promise<void> {
    if (!this.records.some((r) => r.name === name)) return Promise.resolve();
    this.records = this.records.filter((r) => r.name !== name);
    return this.save();
  }

  private save(): Promise<void> {
    const state: StateFile = { version: VERSION, base: this.base, adapters: this.records };
    const text = `${JSON.stringify(state, null, 2)}\n`;
    const next = this.writes.then(() => this.writeAtomic(text));
    this.writes = next.catch(() => {});
    return next;
  }

  private async writeAtomic(text: string): Promise<void> {
    const tmp = join(this.dir, `.${STATE_FILE}.${process.pid}.${++this.tmpCounter}.tmp`);
    try {
      const fh = await open(tmp, 'w', 0o644);
      try {
        await fh.writeFile(text, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.file);
      const dir = await open(this.dir, 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    } catch (e) {
      await rm(tmp, { force: true });
      throw new PolyloraError('IO_ERROR', 'cannot write the adapter state', { file: this.file, cause: e, found: (e as Error).message });
    }
  }
}

function parseState(text: string, file: string): StateFile {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new PolyloraError('CONFIG_INVALID', 'the adapter state is not valid JSON', {
      file,
      found: (e as Error).message,
      hint: 'it is only ever replaced whole; fix or delete it (the server then starts with no runtime adapters)',
    });
  }
  const bad = (field: string, expected: string, found: unknown) =>
    new PolyloraError('CONFIG_INVALID', 'malformed adapter state', { file, field, expected, found: JSON.stringify(found) });
  if (typeof v !== 'object' || v === null) throw bad('(root)', 'an object', v);
  const s = v as Partial<StateFile>;
  if (s.version !== VERSION) throw bad('version', String(VERSION), s.version);
  if (!Array.isArray(s.adapters)) throw bad('adapters', 'an array', s.adapters);
  const adapters = s.adapters.map((r: Partial<AdapterRecord>, i): AdapterRecord => {
    if (typeof r !== 'object' || r === null || typeof r.name !== 'string') throw bad(`adapters[${i}].name`, 'a string', r?.name);
    if (r.path !== null && typeof r.path !== 'string') throw bad(`adapters[${i}].path`, 'a string or null', r.path);
    if (r.resolver !== null && typeof r.resolver !== 'string') throw bad(`adapters[${i}].resolver`, 'a string or null', r.resolver);
    if (r.path === null && r.resolver === null) throw bad(`adapters[${i}]`, 'a path or a resolver', r);
    return { name: r.name, path: r.path ?? null, resolver: r.resolver ?? null, added: typeof r.added === 'string' ? r.added : '' };
  });
  return { version: VERSION, base: typeof s.base === 'string' ? s.base : '', adapters };
}
