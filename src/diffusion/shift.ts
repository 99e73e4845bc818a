/**
 * SEDD's scale-by-sigma shift, shared by the loss, the samplers and the DiT's output.
 *
 * @module
 */

/**
 * SEDD's scale-by-sigma shift `log(expm1(sigma)) + log(V - 1)`: the amount a network's logits
 * are lowered by to give the log-score of the absorbing graph, so that zero logits score every
 * real token `1 / ((V - 1) expm1(sigma))` (`expm1` keeps it accurate for small sigma, where
 * `exp(sigma) - 1` loses digits and underflows to 0 below about 1e-16).
 *
 * The DiT of `src/model/dit.ts` keeps SEDD's own switch to `exp(sigma) - 1` from sigma 0.5
 * (`esigm1Log`), so its bits may differ from these there.
 *
 * @param sigma The total noise, > 0 (at 0 the shift is `-Infinity`).
 * @param V Vocabulary size including MASK, >= 2.
 * @returns The shift, in float64.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { seddShift } from "./shift.ts";
 *
 * assert.equal(seddShift(Math.LN2, 4), Math.log(3)); // expm1(ln 2) = 1
 * assert.ok(Number.isFinite(seddShift(1e-300, 4))); // log(exp(1e-300) - 1) is -Infinity
 * ```
 */
export function seddShift(sigma: number, V: number): number {
  return Math.log(Math.expm1(sigma)) + Math.log(V - 1);
}
