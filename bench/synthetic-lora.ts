// Synthetic PEFT adapters for a model config: random A and non-zero random B on the chosen projections, written as
// real adapter folders in memory (adapter_config.json + adapter_model.safetensors) and loaded through the same
// path as a downloaded adapter. With `dora`, a DoRA adapter: magnitudes uniform in [0.5, 1.5) (timing only).

import type { DType } from '../src/io/dtype.js';
import { fromFloat32 } from '../src/io/dtype.js';
import type { FileTree } from '../src/io/source.js';
import { memoryTree } from '../src/io/source.js';
import { writeSafetensors } from '../src/io/safetensors-write.js';
import { parseModelConfig } from '../src/model/config.js';
import { LINEAR_MODULES, layerPrefix, linearShape } from '../src/model/weights-spec.js';

export const ALL_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export function syntheticAdapter(configJson: Record<string, unknown>, rank: number, dtype: DType, seed: number, targets = ALL_PROJECTIONS, dora = false): FileTree {
  const { config } = parseModelConfig(configJson, 'synthetic/config.json');
  let s = seed >>> 0 || 1;
  const rand = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296 - 0.5;
  };
  const tensors = [];
  for (let l = 0; l < config.numLayers; l++) {
    for (const m of LINEAR_MODULES) {
      if (!targets.includes(m.split('.')[1]!)) continue;
      const [out, inF] = linearShape(config, m);
      const a = new Float32Array(rank * inF).map(() => rand() * 0.05);
      const b = new Float32Array(out * rank).map(() => rand() * 0.05);
      const base = `base_model.model.${layerPrefix(l)}${m}`;
      tensors.push({ name: `${base}.lora_A.weight`, dtype, shape: [rank, inF], data: fromFloat32(a, dtype) });
      tensors.push({ name: `${base}.lora_B.weight`, dtype, shape: [out, rank], data: fromFloat32(b, dtype) });
      if (dora) {
        const m = new Float32Array(out).map(() => 1 + rand());
        tensors.push({ name: `${base}.lora_magnitude_vector`, dtype: 'F32' as DType, shape: [out], data: fromFloat32(m, 'F32') });
      }
    }
  }
  const adapterConfig = { peft_type: 'LORA', r: rank, lora_alpha: 2 * rank, target_modules: targets, bias: 'none', task_type: 'CAUSAL_LM', use_dora: dora };
  return memoryTree(`synthetic-${dora ? 'dora' : 'lora'}-r${rank}-${seed}`, {
    'adapter_config.json': JSON.stringify(adapterConfig),
    'adapter_model.safetensors': writeSafetensors(tensors),
  });
}
