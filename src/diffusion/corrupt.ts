/**
 * The forward (noising) process: clean tokens x0 to corrupted tokens xt, one sequence per
 * generator.
 *
 * Three corruptions, each applied independently per position with a per-sequence probability p:
 *
 * - `absorb` (SEDD absorbing graph, MDLM): the token becomes MASK with probability
 *   p = 1 - exp(-sigma(t)) (see {@linkcode moveProb}).
 * - `uniform` (SEDD uniform graph): with probability p = 1 - exp(-sigma(t)) the token is
 *   resampled uniformly over the non-mask vocabulary (V - 1 tokens). A resample may pick the
 *   token it replaces, so the token actually changes with probability p (V - 2) / (V - 1).
 * - `seed` (the notebook): MASK with probability exactly t, `torch.bernoulli(t)`. It is `absorb`
 *   with p = t, kept as a name so callers say which recipe they follow.
 *
 * Each position draws one `rng.uniform()` (and `uniform` one more `rng.int(V - 1)` when it
 * moves), in position order, from the sequence's own generator, so a sequence's noise does not
 * depend on the other sequences or on how the batch is sharded.
 *
 * The mask id is V - 1 by default (the tokenizer adds `<|mask|>` last); x0 must not contain it.
 *
 * @example The notebook's corruption of one sequence, and its loss weights
 * ```ts
 * import { corruptRow, seedLossWeights } from "./corrupt.ts";
 * import { Rng } from "../rng.ts";
 * import assert from "node:assert/strict";
 *
 * const V = 5, T = 6, MASK = 4;
 * const x0 = new Int32Array([0, 1, 2, 3, 0, 1]);
 * const xt = new Int32Array(T);
 * const masked = corruptRow("seed", xt, x0, 0, T, 1, new Rng(1), V); // t = 1: everything masked
 * assert.equal(masked, 6);
 * assert.deepEqual([...xt], [4, 4, 4, 4, 4, 4]);
 * const w = new Float32Array(T);
 * seedLossWeights(w, xt, MASK, 1, T);
 * assert.ok(Math.abs(w[0] - 1 / 6) < 1e-7);
 * ```
 *
 * @module
 */

import type { Rng } from "../rng.ts";

/** The corruption recipes. */
export type CorruptionName = "absorb" | "uniform" | "seed";

/** The diffusion graphs of SEDD: `absorb` (to MASK) and `uniform` (to any token). */
export type GraphName = "absorb" | "uniform";

/**
 * The probability that a position has moved by noise level sigma: 1 - exp(-sigma), computed as
 * `-expm1(-sigma)` so it stays accurate for small sigma.
 *
 * @param sigma Total noise, >= 0 (Infinity gives 1).
 * @returns 1 - exp(-sigma).
 */
export function moveProb(sigma: number): number {
  if (!(sigma >= 0)) throw new RangeError(`Invalid sigma: expected sigma >= 0, got ${sigma}`);
  return -Math.expm1(-sigma);
}

function checkRowArgs(
  fn: string,
  xt: Int32Array,
  x0: Int32Array,
  row: number,
  T: number,
  p: number,
  V: number,
  maskId: number,
): void {
  if (!Number.isInteger(V) || V < 2) {
    throw new RangeError(`${fn}: expected an integer vocabulary size V >= 2, got ${V}`);
  }
  if (!Number.isInteger(maskId) || maskId < 0 || maskId >= V) {
    throw new RangeError(`${fn}: expected a mask id 0 <= maskId < ${V}, got ${maskId}`);
  }
  if (!Number.isInteger(T) || T < 1 || !Number.isInteger(row) || row < 0) {
    throw new RangeError(`${fn}: expected integers T >= 1 and row >= 0, got T ${T}, row ${row}`);
  }
  const end = (row + 1) * T;
  if (x0.length < end || xt.length < end) {
    throw new RangeError(
      `${fn}: expected x0 and xt to hold row ${row} of length ${T} (>= ${end} ids), got ${x0.length} and ${xt.length}`,
    );
  }
  if (!(p >= 0 && p <= 1)) {
    throw new RangeError(`${fn}: expected a corruption probability 0 <= p <= 1, got ${p}`);
  }
  for (let i = row * T; i < end; i++) {
    const id = x0[i];
    if (!(id >= 0 && id < V) || id === maskId) {
      throw new RangeError(
        `${fn}: expected clean token ids 0 <= id < ${V} other than the mask ${maskId}, got ${id} at position ${i}`,
      );
    }
  }
}

/**
 * Corrupts row `row` of a batch: writes `xt[row*T .. row*T+T)` from the same row of `x0`.
 *
 * @param kind `"absorb"`, `"uniform"` or `"seed"` (see the module doc).
 * @param xt Corrupted ids, row written (B,T).
 * @param x0 Clean ids, read (B,T).
 * @param row Which row (sequence) of the local arrays.
 * @param T Sequence length.
 * @param p Per-position probability: `moveProb(sigma)` for absorb/uniform, t for seed.
 * @param rng The sequence's own generator, advanced.
 * @param V Vocabulary size including the mask.
 * @param maskId The mask id. Default V - 1.
 * @returns How many positions were hit (masked, or resampled for `uniform`).
 *
 * @example Uniform resamples never produce the mask
 * ```ts
 * import { corruptRow } from "./corrupt.ts";
 * import { Rng } from "../rng.ts";
 * import assert from "node:assert/strict";
 *
 * const x0 = new Int32Array(100), xt = new Int32Array(100);
 * assert.equal(corruptRow("uniform", xt, x0, 0, 100, 1, new Rng(3), 4), 100);
 * assert.ok(xt.every((id) => id >= 0 && id < 3));
 * ```
 */
