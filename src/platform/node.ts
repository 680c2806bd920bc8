// Node platform: WebGPU from Dawn (the `webgpu` package), files from disk, Hub files in the HF cache.

import { availableParallelism } from 'node:os';
import { create, globals } from 'webgpu';
import type { Platform } from './platform.js';
import { dirTree, isDirectory } from './node-files.js';
import { openHubNode } from './node-hub.js';

let gpu: GPU | undefined;

/** Mesa's cap on llvmpipe's threads (LP_MAX_THREADS). */
const LP_MAX_THREADS = 32;

/**
 * lavapipe (Mesa's CPU Vulkan driver) runs a dispatch on LP_NUM_THREADS threads, one per core by default, and each
 * thread takes 1/LP_NUM_THREADS of the workgroups at a time (Mesa's lp_cs_tpool). With one share per core, a thread
 * preempted in the middle of its share (by the JS thread, by another process) holds up the whole dispatch; with twice
 * as many threads the shares are half the size, and a core that comes free takes the next one. Measured on a 2-core
 * VM, 16-sequence SmolLM2-shape decode steps: 98-118 ms with 4 threads against 111-144 ms with 2 (with 16 LoRA
 * adapters: 115-122 against 136-151); 6 or 8 threads no better than 4; batch-1 decode unchanged. Mesa reads it when
 * it creates its device; an LP_NUM_THREADS already set is kept, and other drivers ignore it.
 */
function spreadLavapipeThreads(): void {
  process.env.LP_NUM_THREADS ??= String(Math.min(2 * availableParallelism(), LP_MAX_THREADS));
}

export const nodePlatform: Platform = {
  name: 'node',
  async gpu() {
    if (!gpu) {
      // Dawn's WebGPU classes (GPUBufferUsage, GPUMapMode, ...) are globals in a browser; install them here too.
      Object.assign(globalThis, globals);
      spreadLavapipeThreads();
      gpu = create([]) as GPU;
    }
    return gpu;
  },
  noAdapterHint:
    'Dawn found no Vulkan/Metal/D3D12 device. On a machine without a GPU install Mesa >= 24 lavapipe; on Debian ' +
    'bookworm: add bookworm-backports to apt sources, then `apt-get install -t bookworm-backports mesa-vulkan-drivers` ' +
    '(Mesa 22.3 from plain bookworm is refused by Dawn); if several drivers are installed, select one with ' +
    'VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.json',
  // dawn.node polls while mapAsync / onSubmittedWorkDone is pending; POLYLORA_PACE=0 turns pacing off (for A/B runs).
  waitPolls: process.env.POLYLORA_PACE !== '0',
  isLocal: (location) => isDirectory(location),
  async openLocal(location) {
    return dirTree(location);
  },
  openHub: openHubNode,
  env: (name) => process.env[name],
};
