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
 * @module
 */

import { type ModelConfig, type PresetName, resolveConfig } from "../model/config.ts";
import { createModel, type Model, validateTokens } from "../model/model.ts";
import { type AdamWState, adamwStep, createAdamW } from "../optim/adamw.ts";
import { encode, type Tokenizer, tokenizerHash, trainTokenizer } from "../tokenizer/mod.ts";
import { fillBatch, type GraphName, LOSS_NAMES, type LossName } from "./batch.ts";
import { hashText, joinDocuments, splitTokens, tokenizerDocuments } from "./data.ts";
import { createPool, type GradientPool } from "./pool.ts";
import { TRAIN_DEFAULTS as D } from "./defaults.ts";
import type { MetricsRecord } from "./run_dir.ts";
import type { FaultInjection } from "./shard.ts";
import { type BackendChoice, resolveBackend, type ResolvedBackend } from "../nn/backend.ts";

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

/** Options of {@linkcode train}. Only a data source is required. */
export interface TrainOptions {
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
  /** Vocabulary size of a tokenizer trained on the fly. Default: `TRAIN_DEFAULTS` (8192). */
  tokenizerVocabSize?: number;
  /** A preset name, a (partial) config, or a model to continue training. Default: `TRAIN_DEFAULTS.model`. */
  model?: PresetName | Partial<ModelConfig> | Model;
  /** Steps to take (total, counting resumed ones). Default 1000, or unbounded with `minutes`. */
  steps?: number;
  /** Wall-clock budget in minutes; the run stops at whichever of `steps` and `minutes` comes first. */
  minutes?: number;
  /** Sequences per step. Default: `TRAIN_DEFAULTS.batch`. */
  batch?: number;
  /** Tokens per sequence. Default: `TRAIN_DEFAULTS.context`, at most the model's context. */
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
  /** Stops the run after the current step; it then saves a checkpoint and resolves. */
  signal?: AbortSignal;
  /**
   * Called after every step with the step's record and the live model. It may return a promise,
   * which `train()` awaits before the next step. The time until it returns (or its promise
   * settles) is excluded from the `minutes` budget, from the time-based learning-rate decay, from
   * tokens/s and from `StepInfo.seconds`, so a harness can evaluate the model here without
   * shortening the run. The model is the one the workers read and AdamW updates in place: treat
   * it as read-only (writing to it changes the run), and copy `model.params` to keep a snapshot.
   * (Two signatures rather than one returning `void | Promise<void>`, so that callbacks returning
   * something else, like `(i) => losses.push(i.loss)`, still type-check.)
   */
  onStep?:
    | ((info: StepInfo, model: Model) => void)
    | ((info: StepInfo, model: Model) => Promise<void>);
  /**
   * Rows per forward/backward pass inside a worker's shard: less activation memory, the same
   * gradient up to summation order. Default 4.
   */
  microBatch?: number;
  /**
   * The compute backend of every worker: `"auto"` (the default: the system's BLAS where FFI is
   * allowed and a library passes its self-check, else wasm), `"blas"`, `"wasm"` or `"ts"`.
   */
  backend?: BackendChoice;
  /** The BLAS library to open (default: `SEDD_BLAS`, else the platform's usual names). */
  blasPath?: string;
  /** Test-only: make one worker fail at one step. */
  fault?: FaultInjection;
}

/** What {@linkcode train} resolves to. */
export interface TrainResult {
  /** The trained model (a fresh, unshared parameter buffer). */
  model: Model;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** One record per step of this call. */
  history: StepInfo[];
  /** Steps completed in total. */
  step: number;
  /** Why the run stopped. */
  stopped: "steps" | "time" | "aborted";
  /** AdamW state (moments and step). */
  optimizer: AdamWState;
  /** Workers used (0: in-process). */
  workers: number;
  /** The backend the workers ran, and a line on why (the library, or why auto fell back). */
  backend: ResolvedBackend;
  /** The objective the run trained with (a resumed run's own unless `loss` overrode it). */
  loss: LossName;
  /** The graph the run trained with (a resumed run's own unless `graph` overrode it). */
  graph: GraphName;
}

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

/** Reserved step key of held-out batches: training never reaches step 2^32 - 2. */
export const HELD_OUT_KEY = 0xfffffffe;

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
 * import { learningRate } from "./train.ts";
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
 * import { clipGradNorm } from "./train.ts";
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

function checkInt(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) {
    throw new RangeError(`Invalid ${name}: expected an integer >= ${min}, got ${v}`);
  }
}

