/**
 * The likelihood bound of a diffusion language model on held-out tokens.
 *
 * Dimensions: `B` sequences per forward pass, `T` window length (tokens), `V` vocabulary
 * (MASK = V - 1), `W` windows, `K` Monte-Carlo draws per window, `N` held-out tokens.
 *
 * The held-out stream is cut into consecutive windows of `context` tokens (the last one may be
 * shorter). For every window `w` and draw `k`, a diffusion time t and a corruption x_t of the
 * window are drawn and the training loss of the window is evaluated with `scale = 1`, i.e. the
 * window's summed nats (the eval-mode forward pass: no dropout; time-conditioned models get sigma):
 *
 * - `elbo` (MDLM, absorb, SUBS): `dsigma / expm1(sigma) * sum_{masked i} -log p(x0_i | x_t)`.
 * - `score-entropy` (SEDD DWDSE, absorb or uniform): `dsigma * sum_i L_i` (SEDD's likelihood
 *   bound too, up to the prior term at t = 1, which vanishes as sigma(1) grows).
 *
 * Averaged over t and masks this is the continuous-time negative ELBO, an upper bound on the
 * negative log-likelihood. With the default `loglinear` schedule and t ~ U[eps, 1] (MDLM's and
 * SEDD's evaluation; eps 1e-3) the two ends of the time range that the estimator leaves out weigh
 * O(eps) relative: for a denoiser that ignores its context the expectation is exactly (1 - eps)
 * times the true NLL. `{ schedule: "linear", eps: 1e-6 }` gives the schedule-free continuous bound
 * (mask probability t ~ U[eps, 1], weight 1/t) up to O(1e-6). The tests check both against an
 * enumeration over masks and against the exact likelihood of the any-order generative model.
 *
 * Reported: nats/token (total nats / N), its Monte-Carlo standard error, the perplexity bound
 * exp(nats/token), and with a tokenizer bits/char = total nats / ln 2 / characters: the Unicode
 * code points of the decoded documents, plus one per end-of-text token (a document boundary
 * counts as one character, like a newline, not as the 13 of its marker's text).
 *
 * Randomness: draw k of window w takes its t and mask from `new Rng(seed, w, k)`; with
 * `antithetic`, t comes instead from a u shared by half of the window's draws,
 * `new Rng(seed, w, 0xFFFFFFFF - h)` for half h, spread as u_j = (u/n + j/n) mod 1 over the half's
 * n = K/2 draws. So the result depends on the seed only, never on `batch`: bitwise on the wasm and
 * ts backends, up to float rounding on `blas` (the library blocks a product by its row count).
 *
 * Standard error: windows are evaluated with independent noise, so Var(total) = sum_w Var(mean of
 * window w). Without antithetic draws each window's variance is its sample variance over K draws
 * divided by K (K >= 2; K = 1 reports NaN). With antithetic draws the K draws are two
 * independent antithetic halves, and each window's variance is (m1 - m2)^2 / 4 from the two halves'
 * means m1, m2 (unbiased: the halves are i.i.d.). The variance estimate is unbiased; its square
 * root, the reported error, is typically somewhat below the true one when few windows are
 * evaluated, because the per-draw values are heavy-tailed (weight 1/t at small t): in a check
 * with 10 windows of 16 tokens and 8 draws, the root-mean-square of the reported errors matched
 * the spread over 300 seeds, while their mean was 10% below it. Antithetic halves of 4 draws
 * gained nothing there (the mask noise dominates); with 30 draws per half they cut the error by
 * more than 20% (see the tests).
 *
 * @example The bound of an untrained tiny model is near ln(real tokens) per token
 * ```ts
 * import { evaluate } from "./elbo.ts";
 * import { createModel } from "../model/model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("tiny", { vocabSize: 9, seed: 1 }); // 8 real tokens + MASK
 * const tokens = new Int32Array(64).map((_, i) => (i * 5) % 8);
 * const r = evaluate(model, tokens, { samples: 4, seed: 3, backend: "wasm" });
 * assert.equal(r.windows, 4);
 * assert.ok(Math.abs(r.natsPerToken - Math.log(8)) < 0.5, `${r.natsPerToken}`);
 * assert.ok(r.standardError > 0 && r.standardError < 0.5);
 * assert.deepEqual(evaluate(model, tokens, { samples: 4, seed: 3, batch: 3, backend: "wasm" }), r);
 * ```
 *
 * @module
 */

