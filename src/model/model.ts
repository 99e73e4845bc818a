/**
 * The denoising transformer: forward and backward over one flat parameter buffer.
 *
 * Dimensions: `B` batch, `T` sequence, `C` channels (`dModel`), `F` feed-forward size (`dFF`),
 * `V` vocabulary, `L` layers, `NH` heads, `HS = C / NH`, `N = B * T`.
 *
 * A layer is PyTorch's `nn.TransformerEncoderLayer` (with RoPE on q and k when rotary):
 *
 * ```
 * post-norm:  x = norm1(x + drop1(SA(x)));   x = norm2(x + drop2(FF(x)))
 * pre-norm:   x = x + drop1(SA(norm1(x)));   x = x + drop2(FF(norm2(x)))   (+ final norm)
 * SA(x) = out_proj(attention(rope(x W_in^T + b_in)))     FF(x) = linear2(drop(act(linear1(x))))
 * ```
 *
 * With time conditioning (SEDD's adaLN), pre-norm, each norm's output is shifted and scaled and
 * each branch gated by a modulation of the noise level's embedding.
 *
 * The parts, each forward and backward: `embed.ts` (embedding, time conditioning), `block.ts`
 * (the layer), `head.ts` (final norm, head); `workspace.ts` sizes and allocates their buffers.
 * This file holds the public API, the checks on its arguments, and the order of the passes.
 *
 * @module
 */

import { type ModelConfig, type PresetName, resolveConfig } from "./config.ts";
import {
  buildLayout,
  forwardParts,
  type Layout,
  type ModelTensors,
  tensorViews,
} from "./layout.ts";
import { initParams } from "./init.ts";
import { checkDim, createWorkspace, type Workspace } from "./workspace.ts";
import { embedBackward, embedForward } from "./embed.ts";
import { drawMasks, layerBackward, layerForward } from "./block.ts";
import { finalBackward, finalForward } from "./head.ts";
import type { BackendName } from "../nn/backend.ts";
import type { BlasOptions } from "../kernels/blas.ts";
import { createDit, type CreateDitOptions, type DitConfigInput, type DitModel } from "./dit.ts";
import { ditForwardFast } from "./dit_fast.ts";

export {
  createWorkspace,
  type Workspace,
  workspaceBytes,
  type WorkspaceOptions,
} from "./workspace.ts";

/** A model: its config, one flat parameter buffer, and the name -> tensor layout. */
export interface Model {
  /** The complete config. */
  config: ModelConfig;
  /** Every parameter, packed as `layout` says. */
  params: Float32Array;
  /** Tensor name -> `{ offset, shape }` (PyTorch state-dict names). */
  layout: Layout;
}

/** Options of {@linkcode createModel}. */
export interface CreateModelOptions {
  /** Seed of the initialisation (32-bit unsigned integer). Default 0. */
  seed?: number;
  /** Vocabulary size (from the tokenizer), when `config` does not give it. */
  vocabSize?: number;
  /** Context length, when `config` does not give it (overrides a preset's). */
  context?: number;
  /**
   * Use this buffer for the parameters (for example a view on a `SharedArrayBuffer`) instead of
   * allocating one. Its contents are kept as they are unless `init: true`.
   */
  params?: Float32Array;
  /**
   * Whether to write a fresh initialisation. Default: `true` for an allocated buffer, `false`
   * when `params` is given (a worker's shared view or a loaded checkpoint must not be touched).
   */
  init?: boolean;
}

/**
 * Creates a model with PyTorch's initialisation (see `init.ts`).
 *
 * @param config A preset name or a (partial) config.
 * @param options Seed, vocabulary size and context, optional parameter buffer.
 * @returns The model.
 *
 * @example The tiny preset
 * ```ts
 * import { createModel } from "./model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("tiny", { vocabSize: 12, seed: 1 });
 * assert.equal(model.config.dModel, 16);
 * assert.deepEqual(model.layout["embed.weight"].shape, [12, 16]);
 * ```
 */
