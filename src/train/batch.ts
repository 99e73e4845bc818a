/**
 * One training batch in shared memory: the main thread draws it, the gradient workers read it.
 *
 * Dimensions: `B` batch (sequences), `T` context (tokens per sequence).
 *
 * Sequence `j` of step `s` takes everything random about it from `new Rng(seed, s, j)`, in this
 * order: the window start, its diffusion time t, then one uniform per position for its mask. No
 * draw depends on which worker will see the row, so sharding never changes the batch.
 *
 * @module
 */

import { corruptRow, moveProb, seedLossWeights } from "../diffusion/corrupt.ts";
import type { GraphName } from "../diffusion/corrupt.ts";
import { checkLossName, LOSS_NAMES, type LossName, lossScale } from "../diffusion/losses.ts";
import { createSchedule, stepRng } from "../diffusion/schedule.ts";
import { Rng } from "../rng.ts";
import { drawWindow } from "./data.ts";

export type { GraphName, LossName };
/** The loss names the trainer accepts (the one list, from the diffusion losses). */
export { LOSS_NAMES };

/** Lower end of diffusion time for `elbo` and `score-entropy`: t ~ U[eps, 1] (SEDD's, MDLM's). */
export const TIME_EPS = 1e-3;

/** A batch: clean windows, noised inputs, per-position loss weights, per-sequence noise. */
export interface BatchBuffers {
  /** Sequences. */
  B: number;
  /** Tokens per sequence. */
  T: number;
  /** Clean tokens x0 (the targets), `(B,T)`. */
  target: Int32Array;
  /** Noised tokens x_t (the model's input), `(B,T)`. */
  input: Int32Array;
  /** Loss weight per position (the `seed` loss), `(B,T)`. */
  weight: Float32Array;
  /** Diffusion time per sequence, `(B)`. */
  t: Float64Array;
  /** Total noise sigma(t) per sequence (`elbo`, `score-entropy`), `(B)`. */
  sigma: Float64Array;
  /** Noise rate sigma'(t) per sequence, `(B)`. */
  dsigma: Float64Array;
  /** `[0]`: the whole-batch loss scale every shard passes to the loss. */
  scale: Float64Array;
}

/** The `SharedArrayBuffer`s behind a {@linkcode BatchBuffers}, for sending to workers. */
export interface BatchMemory {
  /** Sequences. */
  B: number;
  /** Tokens per sequence. */
  T: number;
  /** Backs `target`, `input` and `weight` (`3 B T` 4-byte values). */
  tokens: SharedArrayBuffer;
  /** Backs `t`, `sigma`, `dsigma` and `scale` (`3 B + 1` 8-byte values). */
  noise: SharedArrayBuffer;
}

/**
 * Allocates a batch in shared memory.
 *
 * @param B Sequences.
 * @param T Tokens per sequence.
 * @returns The buffers' memory; open it with {@linkcode batchViews}.
 */
export function createBatchMemory(B: number, T: number): BatchMemory {
  return {
    B,
    T,
    tokens: new SharedArrayBuffer(3 * B * T * 4),
    noise: new SharedArrayBuffer((3 * B + 1) * 8),
  };
}

/**
 * Typed views on a batch's memory (shared, or a plain `ArrayBuffer` for in-process training).
 *
 * @param mem The memory from {@linkcode createBatchMemory} (or the same shape unshared).
 * @returns The views.
 */
export function batchViews(
  mem: { B: number; T: number; tokens: ArrayBufferLike; noise: ArrayBufferLike },
): BatchBuffers {
  const { B, T } = mem;
  const N = B * T;
  return {
    B,
    T,
    target: new Int32Array(mem.tokens, 0, N),
    input: new Int32Array(mem.tokens, 4 * N, N),
    weight: new Float32Array(mem.tokens, 8 * N, N),
    t: new Float64Array(mem.noise, 0, B),
    sigma: new Float64Array(mem.noise, 8 * B, B),
    dsigma: new Float64Array(mem.noise, 16 * B, B),
    scale: new Float64Array(mem.noise, 24 * B, 1),
  };
}

/**
 * Allocates a batch in ordinary (unshared) memory.
 *
 * @param B Sequences.
 * @param T Tokens per sequence.
 * @returns The views.
 */
export function createBatch(B: number, T: number): BatchBuffers {
  return batchViews({
    B,
    T,
    tokens: new ArrayBuffer(3 * B * T * 4),
    noise: new ArrayBuffer((3 * B + 1) * 8),
  });
}

