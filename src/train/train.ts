/**
 * `train()`: the training loop over a pool of gradient workers.
 *
 * Dimensions: `B` batch, `T` context, `P` parameters, `W` workers.
 *
 * Each step the main thread draws the batch for step `s` (windows and noise of sequence `j` from
 * `new Rng(seed, s, j)`) into shared memory, the workers compute their shards' gradients against
 * the shared parameters, and the main thread sums them in worker order, clips the global norm,
 * and takes the AdamW step in place. Same seed and worker count: bitwise-identical parameters.
 * Resuming from a checkpoint at step k and training to N gives bitwise the parameters of an
 * uninterrupted run to N (the batch of step s depends on (seed, s) only, and the optimizer state,
 * settings and parameters are all in `optimizer.safetensors`).
 *
 * The file system is touched only when `out`, `data` or `resume` ask for it (through a dynamic
 * import of the run-directory module), so `train()` runs in a browser on strings and arrays.
 *
 * The parts: `setup.ts` (options to a resolved run, the data, the pool), `step.ts` (one optimizer
 * step), `checkpointing.ts` (the run directory's writes), `report.ts` (step records, held-out
 * loss, the loss chart). This file only orchestrates them.
 *
 * @module
 */

import type { ModelConfig, PresetName } from "../model/config.ts";
import type { Model } from "../model/model.ts";
import type { DitConfigInput, DitModel } from "../model/dit.ts";
import { type AnyModel, modelOver } from "./net.ts";
import type { AdamWState } from "../optim/adamw.ts";
import type { Tokenizer } from "../tokenizer/mod.ts";
import type { GraphName, LossName } from "./batch.ts";
import type { FaultInjection } from "./shard.ts";
import type { BackendChoice } from "../nn/backend.ts";
import { openPool, setupRun, type TrainBackend } from "./setup.ts";
import { type PendingGradient, type StepContext, stepLearningRate, takeStep } from "./step.ts";
import { Checkpoints, type WriteFault } from "./checkpointing.ts";
import { charsPerToken, chartTitle, heldOutLoss, Reporter } from "./report.ts";

export { clipGradNorm, learningRate, NonFiniteError } from "./step.ts";
export { HELD_OUT_KEY } from "./report.ts";
export { CheckpointError } from "./checkpointing.ts";

/** What `onStep` receives after every step. */
export interface StepInfo {
  /** Steps completed (1 after the first step). */
  step: number;
  /** The step's training loss. */
  loss: number;
  /** The learning rate the step used. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Training tokens per second, averaged over the last few steps. */
  tokensPerSecond: number;
  /** Held-out loss, on steps where it was measured. */
  heldOutLoss?: number;
  /** Seconds since this call of `train()` started, less the time spent inside `onStep`. */
  seconds: number;
  /** The step budget (`Infinity` when only a time budget bounds the run). */
  steps: number;
}

/** A fresh DiT's config for {@linkcode TrainOptions.model}: `vocabSize` and `context` may be left out. */
export type DitSpec = Partial<DitConfigInput> & { kind: "dit" };

/**
 * Options of {@linkcode train}. Only a data source is required. `M` is the kind of model the run
 * trains (what `onStep` and the result hold): the transformer by default, a `DitModel` when
 * `model` is a DiT or a {@linkcode DitSpec}.
 */