function checkNumber(name: string, v: number, ok: (v: number) => boolean, what: string): void {
  if (typeof v !== "number" || !ok(v)) {
    throw new RangeError(`Invalid ${name}: expected ${what}, got ${v}`);
  }
}

/** Settings saved with a run and restored on resume (explicit options still win). */
interface Settings {
  seed: number;
  batch: number;
  context: number;
  lr: number;
  warmup: number;
  schedule: "constant" | "cosine";
  minLr: number;
  clip: number;
  weightDecay: number;
  loss: LossName;
  graph: GraphName;
  antithetic: boolean;
  heldOutFraction: number;
  evalBatches: number;
  steps: number | null;
  workers: number;
  data: string | null;
  dataHash: string;
}

type RunDir = typeof import("./run_dir.ts");

/** The `metrics.jsonl` line of a step. */
function metricsRecord(info: StepInfo): MetricsRecord {
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

async function runDir(): Promise<RunDir> {
  return await import("./run_dir.ts");
}

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
export async function train(options: TrainOptions): Promise<TrainResult> {
  const started = performance.now();
  const resumeDir = typeof options.resume === "string"
    ? options.resume
    : options.resume
    ? options.out
    : undefined;
  if (options.resume === true && !options.out) {
    throw new TypeError("Invalid resume: expected out (the run directory) with resume: true");
  }
  const out = options.out ?? resumeDir;
  const fsx = out !== undefined || options.data !== undefined ? await runDir() : undefined;
  const resumed = resumeDir !== undefined ? await fsx!.loadRun(resumeDir) : undefined;
  const saved = (resumed?.settings ?? {}) as Partial<Settings>;

  // Tokenizer and token stream.
  let tokenizer = options.tokenizer ?? resumed?.tokenizer;
  let docs: string[] | undefined;
  // A resumed run without data of its own reads the path it was trained on.
  const dataPath = options.data ??
    (options.text === undefined && options.tokens === undefined && typeof saved.data === "string"
      ? saved.data
      : undefined);
  if (options.text !== undefined) {
    docs = typeof options.text === "string" ? [options.text] : options.text;
  } else if (dataPath !== undefined) {
    docs = await (await import("../io.ts")).readCorpus(dataPath);
  }
  if (!docs && !options.tokens) {
    throw new TypeError("Missing data: expected text, data (a path) or tokens");
  }
  if (options.tokens && !tokenizer) {
    throw new TypeError("Missing tokenizer: expected one with pre-tokenized tokens");
  }
  // Trained without the held-out region, so held-out text stays unseen (merges included).
  tokenizer ??= trainTokenizer(
    tokenizerDocuments(docs!, options.heldOutFraction ?? saved.heldOutFraction ?? 0.02),
    { kind: "bpe", vocabSize: options.tokenizerVocabSize ?? D.tokenizerVocabSize },
  );
  const dataHash = options.tokens ? `tokens-${options.tokens.length}` : hashText(docs!);
  let stream = options.tokens;
  if (!stream) {
    const cacheFile = out !== undefined
      ? `${out}/tokens-${tokenizerHash(tokenizer).slice(0, 16)}-${dataHash}.safetensors`
      : undefined;
    if (cacheFile) stream = await fsx!.readTokenCache(cacheFile);
    if (!stream) {
      stream = joinDocuments(
        docs!.map((d) => encode(tokenizer!, d, { eot: false })),
        tokenizer.eotId,
      );
      if (cacheFile) await fsx!.writeTokenCache(cacheFile, stream);
    }
  }
  validateTokens(stream, tokenizer.vocabSize, "tokens");

  // Model.
  let model: Model;
  if (resumed) {
    model = resumed.model;
  } else if (options.model && typeof options.model === "object" && "params" in options.model) {
    model = options.model as Model;
  } else {
    const spec = (options.model ?? D.model) as PresetName | Partial<ModelConfig>;
    const cfg = resolveConfig(spec, { vocabSize: tokenizer.vocabSize, context: options.context });
    model = createModel(cfg, { seed: options.seed ?? 0 });
  }
  if (model.config.vocabSize !== tokenizer.vocabSize) {
    throw new RangeError(
      `Vocabulary mismatch: expected the model's ${model.config.vocabSize} to equal the tokenizer's ${tokenizer.vocabSize}`,
    );
  }

  // Settings: explicit options, then the resumed run's, then defaults.
  const stepsOpt = options.steps ?? (saved.steps ?? undefined);
  const minutes = options.minutes;
  const steps = stepsOpt ?? (minutes !== undefined ? Infinity : 1000);
  const s: Settings = {
    seed: options.seed ?? saved.seed ?? 0,
    batch: options.batch ?? saved.batch ?? D.batch,
    context: options.context ?? saved.context ?? Math.min(D.context, model.config.context),
    lr: options.lr ?? saved.lr ?? D.lr,
    warmup: options.warmup ?? saved.warmup ??
      (Number.isFinite(steps) ? Math.min(D.warmup, Math.floor(steps / 10)) : D.warmupTimed),
    schedule: options.schedule ?? saved.schedule ?? D.schedule,
    minLr: 0,
    clip: options.clip ?? saved.clip ?? D.clip,
    weightDecay: options.weightDecay ?? saved.weightDecay ?? D.weightDecay,
    loss: options.loss ?? saved.loss ?? D.loss,
    graph: options.graph ?? saved.graph ?? "absorb",
    antithetic: options.antithetic ?? saved.antithetic ?? D.antithetic,
    heldOutFraction: options.heldOutFraction ?? saved.heldOutFraction ?? 0.02,
    evalBatches: options.evalBatches ?? saved.evalBatches ?? 4,
    steps: Number.isFinite(steps) ? steps : null,
    // The same worker count keeps a resumed run bitwise on the uninterrupted run's track.
    workers: options.workers ?? saved.workers ?? (globalThis.navigator?.hardwareConcurrency ?? 1),
    data: dataPath ?? null,
    dataHash,
  };
  s.minLr = options.minLr ?? saved.minLr ?? s.lr * D.minLrFraction;
  checkInt("seed", s.seed, 0);
  checkInt("batch", s.batch, 1);
  checkInt("context", s.context, 1);
  if (s.context > model.config.context) {
    throw new RangeError(
      `Invalid context: expected at most the model's ${model.config.context}, got ${s.context}`,
    );
  }
  if (Number.isFinite(steps)) checkInt("steps", steps, 0);
  if (minutes !== undefined) checkNumber("minutes", minutes, (v) => v > 0, "a number > 0");
  checkNumber("lr", s.lr, (v) => v > 0 && Number.isFinite(v), "a number > 0");
  checkNumber("minLr", s.minLr, (v) => v >= 0 && v <= s.lr, "0 <= minLr <= lr");
  checkInt("warmup", s.warmup, 0);
  checkNumber("clip", s.clip, (v) => v >= 0, "a number >= 0");
  checkNumber("weightDecay", s.weightDecay, (v) => v >= 0, "a number >= 0");
  if (!LOSS_NAMES.includes(s.loss)) {
    throw new RangeError(
      `Unknown loss: expected one of ${LOSS_NAMES.join(", ")}, got ${JSON.stringify(s.loss)}`,
    );
  }
  if (s.graph !== "absorb" && s.graph !== "uniform") {
    throw new RangeError(`Unknown graph: expected "absorb" or "uniform", got ${s.graph}`);
  }
  if (s.graph === "uniform" && s.loss !== "score-entropy") {
    throw new RangeError(
      `Invalid graph: the uniform graph needs loss "score-entropy", got "${s.loss}"`,
    );
  }
  if (s.schedule !== "constant" && s.schedule !== "cosine") {
    throw new RangeError(`Unknown schedule: expected "constant" or "cosine", got ${s.schedule}`);
  }
  const evalEvery = options.evalEvery ?? 100;
  const checkpointEvery = options.checkpointEvery ?? 200;
  checkInt("evalEvery", evalEvery, 0);
  checkInt("evalBatches", s.evalBatches, 1);
  checkInt("checkpointEvery", checkpointEvery, 0);
  const workers = s.workers;
  checkInt("workers", workers, 0);
  if (resumed && saved.dataHash && saved.dataHash !== dataHash) {
    throw new RangeError(
      `Resume data mismatch: expected the run's data (hash ${saved.dataHash}), got hash ${dataHash}`,
    );
  }

  const { train: trainTokens, heldOut } = splitTokens(stream, {
    context: s.context,
    heldOutFraction: s.heldOutFraction,
  });
  const optimizer = resumed?.optimizer ?? createAdamW(model.params.length);
  const startStep = optimizer.step;
  const B = s.batch, T = s.context;
  const tokensPerStep = B * T;

  if (out !== undefined && resumed) await fsx!.truncateMetrics(out, startStep);

  const backend = resolveBackend(options.backend ?? "auto", { path: options.blasPath });
  const pool: GradientPool = await createPool({
    config: model.config,
    params: model.params,
    batch: B,
    context: T,
    workers,
    seed: s.seed,
    loss: s.loss,
    graph: s.graph,
    microBatch: options.microBatch,
    backend: backend.backend,
    blasPath: options.blasPath,
    fault: options.fault,
  });
  const live = pool.model; // parameters every worker reads
  const history: StepInfo[] = [];
  const recent: number[] = [];
  let lastGood = startStep; // the step of the newest checkpoint on disk (or resumed from)
  let haveCheckpoint = resumed !== undefined;
  let stopped: TrainResult["stopped"] = "steps";
  const budgetMs = minutes !== undefined ? minutes * 60_000 : Infinity;
  let paused = 0; // milliseconds spent inside onStep: not training time
  const title = `${model.config.dModel}d x ${model.config.nLayers} layers, ${s.loss} loss`;

  const save = async () => {
    if (out === undefined) return;
    await fsx!.saveCheckpoint(
      out,
      live,
      tokenizer!,
      optimizer,
      s as unknown as Record<string, unknown>,
    );
    await fsx!.writeLossChart(out, title);
    lastGood = optimizer.step;
    haveCheckpoint = true;
  };

  const heldOutLoss = async (step: number): Promise<number> => {
    let sum = 0;
    for (let e = 0; e < s.evalBatches; e++) {
      fillBatch(pool.batch, heldOut, {
        seed: s.seed,
        step: HELD_OUT_KEY,
        firstRow: e * B,
        loss: s.loss,
        vocabSize: tokenizer!.vocabSize,
        graph: s.graph,
        antithetic: s.antithetic,
      });
      sum += await pool.evaluate(step);
    }
    return sum / s.evalBatches;
  };

  try {
    for (let step = startStep; step < steps; step++) {
      if (options.signal?.aborted) {
        stopped = "aborted";
        break;
      }
      const elapsed = performance.now() - started - paused;
      if (elapsed >= budgetMs) {
        stopped = "time";
        break;
      }
      const t0 = performance.now();
      const progress = Number.isFinite(steps)
        ? (step - s.warmup) / Math.max(1, steps - s.warmup)
        : elapsed / budgetMs; // a time budget decays the rate over wall-clock time
      const lr = learningRate(step, { ...s, progress });
      fillBatch(pool.batch, trainTokens, {
        seed: s.seed,
        step,
        loss: s.loss,
        vocabSize: tokenizer.vocabSize,
        graph: s.graph,
        antithetic: s.antithetic,
      });
      const loss = await pool.gradient(step);
      const gradNorm = clipGradNorm(pool.grads, s.clip);
      if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
        const where = out === undefined
          ? ""
          : haveCheckpoint
          ? `; the last good checkpoint (step ${lastGood}) is kept in ${out}`
          : `; no checkpoint had been written to ${out} yet`;
        throw new NonFiniteError(
          step,
          `Non-finite ${
            Number.isFinite(loss) ? "gradient" : "loss"
          } at step ${step}: loss ${loss}, ` +
            `gradient norm ${gradNorm}; training stopped${where}`,
        );
      }
      adamwStep(live.params, pool.grads, optimizer, { lr, weightDecay: s.weightDecay });
      const done = step + 1;
      recent.push(performance.now() - t0);
      if (recent.length > 10) recent.shift();
      const avgMs = recent.reduce((a, b) => a + b, 0) / recent.length;
      const info: StepInfo = {
        step: done,
        loss,
        lr,
        gradNorm,
        tokensPerSecond: tokensPerStep / (avgMs / 1000),
        seconds: (performance.now() - started - paused) / 1000,
        steps,
      };
      const last = done === steps;
      if (evalEvery > 0 && (done % evalEvery === 0 || last)) {
        info.heldOutLoss = await heldOutLoss(step);
      }
      history.push(info);
      if (out !== undefined) {
        await fsx!.appendMetrics(out, metricsRecord(info));
        if (checkpointEvery > 0 && done % checkpointEvery === 0) await save();
      }
      if (options.onStep) {
        const p0 = performance.now();
        await options.onStep(info, live);
        paused += performance.now() - p0;
      }
    }
    // A run stopped by time or abort gets its held-out loss measured once more at the end. Its
    // last step's line is already written (the stop is seen only after it), so that line is
    // replaced, never repeated: metrics.jsonl keeps one line per step.
    const lastInfo = history.at(-1);
    if (lastInfo && lastInfo.heldOutLoss === undefined && evalEvery > 0 && stopped !== "steps") {
      lastInfo.heldOutLoss = await heldOutLoss(lastInfo.step);
      if (out !== undefined) await fsx!.replaceLastMetrics(out, metricsRecord(lastInfo));
    }
    if (optimizer.step !== lastGood) await save();
  } finally {
    pool.terminate();
  }
  const result = createModel(live.config, { params: live.params.slice() });
  return {
    model: result,
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
