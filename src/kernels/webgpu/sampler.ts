/**
 * Sampling on the GPU: {@linkcode sampleIdsGpu} runs the samplers of `src/sampler/sample_ids.ts`
 * (confidence, Euler, Tweedie, ancestral; absorb and uniform graphs) with the network as a
 * {@linkcode GpuDenoiser}, ids and outputs staying in GPU buffers, the per-position updates in the
 * WGSL kernels of `sample_update.ts`, and the same random numbers as the CPU path.
 *
 * Per step: the denoiser's dispatches and the update's go into one command encoder, submitted
 * once. Nothing is read back inside a step except what the host needs to decide the next one:
 * the ancestral sampler's changed flag (one word, only while caching), and the per-sequence count
 * of masked positions of a confidence step with `allowMask: true` (B words; without it the host
 * knows the count). `onStep` reads the ids back after each step because it is given a copy of them.
 * At the end the ids and the generator's state come back (`options.rng` is left where the CPU
 * path leaves it).
 *
 * Same seed, same tokens. The CPU path draws from one sequential stream; the GPU path draws the
 * same numbers (the generator of `rng.ts`, jumped to each position's offset), so both give the same
 * tokens unless float32 arithmetic decides something differently from float64:
 *
 * - a near-tie of two Gumbel keys (`w_y / -log U_y`, relative gap under about 1e-6), or of two
 *   confidences in the confidence sampler: that position's token (or which position is unmasked)
 *   may differ;
 * - whether a weight is positive, where the CPU's float64 value is within rounding of 0: the
 *   leftover weight `max(0, 1 - sum)` of MASK (absorb, `logScore` output) or of the current token
 *   (uniform Euler) when the sum is within about `V * 2^-24` of 1, a uniform Tweedie staggered
 *   score within rounding of 0, and weights beyond float64's underflow (logit gaps past ~744).
 *   A weight that is positive on one side only draws one number more or fewer there, which shifts
 *   the stream for every later position of that step and every later step. With `logits` output
 *   the MASK weight `1 - a / expm1(sigma)` is computed on the host in float64, so this case does
 *   not arise there (except within float64 rounding of 0).
 *
 * Random logits spread over a few units, as in the tests, meet none of these in thousands of
 * positions; a trained model's outputs can, rarely.
 *
 * @module
 */

import {
  MAX_MASK_FRACTION,
  prepareSample,
  type SampleOptions,
  type SampleResult,
  T_EPS,
} from "../../sampler/sample_ids.ts";
import type { UpdateContext } from "../../sampler/updates.ts";
import { checkTensor, GpuContext, GpuTensor } from "./context.ts";
import {
  createGpuSampleWorkspace,
  destroyGpuSampleWorkspace,
  gpuAncestralUpdate,
  gpuArgmaxUpdate,
  gpuConfidenceStep,
  gpuSeddUpdate,
  readChanged,
  readRngState,
} from "./sample_update.ts";
import { gpuCopy } from "./elementwise.ts";

/**
 * The network on the GPU, as the GPU samplers see it: ids `(B*T)` i32 and the noise level of each
 * sequence `(B)` in, raw outputs `(B*T*V)` f32 out (a tensor of at least that many elements, the
 * first B*T*V read), with the values the CPU `Denoiser` returns. It only records dispatches into
 * the context's pending encoder (no readback, no submit) and must not modify `ids`. The returned
 * tensor is read before the next call and may be reused by the callee.
 */
export type GpuDenoiser = (ids: GpuTensor, sigma: Float32Array, batch: number) => GpuTensor;

/**
 * Checks a {@linkcode GpuDenoiser} call's `ids` and `batch` against a model's context, with
 * one-line errors, and returns the sequence length.
 *
 * @param ids The call's ids: an i32 tensor of `batch` whole sequences.
 * @param batch Sequences (a positive integer).
 * @param context The model's longest sequence.
 * @returns `T = ids.length / batch`.
 */
export function checkDenoiserIds(ids: GpuTensor, batch: number, context: number): number {
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`Invalid batch: expected a positive integer, got ${batch}`);
  }
  if (!(ids instanceof GpuTensor) || ids.dtype !== "i32") {
    throw new TypeError(
      `Invalid ids: expected an i32 GpuTensor, got ${
        ids instanceof GpuTensor ? ids.dtype : typeof ids
      }`,
    );
  }
  if (ids.length === 0 || ids.length % batch !== 0) {
    throw new RangeError(
      `Invalid ids length: expected a positive multiple of batch ${batch}, got ${ids.length}`,
    );
  }
  const T = ids.length / batch;
  if (T > context) {
    throw new RangeError(`Sequence too long: expected T <= context ${context}, got ${T}`);
  }
  return T;
}

