// What the server needs from the engine: scheduler and KV gauges for /metrics, the sequence limit for admission
// (429), the adapter rank limit, and "read and validate this adapter now, or leave nothing behind" for
// /v1/load_lora_adapter (vLLM's add_lora pre-loads too). All from LLM's public API.

import type { LLM } from '../engine/llm.js';
import type { LoRARequest } from '../engine/lora-request.js';
import type { LoraAdapter } from '../lora/adapter.js';

/** Engine load at one moment. */
export interface EngineGauges {
  /** Requests in the running batch (admitted, holding KV blocks). */
  running: number;
  /** Requests queued for admission (new, or preempted and waiting to be recomputed). */
  waiting: number;
  /** KV blocks in the pool. */
  kvBlocksTotal: number;
  /** KV blocks not free: held by requests (prefix-cached blocks nobody holds count as free). */
  kvBlocksUsed: number;
}

export interface EngineHooks {
  gauges(): EngineGauges;
  /** Sequences per step (LLMOptions.maxNumSeqs). */
  readonly maxNumSeqs: number;
  /** Largest adapter rank the GPU slots hold, or null when the LLM was loaded without LoRA. */
  readonly maxLoraRank: number | null;
  /**
   * Registers `req`, reads and validates its files as a request would (rank, shapes, slot fit) and keeps the parsed
   * adapter in the CPU cache. On failure nothing stays registered and the error is rethrown.
   */
  loadLora(req: LoRARequest): Promise<LoraAdapter>;
}

/** Hooks for `llm`. */
export function llmHooks(llm: LLM): EngineHooks {
  return {
    gauges() {
      const s = llm.stats;
      return { running: s.running, waiting: s.waiting, kvBlocksTotal: s.kvBlocksTotal, kvBlocksUsed: s.kvBlocksTotal - s.kvBlocksFree };
    },
    maxNumSeqs: llm.info.maxNumSeqs,
    maxLoraRank: llm.info.maxLoraRank || null,
    // LLM.loadLora forgets a name it registered when the first read fails, so a corrected retry works.
    loadLora: (req) => llm.loadLora(req),
  };
}
