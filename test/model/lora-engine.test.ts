// Engine behaviour around LoRA adapters, on the real TinyStories-656K base and its three real adapters (every
// output checked token for token against golden.json): a bad adapter rejects only its own request with an error
// that names the file and tensor, while the engine keeps serving others; adapters stay registered when the CPU
// cache evicts their parsed copy and are read again on their next use; GPU slots are reused least recently used
// first (loraStats counts loads, evictions, hits); removeLora is refused while a request uses the adapter;
// stream() with an adapter; the prefix cache never shares KV blocks between different adapter scales; LoRA on
// lm_head and embed_tokens (loraEmbeddings) through the runner, against the reference model. Runs in Node and Chromium.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../../src/engine/llm.js';
import type { Chunk, RequestOutput } from '../../src/engine/request.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { memoryTree, type FileTree } from '../../src/io/source.js';
import { golden, sharedTree, type GoldenCase } from '../helpers/shared.js';
import { useGpu } from '../helpers/gpu.js';
import { modelConfig, referenceModel, tinyStories } from '../helpers/model.js';
import { adapterFiles, goldenLora } from '../helpers/lora.js';
import { expectClose } from '../helpers/kernels.js';
import { loadLoraAdapter, toReferenceLora } from '../../src/lora/adapter.js';
import { greedy } from '../../src/reference/sampling.js';
import { adapterTree, loraTensors, peftConfig } from '../lora/fixtures.js';

const g = golden();
const gpu = useGpu();
let base: FileTree;
let config: ModelConfig;

beforeAll(async () => {
  base = await tinyStories();
  config = await modelConfig(base);
});

/** golden.json's case for `prompt` with `adapter` (null: the base model). */
function goldenCase(prompt: string, adapter: string | null): GoldenCase {
  const c = g.cases.find((x) => x.name === prompt && x.adapter === adapter);
  if (!c) throw new Error(`golden.json has no case ${prompt} / ${adapter}`);
  return c;
}

const params = (c: GoldenCase) => ({ temperature: 0, maxTokens: c.max_tokens });

function expectGolden(out: RequestOutput, c: GoldenCase): void {
  const what = `${c.name} / ${c.adapter ?? 'base'}`;
  const first = out.tokenIds.findIndex((id, i) => id !== c.expected_ids[i]);
  const where = first >= 0 ? `: first difference at step ${first}: got ${out.tokenIds.slice(first, first + 6)}, expected ${c.expected_ids.slice(first, first + 6)}` : '';
  expect(out.tokenIds, what + where).toEqual(c.expected_ids);
  expect(out.text, what).toBe(c.expected_text);
}

/** Runs `c` (its adapter at `scale` times its own scale, or the base) and checks it against golden.json. */
async function runGolden(llm: LLM, c: GoldenCase, scale = 1): Promise<void> {
  const lora = c.adapter ? await goldenLora(c.adapter, scale) : null;
  const [out] = await llm.generate({ promptIds: c.prompt_ids }, params(c), { lora });
  expectGolden(out!, c);
}

/** Every byte of `file` in `tree`. */
async function fileBytes(tree: FileTree, file: string): Promise<Uint8Array> {
  const src = await tree.open(file);
  try {
    return (await src.read(0, src.size)).slice();
  } finally {
    await src.close();
  }
}

const Q_PROJ_A = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';

