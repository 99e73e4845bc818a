/**
 * Noise schedules and diffusion-time sampling.
 *
 * A schedule maps diffusion time t in [0, 1] to the total noise sigma(t) and its rate
 * dsigma(t) = sigma'(t). Under either graph (absorb or uniform) a token has been hit by noise
 * by time t with probability `maskProb(t) = 1 - exp(-sigma(t))`.
 *
 * | name | sigma(t) | dsigma(t) | maskProb(t) |
 * | --- | --- | --- | --- |
 * | `loglinear` (eps 1e-3) | -log1p(-(1-eps) t) | (1-eps) / (1 - (1-eps) t) | (1-eps) t |
 * | `geometric` (sigmaMin 1e-4, sigmaMax 20) | smin^(1-t) smax^t | sigma (ln smax - ln smin) | 1 - exp(-sigma) |
 * | `linear` (the notebook) | -log1p(-t) | 1 / (1 - t) | t |
 *
 * Time sampling ({@linkcode sampleTimes}) draws t ~ U[eps, 1] per sequence. To keep training
 * independent of how a batch is sharded across workers, sequence j of step s takes its noise from
 * its own generator `new Rng(seed, s, j)` ({@linkcode sequenceRng}); with antithetic sampling the
 * single u shared by the whole batch comes from `new Rng(seed, s, 0xFFFFFFFF)`
 * ({@linkcode stepRng}), and sequence j gets u_j = (u/B + j/B) mod 1 from its GLOBAL index j.
 *
 * @example Loglinear: mask probability is (1 - eps) t
 * ```ts
 * import { createSchedule } from "./schedule.ts";
 * import assert from "node:assert/strict";
 *
 * const s = createSchedule("loglinear");
 * assert.ok(Math.abs(s.maskProb(0.5) - 0.4995) < 1e-12);
 * assert.ok(Math.abs(1 - Math.exp(-s.sigma(0.5)) - 0.4995) < 1e-12);
 * ```
 *
 * @module
 */

import { Rng } from "../rng.ts";

/** The schedule names accepted by {@linkcode createSchedule}. */
export type ScheduleName = "loglinear" | "geometric" | "linear";

/** A noise schedule over diffusion time t in [0, 1]. */
export interface NoiseSchedule {
  /** The schedule's name. */
  readonly name: ScheduleName;
  /** Total noise sigma(t) >= 0. */
  sigma(t: number): number;
  /** Noise rate sigma'(t) > 0. */
  dsigma(t: number): number;
  /** Probability that a token has been corrupted by time t: 1 - exp(-sigma(t)). */
  maskProb(t: number): number;
}

/** Options for {@linkcode createSchedule}; each applies to one schedule only. */
export interface ScheduleOptions {
  /**
   * `loglinear` only: sigma(1) = -log(eps) stays finite. Default 1e-3 (SEDD's and MDLM's
   * `noise.eps`).
   */
  eps?: number;
  /** `geometric` only: sigma(0). Default 1e-4 (SEDD's `sigma_min`). */
  sigmaMin?: number;
  /** `geometric` only: sigma(1). Default 20 (SEDD's `sigma_max`). */
  sigmaMax?: number;
}

function checkTime(t: number): void {
  if (!(t >= 0 && t <= 1)) {
    throw new RangeError(`Invalid time: expected 0 <= t <= 1, got ${t}`);
  }
}

/**
 * Creates a noise schedule.
 *
 * The `linear` schedule is the notebook's: a token is masked with probability exactly t, so
 * sigma(t) = -log(1 - t) and dsigma(t) = 1 / (1 - t). Both diverge as t -> 1: at t = 1 they are
 * `Infinity` and maskProb is 1 (every token masked). Losses weighted by dsigma are therefore
 * meant for the `loglinear` schedule; the notebook's `seed` loss does not use sigma at all.
 *
 * @param name `"loglinear"`, `"geometric"` or `"linear"`.
 * @param options Schedule constants (see {@linkcode ScheduleOptions}).
 * @returns The schedule.
 *
 * @example Geometric at its ends
 * ```ts
 * import { createSchedule } from "./schedule.ts";
 * import assert from "node:assert/strict";
 *
 * const g = createSchedule("geometric", { sigmaMin: 0.01, sigmaMax: 10 });
 * assert.ok(Math.abs(g.sigma(0) - 0.01) < 1e-15);
 * assert.ok(Math.abs(g.sigma(1) - 10) < 1e-12);
 * ```
 */
export function createSchedule(name: ScheduleName, options: ScheduleOptions = {}): NoiseSchedule {
  if (name === "loglinear") {
    const eps = options.eps ?? 1e-3;
    if (!(eps > 0 && eps < 1)) {
      throw new RangeError(`Invalid loglinear eps: expected 0 < eps < 1, got ${eps}`);
    }
    const a = 1 - eps;
    return {
      name,
      sigma: (t) => (checkTime(t), -Math.log1p(-a * t)),
      dsigma: (t) => (checkTime(t), a / (1 - a * t)),
      maskProb: (t) => (checkTime(t), a * t),
    };
  }
  if (name === "geometric") {
    const smin = options.sigmaMin ?? 1e-4;
    const smax = options.sigmaMax ?? 20;
    if (!(smin > 0 && smax > smin && Number.isFinite(smax))) {
      throw new RangeError(
        `Invalid geometric schedule: expected 0 < sigmaMin < sigmaMax < Infinity, got sigmaMin ${smin}, sigmaMax ${smax}`,
      );
    }
    const lmin = Math.log(smin);
    const lmax = Math.log(smax);
    const sig = (t: number) => Math.exp(lmin + t * (lmax - lmin));
    return {
      name,
      sigma: (t) => (checkTime(t), sig(t)),
      dsigma: (t) => (checkTime(t), sig(t) * (lmax - lmin)),
      maskProb: (t) => (checkTime(t), -Math.expm1(-sig(t))),
    };
  }
  if (name === "linear") {
    return {
      name,
      sigma: (t) => (checkTime(t), -Math.log1p(-t)),
      dsigma: (t) => (checkTime(t), 1 / (1 - t)),
      maskProb: (t) => (checkTime(t), t),
    };
  }
  throw new RangeError(
    `Unknown schedule: expected "loglinear", "geometric" or "linear", got ${JSON.stringify(name)}`,
  );
}

