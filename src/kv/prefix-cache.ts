// Prefix caching: a full KV block is identified by a hash chain over everything that determines its contents —
// the previous block's hash, the adapter (a LoRA on k/v changes the cached values, so blocks are shared only
// between sequences of the same adapter) and the block's token ids. A new sequence walks its prompt block by
// block and reuses cached blocks while the chain matches. Cached blocks stay cached after their last user frees
// them, until the allocator hands them out for new contents.
//
// Hashes are 64 bits (two independent 32-bit mixes), written as a string key; a collision (~n²/2^64) is as
// unlikely as in vLLM's 64-bit block hashes.

import type { BlockAllocator } from './block-allocator.js';

function mix(h: number, v: number): number {
  h = Math.imul(h ^ v, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** 32-bit hash of a string (for adapter identities), FNV-1a. */
function hashString(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export class PrefixCache {
  /** Tokens served from the cache / looked up, for metrics. */
  hits = 0;
  queries = 0;
  private readonly byKey = new Map<string, number>();
  private readonly keyOf: (string | null)[];
  private readonly alloc: BlockAllocator;
  readonly blockSize: number;

  constructor(alloc: BlockAllocator, blockSize: number) {
    this.alloc = alloc;
    this.blockSize = blockSize;
    this.keyOf = new Array<string | null>(alloc.numBlocks).fill(null);
    alloc.onReuse = (b) => this.forget(b);
  }

  /**
   * Key of the block holding tokens [i·B, (i+1)·B) given the previous block's key ('' for the first) and the
   * adapter identity ('' for the base model).
   */
  key(prev: string, adapter: string, tokens: readonly number[], i: number): string {
    let h1 = hashString(prev, 1) ^ hashString(adapter, 3);
    let h2 = hashString(prev, 2) ^ hashString(adapter, 4);
    for (let j = i * this.blockSize; j < (i + 1) * this.blockSize; j++) {
      h1 = mix(h1, tokens[j]!);
      h2 = mix(h2 ^ 0x9e3779b9, tokens[j]!);
    }
    return `${h1.toString(36)}.${h2.toString(36)}`;
  }

  /** A cached block for `key` (retained for the caller), or -1. */
  lookup(key: string): number {
    const b = this.byKey.get(key);
    if (b === undefined) return -1;
    this.alloc.retain(b);
    return b;
  }

  /** Records that block `b` (full, computed) holds the contents identified by `key`. */
  insert(key: string, b: number): void {
    if (this.byKey.has(key) || this.keyOf[b] !== null) return;
    this.byKey.set(key, b);
    this.keyOf[b] = key;
  }

  get size(): number {
    return this.byKey.size;
  }

  private forget(b: number): void {
    const k = this.keyOf[b];
    if (k == null) return;
    this.byKey.delete(k);
    this.keyOf[b] = null;
  }
}