import { type BackendChoice, type BackendName, resolveBackend } from "../nn/backend.ts";
import type { BlasOptions } from "../kernels/blas.ts";
import { gpuSequenceLosses } from "../kernels/webgpu/train_step.ts";
import { resolveAnyBackend } from "../kernels/webgpu/select.ts";
import type { GpuContext } from "../kernels/webgpu/context.ts";
import { corruptRow, type GraphName, moveProb } from "../diffusion/corrupt.ts";
import { checkLossName, lossForward } from "../diffusion/losses.ts";
import { createSchedule, type NoiseSchedule, type ScheduleName } from "../diffusion/schedule.ts";
import { createWorkspace, type Model, modelForward, type Workspace } from "../model/model.ts";
import type { DitModel } from "../model/dit.ts";
import { ditForwardFast } from "../model/dit_fast.ts";
import { addSigmaShift, ditNeedsShift } from "../diffusion/dit_logits.ts";
import { checkInt } from "../check.ts";
import { Rng } from "../rng.ts";
import { decode } from "../tokenizer/tokenizer.ts";
import type { Tokenizer } from "../tokenizer/types.ts";

/**
 * A network given as a function, for stubs and other networks: noised ids `(B,T)` and each
 * sequence's noise level `(B)` in, logits `(B,T,V)` out (B = `sigma.length`). The sampler's
 * `Denoiser` has this shape, so one stub serves both. The output is read before the next call.
 */
export type DenoiseFn = (ids: Int32Array, sigma: Float32Array) => Float32Array;

/** Options of {@linkcode evaluate}. */
export interface EvaluateOptions {
  /**
   * The compute backend: `"auto"` (default; see `resolveBackend`), `"blas"`, `"wasm"`, `"ts"`,
   * or `"webgpu"` ({@linkcode evaluateAsync} only).
   */
  backend?: BackendChoice;
  /** The BLAS library of the `"blas"` backend (default: see `loadBlas`). */
  blasPath?: string;
  /** Monte-Carlo draws (t and mask) per window, K. Default 8; even when `antithetic`. */
  samples?: number;
  /** Spread t over each half of a window's draws (see the module doc). Default false. */
  antithetic?: boolean;
  /** Seed of all noise (32-bit unsigned integer). Default 0. */
  seed?: number;
  /** Sequences per forward pass; changes speed only, never the result. Default 8. */
  batch?: number;
  /** Window length T. Default the model's context. */
  context?: number;
  /**
   * Noise schedule: a name or a schedule. Default `"loglinear"` (eps 1e-3), the trainer's.
   * `"linear"` (mask probability t) gives the schedule-free bound.
   */
  schedule?: ScheduleName | NoiseSchedule;
  /** Lower end of diffusion time, t ~ U[eps, 1]. Default 1e-3 (the trainer's). */
  eps?: number;
  /** Evaluate at this one diffusion time instead of drawing t (tests, t-profiles). */
  t?: number;
  /** The bound's loss: `"elbo"` (MDLM, default) or `"score-entropy"` (SEDD). */
  loss?: "elbo" | "score-entropy";
  /** The graph: `"absorb"` (default) or `"uniform"` (score entropy only). */
  graph?: GraphName;
  /** Tokenizer of the tokens: enables bits per character. */
  tokenizer?: Tokenizer;
  /** V including the mask: required with a {@linkcode DenoiseFn}, else the model's. */
  vocabSize?: number;
  /**
   * A DiT only: whether the network reads sigma; false gives it sigma 0 (MDLM without
   * `time_conditioning`). Default true.
   */
  timeConditioned?: boolean;
}

