// The package entry for Node (the "node" condition in package.json's exports): Dawn's WebGPU, files on disk,
// the shared Hugging Face cache.
import { setPlatform } from './platform/platform.js';
import { nodePlatform } from './platform/node.js';

setPlatform(nodePlatform);

export * from './api.js';
export { hubCacheDir } from './platform/node-hub.js';
