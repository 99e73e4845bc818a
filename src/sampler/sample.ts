/**
 * Sampling text from a model: the convenience layer over {@linkcode sampleIds} that runs the
 * transformer as the denoiser and turns a prompt, suffix or infill template into fixed tokens.
 *
 * @module
 */

import { type BackendChoice, resolveBackend } from "../nn/backend.ts";
import { forward, type Model } from "../model/model.ts";
import type { DitModel } from "../model/dit.ts";
import { decode, type Tokenizer } from "../tokenizer/mod.ts";
import type { NoiseSchedule, ScheduleName } from "../diffusion/schedule.ts";
import type { Rng } from "../rng.ts";
import { conditioning } from "./template.ts";
import {
  type AsyncDenoiser,
  type Denoiser,
  type DenoiserOutput,
  sampleIds,
  sampleIdsAsync,
  type SampleMethod,
  type SampleOptions,
  type SampleResult,
} from "./sample_ids.ts";
import type { GpuContext } from "../kernels/webgpu/context.ts";
import { sampleIdsOnGpu } from "./sample_gpu.ts";
import { resolveAnyBackend } from "../kernels/webgpu/select.ts";
import { createDitPool, type DitSplit } from "../model/dit_pool.ts";
import type { DitWeights } from "../model/dit_fast.ts";
import { checkInt } from "../check.ts";

/** Options of {@linkcode sample}. */
export interface SampleTextOptions {
  /**
   * The compute backend: `"auto"` (default; see `resolveBackend`), `"blas"`, `"wasm"`, `"ts"`,
   * or `"webgpu"` ({@linkcode sampleAsync} only).
   */
  backend?: BackendChoice;
  /** The BLAS library of the `"blas"` backend (default: see `loadBlas`). */
  blasPath?: string;
  /** Text the sample starts with. */
  prompt?: string;
  /** Text the sample ends with. */
  suffix?: string;
  /** Infill template, e.g. `"The whale [MASK:20] the sea"` (not with prompt/suffix). */
  infill?: string;
  /** Total tokens; default the template's length, else the model's context. */
  length?: number;
  /** Steps. Default 64. */
  steps?: number;
  /** Seed; default 0 (give `rng` instead to continue a stream). */
  seed?: number;
  /** Generator to draw from instead of `seed`. */
  rng?: Rng;
  /** Method. Default `"ancestral"` (MDLM, with caching). */
  method?: SampleMethod;
  /** Noise schedule. Default `"loglinear"`. */
  schedule?: ScheduleName | NoiseSchedule;
  /**
   * How the model was trained: `"logits"` (seed, ELBO; default) or `"logScore"` (score entropy).
   * A DiT says it itself (`config.output`: `"sedd"` is `"logScore"`, `"logits"` is `"logits"`);
   * a different value here is an error.
   */
  output?: DenoiserOutput;
  /**
   * A DiT only: whether the network reads sigma. False gives it sigma 0 at every step, as MDLM
   * does without `time_conditioning` (then `ancestral` reuses unchanged outputs). Default true.
   * The transformer kind reads `model.config.timeConditioning` instead.
   */
  timeConditioned?: boolean;
  /** Forward process of the training (`uniform` needs `logScore`). Default `"absorb"`. */
  graph?: "absorb" | "uniform";
  /** Sequences. Default 1. */
  batch?: number;
  /** `confidence`: allow MASK predictions (the notebook). Default false. */
  allowMask?: boolean;
  /** Called after each step with the ids `(B,T)` and the step number. */
  onStep?: (ids: Int32Array, step: number) => void;
}

/** What {@linkcode sample} returns. */
export interface SampleTextResult {
  /** The first sequence's text. */
  text: string;
  /** Every sequence's text. */
  texts: string[];
  /** The ids (B,T). */
  ids: Int32Array;
  /** Network evaluations. */
  evaluations: number;
  /** Evaluations saved by caching. */
  savedEvaluations: number;
}

/**
 * Samples text from a model. Time conditioning is read from `model.config.timeConditioning`.
 *
 * A DiT (SEDD's or MDLM's, `src/model/dit.ts`) is run as its `config.output` says: SEDD's
 * log-scores (scale-by-sigma and the zeroed current token already applied by the network) for
 * the score-based samplers under its `graph`, or MDLM's logits under SUBS. Give the `graph`,
 * `schedule` and `timeConditioned` the checkpoint was trained with (`convertedSampling` reads
 * them from a converted checkpoint's metadata).
 *
 * @param model The model: the transformer kind or a DiT.
 * @param tokenizer Its tokenizer (its `maskId` is MASK).
 * @param options Prompt/suffix or infill, length, steps, seed, method, ...
 * @returns The text, ids and evaluation counts.
 *
 * @example Infill with an untrained tiny model keeps the template's text
 * ```ts
 * import { sample } from "./sample.ts";
 * import { createModel } from "../model/model.ts";
 * import { trainTokenizer } from "../tokenizer/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = trainTokenizer(["the whale and the sea"], { kind: "seed", numMerges: 2 });
 * const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 1 });
 * const { text, ids } = sample(model, tokenizer, { infill: "the [MASK:3] sea", steps: 4, seed: 7 });
 * assert.ok(text.startsWith("the ") && text.endsWith(" sea"));
 * assert.ok(!ids.includes(tokenizer.maskId));
 * ```
 */
