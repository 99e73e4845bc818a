/**
 * The setup of a training run: options (and a resumed run's saved settings) become one resolved
 * configuration, the corpus becomes a tokenizer and a token stream split into training and
 * held-out parts, and the pool of gradient workers is created over the model.
 *
 * Dimensions: `B` batch, `T` context, `V` vocabulary.
 *
 * @module
 */

import { type ModelConfig, type PresetName, resolveConfig } from "../model/config.ts";
import { createModel, validateTokens } from "../model/model.ts";
import { createDit, type DitConfigInput, type DitModel } from "../model/dit.ts";
import { ditTrainBytes } from "../model/dit_train.ts";
import { workspaceBytes } from "../model/workspace.ts";
import { type AdamWState, createAdamW } from "../optim/adamw.ts";
import { encode, type Tokenizer, tokenizerHash, trainTokenizer } from "../tokenizer/mod.ts";
import type { GraphName, LossName } from "./batch.ts";
import { checkInt, oneOf } from "../check.ts";
import { checkLossName } from "../diffusion/losses.ts";
import { hashText, joinDocuments, splitTokens, tokenizerDocuments } from "./data.ts";
import { createPool, DEFAULT_MICRO_BATCH, type GradientPool } from "./pool.ts";
import { TRAIN_DEFAULTS as D } from "./defaults.ts";
import type { LoadedRun } from "./run_dir.ts";
import { type BackendChoice, type BackendName, resolveBackend } from "../nn/backend.ts";
import { type AnyResolvedBackend, resolveAnyBackend } from "../kernels/webgpu/select.ts";
import { createGpuPool } from "./gpu_pool.ts";
import type { TrainOptions } from "./train.ts";
import { type AnyModel, checkDitObjective, ditLoss, isDitModel } from "./net.ts";

/** The run-directory module, loaded only when a run touches the file system. */
export type RunDir = typeof import("./run_dir.ts");

/** Settings saved with a run and restored on resume (explicit options still win). */
export interface Settings {
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
  /**
   * A DiT only: whether the network reads sigma (false: it is given 0, MDLM's
   * `time_conditioning: False`). True for the transformer kind, whose config says.
   */
  timeConditioned: boolean;
}

/** Everything a run needs before its first step. */
export interface RunSetup {
  /** The run-directory module, when `out` or `data` needs the file system. */
  fsx: RunDir | undefined;
  /** The run directory, if any. */
  out: string | undefined;
  /** The run resumed from, if any. */
  resumed: LoadedRun | undefined;
  /** The tokenizer. */
  tokenizer: Tokenizer;
  /** The model to train, a transformer or a DiT (its parameters are copied into the pool). */
  model: AnyModel;
  /** The resolved settings (saved with every checkpoint). */
  settings: Settings;
  /** The step budget (`Infinity` with only a time budget). */
  steps: number;
  /** The time budget in minutes, if any. */
  minutes: number | undefined;
  /** Held-out loss every this many steps; 0 never. */
  evalEvery: number;
  /** Checkpoint every this many steps; 0 only at the end. */
  checkpointEvery: number;
  /** Tokens the batches are drawn from. */
  trainTokens: Int32Array;
  /** The held-out tail. */
  heldOut: Int32Array;
  /** AdamW state (a resumed run's, or fresh). */
  optimizer: AdamWState;
}

function checkNumber(name: string, v: number, ok: (v: number) => boolean, what: string): void {
  if (typeof v !== "number" || !ok(v)) {
    throw new RangeError(`Invalid ${name}: expected ${what}, got ${v}`);
  }
}

