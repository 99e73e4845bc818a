/**
 * A whole training step on the GPU: the batch's ids, targets and loss weights uploaded, the
 * forward pass, the loss (`seed`, `elbo` or `score-entropy`, as `src/train/shard.ts` computes
 * them), the backward pass, the gradient's global norm, clipping and AdamW, all recorded into
 * one command encoder; the only read-back is the loss and the gradient's sum of squares (two
 * floats). Parameters, gradients and both moments stay on the GPU for the run and come back only
 * when asked ({@linkcode readGpuTrainer}, for a checkpoint), in the layout the CPU backends
 * use, so a checkpoint written from the GPU resumes on the CPU and the other way round.
 *
 * A step whose loss or gradient norm is not finite leaves the parameters and moments as they
 * were (the AdamW kernel checks the statistics before updating) and reports the values, so the
 * trainer stops the run with its usual error.
 *
 * @module
 */

import type { DropoutKeys, Model } from "../../model/model.ts";
import type { AdamWState } from "../../optim/adamw.ts";
import type { BatchBuffers, GraphName, LossName } from "../../train/batch.ts";
import type { GpuContext } from "./context.ts";
import {
  clearGpuParamSet,
  createGpuModel,
  createGpuParamSet,
  createGpuWorkspace,
  destroyGpuWorkspace,
  type GpuModel,
  gpuModelBackward,
  gpuModelForward,
  type GpuParamSet,
  type GpuWorkspace,
  readGpuParamSet,
} from "./model.ts";
import {
  gpuCrossEntropyBackward,
  gpuCrossEntropyForward,
  gpuSum,
  gpuSumSquares,
  maskedRowWeights,
} from "./cross_entropy.ts";
import {
  gpuScoreEntropyAbsorbBackward,
  gpuScoreEntropyAbsorbForward,
  gpuScoreEntropyUniformBackward,
  gpuScoreEntropyUniformForward,
  scoreEntropyAbsorbConstants,
  scoreEntropyUniformConstants,
} from "./score_entropy.ts";
import { type GpuAdamWState, gpuAdamwStep } from "./adamw.ts";

/** The objective of a step: which loss, and the graph of `score-entropy`. */
export interface GpuObjective {
  /** `"seed"` (weighted cross-entropy with the batch's weights), `"elbo"` or `"score-entropy"`. */
  loss: LossName;
  /** The graph of `score-entropy` (default `"absorb"`). */
  graph?: GraphName;
}

/** The batch fields a GPU step reads (a `BatchBuffers`). */
export type GpuBatchInput = Pick<
  BatchBuffers,
  "B" | "T" | "input" | "target" | "weight" | "sigma" | "dsigma" | "scale"
>;

/**
 * Uploads a batch's ids and its loss inputs into `ws` (each upload submits what is pending, in
 * order): the noised ids, the clean ids as targets, and the loss weights (`seed`: the batch's;
 * `elbo`: MDLM's per-sequence weight on the masked rows) or the score entropy's per-sequence
 * constants.
 *
 * @param ctx The context.
 * @param ws The workspace.
 * @param batch The batch (its `B` rows of `T` ids).
 * @param objective Loss and graph.
 * @param V Vocabulary size (the mask is `V - 1`).
 */
export function uploadBatch(
  ctx: GpuContext,
  ws: GpuWorkspace,
  batch: GpuBatchInput,
  objective: GpuObjective,
  V: number,
): void {
  const { B, T } = batch;
  const N = B * T;
  const input = batch.input.subarray(0, N), target = batch.target.subarray(0, N);
  ctx.write(ws.tokens, input);
  ctx.write(ws.targets, target);
  const scale = batch.scale[0];
  const sigma = batch.sigma.subarray(0, B), dsigma = batch.dsigma.subarray(0, B);
  if (objective.loss === "seed") {
    ctx.write(ws.weights, batch.weight.subarray(0, N));
  } else if (objective.loss === "elbo") {
    const seqWeight = Array.from(sigma, (s, b) => dsigma[b] / Math.expm1(s));
    ctx.write(ws.weights, maskedRowWeights(input, V - 1, seqWeight, B, T, scale));
  } else if ((objective.graph ?? "absorb") === "absorb") {
    ctx.write(ws.consts, scoreEntropyAbsorbConstants(sigma, dsigma, B, V, scale));
  } else {
    ctx.write(ws.consts, scoreEntropyUniformConstants(sigma, dsigma, B, V, scale));
  }
}

