/**
 * Dropout with inverted scaling, as PyTorch's `nn.Dropout` in training mode: each element is
 * kept with probability `1 - p` and scaled by `1 / (1 - p)`, or zeroed.
 *
 * The mask is drawn once (from an explicit seeded {@linkcode Rng}) into a buffer of scales (0 or
 * `1 / (1 - p)`), which both passes read.
 *
 * @module
 */

import { Rng } from "../rng.ts";

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

/**
 * The xoshiro128** state transition to the power `n`, as a matrix over GF(2): 128 columns of
 * four words, column `c` the state that bit `c` of a state (word `c >> 5`, bit `c & 31`)
 * becomes after `n` draws. The generator is linear over GF(2), so the state after `n` draws is
 * the XOR of the columns of the state's set bits: how the wasm dropout masks start four runs of
 * one stream at once. Cached per `n` (a few, reused by every step).
 *
 * @param n Draws to jump, an integer `>= 0`.
 * @returns `128 * 4` words, column-major (read only: shared by every caller).
 * @throws RangeError for a negative or fractional `n`.
 *
 * @example The state after 1000 draws, without drawing them
 * ```ts
 * import { jumpState, xoshiroJump } from "./dropout.ts";
 * import { Rng } from "../rng.ts";
 * import assert from "node:assert/strict";
 *
 * const rng = new Rng(7);
 * const after = jumpState(xoshiroJump(1000), rng.s);
 * for (let i = 0; i < 1000; i++) rng.nextU32();
 * assert.deepEqual(after, rng.s);
 * ```
 */
export function xoshiroJump(n: number): Uint32Array {
  if (!Number.isInteger(n) || n < 0) {
    throw new RangeError(`xoshiroJump: expected an integer number of draws >= 0, got ${n}`);
  }
  let j = jumps.get(n);
  if (j === undefined) {
    let power = transition(), result = identity();
    for (let e = n; e > 0; e = Math.floor(e / 2)) {
      if (e % 2 === 1) result = compose(power, result);
      if (e > 1) power = compose(power, power);
    }
    if (jumps.size >= 64) jumps.clear();
    jumps.set(n, result);
    j = result;
  }
  return j;
}

const jumps = new Map<number, Uint32Array>();

/**
 * The state `x` (four words) after the jump `jump` of {@linkcode xoshiroJump}.
 *
 * @param jump The matrix.
 * @param x The state, four words.
 * @returns The new state.
 */
export function jumpState(jump: Uint32Array, x: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(4);
  for (let c = 0; c < 128; c++) {
    if ((x[c >> 5] >>> (c & 31)) & 1) {
      for (let w = 0; w < 4; w++) out[w] ^= jump[4 * c + w];
    }
  }
  return out;
}

/** One draw's state change of xoshiro128**, as a matrix: `Rng.nextU32` run on each unit state. */
function transition(): Uint32Array {
  const m = new Uint32Array(512);
  const rng = new Rng(0);
  for (let c = 0; c < 128; c++) {
    rng.s.fill(0);
    rng.s[c >> 5] = 1 << (c & 31);
    rng.nextU32();
    m.set(rng.s, 4 * c);
  }
  return m;
}

function identity(): Uint32Array {
  const m = new Uint32Array(512);
  for (let c = 0; c < 128; c++) m[4 * c + (c >> 5)] = 1 << (c & 31);
  return m;
}

/** The matrix of `y` then `x`: column `c` is `x` applied to column `c` of `y`. */
function compose(x: Uint32Array, y: Uint32Array): Uint32Array {
  const m = new Uint32Array(512);
  for (let c = 0; c < 128; c++) m.set(jumpState(x, y.subarray(4 * c, 4 * c + 4)), 4 * c);
  return m;
}