export function sample(
  model: Model | DitModel,
  tokenizer: Tokenizer,
  options: SampleTextOptions = {},
): SampleTextResult {
  if (options.backend === "webgpu") {
    throw new RangeError(
      "Invalid backend for sample(): expected auto, blas, wasm or ts (webgpu reads its results " +
        'back from the GPU: use sampleAsync), got "webgpu"',
    );
  }
  return sampleInProcess(prepare(model, tokenizer, options), model, tokenizer);
}

/** Runs `plan` with the model on this thread. */
function sampleInProcess(
  plan: Plan,
  model: Model | DitModel,
  tokenizer: Tokenizer,
): SampleTextResult {
  const dit = plan.dit;
  const denoise: Denoiser = dit
    ? (ids, sigma) => forward(dit, ids, { batch: plan.B, sigma: plan.ditSigma(sigma) })
    : plan.denoise!;
  return plan.finish(sampleIds(denoise, model.config.vocabSize, tokenizer.maskId, plan.options));
}

/** Options of {@linkcode sampleAsync}: those of {@linkcode sample}, the workers and the GPU. */
export interface SampleAsyncOptions extends SampleTextOptions {
  /**
   * A DiT only: run its forward passes on this many workers (`createDitPool`, started for the
   * call and stopped at its end); 0 or 1 runs them in-process. The transformer kind always runs
   * in-process. Default 0.
   */
  workers?: number;
  /** How the pool cuts the rows (see `createDitPool`). Default `"auto"`. */
  split?: DitSplit;
  /** How the pool's workers read the weights (see `createDitPool`). Default `"copy"`. */
  weights?: DitWeights;
  /**
   * `backend: "webgpu"` only: the context to sample on, left open (its device is the caller's),
   * e.g. the one the caller resolved the backend with, so that the GPU is acquired once.
   * Default: a device of its own (`resolveAnyBackend("webgpu")`: any adapter that passes the
   * self-check, which runs once per adapter in the process), destroyed at the end of the call.
   */
  gpu?: GpuContext;
}

/**
 * {@linkcode sample} for every backend, `"webgpu"` included, and with a DiT's forward passes on
 * a worker pool (`options.workers`).
 *
 * With `backend: "webgpu"` the network's forward passes and every per-position update run on
 * the GPU (`sampleIdsGpu`), the ids staying in a GPU buffer from the first step to the last:
 * for the same seed the same text as `sample` on a CPU backend, except where float32 decides a
 * near-tie differently from float64 (`src/kernels/webgpu/sampler.ts` lists the cases). The
 * transformer and the DiT alike. `"auto"` (the default) takes a real GPU the same way where one
 * passes the self-check (`resolveAnyBackend`: never a software adapter such as llvmpipe, and not
 * for a DiT given `workers`), else `sample`'s CPU choice. Each call on the GPU acquires a device
 * (unless given `gpu`); the self-check runs on the first acquisition of an adapter in the
 * process, and later calls that find the same adapter skip it.
 *
 * A DiT with `workers` > 1 runs on a worker pool: the same ids for the same seed as `sample`,
 * since the pool's outputs equal the one-thread pass's bit for bit, and the same steps
 * (`sampleIdsAsync`). The pool runs on the default backend, as `sample` runs a DiT.
 *
 * @param model The model: the transformer kind or a DiT.
 * @param tokenizer Its tokenizer (its `maskId` is MASK).
 * @param options As {@linkcode sample}'s, and `workers`, `split`, `weights`, `gpu`.
 * @returns The text, ids and evaluation counts.
 * @throws Error (rejects) for `"webgpu"` without an adapter that passes the self-check;
 *   DitWorkerError when a worker fails (the pool is stopped).
 *
 * @example The CPU path, as `sample` (give `backend: "webgpu"` to run it on the GPU)
 * ```ts
 * import assert from "node:assert/strict";
 * import { sample, sampleAsync } from "./sample.ts";
 * import { createModel } from "../model/model.ts";
 * import { trainTokenizer } from "../tokenizer/mod.ts";
 *
 * const tokenizer = trainTokenizer(["the whale and the sea"], { kind: "seed", numMerges: 2 });
 * const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 1 });
 * const options = { prompt: "the", length: 8, steps: 4, seed: 3, backend: "ts" } as const;
 * const a = await sampleAsync(model, tokenizer, options);
 * assert.equal(a.text, sample(model, tokenizer, options).text);
 * ```
 */
