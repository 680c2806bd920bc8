// The library's front door, in the spirit of vLLM's `LLM`: load a model once, then generate for many prompts;
// everything submitted runs through one continuous-batching engine on one GPU device.
//
//   const llm = await LLM.load('HuggingFaceTB/SmolLM2-135M-Instruct');
//   const [out] = await llm.generate('Once upon a time', { maxTokens: 32, temperature: 0 });
//   for await (const c of llm.stream('Hello', { maxTokens: 64 })) process.stdout.write(c.text);
//   await llm.close();
//
// Multi-LoRA (vLLM's API in camelCase): load with { enableLora: true, maxLoras, maxLoraRank, maxCpuLoras }, then
//   await llm.generate(prompts, params, { lora: new LoRARequest('pirate', 1, './adapters/pirate') })
// or one LoRARequest (or null = base) per prompt; every adapter in one batch runs in the same steps.

import { PolyloraError } from '../errors.js';
import type { FileTree } from '../io/source.js';
import type { DeviceInfo } from '../gpu/device.js';
import { Gpu } from '../gpu/device.js';
import type { ModelConfig } from '../model/config-types.js';
import type { ModelWeights, LoadProgress } from '../model/gpu-weights.js';
import { uploadModelWeights } from '../model/gpu-weights.js';
import { ModelRunner } from '../model/runner.js';
import { KvPool } from '../kv/kv-pool.js';
import type { HubOptions } from '../platform/platform.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { ChatMessage } from '../tokenizer/chat-template.js';
import { Engine, type EngineSnapshot } from './engine.js';
import { SCORING_ROWS } from './scheduler.js';
import type { SequenceLora } from './sequence.js';
import type { LoRARequest, LoRARequestInit } from './lora-request.js';
import { LoraManager } from './lora-manager.js';
import type { SlotInfo } from '../lora/slot-pool.js';
import type { LoraAdapter } from '../lora/adapter.js';
import { loadModelFiles, resolveModelFiles } from './load.js';
import type { RequestOutput } from './request.js';
import { RequestStream } from './request.js';
import type { SamplingParams } from './sampling-params.js';

export interface LLMOptions {
  /** Hub download settings (endpoint, token, revision, offline, progress). */
  hub?: HubOptions;
  /** Longest prompt + output per sequence; default min(config max_position_embeddings, 4096). */
  maxModelLen?: number;
  /** Sequences per step (default 64). */
  maxNumSeqs?: number;
  /** Token rows per step: the prefill chunk size (default 256). */
  maxNumBatchedTokens?: number;
  /** KV cache memory in bytes (default 256 MiB); capacity in tokens is reported in `info`. */
  kvCacheBytes?: number;
  /** Reuse KV blocks of identical prompt prefixes (same adapter) across requests, default true. */
  enablePrefixCaching?: boolean;
  /**
   * Record the next decode step while the GPU still runs the current one (token ids fed back on the GPU), hiding
   * the read-back wait, default true. Off: one step at a time.
   */
  asyncScheduling?: boolean;
  /** Tokens per KV block (default 16). */
  blockSize?: number;
  /** Progress of weight upload. */
  onProgress?: (p: LoadProgress) => void;
  /** Where load-time warnings go (default console.warn). */
  onWarning?: (message: string) => void;
  /** Run on this device instead of creating one (it stays open after close()). */
  gpu?: Gpu;
  /** Serve LoRA adapters (allocates GPU slots). */
  enableLora?: boolean;
  /** Adapters resident on the GPU at once (slots), default 4. One step mixes at most this many. */
  maxLoras?: number;
  /** Largest adapter rank accepted, default 16. */
  maxLoraRank?: number;
  /** Parsed adapters kept in CPU memory, default max(maxLoras, 8). */
  maxCpuLoras?: number;
  /** Also allocate slots for adapters of lm_head / embed_tokens (vocab-sized), default false. */
  loraEmbeddings?: boolean;
}

export interface RequestOptions {
  /** The adapter for every prompt, or one per prompt (null = base model). */
  lora?: LoRARequest | LoRARequestInit | null | (LoRARequest | LoRARequestInit | null)[];
}

export type Prompt = string | { prompt: string } | { promptIds: number[] };


