// Browser platform: WebGPU from navigator.gpu, local folders at URLs (read by HTTP Range requests), Hub files in
// Cache Storage. Picked folders (<input webkitdirectory>) come in through fileListTree in ./browser-files.js.

import type { Platform } from './platform.js';
import { PolyloraError } from '../errors.js';
import { urlTree } from './browser-files.js';
import { openHubBrowser } from './browser-hub.js';

const UNSAFE_WEBGPU =
  'on Linux, or for headless Chromium, start Chromium with --enable-unsafe-webgpu (or turn on ' +
  'chrome://flags/#enable-unsafe-webgpu); without a usable GPU it then runs WebGPU on the CPU (SwiftShader)';

/**
 * A location is a local folder when it is a URL with a scheme (`https://host/models/x`) or a path that starts with
 * `/`, `./` or `../`; anything else (`org/name`) is a Hub id. Nothing is fetched to decide.
 */
const LOCAL_LOCATION = /^(?:[a-z][a-z0-9+.-]*:|\/|\.\.?(?:\/|$))/i;

export const browserPlatform: Platform = {
  name: 'browser',
  async gpu() {
    const gpu = (globalThis as { navigator?: Navigator }).navigator?.gpu;
    if (!gpu) {
      throw new PolyloraError('GPU_UNAVAILABLE', 'this browser offers no WebGPU', {
        expected: 'navigator.gpu',
        found: 'undefined',
        hint:
          'use a browser with WebGPU (a recent Chrome or Edge) on a secure page (https://, or http://localhost / ' +
          `http://127.0.0.1); ${UNSAFE_WEBGPU}`,
      });
    }
    return gpu;
  },
  noAdapterHint: `the browser has WebGPU but offered no adapter: turn hardware acceleration on and check chrome://gpu; ${UNSAFE_WEBGPU}`,
  waitPolls: false,
  isLocal: async (location) => LOCAL_LOCATION.test(location),
  openLocal: async (location) => urlTree(location),
  openHub: openHubBrowser,
  env: () => undefined,
};