/**
 * Records the loss of the logits in `ws.logits` into `ws.stats[0]` and, with `grad`, its
 * gradient into `ws.dlogits` (zeroed first), from what {@linkcode uploadBatch} put there.
 *
 * @param ctx The context.
 * @param ws The workspace of the forward pass.
 * @param objective Loss and graph.
 * @param grad Whether to record the gradient too.
 */
export function gpuLoss(
  ctx: GpuContext,
  ws: GpuWorkspace,
  objective: GpuObjective,
  grad: boolean,
): void {
  const B = ws.lastB, T = ws.lastT, N = B * T, V = ws.config.vocabSize;
  if (grad) ctx.clear(ws.dlogits);
  if (objective.loss === "seed" || objective.loss === "elbo") {
    // elbo: the softmax over the V - 1 real tokens (MDLM's zero-masking)
    const width = objective.loss === "elbo" ? V - 1 : V;
    const { losses, lse, logits, targets, weights } = ws;
    gpuCrossEntropyForward(ctx, losses, lse, logits, targets, weights, N, V, width);
    if (grad) {
      gpuCrossEntropyBackward(ctx, ws.dlogits, 1, logits, lse, targets, weights, N, V, width);
    }
  } else {
    const absorb = (objective.graph ?? "absorb") === "absorb";
    const fwd = absorb ? gpuScoreEntropyAbsorbForward : gpuScoreEntropyUniformForward;
    fwd(ctx, ws.losses, ws.logits, ws.targets, ws.tokens, ws.consts, B, T, V);
    if (grad) {
      const bwd = absorb ? gpuScoreEntropyAbsorbBackward : gpuScoreEntropyUniformBackward;
      bwd(ctx, ws.dlogits, ws.logits, ws.targets, ws.tokens, ws.consts, B, T, V);
    }
  }
  gpuSum(ctx, ws.stats, ws.losses, N);
}

/** Uploads the batch, zeroes `grads` and records forward, loss and backward into `grads`. */
function recordGradient(
  gm: GpuModel,
  ws: GpuWorkspace,
  grads: GpuParamSet,
  batch: GpuBatchInput,
  objective: GpuObjective,
  dropout: DropoutKeys | undefined,
): void {
  const ctx = gm.ctx;
  uploadBatch(ctx, ws, batch, objective, gm.config.vocabSize);
  clearGpuParamSet(ctx, grads);
  gpuModelForward(gm, ws, ws.tokens, batch.B, batch.T, { sigma: batch.sigma, dropout });
  gpuLoss(ctx, ws, objective, true);
  gpuModelBackward(gm, ws, grads);
}

/**
 * The loss of a batch and its gradient into `grads` (zeroed first), on the GPU; reads back the
 * loss only (read `grads` with `readGpuParamSet`).
 *
 * @param gm The model on the GPU.
 * @param ws A workspace with room for the batch.
 * @param grads Gradient set, overwritten.
 * @param batch The batch.
 * @param objective Loss and graph.
 * @param dropout Training-mode dropout keys; absent: no dropout.
 * @returns The loss.
 */
export async function gpuGradient(
  gm: GpuModel,
  ws: GpuWorkspace,
  grads: GpuParamSet,
  batch: GpuBatchInput,
  objective: GpuObjective,
  dropout?: DropoutKeys,
): Promise<number> {
  recordGradient(gm, ws, grads, batch, objective, dropout);
  return (await gm.ctx.readF32(ws.stats))[0];
}

