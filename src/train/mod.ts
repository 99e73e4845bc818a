/**
 * The trainer: {@linkcode train} shards each batch's gradient over Web Workers (comlink), sums
 * the shards in a fixed order, clips and takes the AdamW step, or (backend `"webgpu"`) runs the
 * whole step on the GPU; checkpoints, resume and metrics live in a run directory.
 *
 * @module
 */

export {
  CheckpointError,
  clipGradNorm,
  type DitSpec,
  learningRate,
  NonFiniteError,
  type StepInfo,
  train,
  type TrainOptions,
  type TrainResult,
} from "./train.ts";
export type { FaultInjection } from "./shard.ts";
export { resolveTrainBackend, type TrainBackend } from "./setup.ts";
export type { AnyModel } from "./net.ts";
export type { WriteFault } from "./checkpointing.ts";
export { TRAIN_DEFAULTS, type TrainDefaults } from "./defaults.ts";
export { joinDocuments, splitTokens, type TokenSplit } from "./data.ts";
