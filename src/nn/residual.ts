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

/**
 * `dst += src` over `N` elements: a gradient added into another (the model's gradient
 * accumulator into the caller's buffer).
 *
 * @param dst Added into, `(N)`.
 * @param src Added, `(N)`.
 * @param N Elements.
 *
 * @example
 * ```ts
 * import { accumulate } from "./residual.ts";
 * import assert from "node:assert/strict";
 *
 * const g = new Float32Array([1, 2]);
 * accumulate(g, new Float32Array([0.5, -2]), 2);
 * assert.deepEqual([...g], [1.5, 0]);
 * ```
 */
export function accumulate(
  dst: Float32Array, // (N)
  src: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) dst[i] += src[i];
}
