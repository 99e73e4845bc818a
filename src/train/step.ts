/**
 * One optimizer step: the batch of step `s` is drawn into the pool's shared memory, the pool
 * sums its workers' gradients in worker order, the global norm is clipped, a non-finite loss or
 * gradient stops the run, and AdamW updates the shared parameters in place.
 *
 * Dimensions: `P` parameters.
 *
 * @module
 */

import { type AdamWState, adamwStep, createWasmAdamW } from "../optim/adamw.ts";
import { defaultBackend } from "../nn/backend.ts";
import { fillBatch } from "./batch.ts";
import type { GradientPool } from "./pool.ts";
import type { Settings } from "./setup.ts";

/** A non-finite loss or gradient. */
export class NonFiniteError extends Error {
  /** The step that produced it. */
  readonly step: number;
  /**
   * Makes the error.
   *
   * @param step The step.
   * @param message The message.
   */
  constructor(step: number, message: string) {
    super(message);
    this.name = "NonFiniteError";
    this.step = step;
  }
}

/**
 * The learning rate of step `s` (0-based): linear warm-up to `lr` over `warmup` steps, then
 * constant or a cosine decay to `minLr` at `progress` 1.
 *
 * @param s The step being taken.
 * @param options `lr`, `warmup`, `schedule`, `minLr`, and `progress` in [0, 1] after warm-up.
 * @returns The learning rate.
 *
 * @example Warm-up then cosine
 * ```ts
 * import { learningRate } from "./step.ts";
 * import assert from "node:assert/strict";
 *
 * const o = { lr: 1, warmup: 4, schedule: "cosine" as const, minLr: 0 };
 * assert.equal(learningRate(1, { ...o, progress: 0 }), 0.5);
 * assert.equal(learningRate(10, { ...o, progress: 0.5 }), 0.5);
 * assert.equal(learningRate(10, { ...o, progress: 1 }), 0);
 * ```
 */
export function learningRate(
  s: number,
  options: {
    lr: number;
    warmup: number;
    schedule: "constant" | "cosine";
    minLr: number;
    progress: number;
  },
): number {
  const { lr, warmup, schedule, minLr } = options;
  if (s < warmup) return lr * (s + 1) / warmup;
  if (schedule === "constant") return lr;
  const p = Math.min(1, Math.max(0, options.progress));
  return minLr + (lr - minLr) * 0.5 * (1 + Math.cos(Math.PI * p));
}

/**
 * Scales `grads` so its global L2 norm is at most `maxNorm` (PyTorch's `clip_grad_norm_`:
 * coefficient `maxNorm / (norm + 1e-6)`, applied only when below 1).
 *
 * @param grads The gradient, `(P)`, scaled in place.
 * @param maxNorm The largest norm allowed; 0 or less: no clipping.
 * @returns The norm before clipping (accumulated in float64).
 *
 * @example
 * ```ts
 * import { clipGradNorm } from "./step.ts";
 * import assert from "node:assert/strict";
 *
 * const g = new Float32Array([3, 4]);
 * assert.equal(clipGradNorm(g, 1), 5);
 * assert.ok(Math.abs(Math.hypot(g[0], g[1]) - 1) < 1e-6);
 * ```
 */
export function clipGradNorm(grads: Float32Array, maxNorm: number): number {
  let sum = 0;
  for (let i = 0; i < grads.length; i++) sum += grads[i] * grads[i];
  const norm = Math.sqrt(sum);
  if (maxNorm > 0 && Number.isFinite(norm)) {
    const coef = maxNorm / (norm + 1e-6);
    if (coef < 1) { for (let i = 0; i < grads.length; i++) grads[i] *= coef; }
  }
  return norm;
}

/** What a step reads besides its index and learning rate. */
export interface StepContext {
  /** The pool: batch memory, summed gradients, shared parameters. */
  pool: GradientPool;
  /** Tokens the batch is drawn from. */
  trainTokens: Int32Array;
  /** The run's settings (seed, objective, clip, weight decay, ...). */
  settings: Settings;
  /** The tokenizer's vocabulary size. */
  vocabSize: number;
  /** AdamW state, updated in place. */
  optimizer: AdamWState;
}

/**
 * The learning rate of step `step` of a run: `progress` runs over the steps after warm-up, or,
 * with only a time budget, over the training time spent.
 *
 * @param step The step being taken (0-based).
 * @param s The run's settings.
 * @param steps The step budget (`Infinity` with only a time budget).
 * @param elapsedMs Training time so far.
 * @param budgetMs The time budget.
 * @returns The learning rate.
 */
export function stepLearningRate(
  step: number,
  s: Settings,
  steps: number,
  elapsedMs: number,
  budgetMs: number,
): number {
  const progress = Number.isFinite(steps)
    ? (step - s.warmup) / Math.max(1, steps - s.warmup)
    : elapsedMs / budgetMs; // a time budget decays the rate over wall-clock time
  return learningRate(step, { ...s, progress });
}

let mainAdamW: typeof adamwStep | undefined;

/**
 * The main thread's AdamW: in the WebAssembly SIMD module where it validates, else in
 * TypeScript. The two give the same bits, so the choice never changes a run.
 */
function adamwOnMainThread(): typeof adamwStep {
  mainAdamW ??= defaultBackend() === "ts" ? adamwStep : createWasmAdamW();
  return mainAdamW;
}

/**
 * Takes step `step`: batch, gradient, clip, finiteness check, AdamW.
 *
 * @param ctx The pool, data, settings and optimizer.
 * @param step The step being taken (0-based).
 * @param lr Its learning rate.
 * @param whereKept What a stopped run says about its checkpoints (appended to the message).
 * @returns The step's loss and its gradient norm before clipping.
 * @throws {NonFiniteError} On a non-finite loss or gradient norm; the parameters are untouched.
 */
export async function takeStep(
  ctx: StepContext,
  step: number,
  lr: number,
  whereKept: () => string,
): Promise<{ loss: number; gradNorm: number }> {
  const { pool, settings: s } = ctx;
  fillBatch(pool.batch, ctx.trainTokens, {
    seed: s.seed,
    step,
    loss: s.loss,
    vocabSize: ctx.vocabSize,
    graph: s.graph,
    antithetic: s.antithetic,
  });
  const loss = await pool.gradient(step);
  const gradNorm = clipGradNorm(pool.grads, s.clip);
  if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
    throw new NonFiniteError(
      step,
      `Non-finite ${Number.isFinite(loss) ? "gradient" : "loss"} at step ${step}: loss ${loss}, ` +
        `gradient norm ${gradNorm}; training stopped${whereKept()}`,
    );
  }
  const adamw = adamwOnMainThread();
  adamw(pool.model.params, pool.grads, ctx.optimizer, { lr, weightDecay: s.weightDecay });
  return { loss, gradNorm };
}
