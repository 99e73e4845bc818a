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
 * @module
 */

import { type ModelConfig, type PresetName, resolveConfig } from "./config.ts";
import {
  buildLayout,
  type Layout,
  type ModelTensors,
  tensorViews,
  TIME_EMBED_DIM,
} from "./layout.ts";
import { initParams } from "./init.ts";
import { Rng } from "../rng.ts";
import { embeddingBackward, embeddingForward } from "../nn/embedding.ts";
import { layernormBackward, layernormForward } from "../nn/layernorm.ts";
import { ropeBackward, ropeForward, ropeTables } from "../nn/attention.ts";
import {
  type BackendName,
  defaultBackend,
  type NNBackend,
  tsBackend,
  wasmBackend,
  wasmBackendFloats,
} from "../nn/backend.ts";
import { createWasmKernels } from "../kernels/wasm.ts";
import { type BlasLibrary, type BlasOptions, loadBlas, withBlas } from "../kernels/blas.ts";
import {
  geluForwardKeepGrad,
  reluBackward,
  reluForward,
  scaleBackward,
  siluBackward,
  siluForward,
} from "../nn/activations.ts";
import {
  gatedResidualBackward,
  gatedResidualForward,
  modulateBackward,
  modulateForward,
  timestepEmbedding,
} from "../nn/adaln.ts";
import { residualForward } from "../nn/residual.ts";
import { dropoutBackward, dropoutForward, dropoutMask } from "../nn/dropout.ts";
import { crossEntropyBackward, crossEntropyForward } from "../nn/cross_entropy.ts";

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
  options: CreateModelOptions = {},
): Model {
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

function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") return (v as object).constructor?.name ?? "object";
  return typeof v;
}

/** Activations one layer saves for the backward pass. */
interface LayerActs {
  ln1: Float32Array; // (N,C)
  ln1Mean: Float32Array; // (N)
  ln1Rstd: Float32Array; // (N)
  qkv: Float32Array; // (N,3C), after RoPE
  att: Float32Array; // (B,NH,T,T) probabilities
  heads: Float32Array; // (B,NH,3,T,HS) q, k, v per head (wasm backend; empty otherwise)
  attY: Float32Array; // (N,C) heads concatenated
  r1: Float32Array; // (N,C) first residual sum
  ln2: Float32Array; // (N,C)
  ln2Mean: Float32Array; // (N)
  ln2Rstd: Float32Array; // (N)
  fch: Float32Array; // (N,F) before the activation (GELU: its derivative there, after forward)
  fh: Float32Array; // (N,F) after activation and dropout
  r2: Float32Array; // (N,C) second residual sum (post-norm only; empty otherwise)
  maskAtt: Float32Array | null; // (B,NH,T,T)
  mask1: Float32Array | null; // (N,C)
  maskF: Float32Array | null; // (N,F)
  mask2: Float32Array | null; // (N,C)
  // time conditioning only (empty otherwise):
  mod: Float32Array; // (B,6C) shift1, scale1, gate1, shift2, scale2, gate2
  m1: Float32Array; // (N,C) modulated norm1 output (attention input)
  m2: Float32Array; // (N,C) modulated norm2 output (MLP input)
  projD: Float32Array; // (N,C) attention branch after out_proj and dropout
  foD: Float32Array; // (N,C) MLP branch after linear2 and dropout
}

/** Time-conditioning activations and scratch (SEDD's sigma_map and final modulation). */
interface TimeActs {
  temb: Float32Array; // (B,256) sinusoidal sigma embedding
  h1: Float32Array; // (B,C) mlp.0 output
  a1: Float32Array; // (B,C) silu(h1)
  h2: Float32Array; // (B,C) mlp.2 output
  cond: Float32Array; // (B,C) c = silu(h2)
  finalMod: Float32Array; // (B,2C) shift, scale of the final norm
  mf: Float32Array; // (N,C) modulated final norm output (head input)
  dcond: Float32Array; // (B,C)
  dmod: Float32Array; // (B,6C)
  dfinalMod: Float32Array; // (B,2C)
  dh: Float32Array; // (B,C)
  da: Float32Array; // (B,C)
}

/**
 * Everything one forward/backward pass needs for batches up to `B` sequences of up to `T`
 * tokens: saved activations, logits, backward scratch. Reusable across steps; holds the state
 * of the last {@linkcode modelForward} for {@linkcode modelBackward}.
 */
