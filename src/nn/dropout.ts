/**
 * Dropout with inverted scaling, as PyTorch's `nn.Dropout` in training mode: each element is
 * kept with probability `1 - p` and scaled by `1 / (1 - p)`, or zeroed.
 *
 * The mask is drawn once (from an explicit seeded {@linkcode Rng}) into a buffer of scales (0 or
 * `1 / (1 - p)`), which both passes read.
 *
 * @module
 */

import type { Rng } from "../rng.ts";

/**
 * Fills `mask` with `0` (dropped, probability `p`) or `1 / (1 - p)` (kept), drawing one uniform
 * per element in order. An element is dropped when `rng.uniform() < p`.
 *
 * @param mask Output scales, `(N)`; only `[offset, offset + N)` is written.
 * @param rng The generator to draw from.
 * @param p Drop probability, `0 <= p < 1`.
 * @param N Elements to draw.
 * @param offset First element of `mask` to write.
 *
 * @example Half the elements survive, doubled
 * ```ts
 * import { dropoutMask } from "./dropout.ts";
 * import { Rng } from "../rng.ts";
 * import assert from "node:assert/strict";
 *
 * const mask = new Float32Array(1000);
 * dropoutMask(mask, new Rng(1), 0.5, 1000);
 * const kept = mask.filter((m) => m === 2).length;
 * assert.equal(kept + mask.filter((m) => m === 0).length, 1000);
 * assert.ok(kept > 430 && kept < 570);
 * ```
 */
export function dropoutMask(
  mask: Float32Array, // (N)
  rng: Rng,
  p: number,
  N: number,
  offset = 0,
): void {
  const scale = 1 / (1 - p);
  // rng.uniform() < p  <=>  rng.nextU32() < p * 2^32 (uniform() is nextU32() / 2^32, exact)
  const limit = p * 4294967296;
  for (let i = offset, end = offset + N; i < end; i++) mask[i] = rng.nextU32() < limit ? 0 : scale;
}

/**
 * `out = inp * mask`. `out` may alias `inp`.
 *
 * @param out Output, `(N)`.
 * @param inp Input, `(N)`.
 * @param mask Scales from {@linkcode dropoutMask}, `(N)`.
 * @param N Elements.
 *
 * @example
 * ```ts
 * import { dropoutForward } from "./dropout.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(2);
 * dropoutForward(out, new Float32Array([3, 4]), new Float32Array([0, 2]), 2);
 * assert.deepEqual([...out], [0, 8]);
 * ```
 */
export function dropoutForward(
  out: Float32Array, // (N)
  inp: Float32Array, // (N)
  mask: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) out[i] = inp[i] * mask[i];
}

/**
 * Backward of {@linkcode dropoutForward}. ADDS into `dinp`.
 *
 * Differentiates `out = inp * mask`.
 *
 * @param dinp Gradient of the input, `(N)`.
 * @param dout Upstream gradient, `(N)`.
 * @param mask Scales, `(N)`.
 * @param N Elements.
 */
export function dropoutBackward(
  dinp: Float32Array, // (N)
  dout: Float32Array, // (N)
  mask: Float32Array, // (N)
  N: number,
): void {
  for (let i = 0; i < N; i++) dinp[i] += dout[i] * mask[i];
}
