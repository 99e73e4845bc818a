/**
 * Samplers for discrete diffusion language models: the notebook's confidence sampler, SEDD's
 * Euler and Tweedie predictors (absorb and uniform graphs), and MDLM's ancestral sampler with
 * caching; over any denoiser ({@linkcode sampleIds}) or over a model and tokenizer with prompts,
 * suffixes and infill templates ({@linkcode sample}); {@linkcode sampleIdsAsync} and
 * {@linkcode sampleAsync} take a denoiser that answers asynchronously, such as a DiT on worker
 * threads, and {@linkcode sampleAsync} runs every backend, the GPU's included.
 *
 * @example Ids from a stub denoiser
 * ```ts
 * import { sampleIds } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const denoise = (ids: Int32Array) => new Float32Array(ids.length * 4); // uniform p_x0, V = 4
 * const a = sampleIds(denoise, 4, 3, { method: "tweedie", steps: 8, length: 6, seed: 5 });
 * const b = sampleIds(denoise, 4, 3, { method: "tweedie", steps: 8, length: 6, seed: 5 });
 * assert.deepEqual(a.ids, b.ids);
 * assert.ok(!a.ids.includes(3));
 * ```
 *
 * @module
 */

export {
  type AsyncDenoiser,
  type Denoiser,
  type DenoiserOutput,
  type FixedTokens,
  type Graph,
  sampleIds,
  sampleIdsAsync,
  type SampleMethod,
  type SampleOptions,
  type SampleResult,
} from "./sample_ids.ts";
export {
  sample,
  sampleAsync,
  type SampleAsyncOptions,
  type SampleTextOptions,
  type SampleTextResult,
} from "./sample.ts";
export {
  conditioning,
  type ConditioningOptions,
  parseTemplate,
  type TemplatePart,
} from "./template.ts";
export { confidenceStep } from "./confidence.ts";
export { gumbelArgmax } from "./gumbel.ts";
export {
  ancestralUpdate,
  argmaxUpdate,
  createScratch,
  positionScores,
  type Scratch,
  type SeddRule,
  seddUpdate,
  seddWeights,
  subsProbs,
  type UpdateContext,
} from "./updates.ts";
/** The WebGPU context `sampleAsync`'s `gpu` option takes (`new GpuContext(device)`), and its tensors. */
export { GpuContext, type GpuDtype, GpuTensor } from "../kernels/webgpu/context.ts";
