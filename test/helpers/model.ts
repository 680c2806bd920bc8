// Shared model fixtures for GPU tests (browser-safe: no node: imports). The TinyStories checkpoint from the shared
// folder, optionally converted to F16/BF16 in memory, plus a helper that runs a prompt through the GPU model runner
// and returns the logits of every position.
import type { DType } from '../../src/io/dtype.js';
import type { FileTree } from '../../src/io/source.js';
import { memoryTree } from '../../src/io/source.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { convertCheckpoint } from '../../src/io/safetensors-write.js';
import type { Gpu } from '../../src/gpu/device.js';
import { parseModelConfig } from '../../src/model/config.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { uploadModelWeights } from '../../src/model/gpu-weights.js';
import { ModelRunner } from '../../src/model/runner.js';
import { KvPool } from '../../src/kv/kv-pool.js';
import { ReferenceModel } from '../../src/reference/model.js';
import { golden, sharedTree } from './shared.js';

const SIDE_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json'];

/** The shared TinyStories model folder, or an in-memory copy whose weights are converted to `dtype`. */
export async function tinyStories(dtype: DType = 'F32'): Promise<FileTree> {
  const tree = await sharedTree(golden().model_path);
  if (dtype === 'F32') return tree;
  const ckpt = await openCheckpoint(tree);
  const files: Record<string, Uint8Array | string> = { 'model.safetensors': await convertCheckpoint(ckpt, dtype) };
  await ckpt.close();
  for (const f of SIDE_FILES) if (await tree.has(f)) files[f] = await tree.text(f);
  return memoryTree(`${tree.label} (${dtype})`, files);
}

export async function modelConfig(tree: FileTree): Promise<ModelConfig> {
  return parseModelConfig(JSON.parse(await tree.text('config.json')), `${tree.label}/config.json`).config;
}

export async function referenceModel(tree: FileTree): Promise<ReferenceModel> {
  const ckpt = await openCheckpoint(tree);
  const model = await ReferenceModel.load(await modelConfig(tree), ckpt);
  await ckpt.close();
  return model;
}

/** The GPU runner for `tree` with room for one prompt of up to `maxTokens` tokens, all of whose rows are sampled. */
export async function gpuRunner(gpu: Gpu, tree: FileTree, maxTokens = 64) {
  const config = await modelConfig(tree);
  const ckpt = await openCheckpoint(tree);
  const weights = await uploadModelWeights(gpu, config, ckpt);
  await ckpt.close();
  const kv = new KvPool(gpu, config, { blockSize: 4, numBlocks: Math.ceil(maxTokens / 4) + 1 });
  const runner = await ModelRunner.create(gpu, config, weights, kv, { maxTokens, maxRows: maxTokens, maxSeqs: 1, maxModelLen: maxTokens });
  return {
    config,
    runner,
    /** Logits [ids.length, vocab] of one prefill over `ids`, KV blocks laid out in reverse order on purpose. */
    async logits(ids: readonly number[]): Promise<Float32Array> {
      const b = runner.batch;
      b.reset();
      const nBlocks = Math.ceil(ids.length / kv.blockSize);
      for (let j = 0; j < nBlocks; j++) b.blockTables[j] = kv.numBlocks - 1 - j;
      ids.forEach((id, t) => {
        b.ids[t] = id;
        b.positions[t] = t;
        b.seqOf[t] = 0;
        b.slots[t] = b.blockTables[Math.floor(t / kv.blockSize)]! * kv.blockSize + (t % kv.blockSize);
        b.feed[t] = 0xffffffff;
        b.sampleRows[t] = t;
        b.setSampling(t, { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, counter: 0 });
      });
      b.tokens = ids.length;
      b.rows = ids.length;
      b.seqs = 1;
      await runner.step();
      return runner.readLogits(ids.length);
    },
    destroy() {
      runner.destroy();
      kv.destroy();
      weights.destroy();
    },
  };
}
