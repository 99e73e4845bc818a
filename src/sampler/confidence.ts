/**
 * The notebook's confidence sampler (`sample_sedd`), one step over a batch.
 *
 * Each step: `probs = softmax(logits)`, the max probability and its argmax per position, a
 * noisy confidence `maxprob + Gumbel` (`-log(-log U)`) at masked positions (-inf elsewhere), and
 * the top-k masked positions take their argmax. k is `max(1, floor(T / steps))` (the notebook's
 * `T_context // steps`), capped by the number still masked.
 *
 * MASK in the predictions. The notebook's softmax and argmax run over all V logits, so it can
 * "unmask" a position to MASK itself, which leaves it masked; a model trained with the notebook's
 * loss rarely does (MASK is never a target), but an untrained or small model can, and then masks
 * survive the run. With `allowMask: false` (the default) the MASK logit is taken as -inf, as in
 * MDLM's SUBS parameterisation: probabilities and argmax are over the real tokens only, so every
 * chosen position really is unmasked. `allowMask: true` is the notebook exactly.
 * `<|endoftext|>` is a real token (the notebook's text starts with it and documents are joined by
 * it) and is never excluded.
 *
 * @module
 */

import type { Rng } from "../rng.ts";
import { argmaxRow } from "./gumbel.ts";

/**
 * One confidence step over the batch, in place.
 *
 * @param ids Current ids (B,T), updated in place.
 * @param out Logits for `ids` (B,T,V).
 * @param fixed 1 where a position is fixed (T), or null (fixed positions are never MASK).
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size.
 * @param maskId Id of MASK.
 * @param k How many masked positions to unmask per sequence (capped by the number masked).
 * @param allowMask Whether MASK may be predicted (the notebook: yes; default here: no).
 * @param rng The random number generator (one Gumbel draw per masked position).
 * @returns The number of positions written.
 *
 * @example One position unmasked per step, chosen by noisy confidence
 * ```ts
 * import { confidenceStep } from "./confidence.ts";
 * import { Rng } from "../rng.ts";
 * import assert from "node:assert/strict";
 *
 * // V = 3 (MASK = 2), T = 2: position 1 is certain of token 0 (confidence 1), position 0 is
 * // split between tokens 0 and 1 (confidence 1/2). The Gumbel noise (scale 1) can outweigh that
 * // gap: with seed 3 position 0 goes first, taking the first of its tied argmax, token 0.
 * const ids = new Int32Array([2, 2]);
 * const logits = new Float32Array([0, 0, 0, 30, 0, 0]);
 * assert.equal(confidenceStep(ids, logits, null, 1, 2, 3, 2, 1, false, new Rng(3)), 1);
 * assert.deepEqual([...ids], [0, 2]);
 * ```
 */
export function confidenceStep(
  ids: Int32Array, // (B,T)
  out: Float32Array, // (B,T,V)
  fixed: Uint8Array | null, // (T)
  B: number,
  T: number,
  V: number,
  maskId: number,
  k: number,
  allowMask: boolean,
  rng: Rng,
): number {
  const conf = new Float64Array(T);
  const pred = new Int32Array(T);
  const order: number[] = [];
  let written = 0;
  for (let b = 0; b < B; b++) {
    order.length = 0;
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      if (ids[i] !== maskId || (fixed !== null && fixed[t] === 1)) continue;
      const o = i * V;
      // max prob = 1 / sum_y exp(l_y - l_max) over the allowed columns; argmax = first max
      const best = argmaxRow(out, o, V, allowMask ? -1 : maskId);
      const max = out[o + best];
      let sum = 0;
      for (let y = 0; y < V; y++) {
        if (!allowMask && y === maskId) continue;
        sum += Math.exp(out[o + y] - max);
      }
      conf[t] = 1 / sum + rng.gumbel();
      pred[t] = best;
      order.push(t);
    }
    const n = Math.min(k, order.length);
    order.sort((a, c) => conf[c] - conf[a] || a - c);
    for (let j = 0; j < n; j++) {
      const t = order[j];
      ids[b * T + t] = pred[t];
      written++;
    }
  }
  return written;
}