/** The documents of the run: `text`, else the `data` path (a resumed run's own by default). */
async function readDocuments(
  options: TrainOptions<AnyModel>,
  saved: Partial<Settings>,
): Promise<{ docs: string[] | undefined; dataPath: string | undefined }> {
  // A resumed run without data of its own reads the path it was trained on.
  const dataPath = options.data ??
    (options.text === undefined && options.tokens === undefined && typeof saved.data === "string"
      ? saved.data
      : undefined);
  let docs: string[] | undefined;
  if (options.text !== undefined) {
    docs = typeof options.text === "string" ? [options.text] : options.text;
  } else if (dataPath !== undefined) {
    docs = await (await import("../io.ts")).readCorpus(dataPath);
  }
  return { docs, dataPath };
}

/** The token stream of the documents, read from or written to the run directory's cache. */
async function tokenStream(
  docs: string[],
  tokenizer: Tokenizer,
  dataHash: string,
  fsx: RunDir | undefined,
  out: string | undefined,
): Promise<Int32Array> {
  const cacheFile = out !== undefined
    ? `${out}/tokens-${tokenizerHash(tokenizer).slice(0, 16)}-${dataHash}.safetensors`
    : undefined;
  const cached = cacheFile ? await fsx!.readTokenCache(cacheFile) : undefined;
  if (cached) return cached;
  const stream = joinDocuments(
    docs.map((d) => encode(tokenizer, d, { eot: false })),
    tokenizer.eotId,
  );
  if (cacheFile) await fsx!.writeTokenCache(cacheFile, stream);
  return stream;
}

/** The model: a resumed run's, the caller's, or a fresh one of the preset or config. */
function chooseModel(
  options: TrainOptions<AnyModel>,
  resumed: LoadedRun | undefined,
  tokenizer: Tokenizer,
): AnyModel {
  let model: AnyModel;
  if (resumed) {
    model = resumed.model;
  } else if (options.model && typeof options.model === "object" && "params" in options.model) {
    model = options.model as AnyModel;
  } else if (isDitSpec(options.model)) {
    // A fresh DiT: the vocabulary is the tokenizer's, the context the run's unless given.
    const { kind: _, ...spec } = options.model;
    model = createDit(
      {
        ...spec,
        vocabSize: tokenizer.vocabSize,
        context: spec.context ?? options.context ?? D.context,
      } as DitConfigInput,
      { seed: options.seed ?? D.seed },
    );
  } else {
    const spec = (options.model ?? D.model) as PresetName | Partial<ModelConfig>;
    const cfg = resolveConfig(spec, { vocabSize: tokenizer.vocabSize, context: options.context });
    model = createModel(cfg, { seed: options.seed ?? D.seed });
  }
  if (model.config.vocabSize !== tokenizer.vocabSize) {
    throw new RangeError(
      `Vocabulary mismatch: expected the model's ${model.config.vocabSize} to equal the tokenizer's ${tokenizer.vocabSize}`,
    );
  }
  return model;
}

/** Whether the `model` option names a DiT: a DiT spec (`{ kind: "dit" }`) or a DiT model. */
function asksForDit(options: TrainOptions<AnyModel>): boolean {
  return isDitSpec(options.model) ||
    (typeof options.model === "object" && "params" in options.model && isDitModel(options.model));
}

/**
 * The kind of model a run trains must be the kind its `model` option says (so that `train()`'s
 * result is typed as what it holds): resuming a DiT's run takes `model: { kind: "dit" }`.
 */
function checkModelKind(options: TrainOptions<AnyModel>, model: AnyModel, resumed: boolean): void {
  const asked = asksForDit(options);
  if (asked === isDitModel(model)) return;
  throw new RangeError(
    asked
      ? `Invalid model: expected a transformer's options for this run (it resumes a ` +
        `transformer), got a DiT`
      : `Invalid model: expected model: { kind: "dit" } ${
        resumed ? "to resume a DiT's run" : "for a DiT"
      }, got ${JSON.stringify(options.model ?? null)}`,
  );
}

/** Whether a `model` option is a DiT config (`kind: "dit"`) rather than a model or preset. */
function isDitSpec(spec: TrainOptions<AnyModel>["model"]): spec is Extract<
  TrainOptions<AnyModel>["model"],
  { kind: "dit" }
