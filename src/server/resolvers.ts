// LoRA resolvers: where the server looks for an adapter when a request names a model it does not serve yet (vLLM's
// LoRAResolver plugins). Resolvers are asked in order; the first that has the name wins, and the adapter is then
// loaded, validated, served and recorded in the state dir like one added through /v1/load_lora_adapter.
//
// Built in: `fs:<dir>` (the folder <dir>/<name> holding adapter_config.json; never a folder outside <dir>, symlinks
// included) and `hub:<org>` (the Hub repo <org>/<name>). Plugins implement LoraResolver and are passed to
// createServer({ resolvers }) or added later with server.adapters.addResolver().

import { realpath, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { PolyloraError } from '../errors.js';
import { parseHubId } from '../io/hub.js';
import type { FileTree } from '../io/source.js';
import { getPlatform, type HubOptions } from '../platform/platform.js';
import { isAdapterName } from './names.js';

/** What a resolver found. */
export interface ResolvedLora {
  /** Where the adapter's files are: a local folder path, a Hub id `org/name[@rev]`, or the files themselves. */
  source: string | FileTree;
  /**
   * A folder path or Hub id that loads the same adapter again: recorded in the state dir (restored after a restart)
   * and shown as `root` in /v1/models. Default: `source` when it is a string. Without either, a restart asks this
   * resolver again.
   */
  root?: string;
}

export interface LoraResolver {
  /** Names the resolver in logs, error messages and the state file, e.g. `fs:/srv/loras`; unique per server. */
  readonly name: string;
  /**
   * Where the adapter `loraName` is, or null when this resolver does not have it. `baseModel` is the served base
   * name (one resolver can keep adapters for several bases). Throwing counts as "not found here" and the message
   * is reported to the client if no resolver finds the name.
   */
  resolve(loraName: string, baseModel: string): Promise<ResolvedLora | null>;
}

/** Adapters in `<root>/<name>/` (a folder with adapter_config.json); the resolved folder must stay inside `root`. */
export function fsResolver(root: string): LoraResolver {
  const absRoot = resolve(root);
  return {
    name: `fs:${absRoot}`,
    async resolve(loraName) {
      if (!isAdapterName(loraName)) return null;
      let realRoot: string;
      try {
        realRoot = await realpath(absRoot);
      } catch (e) {
        throw new PolyloraError('FILE_NOT_FOUND', 'the resolver root does not exist', { file: absRoot, cause: e });
      }
      let dir: string;
      try {
        dir = await realpath(join(absRoot, ...loraName.split('/')));
      } catch {
        return null;
      }
      if (!dir.startsWith(realRoot + sep)) {
        throw new PolyloraError('INVALID_ARGUMENT', `adapter "${loraName}" leads outside the resolver root`, {
          file: join(absRoot, loraName),
          expected: `a folder inside ${realRoot}`,
          found: dir,
          hint: 'a symlink under the root points elsewhere; resolvers never load from outside their root',
        });
      }
      const config = await stat(join(dir, 'adapter_config.json')).catch(() => null);
      return config?.isFile() ? { source: dir } : null;
    },
  };
}

/** Adapters in Hub repos `<org>/<name>` (single-segment names), downloaded into the HF cache. */
export function hubResolver(org: string, hub: HubOptions = {}): LoraResolver {
  if (!parseHubId(`${org}/x`) || org.includes('/')) {
    throw new PolyloraError('INVALID_ARGUMENT', 'not a Hub organisation or user name', {
      field: '--lora-resolver',
      expected: 'hub:<org>, e.g. hub:my-org',
      found: JSON.stringify(org),
    });
  }
  return {
    name: `hub:${org}`,
    async resolve(loraName) {
      if (!isAdapterName(loraName) || loraName.includes('/')) return null;
      const id = `${org}/${loraName}`;
      return { source: await getPlatform().openHub(id, hub), root: id };
    },
  };
}

/** `fs:<dir>` or `hub:<org>` (the --lora-resolver flag) -> a resolver. */
export function parseResolverSpec(spec: string, hub: HubOptions = {}): LoraResolver {
  const colon = spec.indexOf(':');
  const kind = colon < 0 ? '' : spec.slice(0, colon);
  const arg = spec.slice(colon + 1);
  if (kind === 'fs' && arg !== '') return fsResolver(arg);
  if (kind === 'hub' && arg !== '') return hubResolver(arg, hub);
  throw new PolyloraError('INVALID_ARGUMENT', 'unknown LoRA resolver', {
    field: '--lora-resolver',
    expected: 'fs:<dir> or hub:<org>',
    found: JSON.stringify(spec),
  });
}
