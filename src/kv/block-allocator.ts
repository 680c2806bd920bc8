// Fixed-size KV blocks: a free list and reference counts (a block can be shared by sequences with a common
// prefix). Block ids index the per-layer pools in kv-pool.ts.

export class BlockAllocator {
  readonly numBlocks: number;
  private readonly free: Int32Array; // stack of free block ids
  private top: number;
  private readonly refs: Int32Array;

  constructor(numBlocks: number) {
    this.numBlocks = numBlocks;
    this.free = new Int32Array(numBlocks);
    // Hand out low ids first (pop from the end).
    for (let i = 0; i < numBlocks; i++) this.free[i] = numBlocks - 1 - i;
    this.top = numBlocks;
    this.refs = new Int32Array(numBlocks);
  }

  get numFree(): number {
    return this.top;
  }

  /** A fresh block with one reference, or -1 when none is free. */
  allocate(): number {
    if (this.top === 0) return -1;
    const b = this.free[--this.top]!;
    this.refs[b] = 1;
    return b;
  }

  /** One more holder of block `b` (prefix sharing). */
  retain(b: number): void {
    if (this.refs[b]! <= 0) throw new Error(`retain of free KV block ${b}`);
    this.refs[b]!++;
  }

  /** Drops one reference; the block returns to the free list when none is left. */
  release(b: number): void {
    const r = --this.refs[b]!;
    if (r < 0) throw new Error(`double free of KV block ${b}`);
    if (r === 0) this.free[this.top++] = b;
  }

  refCount(b: number): number {
    return this.refs[b]!;
  }
}
