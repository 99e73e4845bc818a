/**
 * Sampling token ids from a denoiser: the notebook's confidence sampler, SEDD's Euler and Tweedie
 * (analytic) predictors, and MDLM's ancestral sampler with caching.
 *
 * The samplers see the network only through a {@linkcode Denoiser} callback, so the same code
 * runs the real model and the stub models of the tests.
 *
 * Supported combinations (anything else throws a `RangeError` that says so):
 *
 * | method | graph | output |
 * | --- | --- | --- |
 * | `confidence` | absorb | logits, logScore (softmax of either is p_x0 at a masked position) |
 * | `euler`, `tweedie` | absorb | logits (scores p_x0 / expm1(sigma)), logScore |
 * | `euler`, `tweedie` | uniform | logScore (SEDD's uniform transitions) |
 * | `ancestral` | absorb | logits, logScore (p_x0 = normalised scores) |
 *
 * Time grid: `t_i = linspace(1, eps, steps + 1)` with `eps = 1e-5` (SEDD's and MDLM's), step
 * `i` goes from `t_i` to `t_{i+1}`; `euler`, `tweedie` and `ancestral` then take the final
 * denoising step at `t = eps` (SEDD: sample with the MASK column dropped; MDLM: argmax). The
 * `linear` schedule has sigma(1) = Infinity, so `euler` and `tweedie` refuse it.
 *
 * @module
 */

import { Rng } from "../rng.ts";
import { checkInt, oneOf } from "../check.ts";
import { createSchedule, type NoiseSchedule, type ScheduleName } from "../diffusion/schedule.ts";
import { confidenceStep } from "./confidence.ts";
import {
  ancestralUpdate,
  argmaxUpdate,
  createScratch,
  type DenoiserOutput,
  type Graph,
  seddUpdate,
  type UpdateContext,
} from "./updates.ts";

export type { DenoiserOutput, Graph } from "./updates.ts";

/**
 * The network as the samplers see it: ids `(B,T)` and the noise level of each sequence `(B)` in,
 * raw outputs `(B,T,V)` out (logits or log-scores, as `SampleOptions.output` says). It must not
 * modify `ids`. The returned array is read before the next call and may be reused by the callee.
 */
export type Denoiser = (ids: Int32Array, sigma: Float32Array) => Float32Array;

/**
 * A {@linkcode Denoiser} that may answer with a promise (for {@linkcode sampleIdsAsync}). `ids`
 * must not be modified and is not changed by the sampler until the answer has come.
 */
export type AsyncDenoiser = (
  ids: Int32Array,
  sigma: Float32Array,
) => Float32Array | Promise<Float32Array>;

/** The sampling methods. */
export type SampleMethod = "confidence" | "euler" | "tweedie" | "ancestral";

/** Token ids held fixed at given positions of every sequence (prefix, suffix, infill). */
export interface FixedTokens {
  /** Positions 0 <= p < length, distinct. */
  positions: number[];
  /** The real (non-MASK) token id at each position. */
  ids: number[];
}

