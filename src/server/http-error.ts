// Errors as the HTTP API answers them: OpenAI's JSON shape `{"error": {message, type, param, code}}` (vLLM's
// ErrorResponse since 0.10), with `code` the HTTP status and `type` the name the openai clients use for that status.
// PolyloraErrors from the engine keep their message (it names the file, tensor or field and carries the hint).

import { isPolyloraError, type ErrorCode } from '../errors.js';

/** Status -> `error.type` (the openai SDKs' error class names; vLLM uses the same for 400/404). */
const ERROR_TYPES: Record<number, string> = {
  400: 'BadRequestError',
  401: 'AuthenticationError',
  404: 'NotFoundError',
  405: 'MethodNotAllowedError',
  413: 'RequestTooLargeError',
  415: 'UnsupportedMediaTypeError',
  429: 'RateLimitError',
  500: 'InternalServerError',
  503: 'ServiceUnavailableError',
};

export class HttpError extends Error {
  /** HTTP status. */
  readonly status: number;
  /** The request field at fault (OpenAI's `param`), snake_case as the client sent it. */
  readonly param: string | null;
  /** Extra response headers (e.g. Retry-After, Allow). */
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, options: { param?: string | null; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HttpError';
    this.status = status;
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
  }
}

/** 400 naming the field: `field "max_tokens": expected an integer >= 1, found "x"`. */
export function badField(param: string, expected: string, found: unknown): HttpError {
  return new HttpError(400, `field "${param}": expected ${expected}, found ${JSON.stringify(found) ?? 'undefined'}`, { param });
}

/** Which status a PolyloraError answers with: the caller's input (request, adapter files) is 4xx, the machine 5xx. */
const STATUS_OF_CODE: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  CONFIG_INVALID: 400,
  WEIGHTS_MISMATCH: 400,
  SAFETENSORS_INVALID: 400,
  DTYPE_UNSUPPORTED: 400,
  ARCH_UNSUPPORTED: 400,
  TOKENIZER_ERROR: 400,
  HUB_ERROR: 400,
  FILE_NOT_FOUND: 404,
  IO_ERROR: 500,
  GPU_UNAVAILABLE: 500,
  GPU_ERROR: 500,
};

/**
 * Any thrown value as an HttpError. `fieldNames` maps the engine's camelCase field names (SamplingParams) back to the
 * request's snake_case ones, so a 400 names the field the client sent.
 */
export function toHttpError(e: unknown, fieldNames: Record<string, string> = {}): HttpError {
  if (e instanceof HttpError) return e;
  if (isPolyloraError(e)) {
    // The field's leading name is mapped (logitBias[7] -> logit_bias[7]).
    const param = e.field === undefined ? null : e.field.replace(/^[A-Za-z]+/, (f) => fieldNames[f] ?? f);
    const message = param !== null && param !== e.field ? e.message.replace(`field "${e.field}"`, `field "${param}"`) : e.message;
    return new HttpError(STATUS_OF_CODE[e.code] ?? 500, message, { param, cause: e });
  }
  return new HttpError(500, `internal error: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

/** The JSON body of an error answer. */
export function errorBody(e: HttpError): { error: { message: string; type: string; param: string | null; code: number } } {
  return { error: { message: e.message, type: ERROR_TYPES[e.status] ?? 'Error', param: e.param, code: e.status } };
}
