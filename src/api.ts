// The public API, the same for Node and browsers; the entry points (index.node.ts, index.browser.ts) install
// their platform and re-export this.

export * from './errors.js';
export { LLM } from './engine/llm.js';
export type { LLMOptions, LLMInfo, Prompt, RequestOptions } from './engine/llm.js';
export { LoRARequest } from './engine/lora-request.js';
export type { LoRARequestInit } from './engine/lora-request.js';
export type { EngineSnapshot } from './engine/engine.js';
export type { SamplingParams } from './engine/sampling-params.js';
export type { Chunk, RequestOutput, RequestMetrics, RequestStream, TopLogprob } from './engine/request.js';
export type { FinishReason } from './engine/sequence.js';
export type { ChatMessage } from './tokenizer/chat-template.js';
export { Tokenizer } from './tokenizer/tokenizer.js';
export { Gpu } from './gpu/device.js';
export type { DeviceInfo, DeviceOptions, GpuFeatures } from './gpu/device.js';
export type { ByteSource, FileTree } from './io/source.js';
export { memoryTree, memorySource } from './io/source.js';
export { openCheckpoint } from './io/checkpoint.js';
export { writeSafetensors } from './io/safetensors-write.js';
export type { ModelConfig } from './model/config-types.js';
export type { HubOptions, Platform } from './platform/platform.js';
export { loadLoraAdapter, toReferenceLora } from './lora/adapter.js';
export type { LoraAdapter, LoraModule } from './lora/adapter.js';
export { AdapterRegistry } from './lora/cpu-cache.js';
export { mergeModelFolder } from './lora/merge.js';