/** Options of {@linkcode sampleIds}. */
export interface SampleOptions {
  /** Sampling method (see the module doc for the supported combinations). */
  method: SampleMethod;
  /** Number of steps (for `confidence`: the most; it stops when nothing is masked). */
  steps: number;
  /** T: tokens per sequence. */
  length: number;
  /** B: sequences sampled together. Default 1. */
  batch?: number;
  /** Seed of a fresh `new Rng(seed)`; give this or `rng`. */
  seed?: number;
  /** A generator to draw from (advanced by the call); give this or `seed`. */
  rng?: Rng;
  /** Noise schedule of the score-based methods. Default `"loglinear"` (the trainer's). */
  schedule?: ScheduleName | NoiseSchedule;
  /** Forward process the model was trained for. Default `"absorb"`. */
  graph?: Graph;
  /** Output parameterisation. Default `"logits"` (MDLM / ELBO-trained and the notebook's). */
  output?: DenoiserOutput;
  /**
   * `logScore` under `absorb`: the network output is SEDD's unscaled log-score, shifted by
   * `-log(expm1(sigma)) - log(V - 1)` as the score-entropy loss does. Default true.
   */
  scaleBySigma?: boolean;
  /** Tokens fixed at given positions, re-imposed before and after every step. */
  fixed?: FixedTokens;
  /**
   * Whether the network reads sigma (time conditioning). A time-conditioned network gives a
   * different output at every step, so `ancestral` never reuses it. Default false.
   */
  timeConditioned?: boolean;
  /** `ancestral`: reuse the last output while no token changed (MDLM's `ddpm_cache`). Default true. */
  cache?: boolean;
  /** `confidence`: whether MASK may be predicted (see `confidence.ts`). Default false. */
  allowMask?: boolean;
  /**
   * Called with a copy of the ids `(B,T)` after each step (`step` = 1, 2, ...) and, for the
   * score-based methods, after the final denoising step (`step = steps + 1`).
   */
  onStep?: (ids: Int32Array, step: number) => void;
}

/** What {@linkcode sampleIds} returns. */
export interface SampleResult {
  /** The sampled ids (B,T). */
  ids: Int32Array;
  /** Calls of the denoiser. */
  evaluations: number;
  /** Calls avoided by `ancestral` caching. */
  savedEvaluations: number;
}

/** Final time of the grid, SEDD's and MDLM's sampling eps. */
export const T_EPS = 1e-5;

/** The confidence sampler's cap on the masked fraction when it names a sigma (loglinear's at t = 1). */
export const MAX_MASK_FRACTION = 1 - 1e-3;

function fixedMask(fixed: FixedTokens | undefined, T: number, V: number, maskId: number) {
  if (fixed === undefined) return null;
  const { positions, ids } = fixed;
  if (!Array.isArray(positions) || !Array.isArray(ids) || positions.length !== ids.length) {
    throw new TypeError(
      `Invalid fixed tokens: expected arrays positions and ids of equal length, got ${
        Array.isArray(positions) ? positions.length : typeof positions
      } and ${Array.isArray(ids) ? ids.length : typeof ids}`,
    );
  }
  const mask = new Uint8Array(T);
  for (let j = 0; j < positions.length; j++) {
    const p = positions[j];
    if (!Number.isInteger(p) || p < 0 || p >= T) {
      throw new RangeError(`Fixed position out of range: expected 0 <= p < ${T}, got ${p} at ${j}`);
    }
    if (mask[p] === 1) throw new RangeError(`Duplicate fixed position: ${p} at ${j}`);
    const id = ids[j];
    if (!Number.isInteger(id) || id < 0 || id >= V || id === maskId) {
      throw new RangeError(
        `Fixed token id out of range: expected 0 <= id < ${V} and not MASK (${maskId}), got ${id} at ${j}`,
      );
    }
    mask[p] = 1;
  }
  return mask;
}

function impose(ids: Int32Array, fixed: FixedTokens | undefined, B: number, T: number): void {
  if (fixed === undefined) return;
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < fixed.positions.length; j++) ids[b * T + fixed.positions[j]] = fixed.ids[j];
  }
}

/** What {@linkcode prepareSample} resolves from the options: each checked, defaults applied. */
export interface PreparedSample {
  /** The method. */
  method: SampleMethod;
  /** Steps. */
  steps: number;
  /** Tokens per sequence. */
  T: number;
  /** Sequences. */
  B: number;
  /** The forward process. */
  graph: Graph;
  /** The output parameterisation. */
  output: DenoiserOutput;
  /** The generator drawn from (`options.rng`, or a fresh one from `options.seed`). */
  rng: Rng;
  /** The noise schedule. */
  schedule: NoiseSchedule;
  /** The fixed tokens as given. */
  fixed: FixedTokens | undefined;
  /** 1 where a position is fixed (T), or null. */
  fmask: Uint8Array | null;
  /** The step callback. */
  onStep: ((ids: Int32Array, step: number) => void) | undefined;
  /** The starting ids (B,T): MASK (absorb) or uniform real tokens drawn from `rng` (uniform), fixed tokens imposed. */
  ids: Int32Array;
}

