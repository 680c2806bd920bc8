// Child of lavapipe-threads.test.ts: creates the device through the Node platform in a fresh process (Mesa reads
// LP_NUM_THREADS once, when it creates its device) and prints what it ended up with as one JSON line.
import { readdirSync, readFileSync } from 'node:fs';
import { Gpu } from '../../src/gpu/device.js';
import { nodePlatform } from '../../src/platform/node.js';
import { setPlatform } from '../../src/platform/platform.js';

setPlatform(nodePlatform);
const gpu = await Gpu.create();
// llvmpipe names its rasterizer threads llvmpipe-0, llvmpipe-1, ...; there are LP_NUM_THREADS of them, as of its
// compute threads (which go unnamed).
const names = readdirSync('/proc/self/task').map((t) => readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim());
console.log(
  JSON.stringify({
    env: process.env.LP_NUM_THREADS ?? null,
    llvmpipeThreads: names.filter((n) => /^llvmpipe-\d+$/.test(n)).length,
    description: gpu.info.description,
  }),
);
gpu.destroy();
