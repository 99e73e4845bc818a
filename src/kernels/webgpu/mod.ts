/**
 * WebGPU compute kernels: device acquisition, GPU-resident tensors with batched dispatches, and
 * WGSL kernels for the model's ops with the signatures of the TypeScript reference kernels (the
 * context comes first, {@linkcode GpuTensor}s replace `Float32Array`s).
 *
 * - matmuls: {@linkcode gpuMatmulAB}, {@linkcode gpuMatmulABt}, {@linkcode gpuMatmulAtB}
 * - linear layer and residual: {@linkcode gpuLinearForward}, {@linkcode gpuLinearBackward},
 *   {@linkcode gpuResidualForward}
 * - LayerNorm: {@linkcode gpuLayernormForward}, {@linkcode gpuLayernormBackward}
 * - activations: {@linkcode gpuGeluForwardKeepGrad}, {@linkcode gpuScaleBackward},
 *   {@linkcode gpuReluForward}, {@linkcode gpuReluBackward}
 * - loss: {@linkcode gpuCrossEntropyForward}, {@linkcode gpuCrossEntropyBackward},
 *   {@linkcode gpuSum}, {@linkcode maskedRowWeights} (the `seed` and `elbo` losses as weighted rows)
 * - score entropy: {@linkcode scoreEntropyAbsorbConstants}, {@linkcode gpuScoreEntropyAbsorbForward},
 *   {@linkcode gpuScoreEntropyAbsorbBackward}, {@linkcode scoreEntropyUniformConstants},
 *   {@linkcode gpuScoreEntropyUniformForward}, {@linkcode gpuScoreEntropyUniformBackward}
 * - embedding: {@linkcode gpuEmbeddingForward}, {@linkcode gpuEmbeddingBackward}
 * - attention: {@linkcode gpuRopeForward} (and its inverse), {@linkcode gpuAttentionForward},
 *   {@linkcode gpuAttentionBackward}
 * - optimizer: {@linkcode createGpuAdamW}, {@linkcode gpuAdamwStep} (with optional clipping)
 * - sampling: {@linkcode sampleIdsGpu} (the samplers over a {@linkcode GpuDenoiser}, the same
 *   tokens as `sampleIds` for the same seed), {@linkcode measureSampleThroughput}; the update
 *   rules {@linkcode gpuSeddUpdate}, {@linkcode gpuAncestralUpdate}, {@linkcode gpuArgmaxUpdate},
 *   {@linkcode gpuConfidenceStep} over a {@linkcode GpuSampleWorkspace}; the generator in WGSL
 *   ({@linkcode RNG_WGSL}, {@linkcode rngJumpTable}, {@linkcode gpuRngDraws}); and
 *   {@linkcode createTableDenoiser}, a stand-in model for tests and benches
 * - adaLN and SiLU: {@linkcode gpuModulateForward}, {@linkcode gpuModulateBackward},
 *   {@linkcode gpuGatedResidualForward}, {@linkcode gpuGatedResidualBackward},
 *   {@linkcode gpuSiluForward}, {@linkcode gpuSiluBackward}; dropout and copies:
 *   {@linkcode gpuDropoutInPlace}, {@linkcode gpuDropoutBackward}, {@linkcode gpuCopy}
 *
 * On these kernels, the whole model (`model.ts`: {@linkcode createGpuModel},
 * {@linkcode gpuModelForward}, {@linkcode gpuModelBackward}, {@linkcode createGpuDenoiser}), a
 * whole training step (`train_step.ts`: {@linkcode createGpuTrainer}, {@linkcode gpuTrainStep}),
 * the DiT's forward pass as a sampler's denoiser (`dit.ts`: {@linkcode createGpuDit},
 * {@linkcode createGpuDitDenoiser}, with its own {@linkcode gpuDitAttention},
 * {@linkcode gpuGeluTanh} and {@linkcode gpuSeddOutput})
 * and the backend's choice (`select.ts`: {@linkcode resolveAnyBackend}): `train()` and
 * `evaluateAsync()` run on them with `backend: "webgpu"`.
 *
 * @example A linear layer's forward pass on the GPU
 * ```ts
 * import assert from "node:assert/strict";
 * import { acquireGpu, GpuContext, gpuMatmulABt } from "./mod.ts";
 *
 * const gpu = await acquireGpu();
 * if (gpu.ok) {
 *   const ctx = new GpuContext(gpu.device);
 *   const x = ctx.upload(new Float32Array([1, 2])); // (1,2)
 *   const w = ctx.upload(new Float32Array([3, 4, 5, 6])); // (2,2): out 2, in 2
 *   const b = ctx.upload(new Float32Array([1, -1]));
 *   const y = ctx.zeros(2);
 *   gpuMatmulABt(ctx, y, x, w, b, 1, 2, 2);
 *   assert.deepEqual([...await ctx.read(y)], [12, 16]);
 *   await ctx.destroy();
 * }
 * ```
 *
 * @module
 */