export function corruptRow(
  kind: CorruptionName,
  xt: Int32Array, // (B,T)
  x0: Int32Array, // (B,T)
  row: number,
  T: number,
  p: number,
  rng: Rng,
  V: number,
  maskId: number = V - 1,
): number {
  checkRowArgs("corruptRow", xt, x0, row, T, p, V, maskId);
  const o = row * T;
  let hits = 0;
  if (kind === "absorb" || kind === "seed") {
    for (let i = 0; i < T; i++) {
      const hit = rng.uniform() < p;
      xt[o + i] = hit ? maskId : x0[o + i];
      if (hit) hits++;
    }
    return hits;
  }
  if (kind === "uniform") {
    if (V < 3) {
      throw new RangeError(
        `corruptRow: expected V >= 3 for the uniform graph (two real tokens and the mask), got ${V}`,
      );
    }
    for (let i = 0; i < T; i++) {
      if (rng.uniform() < p) {
        const k = rng.int(V - 1); // over the V - 1 real tokens
        xt[o + i] = k >= maskId ? k + 1 : k; // skip the mask id
        hits++;
      } else {
        xt[o + i] = x0[o + i];
      }
    }
    return hits;
  }
  throw new RangeError(
    `Unknown corruption: expected "absorb", "uniform" or "seed", got ${JSON.stringify(kind)}`,
  );
}

/**
 * Corrupts a whole (local) batch, row b with probability `probs[b]` and generator `rngs[b]`.
 *
 * For a worker's shard, pass the shard's rows and the generators of their GLOBAL indices
 * (`sequenceRng(seed, step, offset + b)`).
 *
 * @param kind `"absorb"`, `"uniform"` or `"seed"`.
 * @param xt Corrupted ids, written (B,T).
 * @param x0 Clean ids, read (B,T).
 * @param probs Per-sequence probabilities (B): `moveProb(sigma)`, or t for `seed`.
 * @param rngs Per-sequence generators (B), advanced.
 * @param B Batch size (rows).
 * @param T Sequence length.
 * @param V Vocabulary size including the mask.
 * @param maskId The mask id. Default V - 1.
 * @returns The total number of positions hit.
 */
export function corruptBatch(
  kind: CorruptionName,
  xt: Int32Array, // (B,T)
  x0: Int32Array, // (B,T)
  probs: ArrayLike<number>, // (B)
  rngs: readonly Rng[], // (B)
  B: number,
  T: number,
  V: number,
  maskId: number = V - 1,
): number {
  if (probs.length !== B || rngs.length !== B) {
    throw new RangeError(
      `corruptBatch: expected ${B} probabilities and ${B} generators, got ${probs.length} and ${rngs.length}`,
    );
  }
  if (x0.length !== B * T || xt.length !== B * T) {
    throw new RangeError(
      `corruptBatch: expected x0 and xt of length B*T = ${
        B * T
      }, got ${x0.length} and ${xt.length}`,
    );
  }
  let hits = 0;
  for (let b = 0; b < B; b++) hits += corruptRow(kind, xt, x0, b, T, probs[b], rngs[b], V, maskId);
  return hits;
}

/**
 * Counts the positions of `xt` equal to `maskId`.
 *
 * @param xt Corrupted ids (B,T).
 * @param maskId The mask id.
 * @returns The number of masked positions.
 */
export function countMasked(xt: Int32Array, maskId: number): number {
  let n = 0;
  for (let i = 0; i < xt.length; i++) if (xt[i] === maskId) n++;
  return n;
}

/**
 * The notebook's loss weights: `w_i = mask_i / (maskedCount + 1e-6)` over the WHOLE batch, so
 * that `sum_i w_i CE_i` (the model's weighted cross-entropy) equals the notebook's
 * `(loss * mask).sum() / (mask.sum() + 1e-6)` exactly. The mask is `xt == maskId` (x0 never
 * holds the mask, so this is the notebook's `mask_decision`).
 *
 * @param weightOut Weights, written (B,T).
 * @param xt Corrupted ids (B,T).
 * @param maskId The mask id.
 * @param B Batch size.
 * @param T Sequence length.
 * @returns The masked count.
 */
export function seedLossWeights(
  weightOut: Float32Array, // (B,T)
  xt: Int32Array, // (B,T)
  maskId: number,
  B: number,
  T: number,
): number {
  if (weightOut.length !== B * T || xt.length !== B * T) {
    throw new RangeError(
      `seedLossWeights: expected weightOut and xt of length B*T = ${
        B * T
      }, got ${weightOut.length} and ${xt.length}`,
    );
  }
  const count = countMasked(xt, maskId);
  const w = 1 / (count + 1e-6);
  for (let i = 0; i < B * T; i++) weightOut[i] = xt[i] === maskId ? w : 0;
  return count;
}
