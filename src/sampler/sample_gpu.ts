/**
 * The GPU half of `sampleAsync` (`sample.ts`): a model made into a `GpuDenoiser`
 * ({@linkcode gpuDenoiserFor}, the one place that does it) and the sampler run on it
 * ({@linkcode sampleIdsOnGpu}, `sampleIdsGpu` of `src/kernels/webgpu/sampler.ts`).
 *
 * @module
 */

import type { Model } from "../model/model.ts";
import type { DitModel } from "../model/dit.ts";
import type { GpuContext } from "../kernels/webgpu/context.ts";
import { createGpuDenoiser } from "../kernels/webgpu/model.ts";
import { type GpuDenoiser, sampleIdsGpu } from "../kernels/webgpu/sampler.ts";
import { createGpuDitDenoiser } from "../kernels/webgpu/dit.ts";
import { resolveAnyBackend } from "../kernels/webgpu/select.ts";
import { checkInt } from "../check.ts";
import type { SampleOptions, SampleResult } from "./sample_ids.ts";

/** A model's network on the GPU for one shape, and how to free what it holds there. */
export interface GpuDenoiserHandle {
  /** The network: `(ids (B*T), sigma (B), B) -> outputs (B*T*V)`, recorded on the context. */
  denoise: GpuDenoiser;
  /** Frees its GPU tensors (parameters and workspace); the context stays open. */
  dispose: () => void;
}

/**
 * Turns a model into the {@linkcode GpuDenoiser} the GPU samplers call, for `B` sequences of
 * `T` tokens: the parameters uploaded once, one workspace of exactly that shape, each call
 * recording the forward pass into the context's pending encoder. A transformer runs
 * `createGpuDenoiser` (`src/kernels/webgpu/model.ts`); a DiT runs `createGpuDitDenoiser` (`src/kernels/webgpu/dit.ts`), with the
 * values the CPU DiT denoiser of `sample()` gives (SEDD's log-scores, or MDLM's logits).
 *
 * @param ctx The context.
 * @param model The model.
 * @param B Sequences per call.
 * @param T Tokens per sequence.
 * @param timeConditioned A DiT only: false gives the network sigma 0 (default true).
 * @returns The denoiser and its `dispose`.
 */
export function gpuDenoiserFor(
  ctx: GpuContext,
  model: Model | DitModel,
  B: number,
  T: number,
  timeConditioned = true,
): GpuDenoiserHandle {
  const checkCall = (ids: { length: number }, batch: number) => {
    if (batch !== B || ids.length !== B * T) {
      throw new RangeError(
        `Invalid denoiser call: expected ${B} sequences of ${T} ids, got ${batch} and ${ids.length} ids`,
      );
    }
  };
  const d = (model.config as { kind?: string }).kind === "dit"
    ? createGpuDitDenoiser(ctx, model as DitModel, { batch: B, context: T, timeConditioned })
    : createGpuDenoiser(ctx, model as Model, { batch: B, context: T });
  const denoise: GpuDenoiser = (ids, sigma, batch) => (checkCall(ids, batch), d(ids, sigma, batch));
  return { denoise, dispose: () => d.dispose() };
}

/** Where {@linkcode sampleIdsOnGpu} runs. */
export interface GpuSampleTarget {
  /** A context to use and leave open; default one opened for the call and destroyed after. */
  gpu?: GpuContext;
}

/**
 * `sampleIds` with the model as the denoiser, on the GPU: `sampleIdsGpu` over
 * {@linkcode gpuDenoiserFor}'s network. The same result as `sampleIds` over the model's CPU
 * forward pass for the same options, except where float32 decides a near-tie differently
 * (see `src/kernels/webgpu/sampler.ts`).
 *
 * @param model The model: a transformer or a DiT.
 * @param V Vocabulary size including MASK.
 * @param maskId Id of MASK.
 * @param options The sampler's options (`length` and `batch` give the shape).
 * @param target The context, if the caller has one.
 * @returns The ids and the evaluation counts.
 * @throws Error (rejects) without an adapter.
 */
export async function sampleIdsOnGpu(
  model: Model | DitModel,
  V: number,
  maskId: number,
  options: SampleOptions,
  target: GpuSampleTarget = {},
): Promise<SampleResult> {
  const B = checkInt("batch", options.batch ?? 1, 1);
  const T = checkInt("length", options.length, 1);
  const own = target.gpu === undefined;
  const ctx = target.gpu ?? (await resolveAnyBackend("webgpu")).gpu!;
  let handle: GpuDenoiserHandle | undefined;
  try {
    handle = gpuDenoiserFor(ctx, model, B, T, options.timeConditioned ?? true);
    return await sampleIdsGpu(ctx, handle.denoise, V, maskId, options);
  } finally {
    if (own) await ctx.destroy().catch(() => {});
    else {
      await ctx.sync().catch(() => {});
      handle?.dispose();
    }
  }
}
