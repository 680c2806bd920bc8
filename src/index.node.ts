// The package entry for Node (the "node" condition in package.json's exports): Dawn's WebGPU, files on disk,
// the shared Hugging Face cache.
import { setPlatform } from './platform/platform.js';
import { nodePlatform } from './platform/node.js';

setPlatform(nodePlatform);

export * from './api.js';
export { hubCacheDir } from './platform/node-hub.js';
// The OpenAI-compatible server (node:http): Node only.
export { createServer } from './server/server.js';
export type { ServerOptions, PolyloraServer } from './server/server.js';
export type { AdapterManager, LoraModuleSpec, ServedAdapter } from './server/adapters.js';
export { fsResolver, hubResolver } from './server/resolvers.js';
export type { LoraResolver, ResolvedLora } from './server/resolvers.js';