/** What {@linkcode fillBatch} needs besides the buffers. */
export interface FillBatchOptions {
  /** Run seed. */
  seed: number;
  /** Step key: the training step, or a reserved key for held-out batches. */
  step: number;
  /** Global index of row 0 of this batch (held-out evaluation uses several batches). */
  firstRow?: number;
  /** The objective. */
  loss: LossName;
  /** The graph of `score-entropy` (default `"absorb"`). */
  graph?: GraphName;
  /** Vocabulary size V; the MASK token is V - 1. */
  vocabSize: number;
  /**
   * Spread the batch's times evenly, u_j = (u + j) / B mod 1 with one u per step from
   * `stepRng(seed, step)` (j the global row), instead of one independent u per sequence (for
   * `seed`, t = u_j is its masking rate). Lowers the variance of the batch's loss. Default false.
   */
  antithetic?: boolean;
}

/**
 * Draws the batch for one step: windows from `tokens`, then the objective's noise and weights.
 *
 * - `seed` (the notebook): t ~ U[0,1) per sequence, each token masked with probability t, and
 *   `weight = mask / (masked count over the whole batch + 1e-6)`, so the weighted
 *   cross-entropy is the notebook's `masked_loss`.
 * - `elbo`, `score-entropy`: t ~ U[1e-3, 1], the loglinear schedule's sigma and sigma', tokens
 *   moved (to MASK, or resampled for the uniform graph) with probability 1 - exp(-sigma); the
 *   scale is 1 / (B T).
 *
 * @param buf The batch, written.
 * @param tokens The token stream, `(N)`.
 * @param options Seed, step, objective, vocabulary size.
 * @returns The number of positions the noise hit.
 *
 * @example A batch is a function of (seed, step) only
 * ```ts
 * import { createBatch, fillBatch } from "./batch.ts";
 * import assert from "node:assert/strict";
 *
 * const tokens = Int32Array.from({ length: 100 }, (_, i) => i % 7);
 * const a = createBatch(2, 8);
 * const b = createBatch(2, 8);
 * fillBatch(a, tokens, { seed: 1, step: 3, loss: "seed", vocabSize: 10 });
 * fillBatch(b, tokens, { seed: 1, step: 3, loss: "seed", vocabSize: 10 });
 * assert.deepEqual(a.input, b.input);
 * assert.deepEqual(a.weight, b.weight);
 * assert.ok(a.input.some((id) => id === 9)); // some tokens are masked
 * ```
 */
export function fillBatch(
  buf: BatchBuffers,
  tokens: Int32Array,
  options: FillBatchOptions,
): number {
  const { B, T, target, input, weight, t, sigma, dsigma, scale } = buf;
  const { seed, step, loss, vocabSize: V } = options;
  const graph = options.graph ?? "absorb";
  const maskId = V - 1;
  const firstRow = options.firstRow ?? 0;
  if (tokens.length < T) {
    throw new RangeError(`Not enough tokens: expected at least ${T}, got ${tokens.length}`);
  }
  checkLossName(loss);
  const schedule = loss === "seed" ? undefined : createSchedule("loglinear");
  // Antithetic times: one u for the whole step, shared by every shard and held-out batch.
  const u = options.antithetic ? stepRng(seed, step).uniform() : 0;
  const kind = loss === "seed" ? "seed" : loss === "elbo" ? "absorb" : graph;
  let hits = 0;
  for (let j = 0; j < B; j++) {
    const rng = new Rng(seed, step, firstRow + j);
    drawWindow(target, tokens, j, T, rng);
    if (schedule === undefined) {
      // torch.rand(B), or spread evenly over the batch like the other losses' antithetic times
      const tj = options.antithetic ? ((u + firstRow + j) / B) % 1 : rng.uniform();
      t[j] = tj;
      // The notebook masks with probability t: the linear schedule (a time-conditioned model
      // reads sigma; the seed loss does not).
      sigma[j] = -Math.log1p(-tj);
      dsigma[j] = 1 / (1 - tj);
      hits += corruptRow("seed", input, target, j, T, tj, rng, V, maskId); // torch.bernoulli(t)
    } else {
      const uj = options.antithetic ? ((u + firstRow + j) / B) % 1 : rng.uniform();
      const tj = TIME_EPS + (1 - TIME_EPS) * uj;
      t[j] = tj;
      sigma[j] = schedule.sigma(tj);
      dsigma[j] = schedule.dsigma(tj);
      hits += corruptRow(kind, input, target, j, T, moveProb(sigma[j]), rng, V, maskId);
    }
  }
  if (loss === "seed") {
    // masked_loss = (loss * mask).sum() / (mask.sum() + 1e-6)
    const masked = seedLossWeights(weight, input, maskId, B, T);
    scale[0] = lossScale("seed", { B, T, maskedCount: masked });
  } else {
    weight.fill(0);
    scale[0] = lossScale(loss, { B, T });
  }
  return hits;
}