export function createModel(
  config: PresetName | Partial<ModelConfig>,
  options?: CreateModelOptions,
): Model;
/**
 * Creates a DiT (SEDD's and MDLM's denoiser, `src/model/dit.ts`) from a config with
 * `kind: "dit"`.
 *
 * @param config The DiT config.
 * @param options `seed`, or `params` to wrap.
 * @returns The DiT.
 *
 * @example
 * ```ts
 * import { createModel } from "./model.ts";
 * import assert from "node:assert/strict";
 *
 * const dit = createModel({ kind: "dit", vocabSize: 9, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * assert.deepEqual(dit.layout["vocab_embed.embedding"].shape, [9, 8]);
 * ```
 */
export function createModel(
  config: DitConfigInput & { kind: "dit" },
  options?: CreateDitOptions,
): DitModel;
export function createModel(
  config: PresetName | Partial<ModelConfig> | (DitConfigInput & { kind: "dit" }),
  options: CreateModelOptions = {},
): Model | DitModel {
  if (isDitConfig(config)) return createDit(config, options);
  const full = resolveConfig(config, { vocabSize: options.vocabSize, context: options.context });
  const { layout, size } = buildLayout(full);
  let params: Float32Array;
  if (options.params !== undefined) {
    if (!(options.params instanceof Float32Array)) {
      throw new TypeError(
        `Invalid params: expected a Float32Array, got ${describe(options.params)}`,
      );
    }
    if (options.params.length !== size) {
      throw new RangeError(
        `Invalid params: expected ${size} values for this config, got ${options.params.length}`,
      );
    }
    params = options.params;
  } else {
    params = new Float32Array(size);
  }
  const init = options.init ?? options.params === undefined;
  if (init) initParams(params, layout, full, options.seed ?? 0);
  return { config: full, params, layout };
}

function isDitConfig(c: unknown): c is DitConfigInput & { kind: "dit" } {
  return typeof c === "object" && c !== null && (c as { kind?: unknown }).kind === "dit";
}

function isDit(model: Model | DitModel): model is DitModel {
  return isDitConfig(model.config);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") return (v as object).constructor?.name ?? "object";
  return typeof v;
}

/**
 * Throws a `RangeError` naming the first id outside `[0, vocabSize)`.
 *
 * @param ids Token ids.
 * @param vocabSize V.
 * @param name What the ids are, for the message (for example `"input"`).
 *
 * @example
 * ```ts
 * import { validateTokens } from "./model.ts";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => validateTokens(new Int32Array([1, 731]), 512, "input"),
 *   { name: "RangeError", message: "Token id out of range in input[1]: expected 0 <= id < 512, got 731" },
 * );
 * ```
 */
export function validateTokens(ids: Int32Array, vocabSize: number, name: string): void {
  if (!(ids instanceof Int32Array)) {
    throw new TypeError(
      `Invalid ${name}: expected an Int32Array of token ids, got ${describe(ids)}`,
    );
  }
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i];
    if (v < 0 || v >= vocabSize) {
      throw new RangeError(
        `Token id out of range in ${name}[${i}]: expected 0 <= id < ${vocabSize}, got ${v}`,
      );
    }
  }
}

/** Dropout keys for a training pass; see {@linkcode modelForward}. */
export interface DropoutKeys {
  /** Run seed. */
  seed: number;
  /** Training step. */
  step: number;
  /** Global index of this batch's first sequence (its row in the full batch). */
  firstRow: number;
}

/** Options of {@linkcode modelForward}. */
export interface ModelForwardOptions {
  /** Training-mode dropout (with `config.dropout > 0`); absent means eval mode. */
  dropout?: DropoutKeys;
  /**
   * Noise level of each sequence, `(B)`: required by a time-conditioned model
   * (`config.timeConditioning`), ignored otherwise.
   */
  sigma?: Float32Array | Float64Array;
}