/**
 * Checks the options of {@linkcode sampleIds} (one-line errors naming what was expected) and
 * draws the starting ids, as every implementation of the samplers does first.
 *
 * @param V Vocabulary size including MASK.
 * @param maskId Id of MASK.
 * @param options The options.
 * @returns The resolved settings and the starting ids.
 */
export function prepareSample(V: number, maskId: number, options: SampleOptions): PreparedSample {
  if (options === null || typeof options !== "object") {
    throw new TypeError(`Invalid options: expected an object, got ${String(options)}`);
  }
  checkInt("vocabulary size", V, 3);
  if (!Number.isInteger(maskId) || maskId < 0 || maskId >= V) {
    throw new RangeError(`Invalid maskId: expected an integer 0 <= maskId < ${V}, got ${maskId}`);
  }
  const method = oneOf(
    "method",
    options.method,
    [
      "confidence",
      "euler",
      "tweedie",
      "ancestral",
    ] as const,
  );
  const steps = checkInt("steps", options.steps, 1);
  const T = checkInt("length", options.length, 1);
  const B = checkInt("batch", options.batch ?? 1, 1);
  const graph = oneOf("graph", options.graph, ["absorb", "uniform"] as const, "absorb");
  const output = oneOf("output", options.output, ["logits", "logScore"] as const, "logits");
  if (graph === "uniform" && (method === "confidence" || method === "ancestral")) {
    throw new RangeError(
      `Unsupported combination: method "${method}" needs the absorb graph (masks to unmask), got graph "uniform"; use "euler" or "tweedie"`,
    );
  }
  if (graph === "uniform" && output !== "logScore") {
    throw new RangeError(
      `Unsupported combination: the uniform graph needs output "logScore" (SEDD), got "${output}"`,
    );
  }
  let rng: Rng;
  if (options.rng instanceof Rng) rng = options.rng;
  else if (options.rng !== undefined) {
    throw new TypeError(`Invalid rng: expected an Rng, got ${typeof options.rng}`);
  } else if (options.seed !== undefined) rng = new Rng(options.seed);
  else throw new TypeError("Missing randomness: expected options.seed or options.rng, got neither");
  const schedule = typeof options.schedule === "object" && options.schedule !== null
    ? options.schedule
    : createSchedule(options.schedule ?? "loglinear");
  if ((method === "euler" || method === "tweedie") && !Number.isFinite(schedule.sigma(1))) {
    throw new RangeError(
      `Unsupported schedule for ${method}: expected a finite sigma(1) (loglinear or geometric), got ${
        schedule.sigma(1)
      } (${schedule.name})`,
    );
  }
  const fixed = options.fixed;
  const fmask = fixedMask(fixed, T, V, maskId);
  const onStep = options.onStep;
  if (onStep !== undefined && typeof onStep !== "function") {
    throw new TypeError(`Invalid onStep: expected a function, got ${typeof onStep}`);
  }

  const ids = new Int32Array(B * T);
  if (graph === "absorb") ids.fill(maskId);
  else {
    for (let i = 0; i < ids.length; i++) {
      const r = rng.int(V - 1); // SEDD's sample_limit: uniform over the real tokens
      ids[i] = r < maskId ? r : r + 1;
    }
  }
  impose(ids, fixed, B, T);
  return { method, steps, T, B, graph, output, rng, schedule, fixed, fmask, onStep, ids };
}

