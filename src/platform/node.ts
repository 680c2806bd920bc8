// Node platform: WebGPU from Dawn (the `webgpu` package), files from disk, Hub files in the HF cache.

import { create, globals } from 'webgpu';
import type { Platform } from './platform.js';
import { dirTree, isDirectory } from './node-files.js';
import { openHubNode } from './node-hub.js';

let gpu: GPU | undefined;

export const nodePlatform: Platform = {
  name: 'node',
  async gpu() {
    if (!gpu) {
      // Dawn's WebGPU classes (GPUBufferUsage, GPUMapMode, ...) are globals in a browser; install them here too.
      Object.assign(globalThis, globals);
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