describe('a bad adapter fails its own request only', () => {
  let llm: LLM;
  let zaraTree: FileTree;
  beforeAll(async () => {
    llm = await LLM.load(base, { gpu: gpu(), enableLora: true, maxLoras: 2, maxLoraRank: 8, maxModelLen: 128, onWarning: () => {} });
    zaraTree = await sharedTree(g.adapters.zara!.path);
  });
  afterAll(async () => {
    await llm?.close();
  });

  /** q_proj's lora_A made for hidden 64 on a base of hidden 128 (another base's adapter). */
  const wrongShapes = () => {
    const [out, inF] = [config.numHeads * config.headDim, config.hiddenSize / 2];
    const tensors = loraTensors({ module: 'model.layers.0.self_attn.q_proj', rank: 4, inFeatures: inF, outFeatures: out }).tensors;
    return adapterTree(peftConfig({ target_modules: ['q_proj'] }), tensors, 'mem/wrong-shapes');
  };

  it('wrong base shapes: WEIGHTS_MISMATCH naming the tensor; a concurrent base and adapter request complete', async () => {
    const baseCase = goldenCase('once-there-was', null);
    const zaraCase = goldenCase('girl-named', 'zara');
    const basePromise = llm.generate({ promptIds: baseCase.prompt_ids }, params(baseCase));
    const zaraPromise = llm.generate({ promptIds: zaraCase.prompt_ids }, params(zaraCase), { lora: await goldenLora('zara') });
    const bad = llm.generate({ promptIds: baseCase.prompt_ids }, params(baseCase), { lora: { name: 'wrong-shapes', path: wrongShapes() } });
    await expect(bad).rejects.toMatchObject({ name: 'PolyloraError', code: 'WEIGHTS_MISMATCH', tensor: Q_PROJ_A, file: 'mem/wrong-shapes/adapter_model.safetensors' });
    await expect(bad).rejects.toThrow(/\[4, 64\]/);
    expectGolden((await basePromise)[0]!, baseCase);
    expectGolden((await zaraPromise)[0]!, zaraCase);
    // It stays registered (nothing was cached) and can be removed: no request holds it.
    expect(llm.listLoras()).toContain('wrong-shapes');
    llm.removeLora('wrong-shapes');
    expect(llm.listLoras()).not.toContain('wrong-shapes');
  });

  it('a truncated safetensors file: an error naming the file; the engine keeps serving', async () => {
    const bytes = await fileBytes(zaraTree, 'adapter_model.safetensors');
    const tree = memoryTree('mem/truncated', {
      'adapter_config.json': await zaraTree.text('adapter_config.json'),
      'adapter_model.safetensors': bytes.subarray(0, bytes.byteLength - 100),
    });
    const baseCase = goldenCase('park', null);
    const basePromise = llm.generate({ promptIds: baseCase.prompt_ids }, params(baseCase));
    const bad = llm.generate({ promptIds: baseCase.prompt_ids }, params(baseCase), { lora: { name: 'truncated', path: tree } });
    await expect(bad).rejects.toMatchObject({ name: 'PolyloraError', code: 'SAFETENSORS_INVALID', file: 'mem/truncated/adapter_model.safetensors' });
    expectGolden((await basePromise)[0]!, baseCase);
  });

  it('a NaN in a tensor: the error names the tensor; through stream() the iteration and the result both fail', async () => {
    const a = new Float32Array(4 * config.hiddenSize).fill(0.25);
    a[5] = NaN;
    const tensors = loraTensors({ module: 'model.layers.0.self_attn.q_proj', rank: 4, inFeatures: config.hiddenSize, outFeatures: config.numHeads * config.headDim, a }).tensors;
    const tree = adapterTree(peftConfig({ target_modules: ['q_proj'] }), tensors, 'mem/nan');
    const baseCase = goldenCase('dog', null);
    const baseStream = llm.stream({ promptIds: baseCase.prompt_ids }, params(baseCase));
    const bad = llm.stream({ promptIds: baseCase.prompt_ids }, params(baseCase), { lora: { name: 'nan', path: tree } });
    const iterate = async () => {
      for await (const c of bad) expect.unreachable(`a chunk from a failed request: ${JSON.stringify(c)}`);
    };
    await expect(iterate()).rejects.toMatchObject({ code: 'SAFETENSORS_INVALID', tensor: Q_PROJ_A });
    await expect(bad.result).rejects.toThrow(/non-finite/);
    expectGolden(await baseStream.result, baseCase);
  });

  it('an adapter above maxLoraRank (robot, rank 16 > 8) is refused naming the tensor and maxLoraRank', async () => {
    const robot = goldenCase('dog', 'robot');
    const bad = llm.generate({ promptIds: robot.prompt_ids }, params(robot), { lora: await goldenLora('robot') });
    await expect(bad).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'maxLoraRank' });
    await expect(bad).rejects.toThrow(/lora_A/);
    await runGolden(llm, goldenCase('dog', 'pirate'));
  });

  it('a failed adapter in a multi-prompt call leaves the good adapter of that call unpinned (removable)', async () => {
    const zaraCase = goldenCase('one-day', 'zara');
    const bad = llm.generate(
      [{ promptIds: zaraCase.prompt_ids }, { promptIds: zaraCase.prompt_ids }],
      params(zaraCase),
      { lora: [await goldenLora('zara'), { name: 'wrong-shapes-2', path: wrongShapes() }] },
    );
    await expect(bad).rejects.toMatchObject({ code: 'WEIGHTS_MISMATCH' });
    // Nothing runs with zara now, so it can be removed.
    expect(() => llm.removeLora('zara')).not.toThrow();
    expect(llm.listLoras()).not.toContain('zara');
  });
});