/**
 * The generator for sequence `j` of training step `step`: `new Rng(seed, step, j)`. Each
 * sequence's t and mask come from it, so a shard computes the same noise as the whole batch.
 *
 * @param seed The run's seed.
 * @param step The training step.
 * @param j The sequence's index in the WHOLE batch (not in a worker's shard).
 * @returns A fresh generator.
 */
export function sequenceRng(seed: number, step: number, j: number): Rng {
  return new Rng(seed, step, j);
}

/** The reserved sequence key of the per-step generator: no batch has 2^32 - 1 sequences. */
export const STEP_KEY = 0xffffffff;

/**
 * The generator shared by the whole batch of step `step`: `new Rng(seed, step, 0xFFFFFFFF)`.
 * Antithetic time sampling draws its single u from it (the first `uniform()`).
 *
 * @param seed The run's seed.
 * @param step The training step.
 * @returns A fresh generator.
 */
export function stepRng(seed: number, step: number): Rng {
  return new Rng(seed, step, STEP_KEY);
}

/** Options for {@linkcode sampleTimes}. */
export interface SampleTimesOptions {
  /** Lower end of t: t ~ U[eps, 1]. Default 1e-3 (SEDD's and MDLM's sampling eps). */
  eps?: number;
  /** Spread the batch's times evenly: u_j = (u/B + j/B) mod 1. Default false. */
  antithetic?: boolean;
  /**
   * Antithetic only: the u in [0, 1) shared by the whole batch, e.g.
   * `stepRng(seed, step).uniform()`. Default: the first `uniform()` of `rngs` when `rngs` is a
   * single generator; required when `rngs` is an array (one generator per sequence).
   */
  u?: number;
  /** Antithetic only: global batch index of `out[0]` (a worker's shard start). Default 0. */
  offset?: number;
  /** Antithetic only: the WHOLE batch size B. Default `out.length`. */
  total?: number;
}

/**
 * Draws one diffusion time per sequence, t ~ U[eps, 1], as t = eps + (1 - eps) u.
 *
 * With one generator per sequence (`rngs[j]`, e.g. {@linkcode sequenceRng}), sequence j's t uses
 * one `uniform()` of `rngs[j]` and nothing else, so the caller may go on to draw the mask from the
 * same generator. With `antithetic`, the per-sequence generators are NOT advanced: the times come
 * from the shared `u`, `offset` and `total` alone, so any shard of the batch gets the same times.
 *
 * @param out Times, written (B).
 * @param rngs One generator for the whole call (drawn in order), or one per sequence.
 * @param options eps, antithetic and its shared u / offset / total.
 * @returns `out`.
 *
 * @example Antithetic times over a shard equal those of the whole batch
 * ```ts
 * import { sampleTimes, stepRng } from "./schedule.ts";
 * import assert from "node:assert/strict";
 *
 * const u = stepRng(7, 0).uniform();
 * const whole = sampleTimes(new Float32Array(4), [], { antithetic: true, u });
 * const shard = sampleTimes(new Float32Array(2), [], { antithetic: true, u, offset: 2, total: 4 });
 * assert.deepEqual([...shard], [...whole.subarray(2)]);
 * ```
 */
export function sampleTimes(
  out: Float32Array, // (B)
  rngs: Rng | readonly Rng[],
  options: SampleTimesOptions = {},
): Float32Array {
  const eps = options.eps ?? 1e-3;
  if (!(eps >= 0 && eps < 1)) {
    throw new RangeError(`Invalid eps: expected 0 <= eps < 1, got ${eps}`);
  }
  const B = out.length;
  const single = rngs instanceof Rng;
  if (!single && !options.antithetic && rngs.length !== B) {
    throw new RangeError(
      `Generator count mismatch: expected one per sequence (${B}), got ${rngs.length}`,
    );
  }
  if (!options.antithetic) {
    for (let j = 0; j < B; j++) {
      const u = single ? rngs.uniform() : rngs[j].uniform();
      out[j] = eps + (1 - eps) * u;
    }
    return out;
  }
  const offset = options.offset ?? 0;
  const total = options.total ?? B;
  if (!Number.isInteger(offset) || !Number.isInteger(total) || offset < 0 || offset + B > total) {
    throw new RangeError(
      `Invalid antithetic shard: expected integers 0 <= offset and offset + ${B} <= total, got offset ${offset}, total ${total}`,
    );
  }
  let u = options.u;
  if (u === undefined) {
    if (!single) {
      throw new TypeError(
        "Missing antithetic u: expected options.u (e.g. stepRng(seed, step).uniform()) with per-sequence generators, got undefined",
      );
    }
    u = rngs.uniform();
  }
  if (!(u >= 0 && u < 1)) throw new RangeError(`Invalid u: expected 0 <= u < 1, got ${u}`);
  for (let j = 0; j < B; j++) {
    const uj = (u / total + (offset + j) / total) % 1;
    out[j] = eps + (1 - eps) * uj;
  }
  return out;
}
