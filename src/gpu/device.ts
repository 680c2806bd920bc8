// One GPU device per process (or per LLM): acquisition with the adapter's maximum buffer limits, feature
// detection, shader/pipeline creation inside error scopes, device-loss reporting, and destruction.

import { getPlatform } from '../platform/platform.js';
import { PolyloraError } from '../errors.js';
import type { ShaderName } from '../kernels/wgsl.gen.js';
import { WGSL } from '../kernels/wgsl.gen.js';

export interface GpuFeatures {
  shaderF16: boolean;
  subgroups: boolean;
  timestampQuery: boolean;
}

export interface DeviceOptions {
  /** Use f16 arithmetic where it helps (only if the adapter has shader-f16). Default false: f32 compute. */
  allowF16?: boolean;
  /** Ask for a low-power or high-performance adapter. */
  powerPreference?: GPUPowerPreference;
  /**
   * Use the `subgroups` feature when the adapter has it (default true). false takes the workgroup-memory
   * reductions that adapters without subgroups get (Firefox, Safari, older Chrome): the tests run them this way.
   */
  subgroups?: boolean;
}

export interface DeviceInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  features: GpuFeatures;
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  subgroupMinSize: number;
  subgroupMaxSize: number;
}

const WANTED_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
] as const;

export class Gpu {
  readonly device: GPUDevice;
  readonly queue: GPUQueue;
  readonly features: GpuFeatures;
  readonly info: DeviceInfo;
  /** Set when the device is lost; every later submit throws it. */
  lostReason: string | undefined;
  /** The first GPU error no error scope caught. */
  private uncaptured: string | undefined;
  private destroyed = false;
  private readonly modules = new Map<string, GPUShaderModule>();
  private readonly pipelines = new Map<string, GPUComputePipeline>();

  private constructor(device: GPUDevice, info: DeviceInfo) {
    this.device = device;
    this.queue = device.queue;
    this.features = info.features;
    this.info = info;
    device.lost.then((l) => {
      if (!this.destroyed) this.lostReason = `${l.reason}: ${l.message}`;
    });
    // A validation or out-of-memory error outside an error scope is a bug or exhaustion that would otherwise
    // only print: remember the first one and fail the next step with it.
    device.addEventListener('uncapturederror', (ev) => {
      this.uncaptured ??= (ev as GPUUncapturedErrorEvent).error.message;
    });
  }