describe('CPU cache of one adapter, one GPU slot (maxCpuLoras 1, maxLoras 1)', () => {
  let llm: LLM;
  beforeAll(async () => {
    llm = await LLM.load(base, { gpu: gpu(), enableLora: true, maxLoras: 1, maxCpuLoras: 1, maxLoraRank: 16, maxModelLen: 128 });
  });
  afterAll(async () => {
    await llm?.close();
  });

  it('adapters evicted from the CPU cache stay registered and are read again; each reloads the one slot', async () => {
    for (const name of ['zara', 'pirate', 'robot', 'zara']) await runGolden(llm, goldenCase('once-there-was', name));
    expect(llm.listLoras()).toEqual(['zara', 'pirate', 'robot']);
    const stats = llm.loraStats!;
    // zara parsed twice (evicted by pirate, read again at the end); each load evicted the previous one.
    expect(stats.cpu).toMatchObject({ loads: 4, evictions: 3, failures: 0 });
    expect(stats.slots).toMatchObject({ loads: 4, evictions: 3, hits: 0 });
    expect(llm.loraSlots()).toEqual([{ slot: 0, name: 'zara', refs: 0, pinned: false }]);
    // Again, now resident in the slot: a hit, no load.
    await runGolden(llm, goldenCase('dog', 'zara'));
    expect(llm.loraStats!.slots).toMatchObject({ loads: 4, hits: 1 });
  });
});

