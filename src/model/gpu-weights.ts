// The base model's weights on the GPU, in their file dtype. q/k/v are stacked into one [q+k+v, hidden] matrix per
// layer (one matmul instead of three); gate and up stay separate buffers read by one fused SwiGLU matmul.
// Names and shapes were validated by weights-spec.ts before anything is uploaded.

import type { Checkpoint } from '../io/checkpoint-types.js';
import type { DType } from '../io/dtype.js';
import { fromFloat32 } from '../io/dtype.js';
import type { Gpu } from '../gpu/device.js';
import type { GpuMatrix, GpuVector } from '../gpu/tensors.js';
import { destroyMatrix, uploadMatrix, uploadVector } from '../gpu/tensors.js';
import type { ModelConfig } from './config-types.js';

export interface LayerWeights {
  inputNorm: GpuVector; // [hidden]
  qkv: GpuMatrix; // [(nh + 2·nkv)·hd, hidden]
  qkvBias?: GpuVector; // [(nh + 2·nkv)·hd]
  qNorm?: GpuVector; // [hd] (qwen3)
  kNorm?: GpuVector; // [hd] (qwen3)
  o: GpuMatrix; // [hidden, nh·hd]
  oBias?: GpuVector; // [hidden]
  postNorm: GpuVector; // [hidden]
  gate: GpuMatrix; // [inter, hidden]
  up: GpuMatrix; // [inter, hidden]
  down: GpuMatrix; // [hidden, inter]
}

export interface ModelWeights {
  embed: GpuMatrix; // [vocab, hidden]
  layers: LayerWeights[];
  finalNorm: GpuVector; // [hidden]
  lmHead: GpuMatrix; // [vocab, hidden]; the same object as embed when tied
  /** Bytes of weights read per decoded token (everything but the embedding table, which is gathered). */
  bytesPerToken: number;
  destroy(): void;
}

export interface LoadProgress {
  tensor: string; // the tensor just uploaded
  loaded: number; // bytes uploaded so far
  total: number; // bytes of all tensors
}

/** Reads the checkpoint tensor by tensor and uploads it; peak CPU memory is about one layer's q+k+v. */
export async function uploadModelWeights(
  gpu: Gpu,
  config: ModelConfig,
  ckpt: Checkpoint,
  onProgress?: (p: LoadProgress) => void,
): Promise<ModelWeights> {
  // Bytes per stored range: names that alias one range (tied weights) count once, when the first is uploaded.
  const pending = new Map<string, number>();
  const rangeOf = (name: string) => {
    const t = ckpt.tensors.get(name)!;
    return `${t.file}@${t.offset}`;
  };
  for (const name of ckpt.tensors.keys()) pending.set(rangeOf(name), ckpt.tensors.get(name)!.byteLength);
  const total = [...pending.values()].reduce((a, b) => a + b, 0);
  let loaded = 0;
  const matrices: GpuMatrix[] = [];
  const vectors: GpuVector[] = [];
  const tick = (tensor: string) => {
    const range = rangeOf(tensor);
    loaded += pending.get(range) ?? 0;
    pending.delete(range);
    onProgress?.({ tensor, loaded, total });
  };

  const matrix = async (name: string): Promise<GpuMatrix> => {
    const t = ckpt.tensors.get(name)!;
    const m = uploadMatrix(gpu, name, await ckpt.bytes(name), t.dtype, t.shape[0]!, t.shape[1]!);
    matrices.push(m);
    tick(name);
    return m;
  };
  const vector = async (name: string): Promise<GpuVector> => {
    const t = ckpt.tensors.get(name)!;
    const v = uploadVector(gpu, name, await ckpt.bytes(name), t.dtype);
    vectors.push(v);
    tick(name);
    return v;
  };
  /** Row-concatenation of same-width tensors (q, k, v) in one dtype (f32 if theirs differ). */
  const stacked = async (label: string, names: string[], asMatrix: boolean) => {
    const infos = names.map((n) => ckpt.tensors.get(n)!);
    const dtype: DType = infos.every((t) => t.dtype === infos[0]!.dtype) ? infos[0]!.dtype : 'F32';
    const parts = await Promise.all(
      names.map(async (n, i) => (infos[i]!.dtype === dtype ? ckpt.bytes(n) : fromFloat32(await ckpt.float32(n), dtype))),
    );
    const bytes = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
    let off = 0;
    for (const p of parts) {
      bytes.set(p, off);
      off += p.byteLength;
    }
    names.forEach(tick);
    if (!asMatrix) {
      const v = uploadVector(gpu, label, bytes, dtype);
      vectors.push(v);
      return v;
    }
    const rows = infos.reduce((a, t) => a + t.shape[0]!, 0);
    const m = uploadMatrix(gpu, label, bytes, dtype, rows, infos[0]!.shape[1]!);
    matrices.push(m);
    return m;
  };

  const has = (n: string) => ckpt.tensors.has(n);
  const embed = await matrix('model.embed_tokens.weight');
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    const a = `${p}self_attn.`;
    const proj = ['q_proj', 'k_proj', 'v_proj'];
    layers.push({
      inputNorm: await vector(`${p}input_layernorm.weight`),
      qkv: (await stacked(`${a}qkv_proj.weight`, proj.map((n) => `${a}${n}.weight`), true)) as GpuMatrix,
      qkvBias: config.attentionBias
        ? ((await stacked(`${a}qkv_proj.bias`, proj.map((n) => `${a}${n}.bias`), false)) as GpuVector)
        : undefined,
      qNorm: config.qkNorm ? await vector(`${a}q_norm.weight`) : undefined,
      kNorm: config.qkNorm ? await vector(`${a}k_norm.weight`) : undefined,
      o: await matrix(`${a}o_proj.weight`),
      oBias: config.oProjBias && has(`${a}o_proj.bias`) ? await vector(`${a}o_proj.bias`) : undefined,
      postNorm: await vector(`${p}post_attention_layernorm.weight`),
      gate: await matrix(`${p}mlp.gate_proj.weight`),
      up: await matrix(`${p}mlp.up_proj.weight`),
      down: await matrix(`${p}mlp.down_proj.weight`),
    });
  }
  const finalNorm = await vector('model.norm.weight');
  const lmHead = config.tieWordEmbeddings ? embed : await matrix('lm_head.weight');

  const bytesOf = (m: GpuMatrix) => m.parts.reduce((a, p) => a + p.buffer.size, 0);
  const bytesPerToken =
    layers.reduce((a, l) => a + bytesOf(l.qkv) + bytesOf(l.o) + bytesOf(l.gate) + bytesOf(l.up) + bytesOf(l.down), 0) +
    bytesOf(lmHead);
  return {
    embed,
    layers,
    finalNorm,
    lmHead,
    bytesPerToken,
    destroy() {
      for (const m of matrices) destroyMatrix(m);
      for (const v of vectors) v.buffer.destroy();
    },
  };
}