export { acquireGpu, type AcquireGpuOptions, describeAdapter, type GpuAcquire } from "./device.ts";
export {
  type Binding,
  checkDims,
  checkTensor,
  GpuContext,
  type GpuDtype,
  GpuTensor,
  grid,
  MAX_GROUPS_X,
} from "./context.ts";
export {
  gpuMatmul,
  gpuMatmulAB,
  gpuMatmulABt,
  gpuMatmulAtB,
  type GpuMatmulFn,
  MATMUL_TILE,
  MATMUL_TK,
  type MatmulKind,
} from "./matmul.ts";
export { entry, reductions } from "./wgsl.ts";
export { gpuLinearBackward, gpuLinearForward, gpuResidualForward } from "./linear.ts";
export { gpuLayernormBackward, gpuLayernormForward } from "./layernorm.ts";
export {
  gpuGeluForwardKeepGrad,
  gpuReluBackward,
  gpuReluForward,
  gpuScaleBackward,
} from "./activations.ts";
export {
  gpuCrossEntropyBackward,
  gpuCrossEntropyForward,
  gpuSum,
  gpuSumSquares,
  maskedRowWeights,
} from "./cross_entropy.ts";
export { gpuEmbeddingBackward, gpuEmbeddingForward } from "./embedding.ts";
export { createGpuAdamW, type GpuAdamwClip, type GpuAdamWState, gpuAdamwStep } from "./adamw.ts";
export type { AdamWOptions } from "../../optim/adamw.ts";
export { gpuAttentionBackward, gpuAttentionForward, gpuRopeForward } from "./attention.ts";
export {
  gpuScoreEntropyAbsorbBackward,
  gpuScoreEntropyAbsorbForward,
  type GpuScoreEntropyKernel,
  gpuScoreEntropyUniformBackward,
  gpuScoreEntropyUniformForward,
  scoreEntropyAbsorbConstants,
  scoreEntropyUniformConstants,
} from "./score_entropy.ts";
export {
  gpuGatedResidualBackward,
  gpuGatedResidualForward,
  gpuModulateBackward,
  gpuModulateForward,
  gpuSiluBackward,
  gpuSiluForward,
} from "./adaln.ts";
export { gpuCopy, gpuDropoutBackward, gpuDropoutInPlace } from "./elementwise.ts";
export {
  createGpuDit,
  createGpuDitDenoiser,
  type GpuDit,
  gpuDitAttention,
  type GpuDitDenoiser,
  type GpuDitDenoiserOptions,
  gpuGeluTanh,
  gpuSeddOutput,
} from "./dit.ts";
export {
  clearGpuParamSet,
  createGpuDenoiser,
  createGpuModel,
  createGpuParamSet,
  createGpuWorkspace,
  destroyGpuWorkspace,
  type GpuDenoiserConfig,
  type GpuForwardOptions,
  type GpuLayerTensors,
  type GpuModel,
  gpuModelBackward,
  type GpuModelDenoiser,
  gpuModelForward,
  type GpuModelTensors,
  type GpuParamSet,
  type GpuWorkspace,
  type OnGpu,
  readGpuParamSet,
  writeGpuParamSet,
} from "./model.ts";
export {
  createGpuTrainer,
  type GpuBatchInput,
  type GpuDraws,
  gpuEvaluate,
  gpuLoss,
  type GpuObjective,
  gpuSequenceLosses,
  type GpuStepOptions,
  type GpuTrainer,
  type GpuTrainerOptions,
  gpuTrainStep,
  readGpuTrainer,
  uploadBatch,
} from "./train_step.ts";
export {
  type AnyResolvedBackend,
  gpuSelfCheck,
  isSoftwareAdapter,
  resolveAnyBackend,
  type ResolveAnyOptions,
} from "./select.ts";
export { gpuRngDraws, RNG_WGSL, rngJumpTable } from "./rng.ts";
export {
  createGpuSampleWorkspace,
  destroyGpuSampleWorkspace,
  gpuAncestralUpdate,
  gpuArgmaxUpdate,
  gpuConfidenceStep,
  type GpuSampleWorkspace,
  gpuSeddUpdate,
  readChanged,
  readRngState,
} from "./sample_update.ts";
export {
  type GpuDenoiser,
  measureSampleThroughput,
  sampleIdsGpu,
  type SampleThroughput,
} from "./sampler.ts";
export {
  createTableDenoiser,
  type TableDenoiser,
  type TableDenoiserOptions,
} from "./table_denoiser.ts";
export type { Rng } from "../../rng.ts";
export type { SeddRule, UpdateContext } from "../../sampler/updates.ts";
export type {
  Denoiser,
  DenoiserOutput,
  FixedTokens,
  Graph,
  SampleMethod,
  SampleOptions,
  SampleResult,
} from "../../sampler/sample_ids.ts";
export type { NoiseSchedule, ScheduleName } from "../../diffusion/schedule.ts";
export type { DitConfig, DitModel } from "../../model/dit.ts";
