// One GPU device per test file. Call useGpu() at the top level of a test file; it creates the device before the
// file's tests and destroys it after them.
// The node-no-subgroups project provides subgroups: false, so the same files run the workgroup-memory reductions.
import { afterAll, beforeAll, inject } from 'vitest';
import { Gpu } from '../../src/gpu/device.js';

export function useGpu(): () => Gpu {
  let gpu: Gpu | undefined;
  beforeAll(async () => {
    const subgroups = inject('subgroups');
    gpu = await Gpu.create({ subgroups });
    if (subgroups === false && gpu.laneReduce.shader !== 'reduce_workgroup') {
      throw new Error('useGpu(): the project asks for no subgroups, but the device still reduces with them');
    }
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
