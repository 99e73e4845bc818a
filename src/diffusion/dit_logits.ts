/**
 * How the losses read a DiT's output layer (SEDD's and MDLM's network, `src/model/dit.ts`), for
 * the bound (`src/eval/elbo.ts`) and the trainer (`src/train/net.ts`) alike.
 *
 * The losses take the output layer's raw logits: `elbo` applies MDLM's SUBS; `score-entropy` under
 * the absorb graph subtracts SEDD's scale-by-sigma `log(expm1(sigma)) + log(V - 1)` itself, so a
 * network without `scaleBySigma` needs that shift added first for the loss to score exactly what
 * the network returns (a constant per sequence, so the gradient on the logits is unchanged); under
 * the uniform graph the logits are read as the log-scores as they are, which SEDD only produces
 * without scale-by-sigma.
 *
 * Dimensions: `B` sequences, `V` vocabulary.
 *
 * @module
 */

import type { DitConfig } from "../model/dit.ts";
import type { GraphName } from "./corrupt.ts";
import { seddShift } from "./shift.ts";

/**
 * Whether a DiT's logits need the scale-by-sigma shift before the loss reads them, after checking
 * that the graph suits the network (a one-line RangeError for SEDD's uniform graph with
 * `scaleBySigma`).
 *
 * @param config The DiT's config.
 * @param graph The graph the loss reads.
 * @returns True for SEDD's output without `scaleBySigma` on the absorb graph.
 *
 * @example
 * ```ts
 * import { ditNeedsShift } from "./dit_logits.ts";
 * import assert from "node:assert/strict";
 *
 * const c = { kind: "dit" as const, vocabSize: 9, context: 8, dModel: 8, nHeads: 2, nLayers: 1,
 *   condDim: 4, output: "sedd" as const, scaleBySigma: false };
 * assert.equal(ditNeedsShift(c, "absorb"), true);
 * assert.equal(ditNeedsShift(c, "uniform"), false);
 * assert.throws(() => ditNeedsShift({ ...c, scaleBySigma: true }, "uniform"), RangeError);
 * ```
 */
export function ditNeedsShift(config: DitConfig, graph: GraphName): boolean {
  if (config.output === "sedd" && graph === "uniform" && config.scaleBySigma) {
    throw new RangeError(
      "Unsupported DiT: expected scaleBySigma false with the uniform graph (SEDD scales by " +
        "sigma under absorb only), got true",
    );
  }
  return config.output === "sedd" && graph === "absorb" && !config.scaleBySigma;
}

/**
 * Adds `log(expm1(sigma_b)) + log(V - 1)` to every logit of sequence `b`, in place.
 *
 * @param logits `(B, n)` flattened, `n` a multiple of V.
 * @param sigma Noise level per sequence `(B)` (> 0).
 * @param V Vocabulary size.
 */
export function addSigmaShift(logits: Float32Array, sigma: ArrayLike<number>, V: number): void {
  const B = sigma.length, n = logits.length / B;
  for (let b = 0; b < B; b++) {
    const shift = seddShift(sigma[b], V);
    for (let i = b * n; i < (b + 1) * n; i++) logits[i] += shift;
  }
}
