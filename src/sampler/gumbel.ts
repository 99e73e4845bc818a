/**
 * Gumbel-max sampling from unnormalised weights, and the plain argmax of a row of logits.
 *
 * For weights w_y >= 0 and independent U_y ~ U(0, 1), `argmax_y w_y / -log(U_y)` is distributed as
 * `w / sum(w)`: with E_y = -log(U_y) ~ Exp(1), `E_y / w_y` ~ Exp(w_y) and the smallest of
 * independent exponentials is index y with probability w_y / sum(w). This is SEDD's
 * `sample_categorical` (`probs / -log(U)`) without its `1e-10` fudge: U comes from
 * `rng.uniformOpen()`, which is never 0 or 1, so the divisor is finite and positive.
 *
 * @module
 */

import type { Rng } from "../rng.ts";

/**
 * Samples an index from unnormalised weights by the Gumbel-max trick, `argmax_y w_y / -log(U_y)`.
 * Entries that are 0 (or negative, or NaN) are never chosen and draw no random number; if no entry is
 * positive, `fallback` is returned.
 *
 * @param w Weights; entries `w[offset] .. w[offset + n - 1]` are read.
 * @param offset First entry.
 * @param n Number of entries.
 * @param rng The random number generator.
 * @param fallback Index (relative to `offset`) returned when no weight is positive.
 * @returns The sampled index in [0, n), relative to `offset`.
 *
 * @example A zero weight is never sampled
 * ```ts
 * import { gumbelArgmax } from "./gumbel.ts";
 * import { Rng } from "../rng.ts";
 * import assert from "node:assert/strict";
 *
 * const rng = new Rng(1);
 * const w = new Float64Array([0, 3, 1]);
 * for (let i = 0; i < 100; i++) assert.notEqual(gumbelArgmax(w, 0, 3, rng, 0), 0);
 * assert.equal(gumbelArgmax(new Float64Array([0, 0]), 0, 2, rng, 1), 1);
 * ```
 */
export function gumbelArgmax(
  w: ArrayLike<number>,
  offset: number,
  n: number,
  rng: Rng,
  fallback: number,
): number {
  let best = fallback;
  let bestKey = -Infinity;
  for (let y = 0; y < n; y++) {
    const wy = w[offset + y];
    if (!(wy > 0)) continue;
    const key = wy / -Math.log(rng.uniformOpen());
    if (key > bestKey) {
      bestKey = key;
      best = y;
    }
  }
  return best;
}

/**
 * The index of the largest of `x[o] .. x[o + n - 1]`, skipping index `exclude` (the first
 * maximum wins ties; a NaN entry is taken only when it comes first).
 *
 * @param x Values.
 * @param o First entry.
 * @param n Number of entries.
 * @param exclude Index (relative to `o`) never returned, or -1 for none.
 * @returns The index in [0, n), relative to `o`.
 *
 * @example
 * ```ts
 * import { argmaxRow } from "./gumbel.ts";
 * import assert from "node:assert/strict";
 *
 * const x = new Float32Array([9, 1, 5, 5]);
 * assert.equal(argmaxRow(x, 1, 3, -1), 1); // 5 at index 1 of [1, 5, 5]: the first maximum
 * assert.equal(argmaxRow(x, 0, 4, 0), 2);
 * ```
 */
export function argmaxRow(x: ArrayLike<number>, o: number, n: number, exclude: number): number {
  let best = -1;
  let max = -Infinity;
  for (let y = 0; y < n; y++) {
    if (y === exclude) continue;
    if (best < 0 || x[o + y] > max) {
      max = x[o + y];
      best = y;
    }
  }
  return best;
}