/**
 * Samples `B` sequences of `T` token ids from a denoiser.
 *
 * @param denoise The network: `(ids (B,T), sigma (B)) -> output (B,T,V)`.
 * @param V Vocabulary size including MASK.
 * @param maskId Id of MASK (the tokenizer's `maskId`, `V - 1`).
 * @param options Method, steps, length, seed and the rest of {@linkcode SampleOptions}.
 * @returns The ids and how many denoiser calls were made and saved.
 *
 * @example A stub that always prefers token 1: every free position ends as 1
 * ```ts
 * import { sampleIds } from "./sample_ids.ts";
 * import assert from "node:assert/strict";
 *
 * const V = 4, maskId = 3;
 * const denoise = (ids: Int32Array) => {
 *   const out = new Float32Array(ids.length * V);
 *   for (let i = 0; i < ids.length; i++) out[i * V + 1] = 50;
 *   return out;
 * };
 * const { ids } = sampleIds(denoise, V, maskId, {
 *   method: "ancestral", steps: 8, length: 4, seed: 1, fixed: { positions: [0], ids: [2] },
 * });
 * assert.deepEqual([...ids], [2, 1, 1, 1]);
 * ```
 */
export function sampleIds(
  denoise: Denoiser,
  V: number,
  maskId: number,
  options: SampleOptions,
): SampleResult {
  checkDenoiser(denoise);
  const run = sampling(V, maskId, options);
  let r = run.next();
  while (!r.done) r = run.next(denoise(r.value.ids, r.value.sigma));
  return r.value;
}

/**
 * {@linkcode sampleIds} with a denoiser that may answer asynchronously (a worker pool,
 * `createDitPool`): the same steps and draws, so the same seed and the same network outputs give
 * the same ids.
 *
 * @param denoise The network: `(ids (B,T), sigma (B)) -> output (B,T,V)`, or a promise of it.
 * @param V Vocabulary size including MASK.
 * @param maskId Id of MASK.
 * @param options As {@linkcode sampleIds}'s.
 * @returns The ids and the evaluation counts.
 *
 * @example The stub of `sampleIds`' example, answering through a promise
 * ```ts
 * import { sampleIds, sampleIdsAsync } from "./sample_ids.ts";
 * import assert from "node:assert/strict";
 *
 * const V = 4, maskId = 3;
 * const denoise = (ids: Int32Array) => {
 *   const out = new Float32Array(ids.length * V);
 *   for (let i = 0; i < ids.length; i++) out[i * V + (i % 3)] = 2;
 *   return out;
 * };
 * const options = { method: "euler", steps: 8, length: 6, seed: 3 } as const;
 * const got = await sampleIdsAsync((ids) => Promise.resolve(denoise(ids)), V, maskId, options);
 * assert.deepEqual(got, sampleIds(denoise, V, maskId, options));
 * ```
 */
export async function sampleIdsAsync(
  denoise: AsyncDenoiser,
  V: number,
  maskId: number,
  options: SampleOptions,
): Promise<SampleResult> {
  checkDenoiser(denoise);
  const run = sampling(V, maskId, options);
  let r = run.next();
  while (!r.done) r = run.next(await denoise(r.value.ids, r.value.sigma));
  return r.value;
}

function checkDenoiser(denoise: unknown): void {
  if (typeof denoise !== "function") {
    throw new TypeError(`Invalid denoiser: expected a function, got ${typeof denoise}`);
  }
}

/** One call of the denoiser the sampler asks for: the current ids and noise levels. */
interface DenoiserCall {
  ids: Int32Array;
  sigma: Float32Array;
}

/**
 * The sampler as a generator: it yields each denoiser call it needs and is resumed with the
 * output, so the synchronous and the asynchronous entry points share every step.
 */