function checkSigma(
  model: Model,
  sigma: Float32Array | Float64Array | undefined,
  B: number,
): void {
  if (model.config.timeConditioning !== true) return;
  if (!(sigma instanceof Float32Array || sigma instanceof Float64Array)) {
    throw new TypeError(
      `Missing sigma: expected a Float32Array or Float64Array of ${B} noise levels for a ` +
        `time-conditioned model, got ${describe(sigma)}`,
    );
  }
  if (sigma.length !== B) {
    throw new RangeError(
      `Invalid sigma length: expected ${B} (one per sequence), got ${sigma.length}`,
    );
  }
  for (let b = 0; b < B; b++) {
    if (!Number.isFinite(sigma[b]) || sigma[b] < 0) {
      throw new RangeError(`Invalid sigma[${b}]: expected a finite value >= 0, got ${sigma[b]}`);
    }
  }
}

function checkShape(model: Model, ws: Workspace, length: number, B: number, T: number): void {
  checkDim("batch size", B);
  checkDim("sequence length", T);
  if (ws.config !== model.config && JSON.stringify(ws.config) !== JSON.stringify(model.config)) {
    throw new RangeError("Workspace mismatch: expected one created for this model's config");
  }
  if (B > ws.B || T > ws.T) {
    throw new RangeError(
      `Batch too large for workspace: expected B <= ${ws.B} and T <= ${ws.T}, got B ${B}, T ${T}`,
    );
  }
  if (length !== B * T) {
    throw new RangeError(`Invalid input length: expected B * T = ${B * T}, got ${length}`);
  }
}

/**
 * Runs the model on `B` sequences of `T` token ids and returns the logits.
 *
 * Dropout (training only, probability `config.dropout`) is applied where
 * `nn.TransformerEncoderLayer` applies it: attention weights, after `out_proj`, after the
 * activation, after `linear2`. The masks of sequence `b` come from
 * `new Rng(seed, step, firstRow + b, 1)`, drawn layer by layer in the order attention
 * `(NH,T,T)`, after `out_proj` `(T,C)`, feed-forward `(T,F)`, after `linear2` `(T,C)`, so
 * sharding a batch across workers never changes the masks.
 *
 * @param model The model.
 * @param ws A workspace for this config with capacity for `(B,T)`.
 * @param input Token ids, `(B,T)`.
 * @param B Sequences.
 * @param T Tokens per sequence (at most `config.context`).
 * @param options `dropout` keys for training mode; `sigma`, the noise level of each sequence
 *   `(B)`, for a time-conditioned model.
 * @returns Logits `(B,T,V)`: a view into `ws`, overwritten by the next call.
 */
export function modelForward(
  model: Model,
  ws: Workspace,
  input: Int32Array, // (B,T)
  B: number,
  T: number,
  options: ModelForwardOptions = {},
): Float32Array {
  validateTokens(input, model.config.vocabSize, "input");
  checkShape(model, ws, input.length, B, T);
  checkSigma(model, options.sigma, B);
  return forwardUnchecked(model, ws, input, B, T, options.dropout, options.sigma);
}

