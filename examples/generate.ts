// Library usage in Node: load a model (local folder or Hub id), generate, stream.
//   npx tsx examples/generate.ts ../shared/models/tinystories-656k "Once upon a time"
import { LLM } from '../src/index.node.js';

const [model = '../shared/models/tinystories-656k', prompt = 'Once upon a time'] = process.argv.slice(2);
const llm = await LLM.load(model);
console.error(`loaded ${llm.info.model} on ${llm.info.device.description || llm.info.device.vendor}; KV cache ${llm.info.kvCapacityTokens} tokens`);

// Several prompts in one call share every step (one pass over the weights per step for all of them).
const outs = await llm.generate([prompt, 'One day, a little dog'], { maxTokens: 40, temperature: 0 });
for (const o of outs) console.log(JSON.stringify(o.text));

// Streaming: text arrives as tokens are sampled.
for await (const chunk of llm.stream(prompt, { maxTokens: 60, temperature: 0.8, seed: 42 })) process.stdout.write(chunk.text);
process.stdout.write('\n');
await llm.close();