> {
  return typeof spec === "object" && !("params" in spec) &&
    (spec as { kind?: string }).kind === "dit";
}

/** Settings: explicit options, then the resumed run's, then defaults; checked. */
function resolveSettings(
  options: TrainOptions<AnyModel>,
  saved: Partial<Settings>,
  model: AnyModel,
  data: { dataPath: string | undefined; dataHash: string },
): { settings: Settings; steps: number } {
  const stepsOpt = options.steps ?? (saved.steps ?? undefined);
  const minutes = options.minutes;
  const steps = stepsOpt ?? (minutes !== undefined ? Infinity : D.steps);
  const s: Settings = {
    seed: options.seed ?? saved.seed ?? D.seed,
    batch: options.batch ?? saved.batch ?? D.batch,
    context: options.context ?? saved.context ?? Math.min(D.context, model.config.context),
    lr: options.lr ?? saved.lr ?? D.lr,
    warmup: options.warmup ?? saved.warmup ??
      (Number.isFinite(steps) ? Math.min(D.warmup, Math.floor(steps / 10)) : D.warmupTimed),
    schedule: options.schedule ?? saved.schedule ?? D.schedule,
    minLr: 0,
    clip: options.clip ?? saved.clip ?? D.clip,
    weightDecay: options.weightDecay ?? saved.weightDecay ?? D.weightDecay,
    // A DiT's objective is its output's (SEDD's score entropy, MDLM's SUBS ELBO).
    loss: options.loss ?? saved.loss ?? (isDitModel(model) ? ditLoss(model.config) : D.loss),
    graph: options.graph ?? saved.graph ?? D.graph,
    antithetic: options.antithetic ?? saved.antithetic ?? D.antithetic,
    heldOutFraction: options.heldOutFraction ?? saved.heldOutFraction ?? D.heldOutFraction,
    evalBatches: options.evalBatches ?? saved.evalBatches ?? D.evalBatches,
    steps: Number.isFinite(steps) ? steps : null,
    // The same worker count keeps a resumed run bitwise on the uninterrupted run's track.
    workers: options.workers ?? saved.workers ?? (globalThis.navigator?.hardwareConcurrency ?? 1),
    data: data.dataPath ?? null,
    dataHash: data.dataHash,
    timeConditioned: options.timeConditioned ?? saved.timeConditioned ?? true,
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
  checkLossName(s.loss);
  oneOf("graph", s.graph, ["absorb", "uniform"]);
  if (s.graph === "uniform" && s.loss !== "score-entropy") {
    throw new RangeError(
      `Invalid graph: the uniform graph needs loss "score-entropy", got "${s.loss}"`,
    );
  }
  oneOf("schedule", s.schedule, ["constant", "cosine"]);
  if (typeof s.timeConditioned !== "boolean") {
    throw new TypeError(`Invalid timeConditioned: expected a boolean, got ${s.timeConditioned}`);
  }
  if (isDitModel(model)) {
    checkDitObjective(model.config, s.loss, s.graph);
  } else if (options.timeConditioned !== undefined) {
    throw new RangeError(
      "Invalid timeConditioned: expected it only with a DiT (a transformer's config says " +
        `timeConditioning), got ${options.timeConditioned} for a transformer`,
    );
  }
  checkInt("evalBatches", s.evalBatches, 1);
  checkInt("workers", s.workers, 0);
  return { settings: s, steps };
}

/**
 * The most bytes one workspace may take: the wasm32 arena's 4 GiB address space, less 4 MiB for
 * the kernels' own memory (their stack, data and initial pages, about 2 MiB).
 */
export const WORKSPACE_BYTES_LIMIT = 2 ** 32 - 4 * 2 ** 20;

const GiB = 2 ** 30;

/**
 * Throws a RangeError naming the CLI flag to lower when one workspace would need more than
 * `limit` bytes. Runs before any worker or arena exists.
 *
 * @param sizes `rows` per pass, `context` (T), `batch` (B).
 * @param bytesPerWorkspace The bytes of a workspace of `rows` x `T` (the model's `workspaceBytes`).
 * @param limit The most bytes a workspace may take. Default {@linkcode WORKSPACE_BYTES_LIMIT}.
 */
export function checkWorkspaceSize(
  sizes: { rows: number; context: number; batch: number },
  bytesPerWorkspace: (rows: number, T: number) => number,
  limit: number = WORKSPACE_BYTES_LIMIT,
): void {
  const { rows, context: T, batch: B } = sizes;
  const need = bytesPerWorkspace(rows, T);
  if (need <= limit) return;
  const gib = (b: number) => (b / GiB).toFixed(b < 10 * GiB ? 2 : 0);
  const cap = `${gib(limit)} GiB (the wasm32 arena)`;
  // The attention tiles grow with T^2: when even one row does not fit, only --context helps.
  if (bytesPerWorkspace(1, T) > limit) {
    // The longest context that fits (bytes grow with T): a binary search over [1, T).
    let lo = 0, hi = T;
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (bytesPerWorkspace(rows, mid) <= limit) lo = mid;
      else hi = mid;
    }
    const maxT = lo;
    throw new RangeError(
      `Invalid --context: expected a context whose workspace fits in ${cap}, at most ${maxT}, ` +
        `got ${T} (about ${gib(need)} GiB per workspace)`,
    );
  }
  throw new RangeError(
    `Invalid --batch: expected sequences per pass whose workspace fits in ${cap}, got ` +
      `--batch ${B} at --context ${T} (${rows} per pass: about ${gib(need)} GiB per workspace)`,
  );
}