/** Options of {@linkcode evaluateAsync}: those of {@linkcode evaluate}, and the GPU. */
export interface EvaluateAsyncOptions extends EvaluateOptions {
  /**
   * `backend: "webgpu"` only: the context to evaluate on, left open (its device is the
   * caller's), e.g. the one the caller resolved the backend with, so that the GPU is acquired
   * once. Default: a device of its own (`resolveAnyBackend("webgpu")`: any adapter that passes
   * the self-check, which runs once per adapter in the process), destroyed at the end of the
   * call.
   */
  gpu?: GpuContext;
}

/** What {@linkcode evaluate} returns. */
export interface EvalReport {
  /** Estimated bound in nats per token (total nats / tokens). */
  natsPerToken: number;
  /** Monte-Carlo standard error of `natsPerToken` (NaN with one draw per window). */
  standardError: number;
  /** Perplexity bound exp(natsPerToken). */
  perplexity: number;
  /** Bits per character (with a tokenizer), else undefined. */
  bitsPerChar?: number;
  /** Standard error of `bitsPerChar`. */
  bitsPerCharError?: number;
  /** Estimated total nats of all tokens. */
  totalNats: number;
  /** Tokens evaluated, N. */
  tokens: number;
  /** Characters of the decoded text, one per end-of-text token (with a tokenizer). */
  characters?: number;
  /** Windows, W. */
  windows: number;
  /** Draws per window, K. */
  samples: number;
  /** Sequences run through the network, W K. */
  evaluations: number;
  /** The loss used. */
  loss: "elbo" | "score-entropy";
  /** The graph used. */
  graph: GraphName;
}

/**
 * Code points of the decoded documents between end-of-text ids, plus one per end-of-text id: the
 * characters bits/char divides by.
 *
 * @param tokenizer The tokenizer.
 * @param tokens A token stream.
 * @returns The character count.
 */
export function countCharacters(tokenizer: Tokenizer, tokens: Int32Array): number {
  let chars = 0, start = 0;
  for (let i = 0; i <= tokens.length; i++) {
    if (i < tokens.length && tokens[i] !== tokenizer.eotId) continue;
    if (i > start) chars += [...decode(tokenizer, tokens.subarray(start, i))].length;
    if (i < tokens.length) chars++;
    start = i + 1;
  }
  return chars;
}

/** Key of the generator of antithetic half h of a window: `0xFFFFFFFF - h`. */
const HALF_KEY = 0xffffffff;

/**
 * Estimates the negative-ELBO bound of `model` on held-out `tokens` (see the module doc).
 *
 * A DiT (`src/model/dit.ts`) is scored with the bound of its `config.output`: `score-entropy`
 * for SEDD's log-scores (on `options.graph`), `elbo` for MDLM's logits; `loss` defaults to that
 * and may not name the other.
 *
 * @param model A model, a DiT, or a {@linkcode DenoiseFn} (then `vocabSize` and `context` are
 *   required).
 * @param tokens Held-out token ids `(N)`, none of them the mask.
 * @param options Draws, antithetic, seed, batch, window, schedule, loss, tokenizer.
 * @returns Nats/token, standard error, perplexity bound, bits/char and counts.
 *
 * @example Same seed, same estimate; bad input is named
 * ```ts
 * import { evaluate } from "./elbo.ts";
 * import { createModel } from "../model/model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("tiny", { vocabSize: 5 });
 * const tokens = new Int32Array([0, 1, 2, 3, 0, 1]);
 * assert.equal(evaluate(model, tokens, { seed: 1 }).natsPerToken,
 *   evaluate(model, tokens, { seed: 1 }).natsPerToken);
 * assert.throws(() => evaluate(model, new Int32Array([0, 4]), {}), {
 *   name: "RangeError",
 *   message: "Invalid held-out tokens: expected ids 0 <= id < 4 (the mask 4 excluded), got 4 at index 1",
 * });
 * ```
 */