function forwardUnchecked(
  model: Model,
  ws: Workspace,
  input: Int32Array,
  B: number,
  T: number,
  dropout: DropoutKeys | undefined,
  sigma?: Float32Array | Float64Array,
  rowWeights?: Float32Array, // (N): compute logits only where non-zero (see finalForward)
): Float32Array {
  const cfg = model.config;
  // wasm: one parameter copy into the kernels' memory per forward pass (the backward pass
  // of this forward reads the same copy); behind a gate, part by part as each becomes final.
  const gate = ws.paramGate;
  const parts = gate ? partsOf(model) : [];
  const arrive = (j: number) => {
    gate!(j);
    if (ws.wParams) {
      for (const [a, b] of parts[j]) {
        ws.wParams.set(model.params.subarray(a, b), a);
      }
    }
  };
  if (ws.wParams && !gate) ws.wParams.set(model.params);
  const P = tensorViews(ws.wParams ?? model.params, model.layout, cfg);
  const useDrop = dropout !== undefined && cfg.dropout > 0;
  if (useDrop) drawMasks(ws, dropout!, B, T, ws.nn.dropoutMask);
  ws.tokens.set(input);
  ws.lastB = B;
  ws.lastT = T;
  ws.lastDropout = useDrop;
  // the parts read the shape, dropout mode and tokens from ws
  if (gate) arrive(0); // embedding, time conditioning, final norm and head
  embedForward(ws, P, sigma);
  for (let l = 0; l < cfg.nLayers; l++) {
    if (gate) arrive(l + 1);
    layerForward(ws, P, l);
  }
  return finalForward(ws, P, rowWeights);
}

const partsCache = new WeakMap<Model, [number, number][][]>();

/** {@linkcode forwardParts} of the model's layout, computed once per model. */
function partsOf(model: Model): [number, number][][] {
  let parts = partsCache.get(model);
  if (parts === undefined) {
    parts = forwardParts(model.layout, model.config.nLayers);
    partsCache.set(model, parts);
  }
  return parts;
}

/**
 * Backpropagates `dlogits` through the last {@linkcode modelForward} on this workspace and
 * ADDS the parameter gradients into `grads` (same layout as the parameters).
 *
 * @param model The model (parameters unchanged since the forward pass).
 * @param ws The workspace of the forward pass.
 * @param dlogits Gradient of the loss w.r.t. the logits, `(B,T,V)`. May be `ws.dlogits`.
 * @param grads Gradient buffer, `params.length` values; added into.
 */
export function modelBackward(
  model: Model,
  ws: Workspace,
  dlogits: Float32Array, // (B,T,V)
  grads: Float32Array,
): void {
  const B = ws.lastB, T = ws.lastT;
  if (B === 0) {
    throw new RangeError("No forward pass to differentiate: expected modelForward first, got none");
  }
  if (ws.lastHeadRows >= 0) {
    throw new RangeError(
      "No full forward pass to differentiate: expected modelForward first, got lossAndGrad's",
    );
  }
  const cfg = model.config;
  const N = B * T;
  if (dlogits.length < N * cfg.vocabSize) {
    throw new RangeError(
      `Invalid dlogits length: expected ${N * cfg.vocabSize} (B*T*V), got ${dlogits.length}`,
    );
  }
  checkGrads(model, grads);
  backwardUnchecked(model, ws, dlogits, grads);
}

function backwardUnchecked(
  model: Model,
  ws: Workspace,
  dlogits: Float32Array,
  grads: Float32Array,
): void {
  const acc = ws.wGrads;
  if (acc) acc.fill(0);
  backwardInto(model, ws, dlogits, tensorViews(acc ?? grads, model.layout, model.config));
  // wasm: the gradients were accumulated in the kernels' memory; add them out once.
  if (acc) {
    ws.nn.accumulate(grads, acc, acc.length);
  }
}

function backwardInto(
  model: Model,
  ws: Workspace,
  dlogits: Float32Array,
  G: ModelTensors,
): void {
  const P = tensorViews(ws.wParams ?? model.params, model.layout, model.config);
  if (ws.time) ws.time.dcond.fill(0); // summed into by the final norm and every layer
  finalBackward(ws, P, G, dlogits);
  for (let l = model.config.nLayers - 1; l >= 0; l--) layerBackward(ws, P, G, l);
  embedBackward(ws, P, G);
}

function checkGrads(model: Model, grads: Float32Array): void {
  if (!ArrayBuffer.isView(grads) || (grads as Float32Array).length !== model.params.length) {
    throw new RangeError(
      `Invalid grads: expected a Float32Array of ${model.params.length} values, got ${
        ArrayBuffer.isView(grads) ? `${(grads as Float32Array).length} values` : describe(grads)
      }`,
    );
  }
}