/**
 * {@linkcode checkWorkspaceSize} for the pool's sharding: `W` workers of `ceil(B/W)` rows (in
 * process: all `B`), in passes of at most `microBatch` rows.
 */
function checkWorkspaceFits(
  config: ModelConfig,
  s: { batch: number; context: number; workers: number },
  microBatch: number | undefined,
): void {
  checkShardFits(s, microBatch, (rows, T) => workspaceBytes(config, rows, T, { backend: "wasm" }));
}

/** {@linkcode checkWorkspaceSize} for the rows one shard's pass holds under the pool's sharding. */
function checkShardFits(
  s: { batch: number; context: number; workers: number },
  microBatch: number | undefined,
  bytes: (rows: number, T: number) => number,
): void {
  const W = Math.min(s.workers, s.batch);
  const shardRows = W <= 1 ? s.batch : Math.ceil(s.batch / W);
  checkWorkspaceSize(
    {
      rows: Math.min(shardRows, microBatch ?? DEFAULT_MICRO_BATCH),
      context: s.context,
      batch: s.batch,
    },
    bytes,
  );
}

/**
 * Before any data is read or a tokenizer trained: a fresh model of a preset or config at an
 * explicit `context` must fit, with the smallest vocabulary a tokenizer can have (the estimate
 * only grows with it). Invalid sizes are left to the full checks, which name them properly.
 */
function earlyWorkspaceCheck(options: TrainOptions<AnyModel>): void {
  const spec = options.model ?? D.model;
  if (
    options.context === undefined || (typeof spec === "object" && "params" in spec) ||
    isDitSpec(spec)
  ) return;
  const batch = options.batch ?? D.batch;
  const workers = options.workers ?? (globalThis.navigator?.hardwareConcurrency ?? 1);
  const sizes = [options.context, batch, workers + 1, options.microBatch ?? 1];
  if (!sizes.every((v) => Number.isInteger(v) && v >= 1)) return;
  const config = resolveConfig(spec as PresetName | Partial<ModelConfig>, {
    vocabSize: 258,
    context: options.context,
  });
  checkWorkspaceFits(
    config,
    { batch, context: options.context, workers },
    options.microBatch,
  );
}

