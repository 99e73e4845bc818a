/**
 * Softmax cross-entropy over the vocabulary with a weight per position:
 * `loss = sum_n weight[n] * (logsumexp(logits[n]) - logits[n, target[n]])`.
 *
 * Dimensions: `N` positions (B*T), `V` vocabulary.
 *
 * @module
 */

import { addScaledExp, expSum } from "./fast_exp.ts";

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
    let max = -Infinity;
    for (let v = 0; v < V; v++) if (logits[o + v] > max) max = logits[o + v];
    const l = max + Math.log(expSum(logits, o, V, max));
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
): void {
  for (let n = 0; n < N; n++) {
    const g = dloss * weights[n];
    if (g === 0) continue;
    const o = n * V;
    addScaledExp(dlogits, logits, o, V, lse[n], g);
    dlogits[o + targets[n]] -= g;
  }
}
