// Fixed-size KV blocks: reference counts and a free list in least-recently-freed order. A freed block keeps its
// contents (and its prefix-cache key, see prefix-cache.ts) until it is handed out again, so a later sequence with
// the same prefix can revive it; fresh allocations take the block freed longest ago. Block ids index the
// per-layer pools in kv-pool.ts.

export class BlockAllocator {
  readonly numBlocks: number;
  private readonly refs: Int32Array;
  // Doubly linked free list over block ids (-1 = none): head is the least recently freed.
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = -1;
  private tail = -1;
  private free = 0;
  /** Called when a free block is handed out for new contents (the prefix cache forgets its key). */
  onReuse: (block: number) => void = () => {};

  constructor(numBlocks: number) {
    this.numBlocks = numBlocks;
    this.refs = new Int32Array(numBlocks);
    this.prev = new Int32Array(numBlocks).fill(-1);
    this.next = new Int32Array(numBlocks).fill(-1);
    for (let b = 0; b < numBlocks; b++) this.pushFree(b);
  }

  get numFree(): number {
    return this.free;
  }

  /** A block for new contents with one reference, or -1 when none is free. */
  allocate(): number {
    const b = this.head;
    if (b < 0) return -1;
    this.unlink(b);
    this.refs[b] = 1;
    this.onReuse(b);
    return b;
  }

  /** One more holder of block `b`; a free block (a cached prefix) is taken off the free list, contents kept. */
  retain(b: number): void {
    if (this.refs[b] === 0) this.unlink(b);
    this.refs[b]!++;
  }

  /** Drops one reference; the block joins the free list (most recently freed) when none is left. */
  release(b: number): void {
    const r = --this.refs[b]!;
    if (r < 0) throw new Error(`double free of KV block ${b}`);
    if (r === 0) this.pushFree(b);
  }

  refCount(b: number): number {
    return this.refs[b]!;
  }

  private pushFree(b: number): void {
    this.prev[b] = this.tail;
    this.next[b] = -1;
    if (this.tail >= 0) this.next[this.tail] = b;
    else this.head = b;
    this.tail = b;
    this.free++;
  }

  private unlink(b: number): void {
    const p = this.prev[b]!;
    const n = this.next[b]!;
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
    this.prev[b] = -1;
    this.next[b] = -1;
    this.free--;
  }
}