export interface TrainOptions<M extends AnyModel = Model> {
  /** Training text: one document or several (joined with EOT). */
  text?: string | string[];
  /** A file or a folder of `.txt` files (needs file-system access); a resumed run's own by default. */
  data?: string;
  /** An already tokenized stream (needs `tokenizer`). */
  tokens?: Int32Array;
  /**
   * The tokenizer; when absent, a byte-level BPE of `tokenizerVocabSize` trained on the text
   * without its held-out region (see `tokenizerDocuments`).
   */
  tokenizer?: Tokenizer;
  /**
   * Vocabulary size of a tokenizer trained on the fly. Default: `TRAIN_DEFAULTS` (8192), or fewer
   * when the text has fewer merges to learn; a size given here that the text cannot fill is a
   * RangeError.
   */
  tokenizerVocabSize?: number;
  /**
   * A preset name, a (partial) config, or a model to continue training. Default:
   * `TRAIN_DEFAULTS.model`. A DiT (`src/model/dit.ts`, e.g. a checkpoint converted from SEDD or
   * MDLM) is fine-tuned, and so is a fresh one from a config with `kind: "dit"` (its vocabulary
   * is the tokenizer's, its context the run's unless given): on `"wasm"` and `"blas"` (what
   * `"auto"` picks where it can) its gradient comes from the float32 training pass of
   * `src/model/dit_train.ts`, on `"ts"` from the float64 reference pass (`ditForwardCached` with
   * `raw: true`, `ditBackward`); `"webgpu"` is refused. Its loss follows its output (`"sedd"`:
   * `score-entropy`, `"logits"`: `elbo`).
   * Resuming a DiT's run takes `model: { kind: "dit" }` (the run's own model is trained; the
   * option says which kind the result holds), and a transformer's run refuses it.
   */
  model?: M extends DitModel ? DitModel | DitSpec : PresetName | Partial<ModelConfig> | Model;
  /** Steps to take (total, counting resumed ones). Default 1000, or unbounded with `minutes`. */
  steps?: number;
  /** Wall-clock budget in minutes; the run stops at whichever of `steps` and `minutes` comes first. */
  minutes?: number;
  /** Sequences per step. Default: `TRAIN_DEFAULTS.batch`. */
  batch?: number;
  /**
   * Tokens per sequence. Default: `TRAIN_DEFAULTS.context`, at most the model's context. Checked
   * before any worker starts: a window and a held-out window must fit in the data, and one
   * workspace (attention grows with its square) in the 4 GiB wasm32 arena.
   */
  context?: number;
  /** Peak learning rate. Default: `TRAIN_DEFAULTS.lr`. */
  lr?: number;
  /** Linear warm-up steps. Default min(`TRAIN_DEFAULTS.warmup`, steps / 10); `warmupTimed` when only `minutes` bounds the run. */
  warmup?: number;
  /** After warm-up: `constant`, or `cosine` decay to `minLr` (over the steps, or the time budget). Default `cosine`. */
  schedule?: "constant" | "cosine";
  /** Floor of the cosine decay. Default lr times `TRAIN_DEFAULTS.minLrFraction`. */
  minLr?: number;
  /** Global gradient-norm clip. Default 1.0 (SEDD's); 0 turns clipping off. */
  clip?: number;
  /** AdamW decoupled weight decay. Default 0.01 (PyTorch's AdamW). */
  weightDecay?: number;
  /**
   * The objective: `"seed"` (the notebook's masked cross-entropy, the default), `"elbo"` (MDLM)
   * or `"score-entropy"` (SEDD).
   */
  loss?: LossName;
  /** The graph of `score-entropy`: `"absorb"` (default) or `"uniform"`. */
  graph?: GraphName;
  /**
   * Antithetic times (masking rates for `seed`), spread evenly over the batch (one shared u per
   * step). Default: `TRAIN_DEFAULTS.antithetic` (on).
   */
  antithetic?: boolean;
  /** Run seed: initialisation, batches, noise, dropout. Default 0. */
  seed?: number;
  /**
   * Gradient workers. Default `navigator.hardwareConcurrency` (a resumed run: its saved count);
   * 0 or 1 runs in-process.
   */
  workers?: number;
  /** Held-out loss every this many steps (and at the end); 0 never. Default 100. */
  evalEvery?: number;
  /** Batches of `batch` sequences in each held-out measurement. Default 4. */
  evalBatches?: number;
  /** Fraction of the token stream held out (its tail). Default 0.02. */
  heldOutFraction?: number;
  /** Run directory for checkpoints, metrics and the loss chart (needs file-system access). */
  out?: string;
  /** Checkpoint every this many steps (and at the end). Default 200. */
  checkpointEvery?: number;
  /** Resume from the run directory `out` (`true`) or from this directory. */
  resume?: boolean | string;
  /**
   * Stops the run: the step in progress finishes, the held-out loss is measured (unless
   * `evalEvery` is 0), a checkpoint is saved as at the end of any run (with `stopped: "aborted"`
   * in its metadata), and `train()` resolves normally with `stopped: "aborted"`.
   */
  signal?: AbortSignal;
  /**
   * Called after every step with the step's record and the live model. It may return a promise,
   * which `train()` awaits before the next step. The time until it returns (or its promise
   * settles) is excluded from the `minutes` budget, from the time-based learning-rate decay, from
   * tokens/s and from `StepInfo.seconds`, so a harness can evaluate the model here without
   * shortening the run. The model is the one the workers read and AdamW updates in place: treat
   * it as read-only (writing to it changes the run), and copy `model.params` to keep a snapshot.
   * On the `webgpu` backend the parameters live on the GPU: they are read back into the model
   * before each call of a callback that declares the model parameter (`(info, model) => ...`),
   * and not for one that takes `info` alone.
   * (Two signatures rather than one returning `void | Promise<void>`, so that callbacks returning
   * something else, like `(i) => losses.push(i.loss)`, still type-check.)
   */
  onStep?:
    | ((info: StepInfo, model: M) => void)
    | ((info: StepInfo, model: M) => Promise<void>);
  /**
   * Rows per forward/backward pass inside a worker's shard: less activation memory, the same
   * gradient up to summation order. Default 4.
   */
  microBatch?: number;
  /**
   * The compute backend: `"auto"` (the default: WebGPU on a real GPU adapter that passes a
   * self-check, never a software one like llvmpipe, and only when `workers` is not given; else
   * the system's BLAS where FFI is allowed
   * and a library passes its self-check, else wasm), `"webgpu"` (the whole step on the GPU, on
   * this thread, with no workers; any adapter, software ones included), `"blas"`, `"wasm"` or
   * `"ts"` (the workers' backend).
   */
  backend?: BackendChoice;
  /** The BLAS library to open (default: `SEDD_BLAS`, else the platform's usual names). */
  blasPath?: string;
  /**
   * The module each gradient worker runs. Default: `workers/grad_worker.ts` of this package,
   * found beside the trainer's own module. A bundle that puts the worker elsewhere passes its
   * URL, e.g. `new URL("./grad_worker.js", import.meta.url)` for a worker built beside the page's
   * script from `workers/grad_worker.ts`. Not used with `workers` 0 or 1 (no Worker is started).
   */
  workerUrl?: string | URL;
  /**
   * A DiT only: whether the network reads the noise level (false: it is given 0, as MDLM's
   * `time_conditioning: False` does; the loss still reads the real one). Default true, or a
   * resumed run's own; a converted checkpoint's metadata says which (`timeConditioning`).
   */
  timeConditioned?: boolean;
  /** Test-only: make one worker fail at one step. */
  fault?: FaultInjection;
  /**
   * Test-only: the checkpoint after this step fails as a full disk would, once the temporary
   * file of `file` (default `"model.safetensors"`, the first written) is complete.
   */
  writeFault?: WriteFault;
}