export interface Workspace {
  /** The config it was sized for. */
  readonly config: ModelConfig;
  /** Capacity: most sequences per batch. */
  readonly B: number;
  /** Capacity: longest sequence. */
  readonly T: number;
  /** Logits of the last forward pass, `(B,T,V)` at capacity. */
  readonly logits: Float32Array;
  /** Scratch for the loss gradient, `(B,T,V)`. */
  readonly dlogits: Float32Array;
  /** Per-position weighted losses, `(B*T)`. */
  readonly losses: Float32Array;
  /** @internal Shape of the last forward pass (0 before any). */
  lastB: number;
  /** @internal */
  lastT: number;
  /** @internal Whether the last forward pass applied dropout. */
  lastDropout: boolean;
  /**
   * @internal Rows the last forward pass computed logits for, when it computed only the rows a
   * weighted loss reads (`lossAndGrad`): their indices are in `headRowIds`; -1 for every row.
   */
  lastHeadRows: number;
  /** @internal Token ids of the last forward pass, `(B*T)`. */
  readonly tokens: Int32Array;
  /** @internal Log-sum-exp per position, `(B*T)`. */
  readonly lse: Float32Array;
  /** @internal Residual stream entering each layer, and leaving the last: L+1 of `(N,C)`. */
  readonly resid: Float32Array[];
  /** @internal */
  readonly layers: LayerActs[];
  /** @internal Final LayerNorm output and statistics (pre-norm). */
  readonly lnf: Float32Array;
  /** @internal */
  readonly lnfMean: Float32Array;
  /** @internal */
  readonly lnfRstd: Float32Array;
  /** @internal Forward scratch `(N,C)` and backward scratch. */
  readonly tmp: Float32Array;
  /** @internal */
  readonly g: Float32Array[]; // 4 x (N,C)
  /** @internal */
  readonly gQKV: Float32Array; // (N,3C)
  /** @internal */
  readonly gF: Float32Array[]; // 2 x (N,F)
  /** @internal */
  readonly rowT: Float32Array; // (T)
  /** @internal wasm only: the non-zero rows of dlogits, `(N,V)` (else empty). */
  readonly headRows: Float32Array;
  /** @internal wasm only: their row indices, `(N)`. */
  readonly headRowIds: Int32Array;
  /** @internal wasm only: targets and weights of those rows, `(N)` each. */
  readonly headTargets: Int32Array;
  /** @internal */
  readonly headWeights: Float32Array;
  /** @internal Time conditioning, or `null`. */
  readonly time: TimeActs | null;
  /** Which backend runs linear and attention: `"blas"`, `"wasm"` or `"ts"`. */
  readonly backend: BackendName;
  /** @internal The ops of that backend. */
  readonly nn: NNBackend;
  /**
   * @internal wasm only: the parameters copied into the kernels' memory at each forward pass
   * (the backward pass reads the same copy), or `null`.
   */
  readonly wParams: Float32Array | null;
  /** @internal wasm only: gradient accumulator, added into the caller's gradients once. */
  readonly wGrads: Float32Array | null;
  /** @internal RoPE tables `(T,HS/2)`, or empty. */
  readonly cos: Float64Array;
  /** @internal */
  readonly sin: Float64Array;
}

/** Options of {@linkcode createWorkspace}. */
export interface WorkspaceOptions {
  /**
   * `"wasm"`: linear and attention through the WebAssembly SIMD kernels, activations, a
   * parameter copy and the gradient accumulator in the kernels' memory (zero-copy calls).
   * `"blas"`: the same, with the matmuls through the system's `cblas_sgemm` on that memory
   * (FFI: Deno with `--allow-ffi`, or Bun); an error where no library loads.
   * `"ts"`: the plain TypeScript reference. Default: `"wasm"` where WebAssembly SIMD
   * validates, else `"ts"`; always `"ts"` with `float64`.
   */
  backend?: BackendName;
  /** Float64 buffers for finite-difference gradient checks (TS backend only). */
  float64?: boolean;
  /** `"blas"`: where the library is (default: see `loadBlas`). */
  blas?: BlasOptions;
}

function checkDim(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(`Invalid ${name}: expected a positive integer, got ${v}`);
  }
}

/**
 * Allocates a workspace for batches of up to `B` sequences of up to `T` tokens.
 *
 * @param config The model config.
 * @param B Most sequences per batch.
 * @param T Longest sequence, at most `config.context`.
 * @param options `backend`: `"wasm"` (WebAssembly SIMD kernels, buffers in wasm memory; the
 *   default where SIMD validates) or `"ts"` (plain TypeScript reference). `float64: true`
 *   allocates every buffer as a `Float64Array` (typed as `Float32Array`) so that
 *   finite-difference gradient checks can run the very same code in double precision, with
 *   parameters and gradients in `Float64Array`s too; TS backend only. Not for training.
 * @returns The workspace.
 *
 * @example Sized for the notebook's batch
 * ```ts
 * import { createWorkspace } from "./model.ts";
 * import { resolveConfig } from "./config.ts";
 * import assert from "node:assert/strict";
 *
 * const ws = createWorkspace(resolveConfig("seed", { vocabSize: 37 }), 2, 8);
 * assert.equal(ws.logits.length, 2 * 8 * 37);
 * ```
 */
