/**
 * What a run reports: the `StepInfo` of every step (with throughput over the last few steps and
 * a clock that leaves out the time spent in `onStep`), the held-out loss on its cadence, the
 * `metrics.jsonl` line of a step, and the chart's title and bits/char factor.
 *
 * Dimensions: `B` batch, `T` context.
 *
 * @module
 */

import { countCharacters } from "../eval/elbo.ts";
import type { AnyModel } from "./net.ts";
import type { Tokenizer } from "../tokenizer/mod.ts";
import { fillBatch } from "./batch.ts";
import type { GradientPool } from "./pool.ts";
import type { MetricsRecord } from "./run_dir.ts";
import type { Settings } from "./setup.ts";
import type { StepInfo, TrainOptions } from "./train.ts";

/** Reserved step key of held-out batches: training never reaches step 2^32 - 2. */
export const HELD_OUT_KEY = 0xfffffffe;

/** Steps the tokens/s figure averages over. */
const THROUGHPUT_WINDOW = 10;

/**
 * The `metrics.jsonl` line of a step.
 *
 * @param info The step's record.
 * @returns The record without the step budget.
 */
export function metricsRecord(info: StepInfo): MetricsRecord {
  return {
    step: info.step,
    loss: info.loss,
    lr: info.lr,
    gradNorm: info.gradNorm,
    tokensPerSecond: info.tokensPerSecond,
    heldOutLoss: info.heldOutLoss,
    seconds: info.seconds,
  };
}

/**
 * Characters per token of a stream (code points, an end-of-text token counting as one), the
 * factor from nats/token to bits/char: `bits/char = nats/token / ln 2 / charsPerToken`.
 *
 * @param tokenizer The tokenizer.
 * @param tokens The stream (the held-out tail: the text the held-out loss is measured on).
 * @returns The ratio, or `undefined` for an empty stream.
 */
export function charsPerToken(tokenizer: Tokenizer, tokens: Int32Array): number | undefined {
  return tokens.length > 0 ? countCharacters(tokenizer, tokens) / tokens.length : undefined;
}

/**
 * The chart title of a model and objective.
 *
 * @param model The model.
 * @param s The settings.
 * @returns E.g. `"64d x 2 layers, elbo loss"`.
 */
export function chartTitle(model: AnyModel, s: Settings): string {
  return `${model.config.dModel}d x ${model.config.nLayers} layers, ${s.loss} loss`;
}

/** The clock, throughput and held-out cadence of one call of `train()`. */
export class Reporter {
  readonly #started: number;
  #paused = 0; // milliseconds spent inside onStep: not training time
  readonly #recent: number[] = [];
  readonly #tokensPerStep: number;
  readonly #steps: number;
  readonly #evalEvery: number;

  /**
   * Starts the clock.
   *
   * @param options `started` (when `train()` was called, `performance.now()`: setup time counts
   *   towards a time budget), `tokensPerStep` (B*T), `steps` (the budget), `evalEvery` (0: never).
   */
  constructor(
    options: { started: number; tokensPerStep: number; steps: number; evalEvery: number },
  ) {
    this.#started = options.started;
    this.#tokensPerStep = options.tokensPerStep;
    this.#steps = options.steps;
    this.#evalEvery = options.evalEvery;
  }

  /** Training time so far in milliseconds (the time inside `onStep` left out). */
  elapsedMs(): number {
    return performance.now() - this.#started - this.#paused;
  }

  /**
   * The record of a finished step.
   *
   * @param done Steps completed.
   * @param t0 When the step started (`performance.now()`).
   * @param step `loss`, `lr` and `gradNorm` of the step.
   * @returns Its `StepInfo` (without a held-out loss).
   */
  stepInfo(
    done: number,
    t0: number,
    step: { loss: number; lr: number; gradNorm: number },
  ): StepInfo {
    this.#recent.push(performance.now() - t0);
    if (this.#recent.length > THROUGHPUT_WINDOW) this.#recent.shift();
    const avgMs = this.#recent.reduce((a, b) => a + b, 0) / this.#recent.length;
    return {
      step: done,
      loss: step.loss,
      lr: step.lr,
      gradNorm: step.gradNorm,
      tokensPerSecond: this.#tokensPerStep / (avgMs / 1000),
      seconds: this.elapsedMs() / 1000,
      steps: this.#steps,
    };
  }

  /**
   * Whether step `done` measures the held-out loss: every `evalEvery` steps and at the last.
   *
   * @param done Steps completed.
   * @returns `true` to measure.
   */
  evaluates(done: number): boolean {
    const e = this.#evalEvery;
    return e > 0 && (done % e === 0 || done === this.#steps);
  }

  /** Whether held-out losses are measured at all. */
  get evaluating(): boolean {
    return this.#evalEvery > 0;
  }

  /**
   * Calls `onStep` and keeps its time off the clock.
   *
   * @param onStep The caller's callback, if any.
   * @param info The step's record.
   * @param model The live model.
   */
  async callOnStep(
    onStep: TrainOptions<AnyModel>["onStep"],
    info: StepInfo,
    model: AnyModel,
  ): Promise<void> {
    if (!onStep) return;
    const p0 = performance.now();
    await onStep(info, model);
    this.#paused += performance.now() - p0;
  }
}

/**
 * The held-out loss: the mean over `evalBatches` fixed batches of the held-out tail (keyed by
 * {@linkcode HELD_OUT_KEY}, so every measurement sees the same windows and noise).
 *
 * @param pool The pool.
 * @param heldOut The held-out tokens.
 * @param s The settings.
 * @param vocabSize The vocabulary size.
 * @param step The step (names a failing worker's step).
 * @returns The mean loss.
 */
export async function heldOutLoss(
  pool: GradientPool,
  heldOut: Int32Array,
  s: Settings,
  vocabSize: number,
  step: number,
): Promise<number> {
  let sum = 0;
  for (let e = 0; e < s.evalBatches; e++) {
    fillBatch(pool.batch, heldOut, {
      seed: s.seed,
      step: HELD_OUT_KEY,
      firstRow: e * s.batch,
      loss: s.loss,
      vocabSize,
      graph: s.graph,
      antithetic: s.antithetic,
    });
    sum += await pool.evaluate(step);
  }
  return sum / s.evalBatches;
}