/**
 * {@linkcode sampleIds} of `src/sampler/sample_ids.ts` on the GPU: the same options, the same
 * checks and the same result for the same seed (see the module doc for the float32 ties), with
 * the denoiser and every update on the GPU.
 *
 * @param ctx The context the denoiser's tensors live in.
 * @param denoise The network: `(ids (B*T), sigma (B), B) -> output (B*T*V)`, on the GPU.
 * @param V Vocabulary size including MASK.
 * @param maskId Id of MASK.
 * @param options As for `sampleIds`.
 * @returns The ids and how many denoiser calls were made and saved.
 *
 * @example A denoiser that always prefers token 1 (V = 4, MASK = 3)
 * ```ts
 * import assert from "node:assert/strict";
 * import { acquireGpu, GpuContext } from "./mod.ts";
 * import { sampleIdsGpu } from "./sampler.ts";
 *
 * const gpu = await acquireGpu();
 * if (gpu.ok) {
 *   const ctx = new GpuContext(gpu.device);
 *   const logits = new Float32Array(4 * 4);
 *   for (let i = 0; i < 4; i++) logits[i * 4 + 1] = 50;
 *   const out = ctx.upload(logits);
 *   const { ids } = await sampleIdsGpu(ctx, () => out, 4, 3, {
 *     method: "ancestral", steps: 8, length: 4, seed: 1, fixed: { positions: [0], ids: [2] },
 *   });
 *   assert.deepEqual([...ids], [2, 1, 1, 1]);
 *   await ctx.destroy();
 * }
 * ```
 */
export async function sampleIdsGpu(
  ctx: GpuContext,
  denoise: GpuDenoiser,
  V: number,
  maskId: number,
  options: SampleOptions,
): Promise<SampleResult> {
  if (!(ctx instanceof GpuContext)) {
    throw new TypeError(`Invalid context: expected a GpuContext, got ${typeof ctx}`);
  }
  if (typeof denoise !== "function") {
    throw new TypeError(`Invalid denoiser: expected a function, got ${typeof denoise}`);
  }
  const { method, steps, T, B, graph, output, rng, schedule, fmask, onStep, ids } = prepareSample(
    V,
    maskId,
    options,
  );
  const N = B * T;
  if (N * V > 0xffffffff) {
    throw new RangeError(`sampleIdsGpu: expected B*T*V < 2^32, got ${B}*${T}*${V} = ${N * V}`);
  }
  const ws = createGpuSampleWorkspace(ctx, N, rng);
  const idsT = ctx.upload(ids);
  const fixedT = fmask === null ? null : ctx.upload(Int32Array.from(fmask));
  const owned: GpuTensor[] = [idsT];
  if (fixedT !== null) owned.push(fixedT);
  const sigmaB = new Float32Array(B);
  let evaluations = 0;
  let savedEvaluations = 0;
  const call = (): GpuTensor => {
    evaluations++;
    const out = denoise(idsT, sigmaB, B);
    checkTensor("Invalid denoiser output (B*T*V)", out, N * V);
    return out;
  };
  const report = async (step: number) => {
    if (onStep !== undefined) onStep(await ctx.read(idsT) as Int32Array, step);
  };
  try {
    if (method === "confidence") {
      const k = Math.max(1, Math.floor(T / steps));
      const allowMask = options.allowMask ?? false;
      const masked = new Int32Array(B);
      for (let i = 0; i < N; i++) if (ids[i] === maskId) masked[Math.floor(i / T)]++;
      const left = allowMask ? ctx.zeros(B, "i32") : null;
      if (left !== null) owned.push(left);
      for (let step = 0; step < steps; step++) {
        if (!masked.some((m) => m > 0)) break;
        for (let b = 0; b < B; b++) {
          sigmaB[b] = -Math.log1p(-Math.min(masked[b] / T, MAX_MASK_FRACTION));
        }
        const out = call();
        const kk = step === steps - 1 ? T : k;
        gpuConfidenceStep(ctx, ws, idsT, out, fixedT, B, T, V, maskId, kk, allowMask);
        if (left !== null) {
          // a position may "unmask" to MASK: ask the GPU how many stay masked
          gpuCopy(ctx, left, ws.remaining, B);
          masked.set(await ctx.read(left));
        } else {
          for (let b = 0; b < B; b++) masked[b] -= Math.min(kk, masked[b]);
          ctx.flush();
        }
        await report(step + 1);
      }
    } else {
      const uctx: UpdateContext = {
        V,
        maskId,
        graph,
        output,
        scaleBySigma: options.scaleBySigma ?? true,
      };
      const caching = method === "ancestral" && (options.cache ?? true) &&
        options.timeConditioned !== true;
      let cache: GpuTensor | null = null;
      let cached = false;
      const grid = (i: number) => 1 + ((T_EPS - 1) * i) / steps; // linspace(1, eps, steps + 1)
      const dt = (1 - T_EPS) / steps;
      for (let i = 0; i < steps; i++) {
        const t = grid(i);
        const s = grid(i + 1);
        const sigma = schedule.sigma(t);
        sigmaB.fill(sigma);
        let out: GpuTensor;
        if (cached && cache !== null) {
          out = cache;
          savedEvaluations++;
        } else out = call();
        if (method === "euler") {
          const rule = { kind: "euler" as const, rate: dt * schedule.dsigma(t) };
          gpuSeddUpdate(ctx, ws, idsT, out, fixedT, B, T, sigma, rule, uctx);
        } else if (method === "tweedie") {
          const rule = { kind: "tweedie" as const, dsig: sigma - schedule.sigma(s) };
          gpuSeddUpdate(ctx, ws, idsT, out, fixedT, B, T, sigma, rule, uctx);
        } else {
          const mT = schedule.maskProb(t);
          const mS = schedule.maskProb(s);
          gpuAncestralUpdate(ctx, ws, idsT, out, fixedT, B, T, mT, mS, uctx);
        }
        if (caching) {
          // MDLM's ddpm_cache: keep the output while nothing changed (a copy: the callee may
          // reuse its buffer)
          if (await readChanged(ctx, ws)) cached = false;
          else if (!cached) {
            if (cache === null) {
              cache = ctx.zeros(N * V);
              owned.push(cache);
            }
            gpuCopy(ctx, cache, out, N * V);
            cached = true;
          }
        } else ctx.flush();
        await report(i + 1);
      }
      // The final denoising step at t = eps.
      const sigma = schedule.sigma(T_EPS);
      sigmaB.fill(sigma);
      if (method === "ancestral") {
        let out: GpuTensor;
        if (cached && cache !== null) {
          out = cache;
          savedEvaluations++;
        } else out = call();
        gpuArgmaxUpdate(ctx, idsT, out, fixedT, B, T, V, maskId);
      } else {
        const out = call();
        const rule = { kind: "denoise" as const, sigma };
        gpuSeddUpdate(ctx, ws, idsT, out, fixedT, B, T, sigma, rule, uctx);
      }
    }
    const final = await ctx.read(idsT) as Int32Array;
    rng.setState(await readRngState(ctx, ws));
    if (method !== "confidence" && onStep !== undefined) onStep(final.slice(), steps + 1);
    return { ids: final, evaluations, savedEvaluations };
  } finally {
    destroyGpuSampleWorkspace(ws);
    for (const t of owned) t.destroy();
  }
}