describe('two GPU slots: LRU reuse, removeLora, stream, prefix cache (maxLoras 2, blockSize 4)', () => {
  let llm: LLM;
  beforeAll(async () => {
    llm = await LLM.load(base, { gpu: gpu(), enableLora: true, maxLoras: 2, maxLoraRank: 16, maxModelLen: 128, blockSize: 4 });
  });
  afterAll(async () => {
    await llm?.close();
  });
  const resident = () => llm.loraSlots().map((s) => s.name);

  it('the least recently used slot is the one overwritten', async () => {
    await runGolden(llm, goldenCase('park', 'zara'));
    await runGolden(llm, goldenCase('park', 'pirate'));
    await runGolden(llm, goldenCase('one-day', 'zara')); // a hit: zara is now more recent than pirate
    expect(resident()).toEqual(['zara', 'pirate']);
    await runGolden(llm, goldenCase('park', 'robot'));
    expect(resident()).toEqual(['zara', 'robot']); // pirate was the least recently used
    await runGolden(llm, goldenCase('one-day', 'pirate'));
    expect(resident()).toEqual(['pirate', 'robot']); // zara (used before robot) goes next
    expect(llm.loraStats!.slots).toMatchObject({ loads: 4, evictions: 2, hits: 1 });
  });

  it('loraRequests: a third adapter waits for one of the two slots; base requests are not counted', async () => {
    const cases = [goldenCase('once-there-was', 'zara'), goldenCase('once-there-was', 'pirate'), goldenCase('park', 'robot'), goldenCase('park', null)];
    const streams = await Promise.all(cases.map(async (c) => llm.stream({ promptIds: c.prompt_ids }, params(c), { lora: c.adapter ? await goldenLora(c.adapter) : null })));
    const its = streams.map((s) => s[Symbol.asyncIterator]());
    await its[0]!.next(); // a step has run: zara and pirate hold the slots, robot cannot be admitted
    const during = llm.loraRequests();
    expect(streams.slice(0, 2).map((s) => s.settled), 'test setup: zara and pirate still running').toEqual([false, false]);
    expect(Object.fromEntries(during.running)).toEqual({ zara: 1, pirate: 1 });
    expect(Object.fromEntries(during.waiting)).toEqual({ robot: 1 });
    for (const it of its) while (!(await it.next()).done);
    for (const [i, s] of streams.entries()) expectGolden(await s.result, cases[i]!);
    const after = llm.loraRequests();
    expect([after.running.size, after.waiting.size]).toEqual([0, 0]);
  });

  it('stream() with an adapter: the chunks concatenate to the golden ids and text; removeLora is refused meanwhile', async () => {
    const c = goldenCase('girl-named', 'robot');
    const stream = llm.stream({ promptIds: c.prompt_ids }, params(c), { lora: await goldenLora('robot') });
    const chunks: Chunk[] = [];
    for await (const chunk of stream) {
      if (chunks.length === 0) {
        // Running: the adapter is in use.
        expect(() => llm.removeLora('robot')).toThrow(/in use/);
      }
      chunks.push(chunk);
    }
    expect(chunks.flatMap((ch) => ch.tokenIds)).toEqual(c.expected_ids);
    expect(chunks.map((ch) => ch.text).join('')).toBe(c.expected_text);
    expect(chunks.at(-1)!.finishReason).not.toBeNull();
    expectGolden(await stream.result, c);
  });

  it('removeLora after use frees the name and its slot; the adapter can be added again', async () => {
    llm.removeLora('robot');
    expect(llm.listLoras()).not.toContain('robot');
    expect(resident()).not.toContain('robot');
    expect(() => llm.removeLora('robot')).toThrow(/no adapter of this name/);
    await runGolden(llm, goldenCase('dog', 'robot'));
    expect(llm.listLoras()).toContain('robot');
  });

  it('removeLora is refused while any request of the adapter runs, also after an earlier multi-prompt call ended', async () => {
    const long = goldenCase('once-there-was', 'zara');
    const stream = llm.stream({ promptIds: long.prompt_ids }, params(long), { lora: await goldenLora('zara') });
    const it = stream[Symbol.asyncIterator]();
    await it.next(); // running
    // Two short requests of the same adapter in one call, finished while the stream still runs.
    const short = goldenCase('park', 'zara');
    await llm.generate([{ promptIds: short.prompt_ids }, { promptIds: short.prompt_ids }], { temperature: 0, maxTokens: 2 }, { lora: await goldenLora('zara') });
    expect(stream.settled, 'test setup: the stream is still running').toBe(false);
    expect(() => llm.removeLora('zara')).toThrow(/in use/);
    while (!(await it.next()).done);
    expectGolden(await stream.result, long);
  });

  it('prefix cache: KV blocks are shared neither between adapters nor between scales of one adapter', async () => {
    // zara adapts k_proj and v_proj, so the cached K/V of a prompt depend on the adapter and its scale; with
    // blockSize 4 the first block of this 7-token prompt is cached.
    const withZara = goldenCase('once-there-was', 'zara');
    const asBase = goldenCase('once-there-was', null);
    expect(withZara.prompt_ids.length, 'test setup: a full reusable block').toBeGreaterThan(4);
    await runGolden(llm, asBase);
    await runGolden(llm, withZara, 1);
    // The same prompt and adapter at scale 0 must be the base model.
    const [out] = await llm.generate({ promptIds: asBase.prompt_ids }, params(asBase), { lora: await goldenLora('zara', 0) });
    expectGolden(out!, asBase);
  });
});