export function evaluate(
  model: Model | DitModel | DenoiseFn,
  tokens: Int32Array,
  options: EvaluateOptions = {},
): EvalReport {
  if (options.backend === "webgpu") {
    throw new TypeError(
      'Invalid backend for evaluate(): expected "auto", "blas", "wasm" or "ts" (webgpu reads ' +
        'back from the GPU: use evaluateAsync), got "webgpu"',
    );
  }
  if (typeof model !== "function" && (model.config as { kind?: string }).kind === "dit") {
    const dit = model as DitModel;
    const own = dit.config.output === "sedd" ? "score-entropy" : "elbo";
    if (options.loss !== undefined && options.loss !== own) {
      throw new RangeError(
        `Invalid loss for this DiT: expected "${own}" (its config.output is ` +
          `"${dit.config.output}"), got "${options.loss}"`,
      );
    }
    return evaluate(ditDenoiser(dit, options), tokens, {
      ...options,
      loss: own,
      vocabSize: dit.config.vocabSize,
      context: options.context ?? dit.config.context,
    });
  }
  return evaluateNet(model as Model | DenoiseFn, tokens, options);
}

/**
 * A DiT as the losses read a network: the output layer's logits, which `elbo` reads under SUBS
 * and `score-entropy` under the absorb graph turns into SEDD's log-scores by subtracting
 * `log(expm1(sigma)) + log(V - 1)`. A network without `scaleBySigma` gets that shift added back,
 * so the loss scores exactly what the network returns; under the uniform graph the loss reads
 * the logits as log-scores unchanged, as SEDD does.
 */
function ditDenoiser(dit: DitModel, options: EvaluateOptions): DenoiseFn {
  const addShift = ditNeedsShift(dit.config, options.graph ?? "absorb");
  const timeConditioned = options.timeConditioned ?? true;
  const blas = options.blasPath === undefined ? undefined : { path: options.blasPath };
  let backend: BackendName | undefined;
  return (ids, sigma) => {
    const B = sigma.length;
    const sig = timeConditioned ? sigma : new Float32Array(B);
    backend ??= resolveBackend(options.backend ?? "auto", blas).backend;
    // the float32 pass on the CPU kernels; its output is a view, read before the next call
    const out = ditForwardFast(dit, ids, { batch: B, sigma: sig, raw: true, backend, blas });
    if (addShift) addSigmaShift(out, sigma, dit.config.vocabSize);
    return out;
  };
}

/** {@linkcode evaluate} of a transformer or a denoiser function, on a CPU backend. */
function evaluateNet(
  model: Model | DenoiseFn,
  tokens: Int32Array,
  options: EvaluateOptions,
): EvalReport {
  const run = evaluation(model, tokens, options);
  const losses = cpuLosses(model, options);
  let r = run.next();
  while (!r.done) r = run.next(losses(r.value));
  return r.value;
}

/**
 * {@linkcode evaluate}, also on the `"webgpu"` backend, where each batch of draws runs on the GPU
 * (`src/kernels/webgpu/`) and only the per-position losses come back; the draws, windows and
 * report are `evaluate`'s, so the bound agrees with the CPU's up to float rounding. `"auto"`
 * (the default) runs a transformer there when a real GPU passes the self-check (never a software
 * adapter such as llvmpipe; `resolveAnyBackend`), else it and every CPU backend give
 * `evaluate`'s result. Each call on the GPU acquires a device (unless given `gpu`); the
 * self-check runs on the first acquisition of an adapter in the process, and later calls that
 * find the same adapter skip it.
 *
 * @param model The model (a transformer of `src/model/model.ts` for webgpu), or a
 *   {@linkcode DenoiseFn}.
 * @param tokens Held-out token ids.
 * @param options As for {@linkcode evaluate}; `backend: "webgpu"` for the GPU, and `gpu`, a
 *   context to run on (left open).
 * @returns The report.
 *
 * @example The CPU backends give evaluate()'s report
 * ```ts
 * import { evaluate, evaluateAsync } from "./elbo.ts";
 * import { createModel } from "../model/model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("tiny", { vocabSize: 5 });
 * const tokens = new Int32Array([0, 1, 2, 3, 0, 1]);
 * const r = await evaluateAsync(model, tokens, { backend: "ts", samples: 2 });
 * assert.deepEqual(r, evaluate(model, tokens, { backend: "ts", samples: 2 }));
 * ```
 */