  static async create(opts: DeviceOptions = {}): Promise<Gpu> {
    const platform = getPlatform();
    const gpu = await platform.gpu();
    const adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference });
    if (!adapter) {
      throw new PolyloraError('GPU_UNAVAILABLE', 'no WebGPU adapter', { hint: platform.noAdapterHint });
    }
    const has = (f: string) => adapter.features.has(f);
    const requiredFeatures: GPUFeatureName[] = [];
    const features: GpuFeatures = {
      shaderF16: has('shader-f16') && !!opts.allowF16,
      subgroups: has('subgroups') && opts.subgroups !== false,
      timestampQuery: has('timestamp-query'),
    };
    if (features.shaderF16) requiredFeatures.push('shader-f16');
    if (features.subgroups) requiredFeatures.push('subgroups' as GPUFeatureName);
    if (features.timestampQuery) requiredFeatures.push('timestamp-query');
    const requiredLimits: Record<string, number> = {};
    for (const k of WANTED_LIMITS) requiredLimits[k] = adapter.limits[k] as number;
    let device: GPUDevice;
    try {
      device = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: 'polylora' });
    } catch (e) {
      throw new PolyloraError('GPU_UNAVAILABLE', 'the adapter refused to create a device', {
        found: String(e),
        hint: platform.noAdapterHint,
        cause: e,
      });
    }
    const ai = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
    const di = (device as GPUDevice & { adapterInfo?: typeof ai }).adapterInfo ?? ai;
    const info: DeviceInfo = {
      vendor: ai.vendor ?? '',
      architecture: ai.architecture ?? '',
      device: ai.device ?? '',
      description: ai.description ?? '',
      features,
      maxBufferSize: device.limits.maxBufferSize,
      maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
      subgroupMinSize: di.subgroupMinSize ?? 0,
      subgroupMaxSize: di.subgroupMaxSize ?? 0,
    };
    return new Gpu(device, info);
  }

  /**
   * A shader module from shaders/<part>.wgsl files joined in order (WGSL has no imports: a kernel file and a small
   * library file such as reduce_subgroups.wgsl are composed this way), compiled once. A WGSL error throws with the
   * compiler's message, located in the right file.
   */
  async module(parts: ShaderName | readonly ShaderName[]): Promise<GPUShaderModule> {
    const names = typeof parts === 'string' ? [parts] : parts;
    const key = names.join('+');
    let m = this.modules.get(key);
    if (m) return m;
    const sources = names.map((n) => WGSL[n] as string);
    let code = sources.join('\n');
    const prelude: string[] = [];
    if (this.features.subgroups && /\bsubgroup[A-Z]/.test(code)) prelude.push('enable subgroups;');
    if (this.features.shaderF16 && /\bf16\b/.test(code)) prelude.push('enable f16;');
    code = [...prelude, code].join('\n');
    this.device.pushErrorScope('validation');
    m = this.device.createShaderModule({ code, label: key });
    const err = await this.device.popErrorScope();
    const info = await m.getCompilationInfo();
    const errors = info.messages.filter((x) => x.type === 'error');
    if (err || errors.length) {
      const where = (line: number) => {
        let l = line - prelude.length;
        for (let i = 0; i < names.length; i++) {
          const n = sources[i]!.split('\n').length;
          if (l <= n) return `shaders/${names[i]}.wgsl:${l}`;
          l -= n;
        }
        return `${key}:${line}`;
      };
      const text = errors.map((x) => `${where(x.lineNum)}:${x.linePos}: ${x.message}`).join('\n');
      throw new PolyloraError('GPU_ERROR', `WGSL compilation failed\n${text || err?.message}`, { file: `shaders/${names[0]}.wgsl` });
    }
    this.modules.set(key, m);
    return m;
  }

  /**
   * A compute pipeline for `entry` in shaders/<name>.wgsl specialized by `constants` (WGSL overrides),
   * cached by all three; creation errors throw with Dawn's message.
   */
  async pipeline(
    shader: ShaderName | readonly ShaderName[],
    entry: string,
    constants: Record<string, number> = {},
  ): Promise<GPUComputePipeline> {
    const name = typeof shader === 'string' ? shader : shader.join('+');
    const key = `${name}:${entry}:${JSON.stringify(constants)}`;
    let p = this.pipelines.get(key);
    if (p) return p;
    const module = await this.module(shader);
    this.device.pushErrorScope('validation');
    this.device.pushErrorScope('internal');
    try {
      p = await this.device.createComputePipelineAsync({
        label: key,
        layout: 'auto',
        compute: { module, entryPoint: entry, constants },
      });
    } catch (e) {
      await this.device.popErrorScope();
      await this.device.popErrorScope();
      throw new PolyloraError('GPU_ERROR', `pipeline creation failed for ${key}: ${(e as Error).message}`, {
        file: `shaders/${name.split('+')[0]}.wgsl`,
        cause: e,
      });
    }
    const internal = await this.device.popErrorScope();
    const validation = await this.device.popErrorScope();
    const err = validation ?? internal;
    if (err) {
      throw new PolyloraError('GPU_ERROR', `pipeline creation failed for ${key}: ${err.message}`, {
        file: `shaders/${name.split('+')[0]}.wgsl`,
      });
    }
    this.pipelines.set(key, p);
    return p;
  }

  /**
   * Lanes per workgroup for kernels that reduce with laneSum, and the file that implements it: one subgroup (the
   * device's smallest subgroup size, at most 32) with subgroups, else 64 lanes and a workgroup-memory tree.
   */
  get laneReduce(): { lanes: number; shader: 'reduce_subgroups' | 'reduce_workgroup' } {
    if (this.features.subgroups && this.info.subgroupMinSize >= 4) {
      return { lanes: Math.min(32, this.info.subgroupMinSize), shader: 'reduce_subgroups' };
    }
    return { lanes: 64, shader: 'reduce_workgroup' };
  }

  /**
   * True where the matmul's row-per-lane layout is the faster one for batches: a CPU implementation of WebGPU
   * (lavapipe, SwiftShader), where every storage load is emulated lane by lane and loads, not bytes, set the speed,
   * with subgroups of exactly 8 lanes (the layout's x and s sharing). GPUs keep the K-split layout.
   */
  get rowsLayout(): boolean {
    const cpu = this.info.architecture === 'software' || /swiftshader|llvmpipe/i.test(`${this.info.architecture} ${this.info.device} ${this.info.description}`);
    return cpu && this.rowsCapable;
  }

  /** The device can run the row-per-lane layout at all: subgroups of 8 lanes (one chunk of shared values). */
  get rowsCapable(): boolean {
    return this.laneReduce.shader === 'reduce_subgroups' && this.laneReduce.lanes === 8;
  }

  buffer(label: string, size: number, usage: GPUBufferUsageFlags): GPUBuffer {
    // WebGPU requires sizes that are multiples of 4; zero-sized bindings are invalid, so keep at least 4 bytes.
    return this.device.createBuffer({ label, size: Math.max(4, Math.ceil(size / 4) * 4), usage });
  }

  /** A storage buffer filled with `data` (padded to a multiple of 4 bytes). */
  upload(label: string, data: ArrayBufferView, extraUsage: GPUBufferUsageFlags = 0): GPUBuffer {
    const size = Math.max(4, Math.ceil(data.byteLength / 4) * 4);
    const buf = this.device.createBuffer({
      label,
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | extraUsage,
      mappedAtCreation: true,
    });
    new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buf.unmap();
    return buf;
  }

  /** Reads a buffer back (tests and debugging; the generation loop uses its own staging buffers). */
  async read(src: GPUBuffer, offset = 0, size = src.size - offset): Promise<ArrayBuffer> {
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(src, offset, staging, 0, size);
    this.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0);
    staging.destroy();
    return out;
  }

  /**
   * Lets a pending device loss be recorded: after a failed GPU call the `lost` promise may resolve a moment later.
   * Resolves at once when the device is fine.
   */
  async settleLoss(): Promise<void> {
    await Promise.race([this.device.lost, new Promise((r) => setTimeout(r, 10))]);
  }

  /** Throws if the device was lost or a GPU error went uncaught (checked before and after each step). */
  check(): void {
    if (this.lostReason) {
      throw new PolyloraError('GPU_ERROR', `the GPU device was lost (${this.lostReason})`, {
        hint: 'create a new LLM; on a driver crash or reset the old device cannot be reused',
      });
    }
    if (this.uncaptured) {
      const message = this.uncaptured;
      this.uncaptured = undefined;
      throw new PolyloraError('GPU_ERROR', `a GPU command failed: ${message}`, {
        hint: 'this is a polylora bug or GPU memory exhaustion; please report it with the message',
      });
    }
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.device.destroy();
  }
}