export function createWorkspace(
  config: ModelConfig,
  B: number,
  T: number,
  options: WorkspaceOptions = {},
): Workspace {
  checkDim("batch size", B);
  checkDim("sequence length", T);
  if (T > config.context) {
    throw new RangeError(
      `Sequence too long: expected T <= context ${config.context}, got ${T}`,
    );
  }
  const backend = options.backend ?? (options.float64 ? "ts" : defaultBackend());
  if (backend !== "ts" && backend !== "wasm" && backend !== "blas") {
    throw new TypeError(`Invalid backend: expected "blas", "wasm" or "ts", got ${backend}`);
  }
  if (backend !== "ts" && options.float64) {
    throw new TypeError(
      `Invalid backend for a float64 workspace: expected "ts" (the ${backend} kernels are float32), got "${backend}"`,
    );
  }
  let blas: BlasLibrary | undefined;
  if (backend === "blas") {
    const lib = loadBlas(options.blas);
    if (!lib.ok) {
      throw new Error(
        `BLAS backend unavailable: expected a working CBLAS library, got ${lib.reason}`,
      );
    }
    blas = lib.blas;
  }
  const { dModel: C, nHeads: NH } = config;
  const HS = C / NH;
  if (backend === "ts") {
    const f = options.float64
      ? (n: number) => new Float64Array(n) as unknown as Float32Array
      : (n: number) => new Float32Array(n);
    return {
      ...workspaceBuffers(config, B, T, f, false),
      backend,
      nn: tsBackend,
      wParams: null,
      wGrads: null,
    };
  }
  // wasm: every float buffer in the kernels' memory, reserved in one go before any view is
  // taken (the growth rule of src/kernels/wasm.ts), plus a parameter copy and a gradient
  // accumulator so that every kernel call is zero-copy.
  const size = buildLayout(config).size;
  let total = 0;
  const empty = new Float32Array(0);
  workspaceBuffers(config, B, T, (n) => {
    total += n + 16;
    return empty;
  }, true);
  total += 2 * (size + 16) + wasmBackendFloats(T, HS);
  const wk = createWasmKernels();
  wk.reserve(total);
  const k = blas ? withBlas(wk, blas) : wk;
  const bufs = workspaceBuffers(config, B, T, (n) => k.alloc(n), true);
  const wParams = k.alloc(size);
  const wGrads = k.alloc(size);
  const nn = wasmBackend(k, T, HS, backend);
  return { ...bufs, backend, nn, wParams, wGrads };
}

