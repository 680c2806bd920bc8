// Whole-model logits on the GPU against the TypeScript reference on the same weights, in F32 and in F16/BF16
// copies converted inside the test (weights stay in their dtype on the GPU and are widened as they are read; the
// reference widens the same rounded values), and greedy tokens of the converted copies against the reference.
import { afterAll, describe, expect, it } from 'vitest';
import type { DType } from '../../src/io/dtype.js';
import { greedy } from '../../src/reference/sampling.js';
import { golden } from '../helpers/shared.js';
import { useGpu } from '../helpers/gpu.js';
import { gpuRunner, referenceModel, tinyStories } from '../helpers/model.js';

const g = golden();
const gpu = useGpu();
const cleanup: (() => void)[] = [];
afterAll(() => cleanup.forEach((f) => f()));

/**
 * Tolerance for one logit. Both sides compute in f32 from identical weight values; they differ by summation order
 * (the reference sums in f64) in each of the model's dot products. A K-term f32 dot product is off by at most
 * K·2^-24·Σ|terms|; through 2 layers of 7 products (K <= 384) and the 2048-row lm_head this compounds to a few
 * 1e-5 relative to the activations' scale. We allow 2^-12 ≈ 2.4e-4 of the row's largest |logit| (plus 2^-12
 * absolute): an order of magnitude above that estimate, still ~20x below the smallest golden top-2 gap (0.004 on
 * logits of magnitude ~10), so a real bug (a wrong row, a missing bias, a misplaced head) cannot hide under it.
 */
function logitTol(row: Float32Array): number {
  let m = 0;
  for (const v of row) m = Math.max(m, Math.abs(v));
  return 2 ** -12 * (m + 1);
}

for (const dtype of ['F32', 'F16', 'BF16'] as DType[]) {
  describe(`TinyStories in ${dtype}`, () => {
    it('prompt logits match the reference at every position', async () => {
      const tree = await tinyStories(dtype);
      const ref = await referenceModel(tree);
      const run = await gpuRunner(gpu(), tree, 32);
      cleanup.push(() => run.destroy());
      const prompt = g.cases[0]!.prompt_ids.concat(g.cases[0]!.expected_ids.slice(0, 20));
      const want = ref.forward(ref.newSequence(), prompt, 0);
      const got = await run.logits(prompt);
      const V = run.config.vocabSize;
      const bad: string[] = [];
      let worst = 0;
      for (let t = 0; t < prompt.length; t++) {
        const w = want.subarray(t * V, (t + 1) * V);
        const tol = logitTol(w);
        for (let i = 0; i < V; i++) {
          const d = Math.abs(got[t * V + i]! - w[i]!);
          worst = Math.max(worst, d / tol);
          if (!(d <= tol) && bad.length < 8) bad.push(`pos ${t} token ${i}: got ${got[t * V + i]} want ${w[i]} tol ${tol.toExponential(2)}`);
        }
      }
      expect(bad, `worst |err|/tol = ${worst.toFixed(3)}`).toEqual([]);
    });

    it('greedy decoding matches the reference', async () => {
      const tree = await tinyStories(dtype);
      const ref = await referenceModel(tree);
      const { LLM } = await import('../../src/engine/llm.js');
      const llm = await LLM.load(tree, { gpu: gpu(), maxModelLen: 64, maxNumSeqs: 4 });
      try {
        for (const c of g.cases.filter((x) => x.adapter === null)) {
          const seq = ref.newSequence();
          let logits = ref.forward(seq, c.prompt_ids, 0);
          const want: number[] = [];
          while (want.length < c.max_tokens) {
            const next = greedy(logits.subarray(logits.length - ref.config.vocabSize));
            want.push(next);
            if (next === g.eos_token_id) break;
            logits = ref.forward(seq, [next], seq.length);
          }
          const [out] = await llm.generate({ promptIds: c.prompt_ids }, { temperature: 0, maxTokens: c.max_tokens });
          expect(out!.tokenIds, c.name).toEqual(want);
        }
      } finally {
        await llm.close();
      }
    });
  });
}
