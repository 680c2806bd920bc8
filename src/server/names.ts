// Checks on what a client may name: adapter names (they become folder names under a filesystem resolver's root and
// repo names under a Hub org) and adapter paths given to /v1/load_lora_adapter.

import { HttpError } from './http-error.js';

/**
 * One or two `/`-separated segments of letters, digits, `_`, `-` and `.`, each starting with a letter, digit or `_`:
 * so no segment is `.` or `..`, nothing is absolute, and no backslash, NUL or control character gets through.
 */
const ADAPTER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:\/[A-Za-z0-9_][A-Za-z0-9_.-]*)?$/;
const MAX_NAME_LENGTH = 128;
const MAX_PATH_LENGTH = 4096;

/** True when `name` is an acceptable adapter name (see ADAPTER_NAME). */
export function isAdapterName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && ADAPTER_NAME.test(name);
}

/** `name` as an adapter name, or a 400 naming `param`; a served base name is refused (it would shadow the base). */
export function checkAdapterName(name: unknown, param: string, baseNames: readonly string[]): string {
  if (typeof name !== 'string' || name === '') {
    throw new HttpError(400, `field "${param}": an adapter name is required (a non-empty string)`, { param });
  }
  if (!isAdapterName(name)) {
    throw new HttpError(
      400,
      `field "${param}": invalid adapter name ${JSON.stringify(name.slice(0, MAX_NAME_LENGTH + 8))}: expected at most ` +
        `${MAX_NAME_LENGTH} characters of letters, digits, "_", "-", "." in one or two "/"-separated parts, each ` +
        'starting with a letter, digit or "_"',
      { param },
    );
  }
  if (baseNames.includes(name)) {
    throw new HttpError(400, `field "${param}": "${name}" is the base model's served name; an adapter cannot shadow it`, { param });
  }
  return name;
}

/**
 * `path` as an adapter location (local folder or Hub id `org/name[@rev]`), or a 400 naming `param`: a string without
 * NUL or control characters, no `..` segment (no climbing out of a folder), no `~` expansion.
 */
export function checkLoraPath(path: unknown, param: string): string {
  if (typeof path !== 'string' || path.trim() === '') {
    throw new HttpError(400, `field "${param}": an adapter path is required (a folder or a Hub id org/name)`, { param });
  }
  const bad = (why: string) =>
    new HttpError(400, `field "${param}": ${why}: ${JSON.stringify(path.slice(0, 200))}`, { param });
  if (path.length > MAX_PATH_LENGTH) throw bad(`longer than ${MAX_PATH_LENGTH} characters`);
  if (/[\u0000-\u001f\u007f]/.test(path)) throw bad('control characters are not allowed in a path');
  if (path.split(/[\\/]/).includes('..')) throw bad('path traversal (a ".." segment) is not allowed; give the folder itself');
  if (path.startsWith('~')) throw bad('"~" is not expanded; give an absolute path');
  return path;
}
