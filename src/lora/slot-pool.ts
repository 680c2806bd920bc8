// Which adapter lives in which GPU slot (S-LoRA's device tier). A slot is referenced by every running sequence
// that uses its adapter; an unreferenced slot keeps its adapter (a later request finds it resident) until a new
// adapter needs the room, then the least recently used unreferenced, unpinned slot is overwritten. Loading is a
// few queue.writeBuffer calls between two steps, so sequences already running never wait for it.

import { PolyloraError } from '../errors.js';
import type { LoraAdapter } from './adapter.js';
import type { LoraSlots } from './gpu-slots.js';

/** Identity of an adapter version: the registry never reuses an id, so a re-registered name is a new key. */
export function adapterKey(a: LoraAdapter): string {
  return `${a.name}#${a.id ?? a.source}`;
}

export interface SlotInfo {
  slot: number;
  name: string | null;
  refs: number;
  pinned: boolean;
}

export interface SlotStats {
  loads: number; // adapters written into a slot
  evictions: number; // resident adapters overwritten by another
  hits: number; // acquisitions that found the adapter resident
  lastLoadMs: number; // CPU time of the last load (image preparation + writeBuffer calls)
}

export class SlotPool {
  readonly stats: SlotStats = { loads: 0, evictions: 0, hits: 0, lastLoadMs: 0 };
  private readonly slots: LoraSlots;
  private readonly keys: (string | null)[];
  private readonly names: (string | null)[];
  private readonly refs: Int32Array;
  private readonly lastUse: Float64Array;
  private readonly pinned = new Set<string>();
  private tick = 0;

  constructor(slots: LoraSlots) {
    this.slots = slots;
    const n = slots.maxLoras;
    this.keys = new Array<string | null>(n).fill(null);
    this.names = new Array<string | null>(n).fill(null);
    this.refs = new Int32Array(n);
    this.lastUse = new Float64Array(n);
  }

  get capacity(): number {
    return this.keys.length;
  }

  /** Slot holding `adapter`, or -1. */
  find(adapter: LoraAdapter): number {
    return this.keys.indexOf(adapterKey(adapter));
  }

  /**
   * A slot holding `adapter` with one more reference: the resident one, else a free or least recently used
   * unreferenced, unpinned slot that it is loaded into. -1 when every slot is in use (the caller waits).
   */
  acquire(adapter: LoraAdapter): number {
    const key = adapterKey(adapter);
    let slot = this.keys.indexOf(key);
    if (slot >= 0) {
      this.stats.hits++;
    } else {
      slot = this.victim();
      if (slot < 0) return -1;
      const t0 = performance.now();
      this.slots.load(slot, adapter);
      this.stats.lastLoadMs = performance.now() - t0;
      if (this.keys[slot] !== null) this.stats.evictions++;
      this.stats.loads++;
      this.keys[slot] = key;
      this.names[slot] = adapter.name;
    }
    this.refs[slot]!++;
    this.lastUse[slot] = ++this.tick;
    return slot;
  }

  release(slot: number): void {
    if (this.refs[slot]! <= 0) throw new Error(`LoRA slot ${slot} released more often than acquired`);
    this.refs[slot]!--;
  }

  /**
   * Keeps `adapter` resident once loaded (vLLM's pin_lora). At least one slot always stays unpinned, or a request
   * for any other adapter could wait forever.
   */
  pin(adapter: LoraAdapter): void {
    const key = adapterKey(adapter);
    if (this.pinned.has(key)) return;
    if (this.pinned.size + 1 >= this.keys.length) {
      throw new PolyloraError('INVALID_ARGUMENT', `cannot pin adapter "${adapter.name}"`, {
        expected: `fewer pinned adapters than GPU slots (maxLoras = ${this.keys.length})`,
        found: `${this.pinned.size} pinned`,
        hint: 'unpin one, or raise maxLoras (--max-loras)',
      });
    }
    this.pinned.add(key);
  }

  unpin(adapter: LoraAdapter): void {
    this.pinned.delete(adapterKey(adapter));
  }

  /** Frees the unreferenced slots holding an adapter called `name` (after it was unregistered). */
  evictName(name: string): void {
    for (let i = 0; i < this.keys.length; i++) {
      if (this.names[i] !== name || this.refs[i]! > 0) continue;
      this.slots.clear(i);
      this.pinned.delete(this.keys[i]!);
      this.keys[i] = null;
      this.names[i] = null;
    }
  }

  residency(): SlotInfo[] {
    return this.keys.map((k, slot) => ({
      slot,
      name: this.names[slot]!,
      refs: this.refs[slot]!,
      pinned: k !== null && this.pinned.has(k),
    }));
  }

  private victim(): number {
    let best = -1;
    for (let i = 0; i < this.keys.length; i++) {
      const k = this.keys[i];
      if (k === null) return i;
      if (this.refs[i]! > 0 || this.pinned.has(k)) continue;
      if (best < 0 || this.lastUse[i]! < this.lastUse[best]!) best = i;
    }
    return best;
  }
}
