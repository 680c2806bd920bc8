// The library's front door, in the spirit of vLLM's `LLM`: load a model once, then generate for many prompts;
// everything submitted runs through one continuous-batching engine on one GPU device.
//
//   const llm = await LLM.load('HuggingFaceTB/SmolLM2-135M-Instruct');
//   const [out] = await llm.generate('Once upon a time', { maxTokens: 32, temperature: 0 });
//   for await (const c of llm.stream('Hello', { maxTokens: 64 })) process.stdout.write(c.text);
//   await llm.close();

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
import { Engine } from './engine.js';
import { loadModelFiles, resolveModelFiles } from './load.js';
import type { RequestOutput, RequestStream } from './request.js';
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
  /** Tokens per KV block (default 16). */
  blockSize?: number;
  /** Progress of weight upload. */
  onProgress?: (p: LoadProgress) => void;
  /** Where load-time warnings go (default console.warn). */
  onWarning?: (message: string) => void;
  /** Run on this device instead of creating one (it stays open after close()). */
  gpu?: Gpu;
}

export type Prompt = string | { prompt: string } | { promptIds: number[] };

export interface LLMInfo {
  model: string;
  config: ModelConfig;
  device: DeviceInfo;
  kvCapacityTokens: number;
  maxModelLen: number;
  weightBytes: number;
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
  private closed = false;

  private constructor(
    info: LLMInfo,
    tokenizer: Tokenizer | null,
    parts: { engine: Engine; gpu: Gpu | null; weights: ModelWeights; runner: ModelRunner; kv: KvPool },
  ) {
    this.info = info;
    this.tokenizer = tokenizer;
    this.engine = parts.engine;
    this.gpu = parts.gpu;
    this.weights = parts.weights;
    this.runner = parts.runner;
    this.kv = parts.kv;
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
      });
      if (maxModelLen > kv.capacityTokens) {
        warn(`maxModelLen ${maxModelLen} exceeds the KV cache (${kv.capacityTokens} tokens); using ${kv.capacityTokens}`);
        maxModelLen = kv.capacityTokens;
      }
      const maxNumBatchedTokens = Math.max(options.maxNumBatchedTokens ?? 256, maxNumSeqs);
      const runner = await ModelRunner.create(gpu, c, weights, kv, {
        maxTokens: maxNumBatchedTokens,
        maxRows: maxNumSeqs,
        maxSeqs: maxNumSeqs,
        maxModelLen,
      });
      const engine = new Engine(runner, loaded.tokenizer, loaded.eosIds, { maxNumSeqs, maxNumBatchedTokens, maxModelLen });
      const info: LLMInfo = {
        model: typeof model === 'string' ? model : model.label,
        config: c,
        device: gpu.info,
        kvCapacityTokens: kv.capacityTokens,
        maxModelLen,
        weightBytes: weights.bytesPerToken,
      };
      return new LLM(info, loaded.tokenizer, { engine, gpu: ownGpu ? gpu : null, weights, runner, kv });
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

  /** Starts one request and streams its chunks. Breaking out of the loop aborts it. */
  stream(prompt: Prompt, params: SamplingParams = {}): RequestStream {
    this.checkOpen();
    return this.engine.add(this.encode(prompt), params);
  }

  /** Generates for every prompt (all admitted into the same batches); outputs are in prompt order. */
  async generate(prompts: Prompt | Prompt[], params: SamplingParams | SamplingParams[] = {}): Promise<RequestOutput[]> {
    this.checkOpen();
    const list = Array.isArray(prompts) ? prompts : [prompts];
    if (Array.isArray(params) && params.length !== list.length) {
      throw new PolyloraError('INVALID_ARGUMENT', 'one sampling params object per prompt', {
        field: 'params',
        expected: `${list.length}`,
        found: `${params.length}`,
      });
    }
    const ids = list.map((p) => this.encode(p));
    const streams = ids.map((p, i) => this.engine.add(p, Array.isArray(params) ? params[i] : params));
    return Promise.all(streams.map((s) => s.result));
  }

  /** Renders `messages` with the model's chat template and generates the assistant's reply. */
  async chat(messages: ChatMessage[], params: SamplingParams = {}): Promise<RequestOutput> {
    const text = this.chatPrompt(messages);
    const [out] = await this.generate({ promptIds: this.tokenizer!.encode(text, { addSpecialTokens: false }) }, params);
    return out!;
  }

  /** The chat template applied to `messages`, ready to generate from. */
  chatPrompt(messages: ChatMessage[]): string {
    if (!this.tokenizer) throw new PolyloraError('TOKENIZER_ERROR', 'this model has no tokenizer');
    return this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
  }

  /** Engine counters (steps, tokens, largest batch). */
  get stats() {
    return this.engine.stats;
  }

  /** Aborts running requests and releases the GPU device. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.engine.close();
    this.runner.destroy();
    this.kv.destroy();
    this.weights.destroy();
    this.gpu?.destroy();
  }

  private checkOpen(): void {
    if (this.closed) throw new PolyloraError('INVALID_ARGUMENT', 'this LLM is closed');
  }
}