/** What {@linkcode train} resolves to; `M` as in {@linkcode TrainOptions}. */
export interface TrainResult<M extends AnyModel = Model> {
  /** The trained model, a transformer or a DiT (a fresh, unshared parameter buffer). */
  model: M;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** One record per step of this call. */
  history: StepInfo[];
  /** Steps completed in total. */
  step: number;
  /**
   * Why the run stopped: its step budget, its time budget, or `signal` (`"aborted"`). The final
   * checkpoint's metadata records the same word under `stopped`.
   */
  stopped: "steps" | "time" | "aborted";
  /** AdamW state (moments and step). */
  optimizer: AdamWState;
  /** Workers used (0: in-process). */
  workers: number;
  /** The backend the run trained on, and a line on why (the adapter or library, or why auto fell back). */
  backend: TrainBackend;
  /** The objective the run trained with (a resumed run's own unless `loss` overrode it). */
  loss: LossName;
  /** The graph the run trained with (a resumed run's own unless `graph` overrode it). */
  graph: GraphName;
}

/**
 * Fine-tunes a DiT (SEDD's or MDLM's denoiser: a converted checkpoint, or a fresh one from a
 * {@linkcode DitSpec}); resuming a DiT's run passes `model: { kind: "dit" }`. Everything else is
 * as for the transformer below; the gradient comes from the DiT's float32 pass on wasm and blas,
 * its float64 pass on ts.
 *
 * @param options As for the transformer, with `model` a DiT; `timeConditioned` for MDLM.
 * @returns The fine-tuned DiT, tokenizer, per-step history, and why the run stopped.
 */
export function train(
  options: TrainOptions<DitModel> & { model: DitModel | DitSpec },
): Promise<TrainResult<DitModel>>;
/**
 * Trains a diffusion language model.
 *
 * @param options Data (`text`, `data` or `tokens`), model, budget, optimisation, workers, run
 *   directory; see {@linkcode TrainOptions}.
 * @returns The model, tokenizer, per-step history, and why the run stopped.
 *
 * @example A few in-process steps on a string
 * ```ts
 * import { train } from "./train.ts";
 * import { trainTokenizer } from "../tokenizer/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const text = "the cat sat on the mat. ".repeat(40);
 * const tokenizer = trainTokenizer([text], { kind: "seed", numMerges: 5 });
 * const { history } = await train({ text, tokenizer, model: "tiny", steps: 3, batch: 2, workers: 0 });
 * assert.equal(history.length, 3);
 * assert.ok(history.every((h) => Number.isFinite(h.loss)));
 * ```
 */
