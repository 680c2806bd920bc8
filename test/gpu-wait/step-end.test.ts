// Node only (where waits are paced): each step read back carries its end time from a GPU timestamp, which the
// pacer uses to learn a step's duration even when its wait found it done. Real runner, TinyStories, lavapipe.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { useGpu } from '../helpers/gpu.js';
import { gpuRunner, tinyStories } from '../helpers/model.js';

const gpu = useGpu();
let model: Awaited<ReturnType<typeof gpuRunner>>;

beforeAll(async () => {
  model = await gpuRunner(gpu(), await tinyStories(), 16);
});
afterAll(() => model?.destroy());

it('reads back the end of every step, in ms of one advancing clock', async () => {
  // Dawn has timestamp queries on lavapipe (and on the GPUs it drives); without them steps go untimed.
  expect(gpu().info.features.timestampQuery).toBe(true);
  const ends: number[] = [];
  const walls: [number, number][] = [];
  for (let k = 0; k < 8; k++) {
    const t0 = performance.now();
    await model.logits([1, 80, 147, 201, 282, 215, 286].slice(0, 3 + (k % 5)));
    walls.push([t0, performance.now()]);
    ends.push(model.runner.lastStepEndMs);
  }
  expect(ends.every(Number.isFinite)).toBe(true);
  for (let k = 1; k < ends.length; k++) {
    // Step k is submitted after step k - 1 was read back, so it ends later, and both ends fall between the start of
    // step k - 1's call and the end of step k's: in ms (not ns or µs), the gap is at most that span. 0.5 ms covers
    // the timestamps' quantization.
    expect(ends[k]!).toBeGreaterThan(ends[k - 1]!);
    expect(ends[k]! - ends[k - 1]!).toBeLessThanOrEqual(walls[k]![1] - walls[k - 1]![0] + 0.5);
  }
});
