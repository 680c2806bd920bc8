// The platform seam: the only code that knows whether polylora runs in Node (Dawn via the `webgpu` package,
// files on disk, the shared Hugging Face cache) or in a browser (navigator.gpu, fetch, Cache Storage).
// The entry points (src/index.node.ts, src/index.browser.ts) install one implementation; everything else
// calls getPlatform().

import type { FileTree } from '../io/source.js';
import { PolyloraError } from '../errors.js';

export interface Platform {
  readonly name: 'node' | 'browser';
  /** The WebGPU entry point (navigator.gpu or Dawn's GPU object). */
  gpu(): Promise<GPU>;
  /** What to install or enable when no adapter is found; ends up in the GPU_UNAVAILABLE error. */
  readonly noAdapterHint: string;
  /** True when `location` names a local folder (Node path, or a URL in the browser) rather than a Hub id. */
  isLocal(location: string): Promise<boolean>;
  /** Opens a local folder (Node path; in the browser an http(s) URL or a path relative to the page). */
  openLocal(location: string): Promise<FileTree>;
  /**
   * Downloads (or finds in the cache) the files of a Hub repo and returns them as a folder. Node: the standard
   * HF cache (HF_HOME / HF_HUB_CACHE, shared with Python's huggingface_hub); browser: Cache Storage.
   */
  openHub(repo: string, options: HubOptions): Promise<FileTree>;
  /**
   * True when awaiting a GPU promise keeps the JS thread busy polling the device (dawn.node), so long waits should
   * sleep first (src/gpu/pacer.ts); false in browsers, where the GPU process does the waiting.
   */
  readonly waitPolls: boolean;
  /** Environment variable (process.env in Node, always undefined in the browser). */
  env(name: string): string | undefined;
}

export interface HubOptions {
  /** Branch, tag or commit; default `main`. */
  revision?: string;
  /** Which files to fetch, by name or predicate; default: what a model or adapter needs. */
  files?: (path: string) => boolean;
  /** Hub endpoint; default HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** Access token; default HF_TOKEN. */
  token?: string;
  /** Never touch the network (HF_HUB_OFFLINE=1 sets this). */
  offline?: boolean;
  /** Called as bytes arrive: file name, bytes done, bytes total for that file. */
  onProgress?: (p: { file: string; loaded: number; total: number }) => void;
}

let current: Platform | undefined;

export function setPlatform(p: Platform): void {
  current = p;
}

export function getPlatform(): Platform {
  if (!current) {
    throw new PolyloraError('INVALID_ARGUMENT', 'no platform installed', {
      hint: "import from 'polylora' (the package entry picks Node or browser), not from an internal module",
    });
  }
  return current;
}
