// Runs in both test projects: the GPU device comes through the platform seam (Dawn in Node, navigator.gpu in
// Chromium), a small compute shader runs on it, and the result is read back and checked exactly.
import { expect, inject, it } from 'vitest';
import { getPlatform } from '../../src/platform/platform.js';
import { useGpu } from '../helpers/gpu.js';

const gpu = useGpu();

it('runs on the platform its test project installs', async () => {
  const platform = getPlatform();
  expect(platform.name).toBe(inject('platform'));
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (platform.name === 'browser') {
    // Fails here (and in useGpu) when Chromium was started without WebGPU.
    expect(nav?.gpu, 'navigator.gpu').toBeDefined();
    expect(await platform.gpu()).toBe(nav!.gpu);
  } else {
    expect(nav?.gpu, 'navigator.gpu in Node').toBeUndefined();
  }
  const info = gpu().info;
  console.log(`${platform.name}: adapter ${info.vendor}/${info.architecture} ${info.description}`, info.features);
});

// y[i] = hash(x[i] + seed) for i < n, with n not a multiple of the workgroup size, and y[n..] left untouched:
// integer arithmetic, so the GPU must match the CPU bit for bit.
const SHADER = /* wgsl */ `
struct Params { n: u32, seed: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3u) {
  let i = id.x;
  if (i >= params.n) { return; }
  var h = x[i] + params.seed;
  h = (h ^ (h >> 16u)) * 0x45d9f3bu;
  h = (h ^ (h >> 16u)) * 0x45d9f3bu;
  y[i] = h ^ (h >> 16u);
}`;

function hashRef(v: number, seed: number): number {
  let h = (v + seed) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

it('runs a compute shader and reads the result back', async () => {
  const g = gpu();
  const n = 1000; // 15 full workgroups of 64 and one partial one
  const padded = 1024; // y[n..padded) must stay 0xdeadbeef
  const seed = 12345;
  const x = new Uint32Array(n);
  let s = 1;
  for (let i = 0; i < n; i++) x[i] = s = (Math.imul(s, 1664525) + 1013904223) >>> 0; // LCG, fixed seed
  const expected = new Uint32Array(padded).fill(0xdeadbeef);
  for (let i = 0; i < n; i++) expected[i] = hashRef(x[i]!, seed);

  g.device.pushErrorScope('validation');
  const module = g.device.createShaderModule({ code: SHADER, label: 'gpu-smoke' });
  const pipeline = await g.device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const params = g.upload('params', new Uint32Array([n, seed]), GPUBufferUsage.UNIFORM);
  const xBuf = g.upload('x', x);
  const yBuf = g.upload('y', new Uint32Array(padded).fill(0xdeadbeef));
  const bind = g.device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [params, xBuf, yBuf].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const enc = g.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(Math.ceil(n / 64));
  pass.end();
  g.queue.submit([enc.finish()]);
  const y = new Uint32Array(await g.read(yBuf));
  expect(await g.device.popErrorScope()).toBeNull();

  const bad = [...expected.keys()].filter((i) => y[i] !== expected[i]);
  const show = bad.slice(0, 5).map((i) => `y[${i}] = ${y[i]}, expected ${expected[i]}`);
  expect(show, `${bad.length} of ${padded} values differ`).toEqual([]);
  for (const b of [params, xBuf, yBuf]) b.destroy();
});