/** The float buffers of a workspace, from the allocator `f`. */
function workspaceBuffers(
  config: ModelConfig,
  B: number,
  T: number,
  f: (n: number) => Float32Array,
  packedHeads: boolean,
): Omit<Workspace, "backend" | "nn" | "wParams" | "wGrads"> {
  const { dModel: C, dFF: F, nHeads: NH, nLayers: L, vocabSize: V } = config;
  const N = B * T;
  const drop = config.dropout > 0;
  const tc = config.timeConditioning === true;
  const nTC = tc ? N * C : 0;
  const layers: LayerActs[] = [];
  for (let l = 0; l < L; l++) {
    layers.push({
      ln1: f(N * C),
      ln1Mean: f(N),
      ln1Rstd: f(N),
      qkv: f(N * 3 * C),
      att: f(B * NH * T * T),
      heads: f(packedHeads ? 3 * N * C : 0),
      attY: f(N * C),
      r1: f(N * C),
      ln2: f(N * C),
      ln2Mean: f(N),
      ln2Rstd: f(N),
      fch: f(N * F),
      fh: f(N * F),
      r2: f(config.normFirst ? 0 : N * C),
      maskAtt: drop ? f(B * NH * T * T) : null,
      mask1: drop ? f(N * C) : null,
      maskF: drop ? f(N * F) : null,
      mask2: drop ? f(N * C) : null,
      mod: f(tc ? B * 6 * C : 0),
      m1: f(nTC),
      m2: f(nTC),
      projD: f(nTC),
      foD: f(nTC),
    });
  }
  const HS = C / NH;
  const rotary = config.positions === "rotary";
  const cos = new Float64Array(rotary ? T * HS / 2 : 0);
  const sin = new Float64Array(rotary ? T * HS / 2 : 0);
  if (rotary) ropeTables(cos, sin, T, HS);
  return {
    config,
    B,
    T,
    logits: f(N * V),
    dlogits: f(N * V),
    losses: f(N),
    lastB: 0,
    lastT: 0,
    lastDropout: false,
    lastHeadRows: -1,
    tokens: new Int32Array(N),
    lse: f(N),
    resid: Array.from({ length: L + 1 }, () => f(N * C)),
    layers,
    lnf: f(config.normFirst ? N * C : 0),
    lnfMean: f(N),
    lnfRstd: f(N),
    tmp: f(N * C),
    g: [f(N * C), f(N * C), f(N * C), f(N * C)],
    gQKV: f(N * 3 * C),
    gF: [f(N * F), f(N * F)],
    rowT: f(T),
    headRows: f(packedHeads ? N * V : 0),
    headRowIds: new Int32Array(packedHeads ? N : 0),
    headTargets: new Int32Array(packedHeads ? N : 0),
    headWeights: f(packedHeads ? N : 0),
    time: tc
      ? {
        temb: f(B * TIME_EMBED_DIM),
        h1: f(B * C),
        a1: f(B * C),
        h2: f(B * C),
        cond: f(B * C),
        finalMod: f(B * 2 * C),
        mf: f(N * C),
        dcond: f(B * C),
        dmod: f(B * 6 * C),
        dfinalMod: f(B * 2 * C),
        dh: f(B * C),
        da: f(B * C),
      }
      : null,
    cos,
    sin,
  };
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

function drawMasks(ws: Workspace, keys: DropoutKeys, B: number, T: number): void {
  const { dropout: p, nHeads: NH, dModel: C, dFF: F } = ws.config;
  for (let b = 0; b < B; b++) {
    const rng = new Rng(keys.seed, keys.step, keys.firstRow + b, 1);
    for (const a of ws.layers) {
      dropoutMask(a.maskAtt!, rng, p, NH * T * T, b * NH * T * T);
      dropoutMask(a.mask1!, rng, p, T * C, b * T * C);
      dropoutMask(a.maskF!, rng, p, T * F, b * T * F);
      dropoutMask(a.mask2!, rng, p, T * C, b * T * C);
    }
  }
}

function forwardUnchecked(
  model: Model,
  ws: Workspace,
  input: Int32Array,
  B: number,
  T: number,
  dropout: DropoutKeys | undefined,
  sigma?: Float32Array | Float64Array,
  rowWeights?: Float32Array, // (N): compute logits only where non-zero (see headForward)
): Float32Array {
  const cfg = model.config;
  const { dModel: C, dFF: F, nHeads: NH, vocabSize: V } = cfg;
  const N = B * T;
  const nn = ws.nn;
  // wasm: one parameter copy into the kernels' memory per forward pass (the backward pass
  // of this forward reads the same copy).
  if (ws.wParams) ws.wParams.set(model.params);
  const P = tensorViews(ws.wParams ?? model.params, model.layout, cfg);
  const useDrop = dropout !== undefined && cfg.dropout > 0;
  if (useDrop) drawMasks(ws, dropout!, B, T);
  ws.tokens.set(input);
  ws.lastB = B;
  ws.lastT = T;
  ws.lastDropout = useDrop;
  const rotary = cfg.positions === "rotary";
  const gelu = cfg.activation === "gelu";
  const pre = cfg.normFirst;
  const tm = ws.time; // time conditioning (pre-norm only)

  if (tm) {
    // c = silu(mlp.2(silu(mlp.0(embedding(sigma)))))
    timestepEmbedding(tm.temb, sigma!, B, TIME_EMBED_DIM);
    nn.linearForward(tm.h1, tm.temb, P.sigma0W!, P.sigma0B!, B, TIME_EMBED_DIM, C);
    siluForward(tm.a1, tm.h1, B * C);
    nn.linearForward(tm.h2, tm.a1, P.sigma2W!, P.sigma2B!, B, C, C);
    siluForward(tm.cond, tm.h2, B * C);
    nn.linearForward(tm.finalMod, tm.cond, P.finalAdaW!, P.finalAdaB!, B, C, 2 * C);
  }
  embeddingForward(ws.resid[0], input, P.embed, P.posEmbed, B, T, C);
  for (let l = 0; l < cfg.nLayers; l++) {
    const w = P.layers[l];
    const a = ws.layers[l];
    const x = ws.resid[l]; // (N,C)
    const out = ws.resid[l + 1]; // (N,C)
    if (tm) nn.linearForward(a.mod, tm.cond, w.adaW!, w.adaB!, B, C, 6 * C);
    // self-attention block
    let saIn = x;
    if (pre) {
      layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, x, w.norm1W, w.norm1B, N, C);
      saIn = a.ln1;
      if (tm) {
        modulateForward(a.m1, a.ln1, a.mod, 0, 1, 6, B, T, C);
        saIn = a.m1;
      }
    }
    nn.linearForward(a.qkv, saIn, w.inProjW, w.inProjB, N, C, 3 * C);
    if (rotary) ropeForward(a.qkv, ws.cos, ws.sin, B, T, C, NH);
    nn.attentionForward(a.attY, a.att, a.qkv, useDrop ? a.maskAtt : null, B, T, C, NH, a.heads);
    const proj = tm ? a.projD : ws.tmp;
    nn.linearForward(proj, a.attY, w.outProjW, w.outProjB, N, C, C);
    if (useDrop) dropoutForward(proj, proj, a.mask1!, N * C);
    if (tm) gatedResidualForward(a.r1, x, proj, a.mod, 2, 6, B, T, C);
    else residualForward(a.r1, x, proj, N * C);
    // feed-forward block
    let ffIn: Float32Array;
    if (pre) {
      layernormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.r1, w.norm2W, w.norm2B, N, C);
      ffIn = a.ln2;
      if (tm) {
        modulateForward(a.m2, a.ln2, a.mod, 3, 4, 6, B, T, C);
        ffIn = a.m2;
      }
    } else {
      layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, a.r1, w.norm1W, w.norm1B, N, C);
      ffIn = a.ln1;
    }
    nn.linearForward(a.fch, ffIn, w.lin1W, w.lin1B, N, C, F);
    // fh = drop(act(fch)), the dropout fused into the activation's pass
    // (GELU keeps its derivative in fch for the backward pass)
    if (gelu) geluForwardKeepGrad(a.fh, a.fch, N * F, useDrop ? a.maskF : null);
    else reluForward(a.fh, a.fch, N * F, useDrop ? a.maskF : null);
    const fo = tm ? a.foD : ws.tmp;
    nn.linearForward(fo, a.fh, w.lin2W, w.lin2B, N, F, C);
    if (useDrop) dropoutForward(fo, fo, a.mask2!, N * C);
    if (tm) {
      gatedResidualForward(out, a.r1, fo, a.mod, 5, 6, B, T, C);
    } else if (pre) {
      residualForward(out, a.r1, fo, N * C);
    } else {
      residualForward(a.r2, a.ln1, fo, N * C);
      layernormForward(out, a.ln2Mean, a.ln2Rstd, a.r2, w.norm2W, w.norm2B, N, C);
    }
  }
  let final = ws.resid[cfg.nLayers];
  if (pre) {
    layernormForward(ws.lnf, ws.lnfMean, ws.lnfRstd, final, P.normW!, P.normB!, N, C);
    final = ws.lnf;
    if (tm) {
      modulateForward(tm.mf, ws.lnf, tm.finalMod, 0, 1, 2, B, T, C);
      final = tm.mf;
    }
  }
  return headForward(ws, final, P.headW, P.headB, N, C, V, rowWeights);
}

