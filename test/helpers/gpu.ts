// One GPU device per test file. Call useGpu() at the top level of a test file; it creates the device before the
// file's tests and destroys it after them.
import { afterAll, beforeAll } from 'vitest';
import { Gpu } from '../../src/gpu/device.js';

export function useGpu(): () => Gpu {
  let gpu: Gpu | undefined;
  beforeAll(async () => {
    gpu = await Gpu.create();
  });
  afterAll(() => {
    gpu?.destroy();
    gpu = undefined;
  });
  return () => {
    if (!gpu) throw new Error('useGpu(): device not created yet (call it at the top level of the test file)');
    return gpu;
  };
}