export interface LLMInfo {
  model: string;
  config: ModelConfig;
  device: DeviceInfo;
  kvCapacityTokens: number;
  maxModelLen: number;
  weightBytes: number;
  /** GPU memory of the LoRA slots (0 without enableLora). */
  loraSlotBytes: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  /** LoRA limits (0 without enableLora). */
  maxLoras: number;
  maxLoraRank: number;
}


export class LLM {
  readonly info: LLMInfo;
  readonly tokenizer: Tokenizer | null;
  private readonly engine: Engine;
  /** The device, when this LLM created it (and so destroys it on close). */
  private readonly gpu: Gpu | null;
  private readonly weights: ModelWeights;
  private readonly runner: ModelRunner;
  private readonly kv: KvPool;
  private readonly lora: LoraManager | null;
  private closed = false;
  private streams = 0;

  private constructor(
    info: LLMInfo,
    tokenizer: Tokenizer | null,
    parts: { engine: Engine; gpu: Gpu | null; weights: ModelWeights; runner: ModelRunner; kv: KvPool; lora: LoraManager | null },
  ) {
    this.info = info;
    this.tokenizer = tokenizer;
    this.engine = parts.engine;
    this.gpu = parts.gpu;
    this.weights = parts.weights;
    this.runner = parts.runner;
    this.kv = parts.kv;
    this.lora = parts.lora;
  }

  /** Loads a model from a local folder, a Hub id (`org/name[@revision]`), or a FileTree. */
  static async load(model: string | FileTree, options: LLMOptions = {}): Promise<LLM> {
    const warn = options.onWarning ?? ((m: string) => console.warn(`polylora: ${m}`));
    const files = await resolveModelFiles(model, options.hub);
    const { loaded, ckpt } = await loadModelFiles(files);
    loaded.warnings.forEach(warn);
    const c = loaded.config;
    const ownGpu = !options.gpu;
    const gpu = options.gpu ?? (await Gpu.create());
    try {
      const weights = await uploadModelWeights(gpu, c, ckpt, options.onProgress);
      await ckpt.close();
      let maxModelLen = options.maxModelLen ?? Math.min(c.maxPositionEmbeddings, 4096);
      const maxNumSeqs = options.maxNumSeqs ?? 64;
      const kv = new KvPool(gpu, c, {
        blockSize: options.blockSize,
        memoryBytes: options.kvCacheBytes,
        maxTokens: maxNumSeqs * maxModelLen,
        prefixCaching: options.enablePrefixCaching ?? true,
      });
      if (maxModelLen > kv.capacityTokens) {
        warn(`maxModelLen ${maxModelLen} exceeds the KV cache (${kv.capacityTokens} tokens); using ${kv.capacityTokens}`);
        maxModelLen = kv.capacityTokens;
      }
      const maxNumBatchedTokens = Math.max(options.maxNumBatchedTokens ?? 256, maxNumSeqs);
      const maxLoras = options.maxLoras ?? 4;
      const lora = options.enableLora
        ? new LoraManager(gpu, c, weights, weights.layers[0]?.qkv.dtype ?? 'F32', {
            maxLoras,
            maxLoraRank: options.maxLoraRank ?? 16,
            maxCpuLoras: options.maxCpuLoras ?? Math.max(maxLoras, 8),
            embeddings: !!options.loraEmbeddings,
            baseName: typeof model === 'string' ? model : model.label,
            resolve: (src) => resolveModelFiles(src, options.hub),
            onWarning: warn,
          })
        : null;
      const runner = await ModelRunner.create(
        gpu,
        c,
        weights,
        kv,
        // Rows: one sample per sequence, plus rows for scoring prompt tokens (prompt logprobs).
        { maxTokens: maxNumBatchedTokens, maxRows: maxNumSeqs + SCORING_ROWS, maxSeqs: maxNumSeqs, maxModelLen },
        lora?.slots,
      );
      const engine = new Engine(
        runner,
        loaded.tokenizer,
        loaded.eosIds,
        { maxNumSeqs, maxNumBatchedTokens, maxModelLen, asyncScheduling: options.asyncScheduling ?? true },
        lora?.pool ?? null,
      );
      const info: LLMInfo = {
        model: typeof model === 'string' ? model : model.label,
        config: c,
        device: gpu.info,
        kvCapacityTokens: kv.capacityTokens,
        maxModelLen,
        weightBytes: weights.bytesPerToken,
        loraSlotBytes: lora?.slots.bytes ?? 0,
        maxNumSeqs,
        maxNumBatchedTokens,
        maxLoras: lora?.slots.maxLoras ?? 0,
        maxLoraRank: lora?.slots.maxRank ?? 0,
      };
      return new LLM(info, loaded.tokenizer, { engine, gpu: ownGpu ? gpu : null, weights, runner, kv, lora });
    } catch (e) {
      if (ownGpu) gpu.destroy();
      throw e;
    }
  }