/**
 * Throws a RangeError naming `--context` when the training split of `N` tokens cannot hold a
 * window of `T` tokens with a held-out tail of `heldOutFraction` (at least `T` tokens).
 */
function checkContextFits(N: number, T: number, heldOutFraction: number): void {
  const held = heldOutFraction > 0 ? Math.ceil(N * heldOutFraction) : 0;
  const maxT = heldOutFraction > 0 ? Math.min(N - held, Math.floor(N / 2)) : N;
  if (T <= maxT) return;
  throw new RangeError(
    `Invalid --context: expected at most ${Math.max(0, maxT)} tokens (the data holds ${N}, ` +
      `${held} held out, and a held-out window needs --context tokens too), got ${T}`,
  );
}

/**
 * Resolves the options of a run: reads the resumed run and the corpus, trains or takes the
 * tokenizer, tokenizes, builds or takes the model, resolves and checks the settings, and splits
 * the stream. Creates no worker.
 *
 * @param options The caller's options.
 * @returns The run's setup.
 */
export async function setupRun(options: TrainOptions<AnyModel>): Promise<RunSetup> {
  const resumeDir = typeof options.resume === "string"
    ? options.resume
    : options.resume
    ? options.out
    : undefined;
  if (options.resume === true && !options.out) {
    throw new TypeError("Invalid resume: expected out (the run directory) with resume: true");
  }
  if (resumeDir === undefined) earlyWorkspaceCheck(options);
  // before anything is written to the run directory (its token cache)
  if (options.backend === "webgpu" && asksForDit(options)) throw ditOnWebgpu();
  const out = options.out ?? resumeDir;
  const fsx = out !== undefined || options.data !== undefined
    ? await import("./run_dir.ts")
    : undefined;
  const resumed = resumeDir !== undefined ? await fsx!.loadRun(resumeDir) : undefined;
  const saved = (resumed?.settings ?? {}) as Partial<Settings>;

  const { docs, dataPath } = await readDocuments(options, saved);
  let tokenizer = options.tokenizer ?? resumed?.tokenizer;
  if (!docs && !options.tokens) {
    throw new TypeError("Missing data: expected text, data (a path) or tokens");
  }
  if (options.tokens && !tokenizer) {
    throw new TypeError("Missing tokenizer: expected one with pre-tokenized tokens");
  }
  if (!tokenizer) {
    // Trained without the held-out region, so held-out text stays unseen (merges included).
    const vocabSize = options.tokenizerVocabSize ?? D.tokenizerVocabSize;
    tokenizer = trainTokenizer(
      tokenizerDocuments(docs!, options.heldOutFraction ?? saved.heldOutFraction ?? 0.02),
      { kind: "bpe", vocabSize },
    );
    // A text too small for the merges asked for stops early; an explicit size is a promise.
    if (options.tokenizerVocabSize !== undefined && tokenizer.vocabSize < vocabSize) {
      throw new RangeError(
        `Invalid --vocab: expected at most ${tokenizer.vocabSize} (all the merges this text ` +
          `supports), got ${vocabSize}`,
      );
    }
  }
  const dataHash = options.tokens ? `tokens-${options.tokens.length}` : hashText(docs!);
  const stream = options.tokens ?? await tokenStream(docs!, tokenizer, dataHash, fsx, out);
  validateTokens(stream, tokenizer.vocabSize, "tokens");

  const model = chooseModel(options, resumed, tokenizer);
  checkModelKind(options, model, resumed !== undefined);
  const { settings, steps } = resolveSettings(options, saved, model, { dataPath, dataHash });
  const evalEvery = options.evalEvery ?? 100;
  const checkpointEvery = options.checkpointEvery ?? 200;
  checkInt("evalEvery", evalEvery, 0);
  checkInt("checkpointEvery", checkpointEvery, 0);
  if (resumed && saved.dataHash && saved.dataHash !== dataHash) {
    throw new RangeError(
      `Resume data mismatch: expected the run's data (hash ${saved.dataHash}), got hash ${dataHash}`,
    );
  }

  checkContextFits(stream.length, settings.context, settings.heldOutFraction);
  const { train: trainTokens, heldOut } = splitTokens(stream, {
    context: settings.context,
    heldOutFraction: settings.heldOutFraction,
  });
  const optimizer = resumed?.optimizer ?? createAdamW(model.params.length);
  return {
    fsx,
    out,
    resumed,
    tokenizer,
    model,
    settings,
    steps,
    minutes: options.minutes,
    evalEvery,
    checkpointEvery,
    trainTokens,
    heldOut,
    optimizer,
  };
}

