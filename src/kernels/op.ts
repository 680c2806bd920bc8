// A bound kernel: pipeline, parameters and bind groups are created once when the model is built; each step only
// encodes dispatches sized for that step's batch.

export interface StepDims {
  tokens: number; // token rows in this step (prefill chunks + one per decoding sequence)
  seqs: number; // sampled rows in this step (one per sequence that samples)
  lora?: boolean; // some row of this step runs with a LoRA adapter
}

export interface Op {
  readonly label: string;
  encode(pass: GPUComputePassEncoder, d: StepDims): void;
}

/** Ops run in order; a compute pass makes each dispatch's writes visible to the next. */
export function sequence(label: string, ops: Op[]): Op {
  return {
    label,
    encode(pass, d) {
      for (const op of ops) op.encode(pass, d);
    },
  };
}

export function bindGroup(
  device: GPUDevice,
  pipeline: GPUComputePipeline,
  label: string,
  buffers: Record<number, GPUBuffer>,
): GPUBindGroup {
  return device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: Object.entries(buffers).map(([b, buffer]) => ({ binding: Number(b), resource: { buffer } })),
  });
}
