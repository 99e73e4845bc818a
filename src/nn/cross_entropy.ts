/**
 * Softmax cross-entropy over the vocabulary with a weight per position:
 * `loss = sum_n weight[n] * (logsumexp(logits[n]) - logits[n, target[n]])`.
 *
 * Every cross-entropy of the library goes through the two row functions here,
 * {@linkcode logSumExp} and {@linkcode crossEntropyRowBackward}: the batched pair below (the
 * model's loss) and the `seed` and `elbo` diffusion losses (which softmax over all V logits or
 * over the V - 1 real tokens of a row).
 *
 * Dimensions: `N` positions (B*T), `V` vocabulary.
 *
 * @module
 */

import { addScaledExp, expSum } from "./fast_exp.ts";

/**
 * `log(sum_{v < n} exp(logits[o + v]))`, shifted by the row maximum, summed in float64 (each
 * exponential within 1e-8 relative, see `fast_exp.ts`).
 *
 * @param logits Scores.
 * @param o First index of the row.
 * @param n Entries of the row.
 * @returns The row's log-sum-exp.
 *
 * @example
 * ```ts
 * import { logSumExp } from "./cross_entropy.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(Math.abs(logSumExp(new Float32Array([9, 0, 0]), 1, 2) - Math.LN2) < 1e-12);
 * ```
 */
export function logSumExp(logits: Float32Array, o: number, n: number): number {
  let max = -Infinity;
  for (let v = o, end = o + n; v < end; v++) if (logits[v] > max) max = logits[v];
  return max + Math.log(expSum(logits, o, n, max));
}

/**
 * ADDS `g * (softmax(row) - onehot(target))` into `dlogits[o .. o+n)`: the gradient of
 * `g * (logSumExp(row) - row[target])` for the row `logits[o .. o+n)`.
 *
 * @param dlogits Gradient, indexed like `logits`.
 * @param logits Scores.
 * @param o First index of the row.
 * @param n Entries of the row.
 * @param lse The row's {@linkcode logSumExp}.
 * @param target Target index within the row, `0 <= target < n`.
 * @param g Upstream gradient of the row's loss.
 */
export function crossEntropyRowBackward(
  dlogits: Float32Array,
  logits: Float32Array,
  o: number,
  n: number,
  lse: number,
  target: number,
  g: number,
): void {
  addScaledExp(dlogits, logits, o, n, lse, g);
  dlogits[o + target] -= g;
}

/**
 * Writes each position's weighted loss and returns their sum (accumulated in float64).
 * Positions with weight 0 are skipped (their loss is 0 whatever the logits).
 *
 * Targets must already be validated (0 <= target < V).
 *
 * @param losses Weighted loss per position, `(N)`.
 * @param lse Saved log-sum-exp per position for the backward pass, `(N)`.
 * @param logits Scores, `(N,V)`.
 * @param targets Target ids, `(N)`.
 * @param weights Weight per position, `(N)`.
 * @param N Positions.
 * @param V Vocabulary size.
 * @param rowLse The log-sum-exp of one row (default {@linkcode logSumExp}; the wasm backend
 *   passes its module's).
 * @returns `sum_n losses[n]`.
 *
 * @example Uniform logits cost log V
 * ```ts
 * import { crossEntropyForward } from "./cross_entropy.ts";
 * import assert from "node:assert/strict";
 *
 * const loss = crossEntropyForward(
 *   new Float32Array(1), new Float32Array(1), new Float32Array(4),
 *   new Int32Array([2]), new Float32Array([1]), 1, 4,
 * );
 * assert.ok(Math.abs(loss - Math.log(4)) < 1e-6);
 * ```
 */
export function crossEntropyForward(
  losses: Float32Array, // (N)
  lse: Float32Array, // (N)
  logits: Float32Array, // (N,V)
  targets: Int32Array, // (N)
  weights: Float32Array, // (N)
  N: number,
  V: number,
  rowLse: typeof logSumExp = logSumExp,
): number {
  let total = 0;
  for (let n = 0; n < N; n++) {
    const w = weights[n];
    if (w === 0) {
      losses[n] = 0;
      lse[n] = 0;
      continue;
    }
    const o = n * V;
    const l = rowLse(logits, o, V);
    lse[n] = l;
    const loss = w * (l - logits[o + targets[n]]);
    losses[n] = loss;
    total += loss;
  }
  return total;
}

/**
 * Backward of {@linkcode crossEntropyForward}. ADDS into `dlogits`.
 *
 * Differentiates `loss = sum_n w[n] * (lse[n] - logits[n, target[n]])`:
 * `dlogits[n, v] += dloss * w[n] * (softmax(logits[n])[v] - [v == target[n]])`.
 *
 * @param dlogits Gradient of the scores, `(N,V)`.
 * @param dloss Upstream gradient of the total loss (a scalar).
 * @param logits Scores, `(N,V)`.
 * @param lse Saved log-sum-exp, `(N)`.
 * @param targets Target ids, `(N)`.
 * @param weights Weight per position, `(N)`.
 * @param N Positions.
 * @param V Vocabulary size.
 * @param rowBackward One row's gradient (default {@linkcode crossEntropyRowBackward}; the wasm
 *   backend passes its module's).
 */
export function crossEntropyBackward(
  dlogits: Float32Array, // (N,V)
  dloss: number,
  logits: Float32Array, // (N,V)
  lse: Float32Array, // (N)
  targets: Int32Array, // (N)
  weights: Float32Array, // (N)
  N: number,
  V: number,
  rowBackward: typeof crossEntropyRowBackward = crossEntropyRowBackward,
): void {
  for (let n = 0; n < N; n++) {
    const g = dloss * weights[n];
    if (g === 0) continue;
    rowBackward(dlogits, logits, n * V, V, lse[n], targets[n], g);
  }
}
