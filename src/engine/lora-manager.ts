// The adapters an LLM serves, across the three tiers: the registry (every name it knows, permanent until removed),
// the CPU cache of parsed adapters, and the GPU slots. Requests take a pinned reference with acquire() and give it
// back with release(); management calls mirror vLLM's add/remove/pin/list_loras.

import { PolyloraError } from '../errors.js';
import type { FileTree } from '../io/source.js';
import type { Gpu } from '../gpu/device.js';
import type { DType } from '../io/dtype.js';
import type { ModelConfig } from '../model/config-types.js';
import type { ModelWeights } from '../model/gpu-weights.js';
import type { LoraAdapter } from '../lora/adapter.js';
import { AdapterRegistry } from '../lora/cpu-cache.js';
import { LoraSlots } from '../lora/gpu-slots.js';
import { SlotPool, type SlotInfo } from '../lora/slot-pool.js';
import { LoRARequest, type LoRARequestInit } from './lora-request.js';
import type { SequenceLora } from './sequence.js';

export interface LoraManagerOptions {
  maxLoras: number;
  maxLoraRank: number;
  maxCpuLoras: number;
  /** Slots for lm_head / embed_tokens adapters too. */
  embeddings: boolean;
  /** The base's name or path, for the loose base_model_name_or_path check. */
  baseName: string;
  /** Turns a path or Hub id into files. */
  resolve: (source: string) => Promise<FileTree>;
  onWarning: (message: string) => void;
}

/** Two adapter sources are the same when they name the same path / Hub id, or are trees with the same label. */
function sameSource(a: string | FileTree, b: string | FileTree): boolean {
  return (typeof a === 'string' ? a : a.label) === (typeof b === 'string' ? b : b.label);
}

export class LoraManager {
  readonly registry: AdapterRegistry;
  readonly slots: LoraSlots;
  readonly pool: SlotPool;

  /** Slots in `dtype`: the base model's (vLLM casts adapters to the model dtype too). */
  constructor(gpu: Gpu, config: ModelConfig, weights: ModelWeights, dtype: DType, o: LoraManagerOptions) {
    this.slots = new LoraSlots(gpu, config, dtype, { weights, maxLoras: o.maxLoras, maxRank: o.maxLoraRank, embeddings: o.embeddings });
    this.registry = new AdapterRegistry({
      base: config,
      baseName: o.baseName,
      maxCpuLoras: o.maxCpuLoras,
      maxLoraRank: o.maxLoraRank,
      resolve: o.resolve,
      onWarning: o.onWarning,
    });
    this.pool = new SlotPool(this.slots);
  }

  /** Registers an adapter under its name (vLLM's add_lora); it is read on first use. */
  add(request: LoRARequest | LoRARequestInit): void {
    const req = LoRARequest.from(request);
    const r = this.registry;
    if (!r.has(req.name)) {
      r.register(req.name, req.path);
      return;
    }
    if (!sameSource(r.sourceOf(req.name), req.path)) {
      throw new PolyloraError('INVALID_ARGUMENT', `adapter "${req.name}" is already registered from another source`, {
        field: 'name',
        expected: String(r.sourceOf(req.name)),
        found: typeof req.path === 'string' ? req.path : req.path.label,
        hint: 'remove it first (removeLora) or use another name',
      });
    }
  }

  /** Forgets an adapter (vLLM's remove_lora); refused while requests use it. */
  remove(name: string): void {
    this.registry.unregister(name);
    this.pool.evictName(name);
  }

  /**
   * Registers and reads an adapter now and returns it (rank, targets, size, warnings). A name this call registered
   * is forgotten again if the read fails, so a corrected retry works.
   */
  async load(request: LoRARequest | LoRARequestInit): Promise<LoraAdapter> {
    const req = LoRARequest.from(request);
    const isNew = !this.registry.has(req.name);
    try {
      const { adapter } = await this.acquire(req);
      this.registry.unpin(req.name);
      return adapter;
    } catch (e) {
      const r = this.registry;
      if (isNew && r.has(req.name) && r.pinCount(req.name) === 0 && !r.isCached(req.name)) r.unregister(req.name);
      throw e;
    }
  }

  /** Keeps an adapter parsed and, once loaded, in its GPU slot (vLLM's pin_lora) until unpin(). */
  async pin(request: LoRARequest | LoRARequestInit): Promise<void> {
    const req = LoRARequest.from(request);
    const { adapter } = await this.acquire(req); // this CPU pin is held until unpin()
    try {
      this.pool.pin(adapter);
    } catch (e) {
      this.registry.unpin(req.name);
      throw e;
    }
  }

  unpin(name: string): void {
    const adapter = this.registry.tryAcquire(name);
    if (!adapter) return;
    this.registry.unpin(name); // tryAcquire's pin
    this.registry.unpin(name); // pin()'s
    this.pool.unpin(adapter);
  }

  names(): string[] {
    return this.registry.names();
  }

  residency(): SlotInfo[] {
    return this.pool.residency();
  }

  get stats() {
    return { slots: this.pool.stats, cpu: this.registry.stats };
  }

  /** The request's adapter, registered on first use, read, checked against the slots, and pinned for the request. */
  async acquire(request: LoRARequest | LoRARequestInit): Promise<SequenceLora> {
    const req = LoRARequest.from(request);
    this.add(req);
    const adapter = await this.registry.acquire(req.name);
    try {
      this.slots.check(adapter);
      await this.slots.prepareDora(adapter);
    } catch (e) {
      this.registry.unpin(req.name);
      throw e;
    }
    return { adapter, scale: req.scale };
  }

  /** acquire() without waiting: only when the adapter is registered from the same source and parsed already. */
  tryAcquire(request: LoRARequest | LoRARequestInit): SequenceLora | null {
    const req = LoRARequest.from(request);
    const r = this.registry;
    if (!r.has(req.name) || !sameSource(r.sourceOf(req.name), req.path)) return null;
    const adapter = r.tryAcquire(req.name);
    if (adapter && !this.slots.ready(adapter)) {
      r.unpin(req.name);
      return null;
    }
    return adapter ? { adapter, scale: req.scale } : null;
  }

  /** Gives back a reference taken by acquire() / tryAcquire(). */
  release(lora: SequenceLora): void {
    this.registry.unpin(lora.adapter.name);
  }

  destroy(): void {
    this.slots.destroy();
  }
}