/** What {@linkcode measureSampleThroughput} measured. */
export interface SampleThroughput {
  /** Tokens sampled per timed run (B*T). */
  tokens: number;
  /** Timed runs. */
  runs: number;
  /** Wall-clock seconds per run (from the call to the ids on the host). */
  seconds: number;
  /** Sampled tokens per second: `tokens / seconds`. */
  tokensPerSecond: number;
  /** Denoiser calls per run. */
  evaluations: number;
}

/**
 * Times {@linkcode sampleIdsGpu}: one untimed run first (shader compilation), then `runs` timed
 * runs with seeds `seed, seed + 1, ...`; tokens per second counts every sampled token of a run
 * (B*T) over its wall-clock time.
 *
 * @param ctx The context.
 * @param denoise The network on the GPU.
 * @param V Vocabulary size including MASK.
 * @param maskId Id of MASK.
 * @param options As for `sampleIdsGpu`, with a `seed` (not an `rng`).
 * @param runs Timed runs (default 1).
 * @returns Tokens, seconds per run and tokens per second.
 */
export async function measureSampleThroughput(
  ctx: GpuContext,
  denoise: GpuDenoiser,
  V: number,
  maskId: number,
  options: SampleOptions,
  runs = 1,
): Promise<SampleThroughput> {
  if (!Number.isInteger(runs) || runs < 1) {
    throw new RangeError(`Invalid runs: expected an integer >= 1, got ${runs}`);
  }
  const seed = options.seed;
  if (seed === undefined || options.rng !== undefined) {
    throw new TypeError("measureSampleThroughput: expected options.seed and no options.rng");
  }
  await sampleIdsGpu(ctx, denoise, V, maskId, options);
  let evaluations = 0;
  const t0 = performance.now();
  for (let r = 0; r < runs; r++) {
    const res = await sampleIdsGpu(ctx, denoise, V, maskId, { ...options, seed: (seed + r) >>> 0 });
    evaluations = res.evaluations;
  }
  const seconds = (performance.now() - t0) / 1000 / runs;
  const tokens = (options.batch ?? 1) * options.length;
  return { tokens, runs, seconds, tokensPerSecond: tokens / seconds, evaluations };
}
