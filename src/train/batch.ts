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

import { Rng } from "../rng.ts";
import { drawWindow } from "./data.ts";

/** The training objectives. */
export type LossName = "seed";

/** The loss names the trainer accepts, for messages. */
export const LOSS_NAMES: readonly LossName[] = ["seed"];

/** A batch: clean windows, noised inputs, per-position loss weights, per-sequence time. */
export interface BatchBuffers {
  /** Sequences. */
  B: number;
  /** Tokens per sequence. */
  T: number;
  /** Clean tokens x0 (the targets), `(B,T)`. */
  target: Int32Array;
  /** Noised tokens x_t (the model's input), `(B,T)`. */
  input: Int32Array;
  /** Loss weight per position, `(B,T)`. */
  weight: Float32Array;
  /** Diffusion time per sequence, `(B)`. */
  t: Float32Array;
}

/** The `SharedArrayBuffer`s behind a {@linkcode BatchBuffers}, for sending to workers. */
export interface BatchMemory {
  /** Sequences. */
  B: number;
  /** Tokens per sequence. */
  T: number;
  /** Backs `target`. */
  target: SharedArrayBuffer;
  /** Backs `input`. */
  input: SharedArrayBuffer;
  /** Backs `weight`. */
  weight: SharedArrayBuffer;
  /** Backs `t`. */
  t: SharedArrayBuffer;
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
    target: new SharedArrayBuffer(B * T * 4),
    input: new SharedArrayBuffer(B * T * 4),
    weight: new SharedArrayBuffer(B * T * 4),
    t: new SharedArrayBuffer(B * 4),
  };
}

/**
 * Typed views on a batch's shared memory.
 *
 * @param mem The memory from {@linkcode createBatchMemory}.
 * @returns The views.
 */
export function batchViews(mem: BatchMemory): BatchBuffers {
  return {
    B: mem.B,
    T: mem.T,
    target: new Int32Array(mem.target),
    input: new Int32Array(mem.input),
    weight: new Float32Array(mem.weight),
    t: new Float32Array(mem.t),
  };
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
  /** The MASK token id. */
  maskId: number;
}

/**
 * Draws the batch for one step: windows from `tokens`, then the objective's noise and weights.
 *
 * `seed` (the notebook): t ~ U[0,1) per sequence, each token masked with probability t, and
 * `weight = mask / (masked count over the whole batch + 1e-6)`, so the loss is the mean
 * cross-entropy over the batch's masked tokens (the notebook's `masked_loss`).
 *
 * @param buf The batch, written.
 * @param tokens The token stream, `(N)`.
 * @param options Seed, step, objective, MASK id.
 * @returns The number of positions with a non-zero weight.
 *
 * @example A batch is a function of (seed, step) only
 * ```ts
 * import { batchViews, createBatchMemory, fillBatch } from "./batch.ts";
 * import assert from "node:assert/strict";
 *
 * const tokens = Int32Array.from({ length: 100 }, (_, i) => i % 7);
 * const a = batchViews(createBatchMemory(2, 8));
 * const b = batchViews(createBatchMemory(2, 8));
 * fillBatch(a, tokens, { seed: 1, step: 3, loss: "seed", maskId: 9 });
 * fillBatch(b, tokens, { seed: 1, step: 3, loss: "seed", maskId: 9 });
 * assert.deepEqual(a.input, b.input);
 * assert.deepEqual(a.weight, b.weight);
 * ```
 */
export function fillBatch(
  buf: BatchBuffers,
  tokens: Int32Array,
  options: FillBatchOptions,
): number {
  const { B, T, target, input, weight, t } = buf;
  const { seed, step, maskId, loss } = options;
  const firstRow = options.firstRow ?? 0;
  if (tokens.length < T) {
    throw new RangeError(`Not enough tokens: expected at least ${T}, got ${tokens.length}`);
  }
  if (loss !== "seed") {
    throw new RangeError(
      `Unknown loss: expected one of ${LOSS_NAMES.join(", ")}, got ${JSON.stringify(loss)}`,
    );
  }
  let masked = 0;
  for (let j = 0; j < B; j++) {
    const rng = new Rng(seed, step, firstRow + j);
    drawWindow(target, tokens, j, T, rng);
    const tj = rng.uniform(); // torch.rand(B)
    t[j] = tj;
    for (let i = j * T; i < (j + 1) * T; i++) {
      const m = rng.uniform() < tj; // torch.bernoulli(t)
      input[i] = m ? maskId : target[i];
      weight[i] = m ? 1 : 0;
      if (m) masked++;
    }
  }
  // masked_loss = (loss * mask).sum() / (mask.sum() + 1e-6)
  const w = Math.fround(1 / (masked + 1e-6));
  for (let i = 0; i < B * T; i++) weight[i] *= w;
  return masked;
}