/** The model, its workspace, gradients and AdamW moments on the GPU. */
export interface GpuTrainer {
  /** The model on the GPU (its parameters are the live ones). */
  readonly gm: GpuModel;
  /** The workspace, sized for the run's batch. */
  readonly ws: GpuWorkspace;
  /** The gradient of the last step. */
  readonly grads: GpuParamSet;
  /** AdamW's first moments. */
  readonly m: GpuParamSet;
  /** AdamW's second moments. */
  readonly v: GpuParamSet;
  /** AdamW steps taken (the bias correction's count). */
  step: number;
}

/** Options of {@linkcode createGpuTrainer}. */
export interface GpuTrainerOptions {
  /** Sequences per batch. */
  batch: number;
  /** Tokens per sequence. */
  context: number;
  /** An AdamW state to continue from (a resumed run's), in the parameters' layout. */
  optimizer?: AdamWState;
}

/**
 * Uploads a model and its optimizer state and allocates the workspace.
 *
 * @param ctx The context.
 * @param model The model (its parameters are copied to the GPU).
 * @param options Batch shape and the AdamW state to continue from.
 * @returns The trainer.
 */
export function createGpuTrainer(
  ctx: GpuContext,
  model: Model,
  options: GpuTrainerOptions,
): GpuTrainer {
  const gm = createGpuModel(ctx, model);
  const o = options.optimizer;
  if (o && (o.m.length !== model.params.length || o.v.length !== model.params.length)) {
    throw new RangeError(
      `GPU trainer optimizer: expected moments of ${model.params.length} values, got ${o.m.length} and ${o.v.length}`,
    );
  }
  return {
    gm,
    ws: createGpuWorkspace(gm, options.batch, options.context),
    grads: createGpuParamSet(ctx, model.layout, model.config, null),
    m: createGpuParamSet(ctx, model.layout, model.config, o ? o.m : null),
    v: createGpuParamSet(ctx, model.layout, model.config, o ? o.v : null),
    step: o?.step ?? 0,
  };
}

/** Settings of one {@linkcode gpuTrainStep}. */
export interface GpuStepOptions extends GpuObjective {
  /** The step's index (dropout keys). */
  step: number;
  /** Run seed (dropout keys). */
  seed: number;
  /** Learning rate. */
  lr: number;
  /** AdamW's decoupled weight decay. */
  weightDecay: number;
  /** Largest gradient norm; 0 or less: no clipping. */
  clip: number;
}

/**
 * One training step on the GPU (see the module's notes); reads back two floats.
 *
 * @param tr The trainer.
 * @param batch The step's batch (`B` and `T` within the workspace's capacity).
 * @param o Step index, seed, learning rate, weight decay, clip, objective.
 * @returns The loss and the gradient's norm before clipping; when either is not finite the
 *   parameters and moments are unchanged and the step count is not advanced.
 */
export async function gpuTrainStep(
  tr: GpuTrainer,
  batch: GpuBatchInput,
  o: GpuStepOptions,
): Promise<{ loss: number; gradNorm: number }> {
  const { gm, ws } = tr;
  const ctx = gm.ctx;
  recordGradient(gm, ws, tr.grads, batch, o, { seed: o.seed, step: o.step, firstRow: 0 });
  // stats[1] = the gradient's sum of squares, tensor by tensor in layout order
  const stats = ws.stats;
  let first = true;
  for (const g of tr.grads.byName.values()) {
    gpuSumSquares(ctx, stats, g, g.length, !first, 1);
    first = false;
  }
  const params = gm.params.byName, m = tr.m.byName, v = tr.v.byName;
  for (const [name, g] of tr.grads.byName) {
    const state: GpuAdamWState = { m: m.get(name)!, v: v.get(name)!, step: tr.step };
    gpuAdamwStep(ctx, params.get(name)!, g, state, { lr: o.lr, weightDecay: o.weightDecay }, {
      stats,
      maxNorm: o.clip,
    });
  }
  const [loss, sumSquares] = await ctx.readF32(stats);
  const gradNorm = Math.sqrt(sumSquares);
  if (Number.isFinite(loss) && Number.isFinite(gradNorm)) tr.step++;
  return { loss, gradNorm };
}

