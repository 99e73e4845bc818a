/**
 * `exp` for the hot loops (softmax rows): a table-driven polynomial that is within 1e-10
 * relative of `Math.exp`, far below float32's half-ulp (3e-8), so a float32 result is almost
 * always the correctly rounded one, else its neighbour.
 *
 * Method: `x = (m / 16) ln2 + r` with `m = floor(16 x / ln2 + 1/2)`, `|r| <= ln2 / 32` (ln2/16
 * split in two parts so `r` is exact to double precision), `e^r` by its degree-4 Taylor
 * polynomial (relative error below `r^5 / 5! <= 4e-11`), times `2^((m mod 16) / 16)` and
 * `2^floor(m / 16)` from two small tables.
 *
 * @module
 */

const SIXTEEN_OVER_LN2 = 16 / Math.LN2;
const LN2_HI = 0.6931471803691238 / 16; // ln2 rounded to 32 significant bits, over 16 (exact)
const LN2_LO = 1.9082149292705877e-10 / 16; // (ln2 - its 32-bit rounding) / 16
const K_MIN = -1022;
const K_MAX = 1023;
const POW2 = new Float64Array(K_MAX - K_MIN + 1); // 2^k
for (let k = K_MIN; k <= K_MAX; k++) POW2[k - K_MIN] = Math.pow(2, k);
const POW2_16THS = new Float64Array(16); // 2^(j/16)
for (let j = 0; j < 16; j++) POW2_16THS[j] = Math.pow(2, j / 16);

/**
 * `e^x` within 1e-8 relative for `-708 < x < 709`; 0 below, `Infinity` above, NaN for NaN.
 *
 * @param x Exponent.
 * @returns `e^x`.
 *
 * @example
 * ```ts
 * import { expFast } from "./fast_exp.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(expFast(0), 1);
 * assert.ok(Math.abs(expFast(-3.5) / Math.exp(-3.5) - 1) < 1e-8);
 * assert.equal(expFast(-1000), 0);
 * ```
 */
export function expFast(x: number): number {
  if (!(x > -708 && x < 709)) return x > 0 ? Infinity : x !== x ? NaN : 0;
  const m = Math.floor(x * SIXTEEN_OVER_LN2 + 0.5);
  const r = (x - m * LN2_HI) - m * LN2_LO;
  const p = (1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r / 24)))) * POW2_16THS[m & 15];
  return p * POW2[(m >> 4) - K_MIN];
}

/**
 * `a[o + i] = e^(a[o + i] * scale - shift)` for `i < n`, IN PLACE; returns the sum of the new
 * values (in double). Within 1e-8 relative of `Math.exp`; arguments below -700 give about
 * 1e-304 (0 once stored as float32), NaN stays NaN. For softmax rows, where every argument is
 * <= 0 after subtracting the row maximum.
 *
 * @param a Buffer, updated in place.
 * @param o First index.
 * @param n Elements.
 * @param scale Factor on each value.
 * @param shift Subtracted after scaling (the scaled row maximum, for a softmax).
 * @returns The sum of the exponentials.
 *
 * @example A softmax row
 * ```ts
 * import { expScaledInPlace } from "./fast_exp.ts";
 * import assert from "node:assert/strict";
 *
 * const row = new Float64Array([1, 3]);
 * const sum = expScaledInPlace(row as unknown as Float32Array, 0, 2, 0.5, 1.5);
 * assert.ok(Math.abs(row[1] - 1) < 1e-15 && Math.abs(sum - (1 + Math.exp(-1))) < 1e-8);
 * ```
 */
export function expScaledInPlace(
  a: Float32Array,
  o: number,
  n: number,
  scale: number,
  shift: number,
): number {
  let sum = 0;
  for (let i = o, end = o + n; i < end; i++) {
    const x = Math.min(Math.max(a[i] * scale - shift, -700), 700);
    const m = Math.floor(x * SIXTEEN_OVER_LN2 + 0.5);
    const r = (x - m * LN2_HI) - m * LN2_LO;
    const p = (1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r / 24)))) * POW2_16THS[m & 15];
    const e = p * POW2[(m >> 4) - K_MIN];
    a[i] = e;
    sum += e;
  }
  return sum;
}

/**
 * `sum_i e^(a[o + i] - shift)` for `i < n`, as {@linkcode expScaledInPlace} computes each term,
 * without writing: the normaliser of a log-softmax row.
 *
 * @param a Values (read only).
 * @param o First index.
 * @param n Elements.
 * @param shift Subtracted from each value (the row maximum).
 * @returns The sum, within 1e-8 relative.
 *
 * @example
 * ```ts
 * import { expSum } from "./fast_exp.ts";
 * import assert from "node:assert/strict";
 *
 * const s = expSum(new Float32Array([0, 2]), 0, 2, 2);
 * assert.ok(Math.abs(s - (1 + Math.exp(-2))) < 1e-8);
 * ```
 */
export function expSum(a: Float32Array, o: number, n: number, shift: number): number {
  let sum = 0;
  for (let i = o, end = o + n; i < end; i++) {
    const x = Math.min(Math.max(a[i] - shift, -700), 700);
    const m = Math.floor(x * SIXTEEN_OVER_LN2 + 0.5);
    const r = (x - m * LN2_HI) - m * LN2_LO;
    const p = (1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r / 24)))) * POW2_16THS[m & 15];
    sum += p * POW2[(m >> 4) - K_MIN];
  }
  return sum;
}

/**
 * `dst[o + i] += g * e^(a[o + i] - shift)` for `i < n` (ADDS): a softmax row's gradient term.
 *
 * @param dst Accumulator.
 * @param a Values (read only), indexed like `dst`.
 * @param o First index.
 * @param n Elements.
 * @param shift Subtracted from each value (the row's log-sum-exp).
 * @param g Factor.
 *
 * @example
 * ```ts
 * import { addScaledExp } from "./fast_exp.ts";
 * import assert from "node:assert/strict";
 *
 * const d = new Float64Array([1, 1]);
 * addScaledExp(d as unknown as Float32Array, new Float32Array([0, 1]), 0, 2, 1, 2);
 * assert.ok(Math.abs(d[0] - (1 + 2 * Math.exp(-1))) < 1e-8 && Math.abs(d[1] - 3) < 1e-8);
 * ```
 */
export function addScaledExp(
  dst: Float32Array,
  a: Float32Array,
  o: number,
  n: number,
  shift: number,
  g: number,
): void {
  for (let i = o, end = o + n; i < end; i++) {
    const x = Math.min(Math.max(a[i] - shift, -700), 700);
    const m = Math.floor(x * SIXTEEN_OVER_LN2 + 0.5);
    const r = (x - m * LN2_HI) - m * LN2_LO;
    const p = (1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r / 24)))) * POW2_16THS[m & 15];
    dst[i] += g * (p * POW2[(m >> 4) - K_MIN]);
  }
}
