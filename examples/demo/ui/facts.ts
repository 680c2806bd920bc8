// The device and model panels: what runs where, in rows of a definition list.

import type { DeviceSummary, ModelSummary } from '../protocol.js';
import { fillFacts, formatBytes } from './dom.js';

/** The adapter's own description when the browser gives one, else vendor and architecture. */
export function deviceName(d: DeviceSummary): string {
  return d.description || [d.vendor, d.architecture].filter(Boolean).join(' ') || 'unnamed WebGPU adapter';
}

export function showDevice(dl: HTMLElement, d: DeviceSummary): void {
  const compute = d.f16Compute
    ? 'f16 (shader-f16)'
    : `f32 (shader-f16 ${d.shaderF16Offered ? 'offered, not used' : 'not offered'})`;
  fillFacts(dl, [
    ['Adapter', deviceName(d)],
    ['Compute path', compute],
    ['Subgroups', d.subgroups ? `yes (${d.subgroupMinSize}–${d.subgroupMaxSize} lanes)` : 'no'],
    ['Max buffer', formatBytes(d.maxBufferSize)],
    ['Max storage binding', formatBytes(d.maxStorageBufferBindingSize)],
  ]);
}

export function showModel(dl: HTMLElement, m: ModelSummary): void {
  fillFacts(dl, [
    ['Model', m.label],
    ['Shape', `${m.arch} · ${m.numLayers} layers · hidden ${m.hiddenSize} · vocab ${m.vocabSize}`],
    ['Weights', `${formatBytes(m.weightBytes)}${m.torchDtype ? ` (${m.torchDtype})` : ''}`],
    ['KV cache', `${m.kvCapacityTokens.toLocaleString('en')} tokens · context ${m.maxModelLen}`],
    ['LoRA slots', `${m.maxLoras} × rank ≤ ${m.maxLoraRank} (${formatBytes(m.loraSlotBytes)})`],
    ['Tokenizer', m.hasTokenizer ? 'yes' : 'none: give prompts as token ids'],
  ]);
}
