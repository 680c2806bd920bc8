// A model's configuration after parsing config.json: every field the forward pass needs, already normalized
// (defaults applied, head_dim derived, rope scaling decoded). Parsing and validation live in config.ts.

export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'qwen3';

export type RopeScaling =
  | { type: 'none' }
  /** Llama 3.x frequency-dependent scaling. */
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  /** Position interpolation: positions divided by `factor`. */
  | { type: 'linear'; factor: number };

export interface ModelConfig {
  arch: Architecture;
  hiddenSize: number; // d_model
  intermediateSize: number; // MLP inner size
  numLayers: number;
  numHeads: number; // query heads
  numKvHeads: number; // key/value heads (GQA when < numHeads)
  headDim: number; // config head_dim, else hiddenSize / numHeads
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (qwen2; llama/mistral with attention_bias). */
  attentionBias: boolean;
  /** o_proj carries a bias (llama with attention_bias). */
  oProjBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (qwen3). */
  qkNorm: boolean;
  /** Mistral/Qwen sliding window, or null for full attention. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** The torch_dtype named in config.json, informational. */
  torchDtype: string | null;
}