/**
 * The head, `logits = final W^T + b`. With `rowWeights` (a weighted loss that reads only the
 * rows of non-zero weight: the masked positions) on the wasm and blas backends, from 64 rows of
 * which at most 3/4 count, only those rows are gathered (into the free `g2` scratch, which the
 * backward pass reuses) and multiplied: the logits are then `(n,V)` for the `n` rows listed in
 * `ws.headRowIds`, and `ws.lastHeadRows` is `n`. Otherwise every row, and `lastHeadRows` -1.
 */
function headForward(
  ws: Workspace,
  final: Float32Array, // (N,C)
  W: Float32Array, // (V,C)
  b: Float32Array, // (V)
  N: number,
  C: number,
  V: number,
  rowWeights: Float32Array | undefined, // (N)
): Float32Array {
  ws.lastHeadRows = -1;
  const idx = ws.headRowIds;
  if (rowWeights !== undefined && idx.length >= N && N >= 64) {
    let n2 = 0;
    for (let n = 0; n < N; n++) if (rowWeights[n] !== 0) idx[n2++] = n;
    if (n2 * 4 <= N * 3) {
      const xs = ws.g[2];
      gatherRows(xs, final, idx, n2, C);
      if (n2 > 0) ws.nn.linearForward(ws.logits, xs, W, b, n2, C, V);
      ws.lastHeadRows = n2;
      return ws.logits.subarray(0, n2 * V);
    }
  }
  ws.nn.linearForward(ws.logits, final, W, b, N, C, V);
  return N * V === ws.logits.length ? ws.logits : ws.logits.subarray(0, N * V);
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
    for (let i = 0; i < acc.length; i++) grads[i] += acc[i];
  }
}