const defaultWorkspaces = new WeakMap<Model, Workspace>();

function workspaceFor(
  model: Model,
  B: number,
  T: number,
  backend?: BackendName,
  blas?: BlasOptions,
): Workspace {
  const ws = defaultWorkspaces.get(model);
  if (
    ws && ws.config === model.config && ws.B >= B && ws.T >= T &&
    (backend === undefined || ws.backend === backend)
  ) return ws;
  const fresh = createWorkspace(model.config, B, T, { backend, blas });
  defaultWorkspaces.set(model, fresh);
  return fresh;
}

function batchShape(model: Model, length: number, batch: number, name: string): number {
  checkDim("batch", batch);
  if (length === 0 || length % batch !== 0) {
    throw new RangeError(
      `Invalid ${name} length: expected a positive multiple of batch ${batch}, got ${length}`,
    );
  }
  const T = length / batch;
  if (T > model.config.context) {
    throw new RangeError(
      `Sequence too long: expected T <= context ${model.config.context}, got ${T}`,
    );
  }
  return T;
}

/** Options of {@linkcode forward}. */
export interface ForwardOptions {
  /** Sequences B in `tokens`. */
  batch: number;
  /** Noise level per sequence `(B)`: required by a time-conditioned model and by a DiT. */
  sigma?: Float32Array | Float64Array;
  /** Backend of the cached workspace (or of a DiT's cached runner). */
  backend?: BackendName;
  /** BLAS options of the cached workspace. */
  blas?: BlasOptions;
}

/**
 * Logits for a batch of token sequences, in eval mode (no dropout).
 *
 * @param model The model.
 * @param tokens Token ids, `(B,T)` flattened.
 * @param options `batch`: the number of sequences B; `sigma`: noise level per sequence `(B)`,
 *   required by a time-conditioned model; `backend` (and `blas`) of the cached workspace.
 * @returns A fresh `(B,T,V)` array of logits.
 *
 * @example
 * ```ts
 * import { createModel, forward } from "./model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("tiny", { vocabSize: 12 });
 * const logits = forward(model, new Int32Array([1, 2, 3, 4, 5, 6]), { batch: 2 });
 * assert.equal(logits.length, 2 * 3 * 12);
 * ```
 */
export function forward(
  model: Model,
  tokens: Int32Array,
  options: ForwardOptions,
): Float32Array;
/**
 * A DiT's output for a batch: SEDD's log-scores (`config.output` `"sedd"`) or MDLM's logits
 * (`"logits"`), by the float32 pass of `src/model/dit_fast.ts` on the backend asked (its
 * buffers cached per model); `ditForward` in `src/model/dit.ts` is the float64 reference.
 *
 * @param model The DiT.
 * @param tokens Token ids, `(B,T)` flattened.
 * @param options `batch`: B; `sigma`: the noise level of each sequence `(B)`; `backend` and
 *   `blas` as for the transformer kind.
 * @returns A fresh `(B,T,V)` array.
 */
export function forward(
  model: DitModel,
  tokens: Int32Array,
  options: ForwardOptions & { sigma: Float32Array | Float64Array },
): Float32Array;
export function forward(
  model: Model | DitModel,
  tokens: Int32Array,
  options: ForwardOptions,
): Float32Array {
  if (isDit(model)) {
    // the float32 pass of dit_fast.ts, which checks that sigma is there
    const sigma = options.sigma as Float32Array | Float64Array;
    const { batch, backend, blas } = options;
    return ditForwardFast(model, tokens, { batch, sigma, backend, blas }).slice();
  }
  validateTokens(tokens, model.config.vocabSize, "tokens");
  const B = options.batch;
  const T = batchShape(model, tokens.length, B, "tokens");
  checkSigma(model, options.sigma, B);
  const ws = workspaceFor(model, B, T, options.backend, options.blas);
  return forwardUnchecked(model, ws, tokens, B, T, undefined, options.sigma).slice();
}

