/**
 * The WebGPU backend's pool: no workers; the whole model, its gradient and AdamW's moments live
 * on the GPU (`src/kernels/webgpu/train_step.ts`), and each step runs there in one command
 * encoder on the main thread, reading back only the loss and the gradient's norm. The batch is
 * the same `fillBatch` batch the CPU pools see (same data order and noise), and the dropout
 * masks come from the same streams, so a run on WebGPU follows the CPU run of the same seed
 * up to float rounding (the GPU sums in other orders).
 *
 * The parameters and moments come back to the host only through `sync` (before a checkpoint
 * and at the end of a run), in the CPU layout, so checkpoints are the same files and a run can
 * switch backend on resume.
 *
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { createModel } from "../model/model.ts";
import type { AdamWState } from "../optim/adamw.ts";
import type { GpuContext } from "../kernels/webgpu/context.ts";
import { readGpuParamSet } from "../kernels/webgpu/model.ts";
import {
  createGpuTrainer,
  gpuEvaluate,
  gpuGradient,
  gpuTrainStep,
  readGpuTrainer,
} from "../kernels/webgpu/train_step.ts";
import { createBatch, type GraphName, type LossName } from "./batch.ts";
import { type GradientPool, WorkerError } from "./pool.ts";

/** Options of {@linkcode createGpuPool}. */
export interface GpuPoolOptions {
  /** The device's context (the pool destroys it on `terminate`). */
  gpu: GpuContext;
  /** The model's config. */
  config: ModelConfig;
  /** Initial parameter values (copied). */
  params: Float32Array;
  /** AdamW's state to continue from (a resumed run's); its moments are uploaded. */
  optimizer: AdamWState;
  /** Sequences per batch. */
  batch: number;
  /** Tokens per sequence. */
  context: number;
  /** Run seed (dropout keys). */
  seed: number;
  /** The objective. */
  loss: LossName;
  /** The graph of `score-entropy`. */
  graph: GraphName;
}

/**
 * Checks that the run's largest GPU tensors fit the device's binding limit, with a message that
 * names the flags to lower.
 */
function checkFits(ctx: GpuContext, config: ModelConfig, B: number, T: number): void {
  const limit = ctx.device.limits.maxStorageBufferBindingSize;
  const { nHeads: NH, vocabSize: V, dFF: F } = config;
  const largest = 4 * B * T * Math.max(NH * T, V, F, 3 * config.dModel);
  if (largest > limit) {
    throw new RangeError(
      `Batch too large for this GPU: expected tensors of at most ${limit} bytes, got ${largest} ` +
        `for context ${T} × batch ${B} (lower --batch or --context)`,
    );
  }
}

/**
 * Starts the WebGPU pool: uploads the parameters and moments, allocates the workspace.
 *
 * @param options Device, config, parameters, optimizer state, batch shape, seed, objective.
 * @returns The pool (`workers` 0; `fusedStep` and `sync` present).
 */
export function createGpuPool(options: GpuPoolOptions): GradientPool {
  const { gpu: ctx, config, batch: B, context: T } = options;
  checkFits(ctx, config, B, T);
  const model = createModel(config, { params: options.params.slice() });
  const batch = createBatch(B, T);
  const grads = new Float32Array(model.params.length);
  const tr = createGpuTrainer(ctx, model, { batch: B, context: T, optimizer: options.optimizer });
  const objective = { loss: options.loss, graph: options.graph };
  let terminated = false;
  const live = () => {
    if (terminated) throw new Error("Gradient pool terminated: expected a live pool");
  };
  const fail = (step: number, e: unknown): never => {
    const detail = e instanceof Error ? e.message : String(e);
    throw new WorkerError(0, step, `on the GPU: ${detail}`, e);
  };
  return {
    workers: 0,
    model,
    batch,
    grads,
    async gradient(step: number): Promise<number> {
      // the gradient alone, read back into `grads` (the fused step never reads it)
      live();
      try {
        const dropout = { seed: options.seed, step, firstRow: 0 };
        const loss = await gpuGradient(tr.gm, tr.ws, tr.grads, batch, objective, dropout);
        await readGpuParamSet(ctx, tr.grads, model.layout, grads);
        return loss;
      } catch (e) {
        return fail(step, e);
      }
    },
    async evaluate(step: number): Promise<number> {
      live();
      try {
        return await gpuEvaluate(tr.gm, tr.ws, batch, objective);
      } catch (e) {
        return fail(step, e);
      }
    },
    async fusedStep(step, lr, settings, optimizer) {
      live();
      tr.step = optimizer.step;
      let r: { loss: number; gradNorm: number };
      try {
        r = await gpuTrainStep(tr, batch, {
          ...objective,
          step,
          seed: settings.seed,
          lr,
          weightDecay: settings.weightDecay,
          clip: settings.clip,
        });
      } catch (e) {
        return fail(step, e);
      }
      optimizer.step = tr.step;
      return r;
    },
    async sync(optimizer: AdamWState): Promise<void> {
      live();
      await readGpuTrainer(tr, { params: model.params, m: optimizer.m, v: optimizer.v });
      optimizer.step = tr.step;
    },
    terminate(): void {
      if (terminated) return;
      terminated = true;
      ctx.destroy().catch(() => {});
    },
  };
}
