// Node only: the browser Platform where there is no page and no navigator.gpu — what a library user who imports
// the browser build into Node meets. (Its behaviour inside a page is tested in test/platform, in both projects.)
import { expect, it } from 'vitest';
import { browserPlatform } from '../../src/platform/browser.js';
import { urlTree } from '../../src/platform/browser-files.js';

it('says how to enable WebGPU when navigator.gpu is missing', async () => {
  await expect(browserPlatform.gpu()).rejects.toMatchObject({
    code: 'GPU_UNAVAILABLE',
    expected: 'navigator.gpu',
    hint: expect.stringContaining('--enable-unsafe-webgpu'),
  });
});

it('refuses a relative folder where there is no page to resolve it against', () => {
  expect(() => urlTree('models/x')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', file: 'models/x' }));
});