export function train(options: TrainOptions): Promise<TrainResult>;
/**
 * Trains a model of either kind, when the caller's `model` option may be either (the CLI's).
 *
 * @param options See {@linkcode TrainOptions}.
 * @returns The model (a transformer or a DiT), tokenizer, history, and why the run stopped.
 */
export function train(options: TrainOptions<AnyModel>): Promise<TrainResult<AnyModel>>;
export async function train(
  given: TrainOptions<DitModel> | TrainOptions | TrainOptions<AnyModel>,
): Promise<TrainResult<AnyModel>> {
  // setupRun checks that the model trained is of the kind the overload promised, so onStep is
  // only ever called with the model its signature names.
  const options = given as TrainOptions<AnyModel>;
  const started = performance.now();
  const run = await setupRun(options);
  const { settings: s, steps, optimizer, tokenizer } = run;
  const { pool, backend } = await openPool(run, options);
  const live = pool.model; // parameters every worker reads
  const checkpoints = new Checkpoints({
    fsx: run.fsx,
    out: run.out,
    model: live,
    tokenizer,
    optimizer,
    settings: s,
    checkpointEvery: run.checkpointEvery,
    chart: {
      title: chartTitle(live, s),
      // Decoding the held-out tail is work only a chart on disk needs.
      charsPerToken: run.out !== undefined ? charsPerToken(tokenizer, run.heldOut) : undefined,
    },
    resumed: run.resumed !== undefined,
    writeFault: options.writeFault,
    // webgpu: the parameters and moments come back from the device for each checkpoint
    beforeSave: pool.sync && (() => pool.sync!(optimizer)),
  });
  const report = new Reporter({
    started,
    tokensPerStep: s.batch * s.context,
    steps,
    evalEvery: run.evalEvery,
  });
  const ctx: StepContext = {
    pool,
    trainTokens: run.trainTokens,
    settings: s,
    vocabSize: tokenizer.vocabSize,
    optimizer,
  };
  const evaluate = (step: number) => heldOutLoss(pool, run.heldOut, s, tokenizer.vocabSize, step);
  const budgetMs = run.minutes !== undefined ? run.minutes * 60_000 : Infinity;
  const history: StepInfo[] = [];
  let stopped: TrainResult["stopped"] = "steps";

  // The gradient of the next step, started during this step's AdamW (see takeStep); awaited
  // and dropped where the run stops before taking it.
  let pending: PendingGradient | undefined;
  try {
    await checkpoints.start();
    for (let step = optimizer.step; step < steps; step++) {
      if (options.signal?.aborted) {
        stopped = "aborted";
        break;
      }
      const elapsed = report.elapsedMs();
      if (elapsed >= budgetMs) {
        stopped = "time";
        break;
      }
      const t0 = performance.now();
      const lr = stepLearningRate(step, s, steps, elapsed, budgetMs);
      // the next step overlaps this one's AdamW unless a held-out evaluation (which uses the
      // workers and the batch memory) comes between them
      const next = step + 1 < steps && !report.evaluates(step + 1) ? step + 1 : undefined;
      const taken = await takeStep(ctx, step, lr, () => checkpoints.whereKept(), pending, next);
      pending = taken.pending;
      const { loss, gradNorm } = taken;
      const info = report.stepInfo(step + 1, t0, { loss, lr, gradNorm });
      if (report.evaluates(info.step)) info.heldOutLoss = await evaluate(step);
      history.push(info);
      await checkpoints.record(info);
      // webgpu: read the parameters back only for a callback that takes the model
      if (pool.sync && (options.onStep?.length ?? 0) >= 2) await pool.sync(optimizer);
      await report.callOnStep(options.onStep, info, live);
    }
    if (pending) await pending.loss.catch(() => {}); // a step not taken: the workers finish it
    pending = undefined;
    // A run stopped by time or abort gets its held-out loss measured once more at the end. Its
    // last step's line is already written (the stop is seen only after it), so that line is
    // replaced, never repeated: metrics.jsonl keeps one line per step.
    const lastInfo = history.at(-1);
    if (
      lastInfo && lastInfo.heldOutLoss === undefined && report.evaluating && stopped !== "steps"
    ) {
      lastInfo.heldOutLoss = await evaluate(lastInfo.step);
      await checkpoints.replaceLast(lastInfo);
    }
    await checkpoints.finish(stopped);
    await pool.sync?.(optimizer);
  } finally {
    pool.terminate();
  }
  return {
    model: modelOver(live.config, live.params.slice()),
    tokenizer,
    history,
    step: optimizer.step,
    stopped,
    optimizer,
    workers: pool.workers,
    backend,
    loss: s.loss,
    graph: s.graph,
  };
}
