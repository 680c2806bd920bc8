// DoRA (use_dora) end to end on the GPU, on the TinyStories base in F32 and in BF16 and F16 copies (converted in
// the test; the adapters' tensors are then written in that dtype too, so the slots hold exactly what the reference
// reads). Two DoRA adapters, built in memory:
// - zara-dora: the shared zara adapter (all seven projections of both layers, rank 8, its trained non-zero B) plus a
//   magnitude per module, m_n = ‖W_n + s·(B·A)_n‖ · u_n with u_n uniform in [0.8, 1.2], so every output row is
//   rescaled by DoRA by up to ±20 % and the result differs from zara's plain LoRA;
// - head-dora: random rank-4 DoRA on lm_head (through the sampled-rows path, on the tied embedding) and on layer 0's
//   q_proj, magnitudes likewise.
// The oracle is the reference model with peft's DoRA formula applied directly (src/reference/ops.ts doraFactors:
// m_n / ‖W_n + c·s·(B·A)_n‖ from the definition in f64, c the request's scale multiplier); the GPU computes the same
// factor from per-row statistics (‖W_n‖², B_n·(A·W_nᵀ), B_n·A·Aᵀ·B_nᵀ) prepared once per adapter.
// Greedy tokens are compared step by step while the reference's top-1 / top-2 logit gap is >= GAP (golden.json's
// cases are chosen with the same margin: far above f32 accumulation differences between the two sums); after the
// first closer call either token would be right and the comparison of that request stops there. At least 3/4 of
// all generated tokens must be compared, so the test cannot pass by comparing nothing. Over the compared tokens the
// GPU's log-probability of each token must match the reference's within 2·2^-11·(max|logit| + 1): logits.test.ts's
// whole-model logit tolerance 2^-12·(max|logit| + 1), twice (the token's logit and the log-sum-exp). Tokens alone
// would miss small errors such as a DoRA norm computed for the wrong scale multiplier.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DType } from '../../src/io/dtype.js';
import { fromFloat32 } from '../../src/io/dtype.js';
import { LLM } from '../../src/engine/llm.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import type { SafetensorsCheckpoint } from '../../src/io/checkpoint.js';
import { writeSafetensors, type TensorToWrite } from '../../src/io/safetensors-write.js';
import { memoryTree, type FileTree } from '../../src/io/source.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { parseModelConfig } from '../../src/model/config.js';
import { loadLoraAdapter, loraFloat32, toReferenceLora, type LoraAdapter } from '../../src/lora/adapter.js';
import { mergeModelFolder } from '../../src/lora/merge.js';
import { ReferenceModel, type ReferenceLora } from '../../src/reference/model.js';
import { useGpu } from '../helpers/gpu.js';
import { tinyStories } from '../helpers/model.js';
import { golden, sharedTree } from '../helpers/shared.js';
import { loraTensors, memorySink, peftConfig, randomValues, rng } from '../lora/fixtures.js';

const g = golden();
const gpu = useGpu();
const GAP = 0.004;
const MAX_TOKENS = 24;
const PROMPTS = g.cases.filter((c) => c.adapter === null).slice(0, 3).map((c) => c.prompt_ids);

let dtype: DType;
let config: ModelConfig;
let baseTree: FileTree;
let base: SafetensorsCheckpoint;
let model: ReferenceModel;

/** DoRA magnitudes for `adapter`'s modules: ‖W_n + s·(B·A)_n‖ · uniform[0.8, 1.2], as peft names them. */
async function magnitudes(adapter: LoraAdapter, seed: number): Promise<TensorToWrite[]> {
  const next = rng(seed);
  const out: TensorToWrite[] = [];
  for (const [path, m] of adapter.modules) {
    const W = await base.float32(`${path}.weight`);
    const a = loraFloat32(m.a);
    const b = loraFloat32(m.b);
    const mag = new Float32Array(m.outFeatures);
    for (let n = 0; n < m.outFeatures; n++) {
      let ss = 0;
      for (let k = 0; k < m.inFeatures; k++) {
        let d = 0;
        for (let j = 0; j < m.rank; j++) d += b[n * m.rank + j]! * a[j * m.inFeatures + k]!;
        const v = W[n * m.inFeatures + k]! + m.scale * d;
        ss += v * v;
      }
      mag[n] = Math.sqrt(ss) * (0.8 + 0.4 * next());
    }
    out.push({ name: `base_model.model.${path}.lora_magnitude_vector`, dtype: 'F32', shape: [m.outFeatures], data: new Uint8Array(mag.buffer) });
  }
  return out;
}

