// Uniform parameter blocks. Each dispatcher declares its WGSL `struct Params` once here in TypeScript, field by
// field in WGSL order, with units in comments; all fields are 4-byte scalars, so offsets are 4·index.

export type Scalar = 'u32' | 'f32';
export type Layout = Record<string, Scalar>;

/** Encodes `values` in the order of `layout`, padded to 16 bytes as uniform buffers require. */
export function encodeParams<L extends Layout>(layout: L, values: { [K in keyof L]: number }): ArrayBuffer {
  const keys = Object.keys(layout);
  const buf = new ArrayBuffer(Math.ceil((keys.length * 4) / 16) * 16 || 16);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  keys.forEach((k, i) => {
    const v = values[k as keyof L];
    if (v === undefined || !Number.isFinite(v)) throw new Error(`param ${k} missing or not finite: ${v}`);
    if (layout[k] === 'f32') f[i] = v;
    else u[i] = v >>> 0;
  });
  return buf;
}

export function paramsBuffer<L extends Layout>(
  device: GPUDevice,
  label: string,
  layout: L,
  values: { [K in keyof L]: number },
): GPUBuffer {
  const data = encodeParams(layout, values);
  const buf = device.createBuffer({ label, size: data.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buf, 0, data);
  return buf;
}
