/// <reference types="vite/client" />
// A minimal page: load a model folder over HTTP and stream a greedy continuation, all on WebGPU in the page.
import { LLM } from '../../src/index.browser.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $('status');
const modelInput = $<HTMLInputElement>('model');
const go = $<HTMLButtonElement>('go');
// In `npm run demo` the shared TinyStories folder is served by Vite (see vite.config.ts).
modelInput.value = new URLSearchParams(location.search).get('model') ?? `/@fs${import.meta.env.VITE_SHARED_DIR}/models/tinystories-656k`;

let llm: LLM | null = null;

async function load(): Promise<LLM> {
  if (llm) return llm;
  status.textContent = 'loading model…';
  llm = await LLM.load(modelInput.value, { maxNumSeqs: 4, maxModelLen: 512 });
  status.textContent = `ready: ${llm.info.device.description || llm.info.device.vendor || 'WebGPU'}`;
  return llm;
}

go.onclick = async () => {
  go.disabled = true;
  const out = $('out');
  out.textContent = '';
  try {
    const m = await load();
    const t0 = performance.now();
    let n = 0;
    for await (const c of m.stream($<HTMLTextAreaElement>('prompt').value, { maxTokens: 64, temperature: 0 })) {
      out.textContent += c.text;
      n += c.tokenIds.length;
    }
    status.textContent = `${n} tokens, ${((n * 1000) / (performance.now() - t0)).toFixed(1)} tokens/s`;
  } catch (e) {
    status.textContent = `error: ${(e as Error).message}`;
  } finally {
    go.disabled = false;
  }
};
go.disabled = false;
status.textContent = 'WebGPU: ' + ('gpu' in navigator ? 'available' : 'missing (use a recent Chrome/Edge)');