  /** Token ids of a prompt (text is encoded with the model's tokenizer, BOS as it is configured). */
  encode(prompt: Prompt): number[] {
    if (typeof prompt === 'object' && 'promptIds' in prompt) return [...prompt.promptIds];
    const text = typeof prompt === 'string' ? prompt : prompt.prompt;
    if (!this.tokenizer) {
      throw new PolyloraError('INVALID_ARGUMENT', 'this model has no tokenizer.json, so prompts must be token ids', {
        field: 'prompt',
        hint: 'pass { promptIds: [...] }',
      });
    }
    return this.tokenizer.encode(text);
  }

  /**
   * Starts one request and streams its chunks. Breaking out of the loop aborts it. The adapter (if any) is read
   * and validated first; a bad adapter fails this stream (iteration throws, result rejects) and nothing else.
   */
  stream(prompt: Prompt, params: SamplingParams = {}, options: { lora?: LoRARequest | LoRARequestInit | null } = {}): RequestStream {
    return this.streamGroup(prompt, { ...params, n: 1 }, options)[0]!;
  }

  /**
   * Streams params.n completions of one prompt (n > 1 share the prompt's prefill and KV blocks; completion i > 0
   * samples with a seed derived from the request's). Returns one stream per completion; adapter errors arrive
   * through the streams, as with stream().
   */
  streamGroup(prompt: Prompt, params: SamplingParams = {}, options: { lora?: LoRARequest | LoRARequestInit | null } = {}): RequestStream[] {
    this.checkOpen();
    const ids = this.encode(prompt);
    const n = params.n ?? 1;
    if (!options.lora) return this.submitGroup(ids, params, null);
    const ready = this.tryAdapter(options.lora);
    if (ready) return this.submitGroup(ids, params, ready);
    const id = ++this.streams;
    const streams = Array.from({ length: n }, (_, i) => new RequestStream(`req-lora-${id}${i ? `-${i}` : ''}`));
    this.prepareLora(options.lora).then(
      (lora) => {
        try {
          this.submitGroup(ids, params, lora, streams);
        } catch (e) {
          for (const s of streams) s.fail(e);
        }
      },
      (e) => {
        for (const s of streams) s.fail(e);
      },
    );
    return streams;
  }

  /** Generates for every prompt (all admitted into the same batches); outputs are in prompt order. */
  async generate(
    prompts: Prompt | Prompt[],
    params: SamplingParams | SamplingParams[] = {},
    options: RequestOptions = {},
  ): Promise<RequestOutput[]> {
    this.checkOpen();
    const list = Array.isArray(prompts) ? prompts : [prompts];
    const perPrompt = <T>(v: T | T[], field: string): T[] => {
      if (!Array.isArray(v)) return list.map(() => v);
      if (v.length !== list.length) {
        throw new PolyloraError('INVALID_ARGUMENT', `one ${field} per prompt`, { field, expected: `${list.length}`, found: `${v.length}` });
      }
      return v;
    };
    const ps = perPrompt(params, 'params');
    const loraReqs = perPrompt(options.lora ?? null, 'lora');
    const ids = list.map((p) => this.encode(p));
    // Adapters first (the registry reads each distinct one once; every request holds its own pin); only then is
    // anything queued. If one fails, the pins already taken are dropped and nothing was queued.
    const settled = await Promise.allSettled(loraReqs.map((r) => (r ? this.prepareLora(r) : null)));
    const failed = settled.find((x) => x.status === 'rejected');
    if (failed) {
      for (const x of settled) if (x.status === 'fulfilled' && x.value) this.lora!.release(x.value);
      throw (failed as PromiseRejectedResult).reason;
    }
    const loras = settled.map((x) => (x as PromiseFulfilledResult<SequenceLora | null>).value);
    const groups = ids.map((p, i) => this.submitGroup(p, ps[i]!, loras[i]!));
    return Promise.all(
      groups.map(async (streams) => {
        const outs = await Promise.all(streams.map((s) => s.result));
        return outs.length > 1 ? { ...outs[0]!, outputs: outs } : outs[0]!;
      }),
    );
  }

