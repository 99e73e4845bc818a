/**
 * The training defaults: one table that `train()`, the command line (`deno task train`, its help
 * text) and the recipe harness all read, so a default is written once.
 *
 * They are the main job's recipe: the best held-out bits per character that five minutes on a
 * 2-core machine buy on Moby-Dick, found by the search in `docs/recipes.md` (each value's reason
 * is beside it, with the measurement that chose it).
 *
 * @module
 */

import type { PresetName } from "../model/config.ts";
import type { LossName } from "../diffusion/losses.ts";
import type { GraphName } from "../diffusion/corrupt.ts";

/** The defaults of {@linkcode TRAIN_DEFAULTS}. */
export interface TrainDefaults {
  /** The model preset. */
  readonly model: PresetName;
  /** Vocabulary of the byte-level BPE trained on the fly. */
  readonly tokenizerVocabSize: number;
  /** Sequences per step. */
  readonly batch: number;
  /** Tokens per sequence. */
  readonly context: number;
  /** The objective. */
  readonly loss: LossName;
  /** Spread the diffusion times (masking rates) evenly over each batch. */
  readonly antithetic: boolean;
  /** Peak learning rate. */
  readonly lr: number;
  /** Floor of the cosine decay, as a fraction of `lr`. */
  readonly minLrFraction: number;
  /** Linear warm-up steps of a step-bounded run: min(this, steps / 10). */
  readonly warmup: number;
  /** Warm-up steps of a run bounded only by time. */
  readonly warmupTimed: number;
  /** After warm-up. */
  readonly schedule: "constant" | "cosine";
  /** AdamW decoupled weight decay. */
  readonly weightDecay: number;
  /** Global gradient-norm clip. */
  readonly clip: number;
  /** The main job's wall-clock budget (the CLI's, when neither steps nor minutes are given). */
  readonly minutes: number;
  /** Steps of a run given neither steps nor minutes through the library. */
  readonly steps: number;
  /** The seed of initialisation, batches and noise. */
  readonly seed: number;
  /** The noising graph of score entropy. */
  readonly graph: GraphName;
  /** The tail of the data held out for evaluation. */
  readonly heldOutFraction: number;
  /** Batches of the held-out tail per evaluation. */
  readonly evalBatches: number;
}

/**
 * The main job's recipe, and `train()`'s defaults.
 *
 * @example
 * ```ts
 * import { TRAIN_DEFAULTS } from "./defaults.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(TRAIN_DEFAULTS.loss, "seed");
 * ```
 */
export const TRAIN_DEFAULTS: TrainDefaults = Object.freeze({
  // Measured (docs/recipes.md): d128 x 4 layers beat the narrower and wider shapes at 2.5 minutes.
  model: "small" as PresetName,
  // Bits/char fell with every doubling of the vocabulary at equal steps (258 bytes: 3.25,
  // 2048: 2.85, 8192: 2.52 at 800 steps); at equal time it is chosen in docs/recipes.md.
  tokenizerVocabSize: 8192,
  // 2,048 tokens a step: the most a step holds at the speed that keeps both cores busy.
  batch: 16,
  // 128 tokens (about 500 characters at this vocabulary) of context per sequence.
  context: 128,
  // The notebook's masked mean: 2.85 against the ELBO's 2.99 bits/char at 800 steps (V 2048),
  // and the ELBO bound is still what eval reports.
  loss: "seed",
  // Evenly spread masking rates: 2.85 against 2.91 bits/char with independent ones.
  antithetic: true,
  // 2e-3: 4e-3 gave 2.95 against 2.85 bits/char at 800 steps.
  lr: 2e-3,
  // Cosine decay to a tenth of the peak (an average of the weights gained nothing on top: 2.90).
  minLrFraction: 0.1,
  warmup: 100,
  warmupTimed: 20,
  schedule: "cosine",
  // PyTorch's AdamW default.
  weightDecay: 0.01,
  // SEDD's.
  clip: 1,
  // The main job: five minutes, then samples.
  minutes: 5,
  steps: 1000,
  seed: 0,
  // The notebook's (and MDLM's) absorbing mask; "uniform" is SEDD's other graph.
  graph: "absorb",
  // 2% of Moby-Dick: about 24,000 characters, scored whole by eval.
  heldOutFraction: 0.02,
  evalBatches: 4,
});
