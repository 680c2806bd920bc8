// Placeholder until the Hub download lands.
import type { FileTree } from '../io/source.js';
import type { HubOptions } from './platform.js';
import { PolyloraError } from '../errors.js';

export async function openHubNode(repo: string, _options: HubOptions): Promise<FileTree> {
  throw new PolyloraError('HUB_ERROR', `Hub download not implemented yet for ${repo}`);
}
