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
import {
  createGpuModel,
  createGpuWorkspace,
  destroyGpuWorkspace,
  gpuModelForward,
} from "../kernels/webgpu/model.ts";
import { type GpuDenoiser, sampleIdsGpu } from "../kernels/webgpu/sampler.ts";
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
 * recording the forward pass into the context's pending encoder. The transformer kind only; a
 * DiT is refused here, the one place a GPU DiT would be wired in.
 *
 * @param ctx The context.
 * @param model The model.
 * @param B Sequences per call.
 * @param T Tokens per sequence.
 * @returns The denoiser and its `dispose`.
 * @throws TypeError for a DiT.
 */
export function gpuDenoiserFor(
  ctx: GpuContext,
  model: Model | DitModel,
  B: number,
  T: number,
): GpuDenoiserHandle {
  refuseDit(model);
  const gm = createGpuModel(ctx, model as Model);
  const ws = createGpuWorkspace(gm, B, T);
  const denoise: GpuDenoiser = (ids, sigma, batch) => {
    if (batch !== B || ids.length !== B * T) {
      throw new RangeError(
        `Invalid denoiser call: expected ${B} sequences of ${T} ids, got ${batch} and ${ids.length} ids`,
      );
    }
    return gpuModelForward(gm, ws, ids, B, T, { sigma });
  };
  const dispose = () => {
    destroyGpuWorkspace(ws);
    for (const t of gm.params.byName.values()) t.destroy();
  };
  return { denoise, dispose };
}

/** The kinds of model not on the GPU yet: a DiT. */
function refuseDit(model: Model | DitModel): void {
  if ((model.config as { kind?: string }).kind === "dit") {
    throw new TypeError(
      'Invalid model for the webgpu backend: expected a transformer, got a DiT (kind "dit" is ' +
        "not on webgpu: sample it on a CPU backend)",
    );
  }
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
 * @param model The model (the transformer kind).
 * @param V Vocabulary size including MASK.
 * @param maskId Id of MASK.
 * @param options The sampler's options (`length` and `batch` give the shape).
 * @param target The context, if the caller has one.
 * @returns The ids and the evaluation counts.
 * @throws Error (rejects) without an adapter, or for a DiT.
 */
export async function sampleIdsOnGpu(
  model: Model | DitModel,
  V: number,
  maskId: number,
  options: SampleOptions,
  target: GpuSampleTarget = {},
): Promise<SampleResult> {
  refuseDit(model); // before a device is opened
  const B = checkInt("batch", options.batch ?? 1, 1);
  const T = checkInt("length", options.length, 1);
  const own = target.gpu === undefined;
  const ctx = target.gpu ?? (await resolveAnyBackend("webgpu")).gpu!;
  let handle: GpuDenoiserHandle | undefined;
  try {
    handle = gpuDenoiserFor(ctx, model, B, T);
    return await sampleIdsGpu(ctx, handle.denoise, V, maskId, options);
  } finally {
    if (own) await ctx.destroy().catch(() => {});
    else {
      await ctx.sync().catch(() => {});
      handle?.dispose();
    }
  }
}