  /**
   * Registers and reads an adapter now (instead of on first use) and returns it: name, rank, targets, size,
   * warnings. Later requests for it start synchronously.
   */
  loadLora(request: LoRARequest | LoRARequestInit): Promise<LoraAdapter> {
    return this.loraState().load(request);
  }

  /** Registers an adapter under its name (vLLM's add_lora); it is read on first use. */
  addLora(request: LoRARequest | LoRARequestInit): void {
    this.loraState().add(request);
  }

  /** Forgets an adapter (vLLM's remove_lora); refused while requests use it. */
  removeLora(name: string): void {
    this.loraState().remove(name);
  }

  /** Keeps an adapter parsed and resident in its GPU slot (vLLM's pin_lora) until unpinLora. */
  pinLora(request: LoRARequest | LoRARequestInit): Promise<void> {
    return this.loraState().pin(request);
  }

  unpinLora(name: string): void {
    this.loraState().unpin(name);
  }

  /** Registered adapter names (vLLM's list_loras). */
  listLoras(): string[] {
    return this.lora?.names() ?? [];
  }

  /** Which adapter is in which GPU slot. */
  loraSlots(): SlotInfo[] {
    return this.lora?.residency() ?? [];
  }

  /**
   * Sequences per adapter name in the engine now: running (in the batch) and waiting (queued for admission, or
   * preempted). Requests on the base model are not counted; n > 1 counts each completion.
   */
  loraRequests(): { running: Map<string, number>; waiting: Map<string, number> } {
    return this.engine.loraRequests();
  }

  /** Slot load counters (loads, evictions, hits, last load time) and CPU-cache counters. */
  get loraStats() {
    return this.lora?.stats ?? null;
  }

  private loraState(): LoraManager {
    if (!this.lora) {
      throw new PolyloraError('INVALID_ARGUMENT', 'this LLM was loaded without LoRA support', {
        hint: 'load it with { enableLora: true } (serve: --enable-lora)',
      });
    }
    return this.lora;
  }

  private tryAdapter(req: LoRARequest | LoRARequestInit): SequenceLora | null {
    return this.lora?.tryAcquire(req) ?? null;
  }

  private prepareLora(r: LoRARequest | LoRARequestInit): Promise<SequenceLora> {
    return this.loraState().acquire(r);
  }

  /** Queues params.n completions of one prompt; the adapter's CPU pin is dropped when all of them end. */
  private submitGroup(ids: number[], params: SamplingParams, lora: SequenceLora | null, into?: RequestStream[]): RequestStream[] {
    try {
      const streams = this.engine.addGroup(ids, params, lora, into);
      if (lora) void Promise.allSettled(streams.map((s) => s.result)).then(() => this.lora!.release(lora));
      return streams;
    } catch (e) {
      if (lora) this.lora!.release(lora);
      throw e;
    }
  }

  /** Renders `messages` with the model's chat template and generates the assistant's reply. */
  async chat(messages: ChatMessage[], params: SamplingParams = {}, options: RequestOptions = {}): Promise<RequestOutput> {
    const text = this.chatPrompt(messages);
    const [out] = await this.generate({ promptIds: this.tokenizer!.encode(text, { addSpecialTokens: false }) }, params, options);
    return out!;
  }

  /** The chat template applied to `messages`, ready to generate from. */
  chatPrompt(messages: ChatMessage[]): string {
    if (!this.tokenizer) throw new PolyloraError('TOKENIZER_ERROR', 'this model has no tokenizer');
    return this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
  }

  /** Engine counters and state: steps, tokens, largest batch, running/waiting, KV blocks, prefix-cache hits. */
  get stats(): EngineSnapshot {
    return this.engine.snapshot();
  }

  /** Aborts running requests and releases the GPU device. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.engine.close();
    this.lora?.destroy();
    this.runner.destroy();
    this.kv.destroy();
    this.weights.destroy();
    this.gpu?.destroy();
  }

  private checkOpen(): void {
    if (this.closed) throw new PolyloraError('INVALID_ARGUMENT', 'this LLM is closed');
  }
}
