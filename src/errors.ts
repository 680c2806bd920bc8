// Typed errors. Every error a user can cause names what it is about (file, tensor, field, request),
// what was expected, what was found, and a hint. `code` is stable and meant for programs; the message for people.

export type ErrorCode =
  | 'SAFETENSORS_INVALID' // a .safetensors file is malformed (header, offsets, dtype/shape/length)
  | 'DTYPE_UNSUPPORTED' // a tensor's dtype is not one polylora computes with
  | 'CONFIG_INVALID' // config.json / adapter_config.json is missing a field or has a bad value
  | 'ARCH_UNSUPPORTED' // model_type / architectures not in the registry
  | 'WEIGHTS_MISMATCH' // a tensor is missing, unexpected, or has the wrong shape for the model
  | 'FILE_NOT_FOUND' // a file or directory that was named does not exist
  | 'IO_ERROR' // reading a file that exists failed (HTTP status, short read, server ignoring the protocol)
  | 'HUB_ERROR' // Hugging Face Hub download / cache problem
  | 'GPU_UNAVAILABLE' // no WebGPU adapter/device
  | 'GPU_ERROR' // a WGSL compile, pipeline or validation error, or the device was lost
  | 'TOKENIZER_ERROR'
  | 'INVALID_ARGUMENT'; // an API / CLI argument is out of range or malformed

export interface ErrorDetails {
  file?: string;
  tensor?: string;
  field?: string;
  expected?: string;
  found?: string;
  hint?: string;
  cause?: unknown;
}

export class PolyloraError extends Error {
  readonly code: ErrorCode;
  readonly file?: string;
  readonly tensor?: string;
  readonly field?: string;
  readonly expected?: string;
  readonly found?: string;
  readonly hint?: string;

  constructor(code: ErrorCode, what: string, d: ErrorDetails = {}) {
    super(formatMessage(what, d), d.cause === undefined ? undefined : { cause: d.cause });
    this.name = 'PolyloraError';
    this.code = code;
    this.file = d.file;
    this.tensor = d.tensor;
    this.field = d.field;
    this.expected = d.expected;
    this.found = d.found;
    this.hint = d.hint;
  }
}

/** `<file>: tensor "x": <what>: expected A, found B (hint: ...)` — only the parts that are known. */
function formatMessage(what: string, d: ErrorDetails): string {
  const where: string[] = [];
  if (d.file) where.push(d.file);
  if (d.tensor) where.push(`tensor "${d.tensor}"`);
  if (d.field) where.push(`field "${d.field}"`);
  let msg = where.length ? `${where.join(': ')}: ${what}` : what;
  if (d.expected !== undefined || d.found !== undefined) {
    const parts: string[] = [];
    if (d.expected !== undefined) parts.push(`expected ${d.expected}`);
    if (d.found !== undefined) parts.push(`found ${d.found}`);
    msg += `: ${parts.join(', ')}`;
  }
  if (d.hint) msg += ` (hint: ${d.hint})`;
  return msg;
}

export function isPolyloraError(e: unknown): e is PolyloraError {
  return e instanceof PolyloraError;
}