/** `tensors` (lora_A / lora_B) as a plain adapter folder in memory, and with magnitudes as a use_dora one. */
async function doraTree(label: string, adapterConfig: Record<string, unknown>, tensors: TensorToWrite[], seed: number): Promise<{ dora: FileTree; plain: FileTree }> {
  const plain = memoryTree(`${label}-plain`, { 'adapter_config.json': JSON.stringify(adapterConfig), 'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }) });
  const mags = await magnitudes(await loadLoraAdapter(plain, config), seed);
  const dora = memoryTree(label, {
    'adapter_config.json': JSON.stringify({ ...adapterConfig, use_dora: true }),
    'adapter_model.safetensors': writeSafetensors([...tensors, ...mags], { format: 'pt' }),
  });
  return { dora, plain };
}

/** The shared zara adapter's tensors, written in the base's dtype, with magnitudes. */
async function zaraDora(): Promise<{ dora: FileTree; plain: FileTree }> {
  const zara = await sharedTree(g.adapters.zara!.path);
  const ckpt = await openCheckpoint(zara, { file: 'adapter_model.safetensors' });
  try {
    const tensors: TensorToWrite[] = [];
    for (const s of ckpt.stored.values()) tensors.push({ name: s.name, dtype, shape: [...s.shape], data: fromFloat32(await ckpt.float32(s.name), dtype) });
    return await doraTree('mem/zara-dora', JSON.parse(await zara.text('adapter_config.json')), tensors, 7);
  } finally {
    await ckpt.close();
  }
}

async function headDora(): Promise<{ dora: FileTree; plain: FileTree }> {
  // A uniform in ±0.5, B in ±0.05: LoRA terms about the size of the base's, so neither hides the other.
  const H = config.hiddenSize;
  const V = config.vocabSize;
  const tensors = [
    ...loraTensors({ module: 'lm_head', rank: 4, inFeatures: H, outFeatures: V, seed: 11, dtype, b: randomValues(V * 4, 21, 0.05, dtype) }).tensors,
    ...loraTensors({ module: 'model.layers.0.self_attn.q_proj', rank: 4, inFeatures: H, outFeatures: H, seed: 12, dtype, b: randomValues(H * 4, 22, 0.05, dtype) }).tensors,
  ];
  return doraTree('mem/head-dora', peftConfig({ r: 4, lora_alpha: 4, target_modules: ['lm_head', 'q_proj'] }), tensors, 13);
}

/** Greedy decoding in the reference, with the top-1 / top-2 gap of every step. */
interface Greedy {
  ids: number[];
  gaps: number[];
  logprobs: number[];
  tols: number[];
}

function referenceGreedy(lora: ReferenceLora | null, prompt: number[]): Greedy {
  const V = config.vocabSize;
  const seq = model.newSequence(lora);
  let logits = model.forward(seq, prompt, 0);
  const out: Greedy = { ids: [], gaps: [], logprobs: [], tols: [] };
  const { ids, gaps } = out;
  while (ids.length < MAX_TOKENS) {
    const last = logits.subarray(logits.length - V);
    let best = 0;
    let maxAbs = 0;
    for (let i = 1; i < V; i++) if (last[i]! > last[best]!) best = i;
    let second = -Infinity;
    let sum = 0;
    for (let i = 0; i < V; i++) {
      if (i !== best && last[i]! > second) second = last[i]!;
      sum += Math.exp(last[i]! - last[best]!);
      maxAbs = Math.max(maxAbs, Math.abs(last[i]!));
    }
    ids.push(best);
    gaps.push(last[best]! - second);
    out.logprobs.push(-Math.log(sum));
    out.tols.push(2 * 2 ** -12 * (maxAbs + 1));
    logits = model.forward(seq, [best], seq.length);
  }
  return out;
}

/**
 * Compares GPU tokens and their log-probabilities with the reference's before its first step closer than GAP;
 * returns how many were compared.
 */
function compareGreedy(got: { tokenIds: number[]; logprobs: number[] }, want: Greedy, what: string): number {
  let n = 0;
  while (n < want.ids.length && want.gaps[n]! >= GAP) n++;
  expect(got.tokenIds.slice(0, n), what).toEqual(want.ids.slice(0, n));
  for (let i = 0; i < n; i++) {
    const err = Math.abs(got.logprobs[i]! - want.logprobs[i]!);
    if (err > want.tols[i]!) expect.fail(`${what}: token ${i} logprob ${got.logprobs[i]} vs reference ${want.logprobs[i]} (|diff| ${err.toExponential(2)} > ${want.tols[i]!.toExponential(2)})`);
  }
  return n;
}

for (const dt of ['F32', 'BF16', 'F16'] as DType[]) {
  describe(`DoRA adapters on the GPU, ${dt} base`, () => {
    beforeAll(async () => {
      dtype = dt;
      baseTree = await tinyStories(dt);
      config = parseModelConfig(JSON.parse(await baseTree.text('config.json')), `${baseTree.label}/config.json`).config;
      base = await openCheckpoint(baseTree);
      model = await ReferenceModel.load(config, base);
    });
    afterAll(async () => {
      await base?.close();
    });

    it('two DoRA adapters, with scale multipliers 1 and 0.5, share one batch with LoRA adapters and the base, and match the reference', async () => {
      const { dora: zd, plain: zp } = await zaraDora();
      const { dora: hd } = await headDora();
      const zdAdapter = await loadLoraAdapter(zd, config);
      const hdAdapter = await loadLoraAdapter(hd, config);
      expect(zdAdapter.dora && hdAdapter.dora).toBe(true);
      const zaraPlain = await loadLoraAdapter(zp, config);

      type Req = { lora: { name: string; path: FileTree | string; scale?: number } | null; ref: ReferenceLora | null; prompt: number[]; what: string };
      const reqs: Req[] = [];
      for (const [i, prompt] of PROMPTS.entries()) {
        reqs.push({ lora: { name: 'zara-dora', path: zd }, ref: toReferenceLora(zdAdapter), prompt, what: `zara-dora, prompt ${i}` });
        reqs.push({ lora: { name: 'zara-dora', path: zd, scale: 0.5 }, ref: toReferenceLora(zdAdapter, 0.5), prompt, what: `zara-dora x0.5, prompt ${i}` });
        reqs.push({ lora: { name: 'head-dora', path: hd }, ref: toReferenceLora(hdAdapter), prompt, what: `head-dora, prompt ${i}` });
      }
      reqs.push({ lora: { name: 'zara', path: zp }, ref: toReferenceLora(zaraPlain), prompt: PROMPTS[0]!, what: 'zara (plain LoRA)' });
      reqs.push({ lora: null, ref: null, prompt: PROMPTS[0]!, what: 'base' });

      const llm = await LLM.load(baseTree, { gpu: gpu(), enableLora: true, maxLoras: 4, maxLoraRank: 8, loraEmbeddings: true, maxModelLen: 128, maxNumSeqs: reqs.length, onWarning: () => {} });
      try {
        const stepsBefore = llm.stats.steps;
        const outs = await llm.generate(
          reqs.map((r) => ({ promptIds: r.prompt })),
          { temperature: 0, maxTokens: MAX_TOKENS, ignoreEos: true },
          { lora: reqs.map((r) => r.lora) },
        );
        // One prefill step and MAX_TOKENS - 1 decode steps: all requests ran together.
        expect(llm.stats.steps - stepsBefore).toBe(MAX_TOKENS);
        let compared = 0;
        reqs.forEach((r, i) => {
          compared += compareGreedy(outs[i]!, referenceGreedy(r.ref, r.prompt), r.what);
        });
        expect(compared).toBeGreaterThanOrEqual(0.75 * reqs.length * MAX_TOKENS);
        // DoRA changes the output: zara-dora's tokens are not zara's.
        const plain = referenceGreedy(toReferenceLora(zaraPlain), PROMPTS[0]!).ids;
        expect(referenceGreedy(toReferenceLora(zdAdapter), PROMPTS[0]!).ids).not.toEqual(plain);
        expect(outs[0]!.tokenIds).not.toEqual(plain);
      } finally {
        await llm.close();
      }
    });

    it('polylora merge of a DoRA adapter gives a model that generates what the unmerged adapter does', async () => {
      const { dora: zd } = await zaraDora();
      const zdAdapter = await loadLoraAdapter(zd, config);
      const out = memorySink('mem/zara-dora-merged');
      await mergeModelFolder(baseTree, zd, out.sink, { dtype: 'F32' }); // f32: W' rounded once, within the tolerance
      const merged = await LLM.load(out.tree(), { gpu: gpu(), maxModelLen: 128, maxNumSeqs: PROMPTS.length, onWarning: () => {} });
      try {
        const outs = await merged.generate(PROMPTS.map((p) => ({ promptIds: p })), { temperature: 0, maxTokens: MAX_TOKENS, ignoreEos: true });
        let compared = 0;
        outs.forEach((o, i) => {
          compared += compareGreedy(o, referenceGreedy(toReferenceLora(zdAdapter), PROMPTS[i]!), `merged zara-dora, prompt ${i}`);
        });
        expect(compared).toBeGreaterThanOrEqual(0.75 * PROMPTS.length * MAX_TOKENS);
      } finally {
        await merged.close();
      }
    });
  });
}
