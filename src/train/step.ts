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
import { forwardParts } from "../model/layout.ts";
import { fillBatch } from "./batch.ts";
import type { GradientPool } from "./pool.ts";
import type { Settings } from "./setup.ts";
import { isDitModel } from "./net.ts";
import type { Model } from "../model/model.ts";

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
 * @param sumSquares The sum of the squares of `grads` where the caller has it already (a pool
 *   that summed it with the gradient, in this function's order); omitted: summed here.
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
export function clipGradNorm(grads: Float32Array, maxNorm: number, sumSquares?: number): number {
  let sum = 0;
  if (sumSquares !== undefined) sum = sumSquares;
  else for (let i = 0; i < grads.length; i++) sum += grads[i] * grads[i];
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

let mainAdamW: ReturnType<typeof createWasmAdamW> | null | undefined;

/**
 * The main thread's AdamW in the WebAssembly SIMD module, or `null` where SIMD does not
 * validate (then `adamwStep`). The two give the same bits, so the choice never changes a run.
 */
function wasmAdamWOnMainThread(): ReturnType<typeof createWasmAdamW> | null {
  if (mainAdamW === undefined) mainAdamW = defaultBackend() === "ts" ? null : createWasmAdamW();
  return mainAdamW;
}

/** A gradient the workers are computing ahead: its step and the pool's answer. */
export interface PendingGradient {
  /** The step whose batch the workers hold. */
  step: number;
  /** The batch loss, once the workers are done (see `GradientPool.gradient`). */
  loss: Promise<number>;
}

/**
 * Takes step `step`: batch, gradient, clip, finiteness check, AdamW.
 *
 * With `next` (a worker pool with a gate, and WebAssembly SIMD for AdamW), the step after overlaps this
 * step's AdamW: once the clipped gradient is known good, the batch of step `next` is drawn and
 * the workers start it, then AdamW updates the parameters part by part (the embedding and head,
 * then layer by layer, `forwardParts`), publishing each, and every worker's forward pass reads
 * each part as soon as it is final. The returned `pending` is that gradient: pass it to the
 * call of step `next` (or await and drop it when the run stops there). Same bits as without.
 *
 * @param ctx The pool, data, settings and optimizer.
 * @param step The step being taken (0-based).
 * @param lr Its learning rate.
 * @param whereKept What a stopped run says about its checkpoints (appended to the message).
 * @param pending The gradient of `step` started by the call before, if any.
 * @param next Start the gradient of this step during AdamW (ignored without workers or SIMD).
 * @returns The step's loss, its gradient norm before clipping, and the started gradient.
 * @throws {NonFiniteError} On a non-finite loss or gradient norm; the parameters are untouched.
 */
export async function takeStep(
  ctx: StepContext,
  step: number,
  lr: number,
  whereKept: () => string,
  pending?: PendingGradient,
  next?: number,
): Promise<{ loss: number; gradNorm: number; pending?: PendingGradient }> {
  const { pool } = ctx;
  const s = ctx.settings;
  if (pending !== undefined && pending.step !== step) {
    throw new RangeError(`Pending gradient: expected step ${step}, got step ${pending.step}`);
  }
  if (pool.fusedStep) {
    // the whole step on the device, which leaves the parameters alone on a non-finite one
    fill(ctx, step);
    const r = await pool.fusedStep(step, lr, s, ctx.optimizer);
    checkFinite(step, r.loss, r.gradNorm, whereKept);
    return r;
  }
  const loss = await (pending?.loss ?? (fill(ctx, step), pool.gradient(step)));
  const gradNorm = clipGradNorm(pool.grads, s.clip, pool.sumSquares);
  checkFinite(step, loss, gradNorm, whereKept);
  const options = { lr, weightDecay: s.weightDecay };
  // A DiT's parameters have no transformer layout to publish part by part: one whole update.
  const adamw = wasmAdamWOnMainThread();
  if (adamw === null || isDitModel(pool.model)) {
    (adamw ?? adamwStep)(pool.model.params, pool.grads, ctx.optimizer, options);
    return { loss, gradNorm };
  }
  const model = pool.model as Model;
  const parts = forwardParts(model.layout, model.config.nLayers);
  const base = pool.gateValue ?? 0;
  let started: PendingGradient | undefined;
  if (next !== undefined && pool.workers > 1 && pool.publish !== undefined) {
    // every worker is done with this step's batch and gradient buffers: the next may start
    fill(ctx, next);
    const l = pool.gradient(next, base);
    l.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
    started = { step: next, loss: l };
  }
  // synchronous: no worker's answer is handled (nor pool.grads written) before it returns
  adamw(pool.model.params, pool.grads, ctx.optimizer, options, parts, (j) => {
    pool.publish?.(base + j + 1);
  });
  return { loss, gradNorm, pending: started };
}

function checkFinite(step: number, loss: number, gradNorm: number, whereKept: () => string) {
  if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
    throw new NonFiniteError(
      step,
      `Non-finite ${Number.isFinite(loss) ? "gradient" : "loss"} at step ${step}: loss ${loss}, ` +
        `gradient norm ${gradNorm}; training stopped${whereKept()}`,
    );
  }
}

/** Draws step `step`'s batch into the pool's shared batch. */
function fill(ctx: StepContext, step: number): void {
  const s = ctx.settings;
  fillBatch(ctx.pool.batch, ctx.trainTokens, {
    seed: s.seed,
    step,
    loss: s.loss,
    vocabSize: ctx.vocabSize,
    graph: s.graph,
    antithetic: s.antithetic,
  });
}
