// From a model name to a runnable engine: find the files (local folder or Hub), parse config.json, open and
// validate the checkpoint, build the tokenizer, upload the weights and size the KV cache.

import { PolyloraError } from '../errors.js';
import type { FileTree } from '../io/source.js';
import { openCheckpoint } from '../io/checkpoint.js';
import type { HubOptions } from '../platform/platform.js';
import { getPlatform } from '../platform/platform.js';
import type { ModelConfig } from '../model/config-types.js';
import { parseModelConfig } from '../model/config.js';
import { validateWeights } from '../model/weights-spec.js';
import type { LoadProgress, ModelWeights } from '../model/gpu-weights.js';
import { uploadModelWeights } from '../model/gpu-weights.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';

/** Opens `model`: a local folder (a path in Node, a URL in the browser), or a Hub id `org/name[@revision]`. */
export async function resolveModelFiles(model: string | FileTree, hub: HubOptions = {}): Promise<FileTree> {
  if (typeof model !== 'string') return model;
  const platform = getPlatform();
  if (await platform.isLocal(model)) return platform.openLocal(model);
  // Something shaped like a path (absolute, ./ ../ ~, or more than one separator) that is not there is a missing
  // folder, not a Hub id.
  if (/^(\/|\.{1,2}\/|~|[A-Za-z]:\\)/.test(model) || model.split(/[\\/]/).length > 2) {
    throw new PolyloraError('FILE_NOT_FOUND', 'no such folder', {
      file: model,
      expected: 'a folder with config.json (a model) or adapter_config.json (a LoRA adapter), or a Hub id org/name',
      hint: 'check the path',
    });
  }
  // Otherwise a Hub id (parseRepoSpec inside openHub names the problem if it is not one either).
  return platform.openHub(model, hub);
}

export async function readJson(tree: FileTree, file: string): Promise<unknown> {
  const text = await tree.text(file);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new PolyloraError('CONFIG_INVALID', 'not valid JSON', { file: `${tree.label}/${file}`, found: (e as Error).message });
  }
}

export interface LoadedModel {
  config: ModelConfig;
  tokenizer: Tokenizer | null;
  /** EOS ids from config.json, generation_config.json and the tokenizer. */
  eosIds: number[];
  warnings: string[];
  files: FileTree;
}

/** Everything but the GPU: config, validated checkpoint header, tokenizer. */
export async function loadModelFiles(files: FileTree) {
  const { config, warnings, quantizationMethod } = parseModelConfig(
    await readJson(files, 'config.json'),
    `${files.label}/config.json`,
  );
  const ckpt = await openCheckpoint(files);
  try {
    validateWeights(config, ckpt, quantizationMethod);
  } catch (e) {
    await ckpt.close();
    throw e;
  }
  const tokenizer = (await files.has('tokenizer.json')) ? await Tokenizer.fromTree(files) : null;
  if (!tokenizer) warnings.push(`${files.label}: no tokenizer.json, so prompts must be token ids and output has no text`);
  const eos = new Set(config.eosTokenIds);
  if (await files.has('generation_config.json')) {
    const g = (await readJson(files, 'generation_config.json')) as { eos_token_id?: number | number[] };
    for (const id of [g.eos_token_id ?? []].flat()) if (Number.isInteger(id)) eos.add(id);
  }
  if (tokenizer?.eosTokenId != null) eos.add(tokenizer.eosTokenId);
  const loaded: LoadedModel = { config, tokenizer, eosIds: [...eos], warnings, files };
  return { loaded, ckpt };
}

export type { LoadProgress, ModelWeights };
export { uploadModelWeights };