function backwardInto(
  model: Model,
  ws: Workspace,
  dlogits: Float32Array,
  G: ModelTensors,
): void {
  const cfg = model.config;
  const { dModel: C, dFF: F, nHeads: NH, vocabSize: V, nLayers: L } = cfg;
  const B = ws.lastB, T = ws.lastT, N = B * T;
  const nn = ws.nn;
  const P = tensorViews(ws.wParams ?? model.params, model.layout, cfg);
  const useDrop = ws.lastDropout;
  const rotary = cfg.positions === "rotary";
  const gelu = cfg.activation === "gelu";
  const pre = cfg.normFirst;
  const tm = ws.time;
  const NC = N * C, NF = N * F;
  const [g0, g1, g2, g3] = ws.g;
  const gQKV = ws.gQKV;
  if (tm) tm.dcond.fill(0);

  // logits = final head^T + b
  const final = tm ? tm.mf : pre ? ws.lnf : ws.resid[L];
  g1.fill(0, 0, NC);
  headBackward(ws, g1, G.headW, G.headB, dlogits, final, P.headW, N, C, V);
  g0.fill(0, 0, NC);
  if (pre) {
    let dlnf = g1;
    if (tm) {
      // mf = lnf * (1 + scale) + shift; finalMod = c Wf^T + bf
      g2.fill(0, 0, NC);
      tm.dfinalMod.fill(0);
      modulateBackward(g2, tm.dfinalMod, g1, ws.lnf, tm.finalMod, 0, 1, 2, B, T, C);
      nn.linearBackward(
        tm.dcond,
        G.finalAdaW!,
        G.finalAdaB!,
        tm.dfinalMod,
        tm.cond,
        P.finalAdaW!,
        B,
        C,
        2 * C,
      );
      dlnf = g2;
    }
    // lnf = norm(resid[L])
    layernormBackward(
      g0,
      G.normW!,
      G.normB!,
      dlnf,
      ws.resid[L],
      P.normW!,
      ws.lnfMean,
      ws.lnfRstd,
      N,
      C,
    );
  } else {
    g0.set(g1.subarray(0, NC));
  }

  for (let l = L - 1; l >= 0; l--) {
    const w = P.layers[l];
    const dw = G.layers[l];
    const a = ws.layers[l];
    const x = ws.resid[l];
    if (tm) tm.dmod.fill(0);
    // g0 holds d(layer output). First d(fo after dropout):
    let dfoD: Float32Array;
    if (tm) {
      // out = r1 + gate2 * foD
      g1.fill(0, 0, NC);
      gatedResidualBackward(null, g1, tm.dmod, g0, a.foD, a.mod, 5, 6, B, T, C);
      dfoD = g1;
    } else if (pre) {
      dfoD = g0; // out = r1 + foD
    } else {
      // out = norm2(r2), r2 = ln1 + foD
      g1.fill(0, 0, NC);
      layernormBackward(
        g1,
        dw.norm2W,
        dw.norm2B,
        g0,
        a.r2,
        w.norm2W,
        a.ln2Mean,
        a.ln2Rstd,
        N,
        C,
      );
      dfoD = g1;
    }
    let dfo = dfoD;
    if (useDrop) {
      g2.fill(0, 0, NC);
      dropoutBackward(g2, dfoD, a.mask2!, NC);
      dfo = g2;
    }
    // fo = fh W2^T + b2
    const [f0, f1] = ws.gF;
    f0.fill(0, 0, NF);
    nn.linearBackward(f0, dw.lin2W, dw.lin2B, dfo, a.fh, w.lin2W, N, F, C);
    // fh = drop(act(fch)): dfch = act'(fch) * mask * dfh in one pass
    const dfch = f1;
    dfch.fill(0, 0, NF);
    const maskF = useDrop ? a.maskF : null;
    if (gelu) scaleBackward(dfch, f0, a.fch, NF, maskF); // fch holds gelu'(fch)
    else reluBackward(dfch, f0, a.fch, NF, maskF);
    // dr1: gradient w.r.t. the first residual sum r1, built in g3.
    if (pre) {
      // fch = ffIn W1^T + b1, ffIn = m2 = ln2 * (1 + scale2) + shift2 (or ln2), ln2 = norm2(r1)
      g2.fill(0, 0, NC);
      nn.linearBackward(g2, dw.lin1W, dw.lin1B, dfch, tm ? a.m2 : a.ln2, w.lin1W, N, C, F);
      let dln2 = g2;
      if (tm) {
        g1.fill(0, 0, NC);
        modulateBackward(g1, tm.dmod, g2, a.ln2, a.mod, 3, 4, 6, B, T, C);
        dln2 = g1;
      }
      g3.set(g0.subarray(0, NC)); // out = r1 + ...
      layernormBackward(
        g3,
        dw.norm2W,
        dw.norm2B,
        dln2,
        a.r1,
        w.norm2W,
        a.ln2Mean,
        a.ln2Rstd,
        N,
        C,
      );
    } else {
      // fch = ln1 W1^T + b1, r2 = ln1 + ..., ln1 = norm1(r1)
      g2.set(dfoD.subarray(0, NC));
      nn.linearBackward(g2, dw.lin1W, dw.lin1B, dfch, a.ln1, w.lin1W, N, C, F);
      g3.fill(0, 0, NC);
      layernormBackward(
        g3,
        dw.norm1W,
        dw.norm1B,
        g2,
        a.r1,
        w.norm1W,
        a.ln1Mean,
        a.ln1Rstd,
        N,
        C,
      );
    }
    // r1 = x + gate1 * projD (or x + projD), projD = drop1(proj)
    let dprojD = g3;
    if (tm) {
      g1.fill(0, 0, NC);
      gatedResidualBackward(null, g1, tm.dmod, g3, a.projD, a.mod, 2, 6, B, T, C);
      dprojD = g1;
    }
    let dproj = dprojD;
    if (useDrop) {
      g2.fill(0, 0, NC);
      dropoutBackward(g2, dprojD, a.mask1!, NC);
      dproj = g2;
    }
    // proj = attY Wo^T + bo
    const dattY = dproj === g2 ? g1 : g2;
    dattY.fill(0, 0, NC);
    nn.linearBackward(dattY, dw.outProjW, dw.outProjB, dproj, a.attY, w.outProjW, N, C, C);
    gQKV.fill(0, 0, N * 3 * C);
    nn.attentionBackward(
      gQKV,
      dattY,
      a.qkv,
      a.att,
      useDrop ? a.maskAtt : null,
      ws.rowT,
      B,
      T,
      C,
      NH,
      a.heads,
    );
    if (rotary) ropeBackward(gQKV, ws.cos, ws.sin, B, T, C, NH);
    // qkv = saIn Win^T + bin; new g0 = d(layer input) = dr1 (residual) + path through SA.
    if (pre) {
      // saIn = m1 = ln1 * (1 + scale1) + shift1 (or ln1), ln1 = norm1(x)
      g1.fill(0, 0, NC);
      nn.linearBackward(
        g1,
        dw.inProjW,
        dw.inProjB,
        gQKV,
        tm ? a.m1 : a.ln1,
        w.inProjW,
        N,
        C,
        3 * C,
      );
      let dln1 = g1;
      if (tm) {
        g2.fill(0, 0, NC);
        modulateBackward(g2, tm.dmod, g1, a.ln1, a.mod, 0, 1, 6, B, T, C);
        dln1 = g2;
      }
      g0.set(g3.subarray(0, NC));
      layernormBackward(
        g0,
        dw.norm1W,
        dw.norm1B,
        dln1,
        x,
        w.norm1W,
        a.ln1Mean,
        a.ln1Rstd,
        N,
        C,
      );
    } else {
      g0.set(g3.subarray(0, NC));
      nn.linearBackward(g0, dw.inProjW, dw.inProjB, gQKV, x, w.inProjW, N, C, 3 * C);
    }
    // mod = c Wada^T + bada
    if (tm) nn.linearBackward(tm.dcond, dw.adaW!, dw.adaB!, tm.dmod, tm.cond, w.adaW!, B, C, 6 * C);
  }
  embeddingBackward(G.embed, G.posEmbed, g0, ws.tokens, B, T, C);
  if (tm) {
    // cond = silu(h2), h2 = a1 W2^T + b2, a1 = silu(h1), h1 = temb W0^T + b0
    tm.dh.fill(0);
    siluBackward(tm.dh, tm.dcond, tm.h2, B * C);
    tm.da.fill(0);
    nn.linearBackward(tm.da, G.sigma2W!, G.sigma2B!, tm.dh, tm.a1, P.sigma2W!, B, C, C);
    tm.dh.fill(0);
    siluBackward(tm.dh, tm.da, tm.h1, B * C);
    nn.linearBackward(
      null,
      G.sigma0W!,
      G.sigma0B!,
      tm.dh,
      tm.temb,
      P.sigma0W!,
      B,
      TIME_EMBED_DIM,
      C,
    );
  }
}

