// Command-line argument helpers: typed reads of parseArgs values with errors that name the flag.

import { PolyloraError } from '../errors.js';

export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

export function usageError(message: string, hint?: string): PolyloraError {
  return new PolyloraError('INVALID_ARGUMENT', message, { hint });
}

export function str(v: Values, name: string): string | undefined {
  const x = v[name];
  return typeof x === 'string' ? x : undefined;
}

export function num(v: Values, name: string, ok: (n: number) => boolean = () => true, expected = 'a number'): number | undefined {
  const s = str(v, name);
  if (s === undefined) return undefined;
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n) || !ok(n)) {
    throw new PolyloraError('INVALID_ARGUMENT', `bad value for --${name}`, { field: `--${name}`, expected, found: JSON.stringify(s) });
  }
  return n;
}

export const int = (v: Values, name: string, min = 0) =>
  num(v, name, (n) => Number.isInteger(n) && n >= min, `an integer >= ${min}`);

/** `1,2,3` -> [1, 2, 3]. */
export function intList(v: Values, name: string): number[] | undefined {
  const s = str(v, name);
  if (s === undefined) return undefined;
  const parts = s.split(',').map((p) => p.trim());
  const ids = parts.map(Number);
  const bad = parts.findIndex((p, i) => p === '' || !Number.isInteger(ids[i]) || ids[i]! < 0);
  if (bad >= 0) {
    throw new PolyloraError('INVALID_ARGUMENT', `bad value for --${name}`, {
      field: `--${name}`,
      expected: 'comma-separated non-negative integers, e.g. 1,80,147',
      found: JSON.stringify(parts[bad]),
    });
  }
  return ids;
}
