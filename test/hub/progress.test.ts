// The download progress bar (src/cli/progress.ts), drawn into a fake terminal with a fake clock.

import { describe, expect, test } from 'vitest';
import { formatBytes, progressBar, renderProgress } from '../../src/cli/progress.js';

function fakeOutput(isTTY: boolean) {
  const writes: string[] = [];
  return { writes, output: { isTTY, columns: 80, write: (s: string) => writes.push(s) } };
}

describe('progress bar', () => {
  test('formatBytes', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(2_626_168)).toBe('2.50 MiB');
    expect(formatBytes(15 * 1024 ** 3)).toBe('15.0 GiB');
    expect(formatBytes(2.5e12)).toBe('2.27 TiB');
  });

  test('renderProgress shows name, bar, bytes, percent and speed', () => {
    const line = renderProgress({ file: 'model.safetensors', loaded: 1024 * 1024, total: 4 * 1024 * 1024 }, 500, 100);
    expect(line).toBe('model.safetensors  [######------------------]  1.00 MiB / 4.00 MiB   25%  2.00 MiB/s');
  });

  test('a long name is shortened from the left to fit the terminal', () => {
    const file = 'a/very/long/path/to/some/model-00001-of-00004.safetensors';
    const line = renderProgress({ file, loaded: 0, total: 10 }, 0, 70);
    expect(line.length).toBe(69);
    expect(line.startsWith('…')).toBe(true);
    expect(line).toContain('safetensors  [');
  });

  test('on a terminal: redraws in place at most every intervalMs, ends the line when a file is done', () => {
    let t = 0;
    const { writes, output } = fakeOutput(true);
    const bar = progressBar({ output, now: () => t, intervalMs: 100 });
    bar.update({ file: 'f', loaded: 0, total: 1000 });
    t = 50;
    bar.update({ file: 'f', loaded: 500, total: 1000 }); // too soon: skipped
    t = 150;
    bar.update({ file: 'f', loaded: 600, total: 1000 });
    t = 200;
    bar.update({ file: 'f', loaded: 1000, total: 1000 });
    expect(writes.length).toBe(4);
    expect(writes.slice(0, 3).every((w) => w.startsWith('\r') && w.endsWith('\x1b[K'))).toBe(true);
    expect(writes[1]).toContain('60%');
    expect(writes[2]).toContain('100%');
    expect(writes[2]).toContain('4.88 KiB/s'); // 1000 B in 0.2 s
    expect(writes[3]).toBe('\n');
  });

  test('not a terminal: silent unless forced; forced, one line per finished file', () => {
    const quiet = fakeOutput(false);
    progressBar({ output: quiet.output }).update({ file: 'f', loaded: 10, total: 10 });
    expect(quiet.writes).toEqual([]);

    let t = 0;
    const log = fakeOutput(false);
    const bar = progressBar({ output: log.output, force: true, now: () => t });
    bar.update({ file: 'f', loaded: 0, total: 10 });
    t = 1000;
    bar.update({ file: 'f', loaded: 5, total: 10 });
    bar.update({ file: 'f', loaded: 10, total: 10 });
    expect(log.writes).toEqual(['f  [########################]  10 B / 10 B  100%  10 B/s\n']);
  });

  test('done() ends a line left open by an interrupted download', () => {
    const { writes, output } = fakeOutput(true);
    const bar = progressBar({ output, now: () => 0 });
    bar.update({ file: 'f', loaded: 1, total: 10 });
    bar.done();
    expect(writes.at(-1)).toBe('\n');
    bar.done();
    expect(writes.filter((w) => w === '\n').length).toBe(1);
  });
});