/** The backend a run trains on, and one line on why. */
export interface TrainBackend {
  /** `"webgpu"` (the whole step on the GPU) or the CPU backend of every shard. */
  backend: BackendName | "webgpu";
  /** One line on the choice: the adapter or library used, or why `auto` fell back. */
  note: string;
}

/**
 * Why `"auto"` stays on the CPU for these options, or `undefined`: an explicit worker count (or
 * a test's fault injection, which needs a worker) asks for the worker pool.
 */
function cpuOnly(options: Pick<TrainOptions, "workers" | "fault">): string | undefined {
  if (options.fault !== undefined) return "a worker fault is injected";
  if (options.workers !== undefined) return "an explicit worker count asks for the CPU workers";
  return undefined;
}

/**
 * The backend `train()` would run for `choice`, without starting anything: `"webgpu"` and
 * `"auto"` acquire the GPU, run the self-check and release it again (see `resolveAnyBackend`);
 * the CPU choices are `resolveBackend`'s.
 *
 * @param choice `"auto"`, `"webgpu"`, `"blas"`, `"wasm"` or `"ts"`.
 * @param options Where the BLAS library is (`blasPath`); `workers` and `fault` as `train()`
 *   takes them (either keeps `"auto"` on the CPU).
 * @returns The backend and a one-line note.
 * @throws Error for `"webgpu"` without a working adapter, `"blas"` without a library.
 *
 * @example An explicit CPU backend
 * ```ts
 * import { resolveTrainBackend } from "./setup.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(await resolveTrainBackend("ts"), { backend: "ts", note: "ts" });
 * ```
 */
export async function resolveTrainBackend(
  choice: BackendChoice,
  options: Pick<TrainOptions, "blasPath" | "workers" | "fault"> = {},
): Promise<TrainBackend> {
  const r = await openTrainBackend(choice, options);
  if (r.gpu) await r.gpu.destroy().catch(() => {});
  return { backend: r.backend, note: r.note };
}

/**
 * {@linkcode resolveTrainBackend}'s choice with the WebGPU context kept open, for a caller that
 * runs on it next (`sampleAsync` and `evaluateAsync` take it as `gpu`), so that the GPU is
 * acquired and self-checked once. The caller owns the context: destroy it when done.
 *
 * @param choice `"auto"`, `"webgpu"`, `"blas"`, `"wasm"` or `"ts"`.
 * @param options As {@linkcode resolveTrainBackend}'s.
 * @returns The backend, a one-line note, and for `"webgpu"` its context.
 * @throws Error for `"webgpu"` without a working adapter, `"blas"` without a library.
 */
export async function openTrainBackend(
  choice: BackendChoice,
  options: Pick<TrainOptions, "blasPath" | "workers" | "fault"> = {},
): Promise<AnyResolvedBackend> {
  return await resolveAnyBackend(choice, { path: options.blasPath, cpuOnly: cpuOnly(options) });
}

