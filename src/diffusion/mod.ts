/**
 * Discrete diffusion: noise schedules and time sampling, the forward (corruption) process, and
 * the training losses (the notebook's `seed`, MDLM's `elbo`, SEDD's `score-entropy`).
 *
 * @example One sequence end to end: time, noise, corruption and the ELBO loss
 * ```ts
 * import {
 *   corruptRow, createSchedule, lossForward, lossScale, moveProb, sampleTimes, sequenceRng,
 * } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const V = 6, T = 8, seed = 1, step = 0;
 * const x0 = new Int32Array([0, 1, 2, 3, 4, 0, 1, 2]);
 * const rng = sequenceRng(seed, step, 0); // sequence 0 of step 0: its t and mask
 * const t = sampleTimes(new Float32Array(1), [rng]);
 * const schedule = createSchedule("loglinear");
 * const sigma = [schedule.sigma(t[0])], dsigma = [schedule.dsigma(t[0])];
 * const xt = new Int32Array(T);
 * corruptRow("absorb", xt, x0, 0, T, moveProb(sigma[0]), rng, V);
 * const logits = new Float32Array(T * V); // a network's output would go here
 * const loss = lossForward(logits, {
 *   loss: "elbo", x0, xt, sigma, dsigma, B: 1, T, V, scale: lossScale("elbo", { B: 1, T }),
 * });
 * // Uniform predictions over the 5 real tokens cost ln 5 per masked token, weighted by 1/t.
 * const masked = xt.filter((id) => id === V - 1).length;
 * assert.equal(masked, 1); // this seed's t is about 0.23: one of 8 tokens masked
 * assert.ok(Math.abs(loss - (masked / T) * Math.log(5) / t[0]) < 1e-5 * Math.max(1, loss));
 * ```
 *
 * @module
 */

export {
  createSchedule,
  type NoiseSchedule,
  sampleTimes,
  type SampleTimesOptions,
  type ScheduleName,
  type ScheduleOptions,
  sequenceRng,
  STEP_KEY,
  stepRng,
} from "./schedule.ts";
export {
  corruptBatch,
  type CorruptionName,
  corruptRow,
  countMasked,
  type GraphName,
  moveProb,
  seedLossWeights,
} from "./corrupt.ts";
export {
  absorbLogScore,
  checkLossName,
  elboBackward,
  elboForward,
  LOSS_NAMES,
  lossBackward,
  lossForward,
  type LossInputs,
  type LossName,
  lossScale,
  type NoisyLossBackward,
  type NoisyLossForward,
  type Num,
  scoreEntropyAbsorbBackward,
  scoreEntropyAbsorbForward,
  scoreEntropyUniformBackward,
  scoreEntropyUniformForward,
  seedBackward,
  seedForward,
  type SeedLossBackward,
  type SeedLossForward,
} from "./losses.ts";
export { seddShift } from "./shift.ts";
