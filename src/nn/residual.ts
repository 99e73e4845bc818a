/**
 * Residual connection: elementwise sum of two streams.
 *
 * @module
 */

/**
 * `out = a + b`, elementwise. `out` may alias `a` or `b`. Its gradient with respect to
 * each input is the upstream gradient itself, so the backward pass needs no op of its own.
 *
 * @param out Output, `(N)`.
 * @param a First input, `(N)`.
 * @param b Second input, `(N)`.
 * @param N Elements.
 *
 * @example
 * ```ts
 * import { residualForward } from "./residual.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(2);
 * residualForward(out, new Float32Array([1, 2]), new Float32Array([3, 4]), 2);
 * assert.deepEqual([...out], [4, 6]);
 * ```
 */
export function residualForward(
  out: Float32Array, // (N)
  a: Float32Array, // (N)
  b: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) out[i] = a[i] + b[i];
}