/** Options of {@linkcode lossAndGrad}. */
export interface LossAndGradOptions {
  /** Sequences in the batch. */
  batch: number;
  /** Gradient buffer to ADD into (parameters' layout); a fresh zeroed one if absent. */
  grads?: Float32Array;
  /** Training-mode dropout keys; absent means no dropout. */
  dropout?: DropoutKeys;
  /** Workspace to use (sized for this batch); a cached one per model if absent. */
  workspace?: Workspace;
  /** Noise level per sequence `(B)`: required by a time-conditioned model, ignored otherwise. */
  sigma?: Float32Array | Float64Array;
}

/**
 * The weighted cross-entropy `loss = sum_i weight[i] * CE_i` of a batch and its gradient.
 *
 * @param model The model.
 * @param data `input` ids, `target` ids and `weight` per position, each `(B,T)` flattened.
 * @param options `batch`, and optionally `grads` to add into, `dropout` keys, `workspace`,
 *   `sigma` (time-conditioned models).
 * @returns The loss and the gradient buffer (`options.grads` if given).
 *
 * @example The gradient has the parameters' layout
 * ```ts
 * import { createModel, lossAndGrad } from "./model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("tiny", { vocabSize: 12 });
 * const input = new Int32Array([11, 2, 11, 4]);
 * const target = new Int32Array([1, 2, 3, 4]);
 * const weight = new Float32Array([0.5, 0, 0.5, 0]);
 * const { loss, grads } = lossAndGrad(model, { input, target, weight }, { batch: 2 });
 * assert.ok(loss > 0);
 * assert.equal(grads.length, model.params.length);
 * ```
 */
export function lossAndGrad(
  model: Model,
  data: { input: Int32Array; target: Int32Array; weight: Float32Array },
  options: LossAndGradOptions,
): { loss: number; grads: Float32Array } {
  const { input, target, weight } = data;
  const V = model.config.vocabSize;
  validateTokens(input, V, "input");
  validateTokens(target, V, "target");
  const B = options.batch;
  const T = batchShape(model, input.length, B, "input");
  const N = B * T;
  if (target.length !== N) {
    throw new RangeError(`Invalid target length: expected ${N} (like input), got ${target.length}`);
  }
  if (!(weight instanceof Float32Array) || weight.length !== N) {
    throw new RangeError(
      `Invalid weight: expected a Float32Array of ${N} values (like input), got ${
        weight instanceof Float32Array ? weight.length : describe(weight)
      }`,
    );
  }
  const grads = options.grads ?? new Float32Array(model.params.length);
  checkGrads(model, grads);
  const ws = options.workspace ?? workspaceFor(model, B, T);
  checkShape(model, ws, input.length, B, T);
  checkSigma(model, options.sigma, B);
  const logits = forwardUnchecked(model, ws, input, B, T, options.dropout, options.sigma, weight);
  // Logits of the weighted rows only (see finalForward), or of every row.
  const n = ws.lastHeadRows >= 0 ? ws.lastHeadRows : N;
  let tg = target, wt = weight;
  if (ws.lastHeadRows >= 0) {
    tg = ws.headTargets, wt = ws.headWeights;
    const idx = ws.headRowIds;
    for (let i = 0; i < n; i++) {
      tg[i] = target[idx[i]];
      wt[i] = weight[idx[i]];
    }
  }
  const loss = ws.nn.crossEntropyForward(ws.losses, ws.lse, logits, tg, wt, n, V);
  const dlogits = ws.dlogits;
  dlogits.fill(0, 0, n * V);
  ws.nn.crossEntropyBackward(dlogits, 1, logits, ws.lse, tg, wt, n, V);
  backwardUnchecked(model, ws, dlogits, grads);
  return { loss, grads };
}
