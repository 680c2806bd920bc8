// The paged KV cache on the GPU: per layer one K and one V pool of f32 [numBlocks · blockSize, nkv, hd]; a token
// of a sequence lives at slot blockTable[pos / blockSize] · blockSize + pos % blockSize.

import type { Gpu } from '../gpu/device.js';
import type { ModelConfig } from '../model/config-types.js';
import { BlockAllocator } from './block-allocator.js';
import { PrefixCache } from './prefix-cache.js';

export interface KvPoolOptions {
  blockSize?: number; // tokens per block, default 16
  /** Memory for K and V of all layers, in bytes; default 256 MiB. Capped by the per-binding limit. */
  memoryBytes?: number;
  /** Exact block count (overrides memoryBytes). */
  numBlocks?: number;
  /** Never more blocks than these many tokens need (e.g. maxNumSeqs × maxModelLen). */
  maxTokens?: number;
  /** Reuse full blocks between sequences with the same prefix and adapter (default true). */
  prefixCaching?: boolean;
}

export class KvPool {
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly k: GPUBuffer[];
  readonly v: GPUBuffer[];
  readonly allocator: BlockAllocator;
  readonly prefixCache: PrefixCache | null;
  readonly bytesPerToken: number;
  /** Block copies (src, dst pairs) the next step performs before it computes (n > 1 forks a partial block). */
  readonly pendingCopies: number[] = [];
  /** One block of one layer's K or V: WebGPU cannot copy within a buffer, so copies go through it. */
  private readonly scratch: GPUBuffer;

  constructor(gpu: Gpu, c: ModelConfig, o: KvPoolOptions = {}) {
    this.blockSize = o.blockSize ?? 16;
    const rowBytes = c.numKvHeads * c.headDim * 4; // one token, one layer, K or V
    this.bytesPerToken = rowBytes * 2 * c.numLayers;
    const perBinding = Math.min(gpu.info.maxStorageBufferBindingSize, gpu.info.maxBufferSize);
    const maxBlocks = Math.floor(perBinding / (rowBytes * this.blockSize));
    const budget = Math.floor((o.memoryBytes ?? 256 * 2 ** 20) / (this.bytesPerToken * this.blockSize));
    const want = o.numBlocks ?? Math.min(budget, o.maxTokens ? Math.ceil(o.maxTokens / this.blockSize) : budget);
    this.numBlocks = Math.max(1, Math.min(maxBlocks, want));
    const size = this.numBlocks * this.blockSize * rowBytes;
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.k = [];
    this.v = [];
    for (let l = 0; l < c.numLayers; l++) {
      this.k.push(gpu.buffer(`kv.k${l}`, size, usage));
      this.v.push(gpu.buffer(`kv.v${l}`, size, usage));
    }
    this.scratch = gpu.buffer('kv.scratch', this.blockSize * rowBytes, GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST);
    this.allocator = new BlockAllocator(this.numBlocks);
    this.prefixCache = o.prefixCaching === false ? null : new PrefixCache(this.allocator, this.blockSize);
  }

  /** Queues a copy of block `src`'s K and V (every layer) into block `dst`, done at the start of the next step. */
  queueCopy(src: number, dst: number): void {
    this.pendingCopies.push(src, dst);
  }

  /** Records the queued copies into `enc` (before the step's compute pass) and clears the queue. */
  encodeCopies(enc: GPUCommandEncoder): void {
    const bytes = this.k[0] ? this.k[0].size / this.numBlocks : 0;
    for (let i = 0; i < this.pendingCopies.length; i += 2) {
      const src = this.pendingCopies[i]! * bytes;
      const dst = this.pendingCopies[i + 1]! * bytes;
      for (const buf of [...this.k, ...this.v]) {
        enc.copyBufferToBuffer(buf, src, this.scratch, 0, bytes);
        enc.copyBufferToBuffer(this.scratch, 0, buf, dst, bytes);
      }
    }
    this.pendingCopies.length = 0;
  }

  /** Tokens the pool can hold. */
  get capacityTokens(): number {
    return this.numBlocks * this.blockSize;
  }

  destroy(): void {
    for (const b of [...this.k, ...this.v, this.scratch]) b.destroy();
  }
}
