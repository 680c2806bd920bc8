// Catching the typed error a synchronous call throws, for tests that then check its fields (usable in both projects).
import { expect } from 'vitest';
import { PolyloraError } from '../../src/errors.js';

/** The PolyloraError `fn` throws (fails the test when it does not throw one). */
export function caught(fn: () => unknown): PolyloraError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PolyloraError);
    return e as PolyloraError;
  }
  throw new Error('expected a PolyloraError');
}