/**
 * The head's backward pass, `logits = final W^T + b`. Rows of `dlogits` that are all zero
 * (positions the loss ignores: unmasked tokens under the masked losses, about half of them)
 * add nothing to any gradient, so on the wasm backend, with at least 64 rows of which at most 3/4 are
 * non-zero, the two backward products run on the non-zero rows only (gathered into
 * `ws.headRows` and the free `g2`/`g3` scratch) and `dfinal` is scattered back. Same math.
 */
function headBackward(
  ws: Workspace,
  dfinal: Float32Array, // (N,C), zero on entry
  dW: Float32Array, // (V,C)
  db: Float32Array, // (V)
  dlogits: Float32Array, // (N,V)
  final: Float32Array, // (N,C)
  W: Float32Array, // (V,C)
  N: number,
  C: number,
  V: number,
): void {
  const rows = ws.headRows, idx = ws.headRowIds;
  if (ws.lastHeadRows >= 0) {
    // The forward pass computed the listed rows only: dlogits is (n2,V), their inputs are in g2.
    compactHeadBackward(ws, dfinal, dW, db, dlogits, W, ws.lastHeadRows, C, V);
    return;
  }
  // (below 64 rows the products are too small for the gather to pay)
  if (rows.length < N * V || N < 64) {
    ws.nn.linearBackward(dfinal, dW, db, dlogits, final, W, N, C, V);
    return;
  }
  let n2 = 0;
  for (let n = 0; n < N; n++) {
    const o = n * V;
    for (let v = 0; v < V; v++) {
      if (dlogits[o + v] !== 0) {
        idx[n2++] = n;
        break;
      }
    }
  }
  if (n2 * 4 > N * 3) {
    ws.nn.linearBackward(dfinal, dW, db, dlogits, final, W, N, C, V);
    return;
  }
  gatherRows(rows, dlogits, idx, n2, V);
  gatherRows(ws.g[2], final, idx, n2, C); // g2, g3: free until the layers' backward pass
  compactHeadBackward(ws, dfinal, dW, db, rows, W, n2, C, V);
}