export async function evaluateAsync(
  model: Model | DitModel | DenoiseFn,
  tokens: Int32Array,
  options: EvaluateAsyncOptions = {},
): Promise<EvalReport> {
  const choice = options.backend ?? "auto";
  if (choice !== "webgpu" && choice !== "auto") return evaluate(model, tokens, options);
  const dit = typeof model !== "function" && (model.config as { kind?: string }).kind === "dit";
  if (choice === "auto" && (typeof model === "function" || dit)) {
    return evaluate(model, tokens, options); // only a transformer runs on the GPU
  }
  if (typeof model === "function") {
    throw new TypeError(
      "Invalid model for the webgpu backend: expected a transformer, got a denoiser function",
    );
  }
  if (dit) {
    throw new TypeError(
      'Invalid model for the webgpu backend: expected a transformer, got a DiT (kind "dit" ' +
        "runs on the CPU backends)",
    );
  }
  const transformer = model as Model;
  // auto: a real GPU that passes the self-check (never a software adapter), else the CPU's
  const own = choice === "auto" || options.gpu === undefined;
  const resolved = own
    ? await resolveAnyBackend(choice, { path: options.blasPath })
    : { backend: "webgpu" as const, gpu: options.gpu! };
  if (resolved.backend !== "webgpu") {
    return evaluate(model, tokens, { ...options, backend: resolved.backend });
  }
  const run = evaluation(transformer, tokens, options);
  const ctx = resolved.gpu;
  let losses: ReturnType<typeof gpuSequenceLosses> | undefined;
  try {
    losses = gpuSequenceLosses(ctx, transformer, {
      loss: options.loss ?? "elbo",
      graph: options.graph ?? "absorb",
    });
    let r = run.next();
    while (!r.done) r = run.next(await losses(r.value));
    return r.value;
  } finally {
    if (own) await ctx.destroy().catch(() => {});
    else {
      await ctx.sync().catch(() => {});
      losses?.dispose();
    }
  }
}

/**
 * One batch of draws {@linkcode evaluation} asks the network about: `B` noised windows of `len`
 * tokens (room for `cap` in its group), their clean ids and noise; the answer is each
 * sequence's summed loss (nats), `(B)`.
 */
export interface EvalRequest {
  /** Noised ids, `(B,len)`. */
  xt: Int32Array;
  /** Clean ids, `(B,len)`. */
  x0: Int32Array;
  /** Total noise per sequence, `(B)`. */
  sigma: Float64Array;
  /** The same as float32 (a denoiser function's argument). */
  sigma32: Float32Array;
  /** Noise rate per sequence, `(B)`. */
  dsigma: Float64Array;
  /** Sequences. */
  B: number;
  /** Tokens per sequence. */
  len: number;
  /** Most sequences of the group (a workspace's capacity). */
  cap: number;
}

/** The CPU answers to {@linkcode evaluation}'s requests: a workspace per group shape. */
function cpuLosses(
  model: Model | DenoiseFn,
  options: EvaluateOptions,
): (req: EvalRequest) => Float64Array {
  const net = typeof model !== "function";
  const V = net ? model.config.vocabSize : options.vocabSize!;
  const loss = options.loss ?? "elbo";
  const graph = options.graph ?? "absorb";
  const blas = options.blasPath === undefined ? undefined : { path: options.blasPath };
  let wsOptions: { backend: BackendName; blas?: BlasOptions } | undefined;
  let ws: Workspace | null = null;
  return ({ xt, x0, sigma, sigma32, dsigma, B, len, cap }) => {
    let logits: Float32Array;
    if (net) {
      wsOptions ??= { backend: resolveBackend(options.backend ?? "auto", blas).backend, blas };
      if (ws === null || ws.B !== cap || ws.T !== len) {
        ws = createWorkspace(model.config, cap, len, wsOptions);
      }
      logits = modelForward(model, ws, xt, B, len, { sigma });
    } else logits = model(xt, sigma32);
    if (logits.length < B * len * V) {
      throw new RangeError(
        `Invalid denoiser output: expected ${B * len * V} logits, got ${logits.length}`,
      );
    }
    const out = new Float64Array(B);
    for (let b = 0; b < B; b++) {
      const o = b * len;
      out[b] = lossForward(logits.subarray(o * V, (o + len) * V), {
        loss,
        graph,
        x0: x0.subarray(o, o + len),
        xt: xt.subarray(o, o + len),
        sigma: [sigma[b]],
        dsigma: [dsigma[b]],
        B: 1,
        T: len,
        V,
        scale: 1,
      });
    }
    return out;
  };
}