/**
 * The eval-mode loss of a batch on the GPU (no dropout, no gradient); reads back one float.
 *
 * @param gm The model on the GPU.
 * @param ws A workspace with room for the batch.
 * @param batch The batch.
 * @param objective Loss and graph.
 * @returns The batch loss.
 */
export async function gpuEvaluate(
  gm: GpuModel,
  ws: GpuWorkspace,
  batch: GpuBatchInput,
  objective: GpuObjective,
): Promise<number> {
  const ctx = gm.ctx;
  uploadBatch(ctx, ws, batch, objective, gm.config.vocabSize);
  gpuModelForward(gm, ws, ws.tokens, batch.B, batch.T, { sigma: batch.sigma });
  gpuLoss(ctx, ws, objective, false);
  return (await ctx.readF32(ws.stats))[0];
}

/**
 * Reads the parameters and AdamW's moments back, in the parameters' layout.
 *
 * @param tr The trainer.
 * @param out Where to write: `params`, `m`, `v` (each the layout's size).
 */
export async function readGpuTrainer(
  tr: GpuTrainer,
  out: { params: Float32Array; m: Float32Array; v: Float32Array },
): Promise<void> {
  const { ctx, layout } = tr.gm;
  await readGpuParamSet(ctx, tr.gm.params, layout, out.params);
  await readGpuParamSet(ctx, tr.m, layout, out.m);
  await readGpuParamSet(ctx, tr.v, layout, out.v);
}

/** The draws of one evaluation batch: noised and clean ids, and the noise of each sequence. */
export interface GpuDraws {
  /** Noised ids, `(B,len)`. */
  xt: Int32Array;
  /** Clean ids, `(B,len)`. */
  x0: Int32Array;
  /** Total noise per sequence, `(B)`. */
  sigma: Float64Array;
  /** Noise rate per sequence, `(B)`. */
  dsigma: Float64Array;
  /** Sequences. */
  B: number;
  /** Tokens per sequence. */
  len: number;
  /** Most sequences of the group (the workspace's capacity). */
  cap: number;
}

/**
 * Each sequence's summed loss (nats, normaliser 1) of a batch of draws, on the GPU: the forward
 * pass and the per-position losses there, only those `B * len` floats read back and summed per
 * sequence on the host (in float64). For the held-out bound of `src/eval/elbo.ts`.
 *
 * @param ctx The context.
 * @param model The model (uploaded once).
 * @param objective `elbo` or `score-entropy`, and the graph.
 * @returns A function of a batch of draws to its `(B)` losses, with `dispose()` to free its
 *   parameters and workspace (the context stays open).
 */
export function gpuSequenceLosses(
  ctx: GpuContext,
  model: Model,
  objective: GpuObjective,
): ((draws: GpuDraws) => Promise<Float64Array>) & { dispose(): void } {
  const gm = createGpuModel(ctx, model);
  const V = model.config.vocabSize;
  let ws: GpuWorkspace | null = null;
  const scale = new Float64Array([1]);
  const losses = async ({ xt, x0, sigma, dsigma, B, len, cap }: GpuDraws) => {
    if (ws === null || ws.B !== cap || ws.T !== len) {
      if (ws) destroyGpuWorkspace(ws);
      ws = createGpuWorkspace(gm, cap, len);
    }
    const batch = { B, T: len, input: xt, target: x0, weight: new Float32Array(0), sigma, dsigma };
    uploadBatch(ctx, ws, { ...batch, scale }, objective, V);
    gpuModelForward(gm, ws, ws.tokens, B, len, { sigma });
    gpuLoss(ctx, ws, objective, false);
    const losses = await ctx.readF32(ws.losses);
    const out = new Float64Array(B);
    for (let b = 0; b < B; b++) {
      let sum = 0;
      for (let i = b * len; i < (b + 1) * len; i++) sum += losses[i];
      out[b] = sum;
    }
    return out;
  };
  const dispose = () => {
    if (ws) destroyGpuWorkspace(ws);
    ws = null;
    for (const t of gm.params.byName.values()) t.destroy();
  };
  return Object.assign(losses, { dispose });
}
