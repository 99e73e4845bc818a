/**
 * The denoising transformer: config and presets, parameter layout, initialisation, forward and
 * backward passes; and the DiT of SEDD and MDLM (`createModel({ kind: "dit", ... })`, `ditForward`,
 * `ditBackward`), whose PyTorch state dicts load unchanged, with its float32 forward pass on the
 * fast kernels (`createDitRunner`).
 *
 * @example Loss and gradient of a tiny model
 * ```ts
 * import { createModel, lossAndGrad } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("tiny", { vocabSize: 10, seed: 0 });
 * const input = new Int32Array([9, 1, 2, 9]); // 9 is MASK
 * const target = new Int32Array([0, 1, 2, 3]);
 * const weight = new Float32Array([0.5, 0, 0, 0.5]); // average over the masked positions
 * const { loss, grads } = lossAndGrad(model, { input, target, weight }, { batch: 1 });
 * assert.ok(Number.isFinite(loss));
 * assert.equal(grads.length, model.params.length);
 * ```
 *
 * @module
 */

export {
  type ModelConfig,
  type Preset,
  type PresetName,
  presets,
  resolveConfig,
  validateConfig,
} from "./config.ts";
export {
  buildLayout,
  type LayerTensors,
  type Layout,
  type ModelTensors,
  paramTable,
  type TensorInfo,
  tensorViews,
  TIME_EMBED_DIM,
} from "./layout.ts";
export { initParams } from "./init.ts";
export {
  createModel,
  type CreateModelOptions,
  createWorkspace,
  type DropoutKeys,
  forward,
  type ForwardOptions,
  lossAndGrad,
  type LossAndGradOptions,
  type Model,
  modelBackward,
  modelForward,
  type ModelForwardOptions,
  validateTokens,
  type Workspace,
  workspaceBytes,
  type WorkspaceOptions,
} from "./model.ts";
export {
  createDit,
  type CreateDitOptions,
  ditBackward,
  type DitCache,
  type DitConfig,
  type DitConfigInput,
  ditForward,
  ditForwardCached,
  type DitForwardOptions,
  ditFromTensors,
  type DitModel,
  ditParamTable,
  ditStateDict,
  type DitTensorInput,
  esigm1Log,
  geluTanh,
  geluTanhGrad,
  validateDitConfig,
} from "./dit.ts";
export {
  createDitRunner,
  ditForwardFast,
  type DitForwardFastOptions,
  type DitPart,
  type DitRunner,
  ditRunnerBytes,
  type DitRunnerOptions,
  type DitRunOptions,
  type DitWeights,
  geluTanhInPlace,
} from "./dit_fast.ts";
export {
  createDitPool,
  DIT_SPLITS,
  ditPartRows,
  type DitPool,
  type DitPoolFault,
  type DitPoolOptions,
  type DitSplit,
  type DitWorkerApi,
  ditWorkerApi,
  type DitWorkerCall,
  DitWorkerError,
  type DitWorkerSetup,
} from "./dit_pool.ts";
export {
  createDitTrainer,
  ditTrainBytes,
  type DitTrainer,
  type DitTrainerOptions,
  type DitTrainRunOptions,
} from "./dit_train.ts";
export type { BackendChoice, BackendName, ResolvedBackend } from "../nn/backend.ts";
export { BACKEND_CHOICES, resolveBackend } from "../nn/backend.ts";
export type { BlasOptions } from "../kernels/blas.ts";
