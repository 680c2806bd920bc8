// Runs in both test projects: the browser Platform's decisions that need no server (which locations are local
// folders, environment variables). Its error for a missing WebGPU: test/platform-node/browser-seam.test.ts.
import { expect, it } from 'vitest';
import { browserPlatform } from '../../src/platform/browser.js';

it('treats URLs and ./, ../, / paths as local folders and anything else as a Hub id', async () => {
  const local = ['https://example.com/models/x', 'http://127.0.0.1:8080/m', '/models/x', './m', '../m', '.', '..'];
  const hub = ['HuggingFaceTB/SmolLM-135M', 'gpt2', 'org/name.v2', 'models.x/y'];
  expect(await Promise.all(local.map((l) => browserPlatform.isLocal(l)))).toEqual(local.map(() => true));
  expect(await Promise.all(hub.map((l) => browserPlatform.isLocal(l)))).toEqual(hub.map(() => false));
});

it('has no environment variables', () => {
  expect(browserPlatform.env('HF_TOKEN')).toBeUndefined();
  expect(browserPlatform.env('PATH')).toBeUndefined();
});