export async function sampleAsync(
  model: Model | DitModel,
  tokenizer: Tokenizer,
  options: SampleAsyncOptions = {},
): Promise<SampleTextResult> {
  const plan = prepare(model, tokenizer, options);
  const V = model.config.vocabSize;
  if (options.backend === "webgpu") {
    return plan.finish(
      await sampleIdsOnGpu(model, V, tokenizer.maskId, plan.options, { gpu: options.gpu }),
    );
  }
  const workers = checkInt("workers", options.workers ?? 0, 0);
  const dit = plan.dit;
  if ((options.backend ?? "auto") === "auto") {
    // auto takes a real GPU first (never a software adapter; looked at once per process), as
    // train() does; a DiT given workers stays on its CPU pool
    const r = await resolveAnyBackend("auto", {
      path: options.blasPath,
      cpuOnly: dit !== undefined && workers > 1 ? "workers given" : undefined,
    });
    if (r.backend === "webgpu") {
      try {
        return plan.finish(
          await sampleIdsOnGpu(model, V, tokenizer.maskId, plan.options, { gpu: r.gpu }),
        );
      } finally {
        await r.gpu!.destroy().catch(() => {});
      }
    }
  }
  if (dit === undefined || workers <= 1) return sampleInProcess(plan, model, tokenizer);
  const pool = await createDitPool(dit, {
    workers,
    batch: plan.B,
    length: plan.options.length,
    split: options.split,
    weights: options.weights,
  });
  try {
    const denoise: AsyncDenoiser = (ids, sigma) =>
      pool.forward(ids, { batch: plan.B, sigma: plan.ditSigma(sigma) });
    return plan.finish(await sampleIdsAsync(denoise, V, tokenizer.maskId, plan.options));
  } finally {
    pool.terminate();
  }
}

/** What {@linkcode prepare} works out for one sampling call. */
interface Plan {
  /** Sequences. */
  B: number;
  /** The sampler's options. */
  options: SampleOptions;
  /** The DiT to run, when the model is one. */
  dit?: DitModel;
  /** The noise levels a DiT reads: the sampler's, or zeros without time conditioning. */
  ditSigma: (sigma: Float32Array) => Float32Array;
  /** The transformer kind's denoiser on a CPU backend (absent for `"webgpu"`). */
  denoise?: Denoiser;
  /** The sampled ids to the result. */
  finish: (result: SampleResult) => SampleTextResult;
}

/** The checks and settings {@linkcode sample} and {@linkcode sampleAsync} share. */
function prepare(model: Model | DitModel, tokenizer: Tokenizer, options: SampleTextOptions): Plan {
  const V = model.config.vocabSize;
  if (tokenizer.vocabSize !== V) {
    throw new RangeError(
      `Tokenizer mismatch: expected a vocabulary of ${V} (the model's), got ${tokenizer.vocabSize}`,
    );
  }
  const B = options.batch ?? 1;
  const { length, fixed } = conditioning(tokenizer, {
    prompt: options.prompt,
    suffix: options.suffix,
    infill: options.infill,
    length: options.length ?? (options.infill === undefined ? model.config.context : undefined),
  });
  if (length > model.config.context) {
    throw new RangeError(
      `Sample too long: expected at most ${model.config.context} tokens (the model's context), got ${length}`,
    );
  }
  let denoise: Denoiser | undefined;
  let dit: DitModel | undefined;
  let ditSigma = (sigma: Float32Array) => sigma;
  let output = options.output;
  let timeConditioned: boolean;
  let scaleBySigma: boolean | undefined;
  if ((model.config as { kind?: string }).kind === "dit") {
    dit = model as DitModel;
    const own: DenoiserOutput = dit.config.output === "sedd" ? "logScore" : "logits";
    if (output !== undefined && output !== own) {
      throw new RangeError(
        `Invalid output for this DiT: expected "${own}" (its config.output is ` +
          `"${dit.config.output}"), got "${output}"`,
      );
    }
    output = own;
    scaleBySigma = false; // the network's output is SEDD's log-score already
    timeConditioned = options.timeConditioned ?? true;
    const zeros = new Float32Array(B);
    if (!timeConditioned) ditSigma = () => zeros;
  } else {
    const net = model as Model;
    timeConditioned = net.config.timeConditioning === true;
    if (options.backend !== "webgpu") {
      const blas = options.blasPath === undefined ? undefined : { path: options.blasPath };
      const { backend } = resolveBackend(options.backend ?? "auto", blas);
      denoise = (ids, sigma) => forward(net, ids, { batch: B, sigma, backend, blas });
    }
  }
  const sampleOptions: SampleOptions = {
    method: options.method ?? "ancestral",
    steps: options.steps ?? 64,
    length,
    batch: B,
    seed: options.rng === undefined ? (options.seed ?? 0) : undefined,
    rng: options.rng,
    schedule: options.schedule,
    graph: options.graph,
    output,
    scaleBySigma,
    allowMask: options.allowMask,
    timeConditioned,
    fixed,
    onStep: options.onStep,
  };
  const finish = (result: SampleResult): SampleTextResult => {
    const texts: string[] = [];
    for (let b = 0; b < B; b++) {
      texts.push(decode(tokenizer, result.ids.subarray(b * length, (b + 1) * length)));
    }
    return { text: texts[0], texts, ...result };
  };
  return { B, options: sampleOptions, dit, ditSigma, denoise, finish };
}