function* sampling(
  V: number,
  maskId: number,
  options: SampleOptions,
): Generator<DenoiserCall, SampleResult, Float32Array> {
  const { method, steps, T, B, graph, output, rng, schedule, fixed, fmask, onStep, ids } =
    prepareSample(V, maskId, options);

  const sigmaB = new Float32Array(B);
  let evaluations = 0;
  let savedEvaluations = 0;
  const request: DenoiserCall = { ids, sigma: sigmaB };
  function* call(): Generator<DenoiserCall, Float32Array, Float32Array> {
    evaluations++;
    const out = yield request;
    if (!(out instanceof Float32Array) || out.length !== B * T * V) {
      throw new TypeError(
        `Invalid denoiser output: expected a Float32Array of length B*T*V = ${B * T * V}, got ${
          out instanceof Float32Array ? `length ${out.length}` : typeof out
        }`,
      );
    }
    return out;
  }
  const report = (step: number) => onStep?.(ids.slice(), step);

  if (method === "confidence") {
    // The notebook: k = max(1, T // steps). The last step unmasks everything still masked, so no
    // MASK survives when k * steps falls short of the masked count (the notebook would stop there
    // with masks left). It stops as soon as nothing is masked, before calling the network.
    const k = Math.max(1, Math.floor(T / steps));
    const allowMask = options.allowMask ?? false;
    for (let step = 0; step < steps; step++) {
      impose(ids, fixed, B, T);
      let anyMasked = false;
      for (let b = 0; b < B; b++) {
        let m = 0;
        for (let t = 0; t < T; t++) if (ids[b * T + t] === maskId) m++;
        if (m > 0) anyMasked = true;
        // Under absorb, maskProb = 1 - e^-sigma for any schedule: name the sigma of the masked fraction.
        sigmaB[b] = -Math.log1p(-Math.min(m / T, MAX_MASK_FRACTION));
      }
      if (!anyMasked) break;
      const out = yield* call();
      confidenceStep(ids, out, fmask, B, T, V, maskId, step === steps - 1 ? T : k, allowMask, rng);
      impose(ids, fixed, B, T);
      report(step + 1);
    }
    return { ids, evaluations, savedEvaluations };
  }

  const ctx: UpdateContext = {
    V,
    maskId,
    graph,
    output,
    scaleBySigma: options.scaleBySigma ?? true,
  };
  const scratch = createScratch(V);
  const caching = method === "ancestral" && (options.cache ?? true) &&
    options.timeConditioned !== true;
  let cached: Float32Array | null = null;
  const grid = (i: number) => 1 + ((T_EPS - 1) * i) / steps; // linspace(1, eps, steps + 1)
  const dt = (1 - T_EPS) / steps;
  for (let i = 0; i < steps; i++) {
    const t = grid(i);
    const s = grid(i + 1);
    const sigma = schedule.sigma(t);
    sigmaB.fill(sigma);
    impose(ids, fixed, B, T);
    let out: Float32Array;
    if (cached !== null) {
      out = cached;
      savedEvaluations++;
    } else out = yield* call();
    let changed: boolean;
    if (method === "euler") {
      const rule = { kind: "euler" as const, rate: dt * schedule.dsigma(t) };
      changed = seddUpdate(ids, out, fmask, B, T, sigma, rule, ctx, rng, scratch);
    } else if (method === "tweedie") {
      const rule = { kind: "tweedie" as const, dsig: sigma - schedule.sigma(s) };
      changed = seddUpdate(ids, out, fmask, B, T, sigma, rule, ctx, rng, scratch);
    } else {
      const mT = schedule.maskProb(t);
      const mS = schedule.maskProb(s);
      changed = ancestralUpdate(ids, out, fmask, B, T, mT, mS, ctx, rng, scratch);
    }
    // MDLM's ddpm_cache: keep the output only while nothing changed (the callee may reuse its
    // buffer, so keep a copy).
    cached = caching && !changed ? (cached ?? out.slice()) : null;
    impose(ids, fixed, B, T);
    report(i + 1);
  }
  // The final denoising step at t = eps.
  const sigma = schedule.sigma(T_EPS);
  sigmaB.fill(sigma);
  impose(ids, fixed, B, T);
  if (method === "ancestral") {
    let out: Float32Array;
    if (cached !== null) {
      out = cached;
      savedEvaluations++;
    } else out = yield* call();
    argmaxUpdate(ids, out, fmask, B, T, V, maskId);
  } else {
    const out = yield* call();
    seddUpdate(ids, out, fmask, B, T, sigma, { kind: "denoise", sigma }, ctx, rng, scratch);
  }
  impose(ids, fixed, B, T);
  report(steps + 1);
  return { ids, evaluations, savedEvaluations };
}
