// Chromium only (the node project leaves out *.browser.test.ts): Playwright fills a real <input webkitdirectory>
// with a shared model folder, and fileListTree reads the File objects the page got.
import { expect, it } from 'vitest';
import { userEvent } from 'vitest/browser';
import { fileListTree } from '../../src/platform/browser-files.js';
import { sharedPath } from '../helpers/shared.js';
import { FILE_SIZE, NORM_OFFSET, NORM_SHA256, sha256 } from '../helpers/model-bytes.js';

it('reads a folder picked in a real <input webkitdirectory>', async () => {
  const input = document.createElement('input');
  input.type = 'file';
  input.webkitdirectory = true;
  document.body.append(input);
  try {
    await userEvent.upload(input, [sharedPath('models/tinystories-656k')]);
    expect(input.files?.length).toBe(6);
    const tree = fileListTree(input.files!);
    expect(tree.label).toBe('tinystories-656k');
    const src = await tree.open('model.safetensors');
    expect(src.size).toBe(FILE_SIZE);
    expect(await sha256(await src.read(NORM_OFFSET, 512))).toBe(NORM_SHA256);
  } finally {
    input.remove();
  }
});