/**
 * The evaluation of {@linkcode evaluate} as a generator: it checks the arguments, draws every
 * batch of noised windows and yields it as an {@linkcode EvalRequest}, takes each sequence's
 * loss back, and returns the report. The network runs outside, on any backend.
 */
function* evaluation(
  model: Model | DenoiseFn,
  tokens: Int32Array,
  options: EvaluateOptions,
): Generator<EvalRequest, EvalReport, Float64Array> {
  const net = typeof model !== "function";
  if (!net && (options.vocabSize === undefined || options.context === undefined)) {
    throw new TypeError(
      "Missing vocabSize or context: expected both with a denoiser function, got " +
        `vocabSize ${options.vocabSize}, context ${options.context}`,
    );
  }
  const V = net ? model.config.vocabSize : options.vocabSize!;
  const maxT = net ? model.config.context : options.context!;
  checkInt("vocabSize", V, 2);
  const K = options.samples ?? 8;
  const antithetic = options.antithetic ?? false;
  const seed = options.seed ?? 0;
  const batch = options.batch ?? 8;
  const T = options.context ?? maxT;
  const eps = options.eps ?? 1e-3;
  const loss = options.loss ?? "elbo";
  const graph = options.graph ?? "absorb";
  const M = V - 1;

  if (!(tokens instanceof Int32Array)) {
    throw new TypeError(
      `Invalid held-out tokens: expected an Int32Array, got ${
        tokens === null
          ? "null"
          : typeof tokens === "object"
          ? (tokens as object).constructor?.name
          : typeof tokens
      }`,
    );
  }
  if (tokens.length === 0) {
    throw new RangeError("Invalid held-out tokens: expected at least one token, got 0");
  }
  for (let i = 0; i < tokens.length; i++) {
    if (!(tokens[i] >= 0 && tokens[i] < M)) {
      throw new RangeError(
        `Invalid held-out tokens: expected ids 0 <= id < ${M} (the mask ${M} excluded), got ${
          tokens[i]
        } at index ${i}`,
      );
    }
  }
  checkInt("samples", K, 1);
  checkInt("batch", batch, 1);
  checkInt("context", T, 1);
  if (T > maxT) {
    throw new RangeError(`Invalid context: expected at most the model's ${maxT}, got ${T}`);
  }
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new RangeError(`Invalid seed: expected a 32-bit unsigned integer, got ${seed}`);
  }
  if (antithetic && K % 2 !== 0) {
    throw new RangeError(
      `Invalid samples for antithetic draws: expected an even number (two halves), got ${K}`,
    );
  }
  if (antithetic && options.t !== undefined) {
    throw new RangeError("Invalid options: expected either antithetic or a fixed t, got both");
  }
  if (!(eps > 0 && eps < 1)) {
    throw new RangeError(`Invalid eps: expected 0 < eps < 1, got ${eps}`);
  }
  if (options.t !== undefined && !(options.t > 0 && options.t <= 1)) {
    throw new RangeError(`Invalid t: expected 0 < t <= 1, got ${options.t}`);
  }
  checkLossName(loss, ["elbo", "score-entropy"]);
  if (graph !== "absorb" && graph !== "uniform") {
    throw new RangeError(
      `Unknown graph: expected "absorb" or "uniform", got ${JSON.stringify(graph)}`,
    );
  }
  if (loss === "elbo" && graph !== "absorb") {
    throw new RangeError(
      `Unsupported graph for the "elbo" bound: expected "absorb", got "uniform"`,
    );
  }
  if (options.tokenizer && options.tokenizer.vocabSize !== V) {
    throw new RangeError(
      `Tokenizer mismatch: expected a vocabulary of ${V} like the model, got ${options.tokenizer.vocabSize}`,
    );
  }
  const schedule = typeof options.schedule === "object"
    ? options.schedule
    : createSchedule(options.schedule ?? "loglinear");

  // Windows: W = ceil(N / T), the last one possibly shorter.
  const N = tokens.length;
  const W = Math.ceil(N / T);
  const values = new Float64Array(W * K); // (W,K) summed nats of window w, draw k
  const half = K / 2;
  const halfU = antithetic
    ? Float64Array.from(
      { length: W * 2 },
      (_, i) => new Rng(seed, Math.floor(i / 2), HALF_KEY - (i % 2)).uniform(),
    )
    : null;

  function* evalGroup(
    wFrom: number,
    wTo: number,
    len: number,
  ): Generator<EvalRequest, void, Float64Array> {
    const items = (wTo - wFrom) * K;
    const cap = Math.min(batch, items);
    const x0 = new Int32Array(cap * len);
    const xt = new Int32Array(cap * len);
    const sigma = new Float64Array(cap);
    const sigma32 = new Float32Array(cap); // the denoiser function's argument
    const dsigma = new Float64Array(cap);
    for (let first = 0; first < items; first += cap) {
      const B = Math.min(cap, items - first);
      for (let b = 0; b < B; b++) {
        const item = first + b;
        const w = wFrom + Math.floor(item / K);
        const k = item % K;
        const rng = new Rng(seed, w, k);
        let t: number;
        if (options.t !== undefined) t = options.t;
        else if (halfU) {
          const h = k < half ? 0 : 1;
          const j = k - h * half;
          t = eps + (1 - eps) * ((halfU[2 * w + h] / half + j / half) % 1);
        } else t = eps + (1 - eps) * rng.uniform();
        sigma[b] = sigma32[b] = schedule.sigma(t);
        dsigma[b] = schedule.dsigma(t);
        x0.set(tokens.subarray(w * T, w * T + len), b * len);
        corruptRow(graph, xt, x0, b, len, moveProb(sigma[b]), rng, V);
      }
      const losses = yield {
        xt: xt.subarray(0, B * len),
        x0: x0.subarray(0, B * len),
        sigma: sigma.subarray(0, B),
        sigma32: sigma32.subarray(0, B),
        dsigma: dsigma.subarray(0, B),
        B,
        len,
        cap,
      };
      for (let b = 0; b < B; b++) {
        const item = first + b;
        values[(wFrom + Math.floor(item / K)) * K + (item % K)] = losses[b];
      }
    }
  }
  const full = Math.floor(N / T);
  if (full > 0) yield* evalGroup(0, full, T);
  if (full < W) yield* evalGroup(full, W, N - full * T);

  let total = 0;
  let variance = 0;
  for (let w = 0; w < W; w++) {
    const row = values.subarray(w * K, (w + 1) * K);
    let mean = 0;
    for (let k = 0; k < K; k++) mean += row[k];
    mean /= K;
    total += mean;
    if (antithetic) {
      let m1 = 0, m2 = 0;
      for (let j = 0; j < half; j++) {
        m1 += row[j];
        m2 += row[half + j];
      }
      const d = (m1 - m2) / half;
      variance += d * d / 4;
    } else if (K >= 2) {
      let ss = 0;
      for (let k = 0; k < K; k++) ss += (row[k] - mean) ** 2;
      variance += ss / (K - 1) / K;
    } else variance = NaN;
  }
  const natsPerToken = total / N;
  const report: EvalReport = {
    natsPerToken,
    standardError: Math.sqrt(variance) / N,
    perplexity: Math.exp(natsPerToken),
    totalNats: total,
    tokens: N,
    windows: W,
    samples: K,
    evaluations: W * K,
    loss,
    graph,
  };
  if (options.tokenizer) {
    const chars = countCharacters(options.tokenizer, tokens);
    report.characters = chars;
    if (chars > 0) {
      report.bitsPerChar = total / Math.LN2 / chars;
      report.bitsPerCharError = Math.sqrt(variance) / Math.LN2 / chars;
    }
  }
  return report;
}
