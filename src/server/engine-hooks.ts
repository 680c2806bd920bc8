// What the server needs from the engine beyond LLM's public API today: scheduler and KV gauges for /metrics and
// admission, the sequence limit, and "read and validate this adapter now" for /v1/load_lora_adapter (vLLM's
// add_lora pre-loads too). `llmHooks` is the one bridge to LLM's internals; when LLM exposes these itself, it
// becomes a three-line adapter and nothing else in src/server changes.

import type { LLM } from '../engine/llm.js';
import { LoRARequest } from '../engine/lora-request.js';
import type { LoraAdapter } from '../lora/adapter.js';

/** Engine load at one moment. */
export interface EngineGauges {
  /** Requests in the running batch (admitted, holding KV blocks). */
  running: number;
  /** Requests queued for admission (new, or preempted and waiting to be recomputed). */
  waiting: number;
  /** KV blocks in the pool. */
  kvBlocksTotal: number;
  /** KV blocks referenced by requests (total minus free). */
  kvBlocksUsed: number;
}

export interface EngineHooks {
  gauges(): EngineGauges;
  /** Sequences per step (LLMOptions.maxNumSeqs). */
  readonly maxNumSeqs: number;
  /** Largest adapter rank the GPU slots hold, or null without LoRA. */
  readonly maxLoraRank: number | null;
  /**
   * Registers `req` (LLM.addLora), reads and validates its files as a request would (rank, shapes, slot fit) and
   * leaves the parsed adapter in the CPU cache. On failure nothing stays registered and the error is rethrown.
   */
  loadLora(req: LoRARequest): Promise<LoraAdapter>;
}

/**
 * Hooks for `llm`. Reads private members by element access (allowed by TypeScript for private members, and
 * type-checked): a stopgap until LLM has `gauges()`, `maxNumSeqs`, `maxLoraRank` and `loadLora()` of its own.
 */
export function llmHooks(llm: LLM): EngineHooks {
  const engine = llm['engine'];
  const kv = llm['kv'];
  const lora = llm['lora'];
  const scheduler = engine['scheduler'];
  return {
    gauges: () => ({
      running: scheduler.running.length,
      waiting: scheduler.waiting.length,
      kvBlocksTotal: kv.numBlocks,
      kvBlocksUsed: kv.numBlocks - kv.allocator.numFree,
    }),
    maxNumSeqs: engine.limits.maxNumSeqs,
    maxLoraRank: lora ? lora.slots.maxRank : null,
    async loadLora(req) {
      const registered = llm.listLoras().includes(req.name);
      let adapter: LoraAdapter;
      try {
        adapter = await llm['adapterFor'](req instanceof LoRARequest ? req : LoRARequest.from(req));
      } catch (e) {
        if (!registered && llm.listLoras().includes(req.name)) llm.removeLora(req.name);
        throw e;
      }
      lora!.registry.unpin(req.name);
      return adapter;
    },
  };
}