/**
 * Resolves the backend, checks that one workspace fits (see {@linkcode checkWorkspaceSize}), and
 * starts the gradient workers (or the in-process shard).
 *
 * @param run The run's setup.
 * @param options The caller's options (`backend`, `blasPath`, `microBatch`, `fault`,
 *   `workerUrl`).
 * @returns The pool and the backend it runs.
 */
export async function openPool(
  run: RunSetup,
  options: TrainOptions<AnyModel>,
): Promise<{ pool: GradientPool; backend: TrainBackend }> {
  const s = run.settings;
  let backend: TrainBackend & { backend: BackendName }; // a CPU backend past the webgpu branch
  if (isDitModel(run.model)) {
    backend = ditBackend(options.backend, options.blasPath);
    if (backend.backend !== "ts") checkDitTrainerFits(run.model, s, options.microBatch);
  } else {
    const config = run.model.config;
    const resolved = await resolveAnyBackend(options.backend ?? "auto", {
      path: options.blasPath,
      cpuOnly: cpuOnly(options),
    });
    if (resolved.backend === "webgpu") {
      // the whole step on the device, on this thread: no workers, no wasm arena
      const note = `${resolved.note}; the whole step on the GPU, no workers`;
      try {
        const pool = createGpuPool({
          gpu: resolved.gpu,
          config,
          params: run.model.params,
          optimizer: run.optimizer,
          batch: s.batch,
          context: s.context,
          seed: s.seed,
          loss: s.loss,
          graph: s.graph,
        });
        return { pool, backend: { backend: "webgpu", note } };
      } catch (e) {
        await resolved.gpu.destroy().catch(() => {});
        throw e;
      }
    }
    backend = { backend: resolved.backend, note: resolved.note };
    checkWorkspaceFits(config, s, options.microBatch);
  }
  const pool = await createPool({
    config: run.model.config,
    params: run.model.params,
    batch: s.batch,
    context: s.context,
    workers: s.workers,
    seed: s.seed,
    loss: s.loss,
    graph: s.graph,
    microBatch: options.microBatch,
    backend: backend.backend,
    blasPath: options.blasPath,
    timeConditioned: s.timeConditioned,
    fault: options.fault,
    workerUrl: options.workerUrl,
  });
  return { pool, backend };
}

/**
 * The backend of a DiT run: `"wasm"` and `"blas"` run its float32 training pass
 * (`src/model/dit_train.ts`), `"ts"` its float64 reference pass; `"auto"` picks as for the
 * transformer among the CPU backends (BLAS where a library loads, else wasm where WebAssembly SIMD
 * validates, else ts). `"webgpu"` is refused.
 */
/** The refusal of `"webgpu"` for a DiT (its trainer runs on the CPU backends only). */
function ditOnWebgpu(): RangeError {
  return new RangeError(
    'Unsupported backend for a DiT: training a DiT on "webgpu" is not supported yet, ' +
      'expected "auto", "blas", "wasm" or "ts"',
  );
}

function ditBackend(
  choice: string | undefined,
  blasPath: string | undefined,
): TrainBackend & { backend: BackendName } {
  if (choice === "webgpu") throw ditOnWebgpu();
  const resolved = resolveBackend((choice ?? "auto") as BackendChoice, { path: blasPath });
  const pass = resolved.backend === "ts"
    ? "a DiT trains on its float64 reference pass"
    : "a DiT trains on its float32 pass";
  return { backend: resolved.backend, note: `${resolved.note}; ${pass}` };
}

/**
 * {@linkcode checkWorkspaceSize} for a DiT's float32 training pass on wasm or blas: each shard's
 * trainer keeps the activations of `microBatch` rows (at most its share of the batch) in the
 * wasm arena, with a copy of the parameters and a gradient accumulator.
 */
function checkDitTrainerFits(
  model: DitModel,
  s: { batch: number; context: number; workers: number },
  microBatch: number | undefined,
): void {
  checkShardFits(s, microBatch, (rows, T) => ditTrainBytes(model, rows, T));
}