describe('LoRA on lm_head and embed_tokens (loraEmbeddings)', () => {
  let llm: LLM;
  beforeAll(async () => {
    llm = await LLM.load(base, { gpu: gpu(), enableLora: true, loraEmbeddings: true, maxLoras: 2, maxLoraRank: 8, maxModelLen: 128, onWarning: () => {} });
  });
  afterAll(async () => {
    await llm?.close();
  });

  it('a synthetic adapter on every target, at scales 1 and -0.5 beside a base request, follows the reference model', async () => {
    // Rank 8 on the seven projections, lm_head and embed_tokens (scale 2 / 8); f16 file. The reference model runs
    // the same adapter (unmerged, f32 with f64 sums); greedy tokens must agree, which f32 rounding cannot upset while
    // the reference's top-1/top-2 logit gap stays >= 1e-3 on every step (checked; measured gaps are >= 0.0128).
    const spec = { name: 'everywhere', r: 8, alpha: 2, dtype: 'F16' as const, seed: 77, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'lm_head', 'embed_tokens'] };
    const tree = adapterFiles(config, spec);
    const adapter = await loadLoraAdapter(tree, config, { name: spec.name });
    expect(adapter.targets.targets).toContain('lm_head');
    expect(adapter.targets.targets).toContain('embed_tokens');
    const ref = await referenceModel(base);
    const prompt = goldenCase('girl-named', null).prompt_ids;
    const steps = 16;
    const runs = [{ scale: 1 }, { scale: null }, { scale: -0.5 }] as const;
    const want = runs.map(({ scale }) => {
      const seq = ref.newSequence(scale === null ? null : toReferenceLora(adapter, scale));
      let logits = ref.forward(seq, prompt, 0);
      const ids: number[] = [];
      const logprobs: number[] = [];
      let minGap = Infinity;
      while (ids.length < steps) {
        const last = logits.subarray(logits.length - config.vocabSize);
        const next = greedy(last);
        const second = Math.max(...last.filter((_, i) => i !== next));
        minGap = Math.min(minGap, last[next]! - second);
        let z = 0;
        for (const v of last) z += Math.exp(v - last[next]!);
        logprobs.push(-Math.log(z));
        ids.push(next);
        logits = ref.forward(seq, [next], seq.length);
      }
      return { ids, logprobs, minGap };
    });
    for (const w of want) expect(w.minGap, 'test setup: reference top-1/top-2 gap').toBeGreaterThan(1e-3);
    // The adapter changes the output (else this test could not fail).
    expect(want[0]!.ids).not.toEqual(want[1]!.ids);
    expect(want[2]!.ids).not.toEqual(want[1]!.ids);

    const outs = await llm.generate(
      runs.map(() => ({ promptIds: prompt })),
      { temperature: 0, maxTokens: steps, ignoreEos: true },
      { lora: runs.map(({ scale }) => (scale === null ? null : { name: spec.name, path: tree, scale })) },
    );
    outs.forEach((o, i) => expect(o.tokenIds, `scale ${runs[i]!.scale ?? 'base'}`).toEqual(want[i]!.ids));
    // Log-probabilities of the sampled tokens within 1e-4: ~40x the largest difference measured on lavapipe (2.4e-6;
    // f32 sums over 128..2048 terms against the reference's f64), and ~100x below the smallest top-1/top-2 gap.
    outs.forEach((o, i) => expectClose(o.logprobs, want[i]!.logprobs, () => 1e-4, `logprobs, scale ${runs[i]!.scale ?? 'base'}`));
    expect(llm.stats.maxRowsInStep).toBe(3);
  });
});

describe('pinning', () => {
  it('a pinned adapter stays in its GPU slot while others rotate through the rest; the last slot cannot be pinned', async () => {
    const llm = await LLM.load(await tinyStories(), { gpu: gpu(), enableLora: true, maxLoras: 2, maxLoraRank: 16, maxModelLen: 128, maxNumSeqs: 8 });
    try {
      const [zara, pirate] = await Promise.all(['zara', 'pirate'].map((n) => goldenLora(n)));
      await llm.pinLora(zara!);
      await expect(llm.pinLora(pirate!)).rejects.toThrow(/cannot pin adapter "pirate".*maxLoras = 2/);
      const c = golden().cases;
      const run = async (name: string) => {
        const k = c.find((x) => x.adapter === name)!;
        const [out] = await llm.generate({ promptIds: k.prompt_ids }, { temperature: 0, maxTokens: k.max_tokens }, { lora: await goldenLora(name) });
        expect(out!.tokenIds, name).toEqual(k.expected_ids);
      };
      await run('zara');
      await run('pirate');
      await run('robot'); // evicts pirate, never zara
      await run('pirate');
      const slots = llm.loraSlots();
      expect(slots.find((s) => s.name === 'zara')?.pinned).toBe(true);
      expect(llm.loraStats!.slots.evictions).toBe(2);
      llm.unpinLora('zara');
      await run('robot'); // zara is now the least recently used: robot takes its slot
      expect(llm.loraSlots().map((s) => s.name).sort()).toEqual(['pirate', 'robot']);
    } finally {
      await llm.close();
    }
  });
});