/** `dst` row i = `src` row `idx[i]`, for i < n: the rows of `(N,D)` listed in `idx`. */
function gatherRows(
  dst: Float32Array, // (n,D)
  src: Float32Array, // (N,D)
  idx: Int32Array, // (n)
  n: number,
  D: number,
): void {
  for (let i = 0; i < n; i++) {
    const o = idx[i] * D, r = i * D;
    for (let d = 0; d < D; d++) dst[r + d] = src[o + d];
  }
}

/**
 * The head's backward pass on the `n2` rows listed in `ws.headRowIds`: their inputs gathered in
 * `g2`, their logit gradients `drows` `(n2,V)`; `dfinal` gets the input gradient scattered back.
 */
function compactHeadBackward(
  ws: Workspace,
  dfinal: Float32Array, // (N,C)
  dW: Float32Array, // (V,C)
  db: Float32Array, // (V)
  drows: Float32Array, // (n2,V)
  W: Float32Array, // (V,C)
  n2: number,
  C: number,
  V: number,
): void {
  if (n2 === 0) return;
  const [, , xs, dxs] = ws.g;
  const idx = ws.headRowIds;
  dxs.fill(0, 0, n2 * C);
  ws.nn.linearBackward(dxs, dW, db, drows, xs, W, n2, C, V);
  for (let i = 0; i < n2; i++) {
    const o = idx[i] * C, r = i * C;
    for (let c = 0; c < C; c++) dfinal[o + c] += dxs[r + c];
  }
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
  options: {
    batch: number;
    sigma?: Float32Array | Float64Array;
    backend?: BackendName;
    blas?: BlasOptions;
  },
): Float32Array {
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
  // Logits of the weighted rows only (see headForward), or of every row.
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
  const loss = crossEntropyForward(ws.losses, ws.lse, logits, tg, wt, n, V);
  const dlogits = ws.dlogits;
  dlogits.fill(0, 0, n * V);
  crossEntropyBackward(dlogits, 1, logits, ws.lse, tg, wt, n, V);
  backwardUnchecked(model, ws, dlogits, grads);
  return { loss, grads };
}
