/**
 * The float32 forward pass of the DiT (`dit.ts`) for sampling and evaluation: the same
 * computation as `ditForward`, on the compute backends of the transformer kind (the WebAssembly
 * SIMD matmuls, the system's BLAS on the same memory, or the plain TypeScript reference), over
 * buffers allocated once per runner and reused by every call. No cache is kept for a backward
 * pass (fine-tuning runs the training pass of `dit_train.ts`, which keeps one).
 *
 * Per call, for `B` sequences of `T` tokens (`N = B T`), with `d`, `c`, `V`, `L`, `NH` as in
 * `dit.ts`:
 *
 * ```
 * per sequence (B rows): e = embed(sigma), c = silu(mlp.2(silu(mlp.0(e)))),
 *                        mod_l = adaLN_l(c) for every block, modF = output adaLN(c)
 * x = vocab_embed[tokens]                                            (N,d)
 * per block: n = ln(x) * w1 * (1 + scale1) + shift1; qkv = n Wqkv^T; rope(q, k)
 *            y = attention(qkv), one sequence and head at a time over a (T,T) tile
 *            x += gate1 * (y Wout^T)
 *            n = ln(x) * w2 * (1 + scale2) + shift2; h = gelu_tanh(n W0^T + b0)
 *            x += gate2 * (h W2^T + b2)
 * out_b = (ln(x_b) wF (1 + scaleF) + shiftF) Wlin^T + (blin - s_b)   one matmul per sequence
 * ```
 *
 * where `s_b` is SEDD's `log(expm1(sigma_b)) + log(V - 1)` with `output: "sedd"` and
 * `scaleBySigma` (else 0): folding it into the bias saves a pass over the `(N,V)` output. SEDD's
 * output then gets 0 at each position's current token. The conditioning work is `B` rows, not `N`,
 * and the rotary tables are built once per runner, so the per-step cost of sampling is the
 * matmuls over `N` rows, the attention, and the element-wise ops.
 *
 * Every op is per row (position) except attention, which runs one sequence and head at a time for
 * the query rows asked for over all the sequence's keys. So {@linkcode DitRunner.forwardRows}
 * computes a part of the rows alone, given the q, k, v of the others once per block
 * ({@linkcode DitPart}), and gets exactly those rows of the whole pass: what the workers of
 * `createDitPool` (`dit_pool.ts`) run.
 *
 * On `wasm` and `blas` every operand of a matmul lives in the kernels' memory: the runner
 * reserves it in one go (the growth rule of `src/kernels/wasm.ts`), and holds a copy of every
 * parameter except `vocab_embed.embedding` (read by a gather, straight from `model.params`), made
 * by {@linkcode DitRunner.syncParams}. On `ts` the runner reads `model.params` directly.
 *
 * @module
 */

import type { BackendName } from "../nn/backend.ts";
import { defaultBackend } from "../nn/backend.ts";
import type { BlasOptions } from "../kernels/blas.ts";
import { type MatmulKernels, refKernels } from "../kernels/matmul_ref.ts";
import { arenaKernels } from "./workspace.ts";
import { gatedResidualForward, modulateForward, timestepEmbedding } from "../nn/adaln.ts";
import { ropeForward, ropeTables } from "../nn/attention.ts";
import { geluTanhForward, siluForward } from "../nn/activations.ts";
import { embeddingForward } from "../nn/embedding.ts";
import { layernormForward } from "../nn/layernorm.ts";
import { expScaledInPlace } from "../nn/fast_exp.ts";
import { TIME_EMBED_DIM } from "./layout.ts";
import { checkDitInputs, type DitModel, esigm1Log } from "./dit.ts";

/** Options of {@linkcode createDitRunner}. */
export interface DitRunnerOptions {
  /** Most sequences per call. Default 1. */
  batch?: number;
  /** Longest sequence. Default the model's context. */
  length?: number;
  /**
   * Most positions computed per call, `batch * length` by default: fewer for a runner that only
   * ever computes a part of the rows ({@linkcode DitRunner.forwardRows}, what a worker of
   * `createDitPool` runs), so its activations and output are sized for its part.
   */
  rows?: number;
  /** `"wasm"`, `"blas"` or `"ts"`. Default: `"wasm"` where WebAssembly SIMD validates, else `"ts"`. */
  backend?: BackendName;
  /** Where the BLAS library is, for `"blas"`. */
  blas?: BlasOptions;
  /**
   * Where the matmuls read the weights on `wasm` and `blas` (`ts` always reads `model.params` in
   * place): `"copy"` (default), a copy of every parameter but the embedding in the kernels'
   * memory, made by {@linkcode DitRunner.syncParams}; `"stage"`, no copy: each matmul's weight and
   * bias are copied from `model.params` into one buffer of the largest weight's size just before
   * the product (the same floats, so the same results), which costs a pass over the parameters per
   * forward call and saves their size in memory less that buffer (SEDD small: 500 MiB copied
   * against 147 MiB staged). For runners that read one shared parameter buffer, as the workers of
   * `createDitPool` can.
   */
  weights?: DitWeights;
}

/** Where a runner's matmuls read the weights: see {@linkcode DitRunnerOptions.weights}. */
export type DitWeights = "copy" | "stage";

/** Options of {@linkcode DitRunner.forward}. */
export interface DitRunOptions {
  /** Sequences B in `tokens` (at most the runner's `batch`). */
  batch: number;
  /** Noise level per sequence, `(B)` (> 0 with SEDD's `scaleBySigma`). */
  sigma: Float32Array | Float64Array;
  /** Return the output layer's logits whatever `config.output` says. */
  raw?: boolean;
}

/** A DiT forward pass with its buffers: see {@linkcode createDitRunner}. */
export interface DitRunner {
  /** The model it runs. */
  readonly model: DitModel;
  /** The backend of its matmuls and attention. */
  readonly backend: BackendName;
  /** Most sequences per call. */
  readonly batch: number;
  /** Longest sequence. */
  readonly length: number;
  /** Most positions per call (see {@linkcode DitRunnerOptions.rows}). */
  readonly rows: number;
  /** Bytes of its buffers in the kernels' memory (0 on `ts`). */
  readonly arenaBytes: number;
  /**
   * Copies `model.params` into the runner's parameter copy (wasm and blas; a no-op on ts and with
   * `weights: "stage"`, which read them at every call). Call it after changing the parameters.
   */
  syncParams(): void;
  /**
   * Runs the DiT: SEDD's log-scores (`output: "sedd"`) or MDLM's logits, `(B,T,V)` in float32.
   * The result is a view into the runner, overwritten by the next call.
   */
  forward(tokens: Int32Array, options: DitRunOptions): Float32Array;
  /**
   * Runs the DiT for the rows `[part.start, part.end)` of the flattened `(B,T)` only: the output
   * rows `(end - start, V)` of those positions, equal bit for bit to the same rows of
   * {@linkcode DitRunner.forward} when `part.exchange` hands back the q, k and v that a whole
   * pass computes (every op is per row, and the conditioning of all `B` sequences is recomputed).
   * A view into the runner, overwritten by the next call.
   */
  forwardRows(tokens: Int32Array, options: DitRunOptions, part: DitPart): Float32Array;
}

/**
 * A part of the rows of one forward pass, for {@linkcode DitRunner.forwardRows}: what a worker of
 * a pool computes, and how it sees the keys and values of the positions it does not compute.
 */
export interface DitPart {
  /** First row of the part in the flattened `(B,T)`. */
  start: number;
  /** One past its last row. */
  end: number;
  /**
   * Called once per block `block`, when the part's rows of `qkv` `(end - start, 3d)` hold the
   * block's projections (rotary applied): returns a buffer holding the `(T,3d)` q, k, v rows of
   * every sequence the part touches, and `row0`, the row of `(B,T)` at which that buffer begins
   * (the part's own `qkv` with `row0 = start` when the part holds whole sequences).
   */
  exchange(block: number, qkv: Float32Array): { qkv: Float32Array; row0: number };
}

/** Float32 buffers of a runner, by what they hold. */
interface Buffers {
  params: Float32Array; // every parameter after the embedding (wasm copy, or a view on ts)
  x: Float32Array; // (R,d) residual stream of the rows computed
  n: Float32Array; // (R,d) normed and modulated
  qkv: Float32Array; // (R,3d)
  y: Float32Array; // (R,d) attention output
  o: Float32Array; // (R,d) a branch's output
  h: Float32Array; // (R,4d) MLP hidden
  out: Float32Array; // (R,V)
  att: Float32Array; // (T,T) one head's probabilities for the query rows of one sequence
  qh: Float32Array; // (T,HS) one head's queries
  kh: Float32Array; // (T,HS) one head's keys
  vh: Float32Array; // (T,HS) one head's values
  yh: Float32Array; // (T,HS) one head's output
  bias: Float32Array; // (V) the output bias minus one sequence's SEDD shift
  emb: Float32Array; // (B,256)
  h1: Float32Array; // (B,c)
  cv: Float32Array; // (B,c) the conditioning vector
  mods: Float32Array; // (L,B,6d)
  modF: Float32Array; // (B,2d)
  zero: Float32Array; // (d) the LayerNorms' absent bias
}

/**
 * The floats of the staging buffer of `weights: "stage"`: the largest weight after the embedding,
 * then the largest bias.
 */
function stageSizes(model: DitModel): { weight: number; bias: number } {
  let weight = 0, bias = 0;
  for (const [name, { shape }] of Object.entries(model.layout)) {
    if (name === "vocab_embed.embedding") continue;
    const n = shape.reduce((a, b) => a * b, 1);
    if (name.endsWith(".bias")) bias = Math.max(bias, n);
    else weight = Math.max(weight, n);
  }
  return { weight, bias };
}

/**
 * Float counts of {@linkcode Buffers} for `B` sequences of `T` tokens, `R` rows computed; with
 * `stage`, `params` is the staging buffer instead of the copy.
 */
function bufferSizes(
  model: DitModel,
  B: number,
  T: number,
  R: number,
  stage = false,
): Record<keyof Buffers, number> {
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: c, nLayers: L } = model.config;
  const TH = T * (d / NH);
  const staged = stage ? stageSizes(model) : null;
  return {
    params: staged ? ALIGN_FLOATS + staged.weight + staged.bias : model.params.length - V * d,
    x: R * d,
    n: R * d,
    qkv: 3 * R * d,
    y: R * d,
    o: R * d,
    h: 4 * R * d,
    out: R * V,
    att: T * T,
    qh: TH,
    kh: TH,
    vh: TH,
    yh: TH,
    bias: V,
    emb: B * TIME_EMBED_DIM,
    h1: B * c,
    cv: B * c,
    mods: L * B * 6 * d,
    modF: B * 2 * d,
    zero: d,
  };
}

/** Alignment of the wasm arena's buffers, in floats (64 bytes). */
const ALIGN_FLOATS = 16;

/**
 * The bytes a runner's buffers take in the kernels' memory on `wasm` and `blas`, computed without
 * allocating: the parameter copy (all but the embedding), the activations of `rows` positions
 * (default all `B T`), their `(rows,V)` output and one head's attention scratch. It must fit in
 * the wasm32 memory (4 GiB) with the kernels' own few MiB.
 *
 * @param model The DiT.
 * @param B Most sequences per call.
 * @param T Longest sequence.
 * @param rows Most positions computed per call (a pool worker's part). Default `B * T`.
 * @param weights `"copy"` (default) or `"stage"` (see {@linkcode DitRunnerOptions.weights}).
 * @returns Bytes.
 *
 * @example More than the parameter copy and the output
 * ```ts
 * import { ditRunnerBytes } from "./dit_fast.ts";
 * import { createDit } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const dit = createDit({ vocabSize: 9, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * const copy = 4 * (dit.params.length - 9 * 8); // all but the embedding
 * assert.ok(ditRunnerBytes(dit, 2, 8) > copy + 4 * 2 * 8 * 9);
 * assert.ok(ditRunnerBytes(dit, 2, 8, 8) < ditRunnerBytes(dit, 2, 8));
 * assert.ok(ditRunnerBytes(dit, 2, 8, 16, "stage") < ditRunnerBytes(dit, 2, 8));
 * ```
 */
export function ditRunnerBytes(
  model: DitModel,
  B: number,
  T: number,
  rows: number = B * T,
  weights: DitWeights = "copy",
): number {
  let floats = 0;
  for (const n of Object.values(bufferSizes(model, B, T, rows, weights === "stage"))) {
    floats += Math.ceil(n / ALIGN_FLOATS) * ALIGN_FLOATS;
  }
  return 4 * floats;
}

/**
 * The bytes that buffers of the given float counts take in the wasm arena, each aligned as the
 * arena aligns it, with the scratch of the wasm attention for sequences of `T` tokens (shared by
 * the DiT's forward and training passes).
 *
 * @param model The DiT (its head size).
 * @param counts Float counts of the pass's own buffers.
 * @param T Longest sequence.
 * @returns Bytes.
 */
export function ditArenaBytes(model: DitModel, counts: number[], T: number): number {
  const HS = model.config.dModel / model.config.nHeads;
  const all = [...counts, ...Array(8).fill(T * HS), T * T, T * T]; // the attention's scratch
  let floats = 0;
  for (const n of all) floats += Math.ceil(n / ALIGN_FLOATS) * ALIGN_FLOATS;
  return 4 * floats;
}

/**
 * Checks the size and backend of a DiT pass (a runner's `batch` and `length`, a trainer's `rows`
 * and `length`) with a one-line error, and returns the backend (default: `defaultBackend()`).
 *
 * @param model The DiT.
 * @param sizes The two sizes under their option names: sequences, then tokens.
 * @param backend The backend asked for.
 * @returns The backend.
 */
export function checkDitPass(
  model: DitModel,
  sizes: [[string, number], [string, number]],
  backend: BackendName | undefined,
): BackendName {
  for (const [name, v] of sizes) {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`Invalid ${name}: expected a positive integer, got ${v}`);
    }
  }
  const T = sizes[1][1], context = model.config.context;
  if (T > context) {
    throw new RangeError(`Invalid ${sizes[1][0]}: expected at most context ${context}, got ${T}`);
  }
  const b = backend ?? defaultBackend();
  if (b !== "ts" && b !== "wasm" && b !== "blas") {
    throw new TypeError(`Invalid backend: expected "blas", "wasm" or "ts", got ${b}`);
  }
  return b;
}

/**
 * Makes a float32 forward pass of `model` for up to `batch` sequences of up to `length` tokens,
 * allocating every buffer now; each {@linkcode DitRunner.forward} then allocates nothing of the
 * batch's size. On `wasm` and `blas` the parameters are copied in now (see
 * {@linkcode DitRunner.syncParams} for later changes).
 *
 * @param model The DiT.
 * @param options `batch`, `length`, `rows`, `backend`, `blas`.
 * @returns The runner.
 * @throws RangeError when the buffers do not fit in the wasm32 memory; Error when `"blas"`
 *   cannot load.
 *
 * @example Agrees with the float64 pass
 * ```ts
 * import { createDitRunner } from "./dit_fast.ts";
 * import { createDit, ditForward } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const dit = createDit({ vocabSize: 11, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * const runner = createDitRunner(dit, { batch: 1, length: 8 });
 * const tokens = new Int32Array([1, 2, 10, 3]);
 * const sigma = new Float32Array([0.7]);
 * const fast = runner.forward(tokens, { batch: 1, sigma });
 * const ref = ditForward(dit, tokens, { batch: 1, sigma });
 * assert.ok(fast.every((v, i) => Math.abs(v - ref[i]) < 1e-4));
 * ```
 */
export function createDitRunner(model: DitModel, options: DitRunnerOptions = {}): DitRunner {
  const cfg = model.config;
  const B = options.batch ?? 1, T = options.length ?? cfg.context;
  const R = options.rows ?? B * T;
  const backend = checkDitPass(model, [["batch", B], ["length", T]], options.backend);
  if (!Number.isInteger(R) || R < 1) {
    throw new RangeError(`Invalid rows: expected a positive integer, got ${R}`);
  }
  if (R > B * T) {
    throw new RangeError(`Invalid rows: expected at most batch * length = ${B * T}, got ${R}`);
  }
  const weights = options.weights ?? "copy";
  if (weights !== "copy" && weights !== "stage") {
    throw new TypeError(`Invalid weights: expected "copy" or "stage", got ${weights}`);
  }
  const stage = backend !== "ts" && weights === "stage";
  const { vocabSize: V, dModel: d } = cfg;
  const sizes = bufferSizes(model, B, T, R, stage);
  const embedSize = V * d; // vocab_embed.embedding is the first tensor of the layout
  let k: MatmulKernels, bufs: Buffers, arenaBytes = 0, copy = false;
  let stager: Stager | null = null;
  if (backend === "ts") {
    const make = (key: keyof Buffers) => new Float32Array(sizes[key]);
    bufs = allocate(sizes, make, model.params.subarray(embedSize));
    k = refKernels;
  } else {
    const bytes = ditRunnerBytes(model, B, T, R, weights);
    const arena = arenaKernels(
      backend,
      bytes,
      options.blas,
      (room) =>
        `DiT runner too large for the wasm32 memory: expected at most ${room} bytes, got ` +
        `${bytes} for ${B} sequences of ${T} tokens (vocabulary ${V}, dModel ${d})`,
    );
    bufs = allocate(sizes, (key) => arena.k.alloc(sizes[key]), null);
    k = arena.k;
    arenaBytes = arena.wk.mark() - arena.start;
    copy = !stage;
    if (stage) stager = createStager(bufs.params, stageSizes(model).weight, arena.wk.memory);
  }
  const HS = d / cfg.nHeads;
  const cos = new Float64Array(T * HS / 2), sin = new Float64Array(T * HS / 2);
  ropeTables(cos, sin, T, HS);
  const mean = new Float32Array(R), rstd = new Float32Array(R);
  const w = paramViews(model, stage ? model.params.subarray(embedSize) : bufs.params, embedSize);
  const forwardRows = (tokens: Int32Array, opts: DitRunOptions, part: DitPart) => {
    const { B: b, T: t, sig } = checkDitInputs(model, tokens, opts?.batch, opts?.sigma);
    if (b > B || t > T) {
      throw new RangeError(
        `Batch too large for this DiT runner: expected B <= ${B} and T <= ${T}, got B ${b}, T ${t}`,
      );
    }
    const { start, end } = part;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > b * t) {
      throw new RangeError(
        `Invalid part: expected integer rows 0 <= start <= end <= ${b * t}, got ${start}, ${end}`,
      );
    }
    if (end < start || end - start > R) {
      throw new RangeError(
        `Invalid part: expected at most ${R} rows (the runner's rows), got ${start} to ${end}`,
      );
    }
    stager?.reset(); // the parameters may have changed since the last call
    const tab = { cos, sin, mean, rstd };
    return run(model, k, bufs, w, tab, tokens, b, t, sig, opts.raw, part, stager);
  };
  const runner: DitRunner = {
    model,
    backend,
    batch: B,
    length: T,
    rows: R,
    arenaBytes,
    syncParams() {
      if (copy) bufs.params.set(model.params.subarray(embedSize));
    },
    forward(tokens, opts) {
      const N = tokens.length;
      if (N > R && R < B * T) {
        throw new RangeError(
          `Batch too large for this DiT runner: expected at most ${R} tokens (its rows), got ${N}`,
        );
      }
      return forwardRows(tokens, opts, wholePart(N));
    },
    forwardRows,
  };
  runner.syncParams();
  return runner;
}

/** Copies weights into the kernels' memory just before their matmul (`weights: "stage"`). */
interface Stager {
  /** The weight and bias as the matmul should read them: in the kernels' memory. */
  stage(W: Float32Array, bias: Float32Array | null): [Float32Array, Float32Array | null];
  /** Forgets which weight is staged (at each call: the parameters may have changed). */
  reset(): void;
}

/**
 * A stager over `buf`: the weight at its start (`weightFloats` of room), the bias after it
 * (aligned). A weight already staged is not copied again (the output layer, once per sequence).
 */
function createStager(buf: Float32Array, weightFloats: number, memory: WebAssembly.Memory): Stager {
  const biasAt = Math.ceil(weightFloats / ALIGN_FLOATS) * ALIGN_FLOATS;
  let staged: Float32Array | null = null;
  const inMemory = (a: Float32Array) => a.buffer === memory.buffer;
  return {
    stage(W, bias) {
      if (!inMemory(W)) {
        if (
          staged === null || staged.buffer !== W.buffer || staged.byteOffset !== W.byteOffset ||
          staged.length !== W.length
        ) {
          buf.set(W);
          staged = W;
        }
        W = buf.subarray(0, W.length);
      }
      if (bias !== null && !inMemory(bias)) {
        buf.set(bias, biasAt);
        bias = buf.subarray(biasAt, biasAt + bias.length);
      }
      return [W, bias];
    },
    reset() {
      staged = null;
    },
  };
}

/** The part of every row `[0, N)`, reading q, k and v from its own buffer. */
function wholePart(N: number): DitPart {
  return { start: 0, end: N, exchange: (_, qkv) => ({ qkv, row0: 0 }) };
}

function allocate(
  sizes: Record<keyof Buffers, number>,
  make: (key: keyof Buffers) => Float32Array,
  params: Float32Array | null,
): Buffers {
  const out = {} as Buffers;
  for (const key of Object.keys(sizes) as (keyof Buffers)[]) {
    out[key] = key === "params" && params !== null ? params : make(key);
  }
  return out;
}

/** Views by state-dict name on a buffer holding every parameter after the embedding. */
function paramViews(
  model: DitModel,
  rest: Float32Array,
  embedSize: number,
): (name: string) => Float32Array {
  return (name) => {
    const { offset, shape } = model.layout[name];
    const o = offset - embedSize;
    return rest.subarray(o, o + shape.reduce((a, b) => a * b, 1));
  };
}

interface Tables {
  cos: Float64Array;
  sin: Float64Array;
  mean: Float32Array;
  rstd: Float32Array;
}

/** The rows of sequence `b`, positions `[t0, t1)`, at row `at` of a part's buffers. */
interface Segment {
  b: number;
  t0: number;
  t1: number;
  at: number;
}

/** The sequences that rows `[start, end)` of `(B,T)` cover, one segment each. */
function segments(start: number, end: number, T: number): Segment[] {
  const out: Segment[] = [];
  for (let r = start; r < end;) {
    const b = Math.floor(r / T), t0 = r - b * T;
    const t1 = Math.min(T, t0 + end - r);
    out.push({ b, t0, t1, at: r - start });
    r += t1 - t0;
  }
  return out;
}

function run(
  model: DitModel,
  k: MatmulKernels,
  buf: Buffers,
  w: (name: string) => Float32Array,
  tab: Tables,
  tokens: Int32Array,
  B: number,
  T: number,
  sig: Float64Array,
  raw: boolean | undefined,
  part: DitPart,
  stager: Stager | null,
): Float32Array {
  const cfg = model.config;
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: Cd, nLayers: L } = cfg;
  const E = TIME_EMBED_DIM, HS = d / NH;
  const { start, end } = part;
  const R = end - start;
  const x = buf.x.subarray(0, R * d), n = buf.n.subarray(0, R * d);
  const qkv = buf.qkv.subarray(0, 3 * R * d), y = buf.y.subarray(0, R * d);
  const o = buf.o.subarray(0, R * d), h = buf.h.subarray(0, 4 * R * d);
  const { mean, rstd, cos, sin } = tab;
  const lin = (
    out: Float32Array,
    inp: Float32Array,
    W: Float32Array,
    bias: Float32Array | null,
    M: number,
    IC: number,
    OC: number,
  ) => {
    if (stager !== null) [W, bias] = stager.stage(W, bias);
    k.matmulABt(out, inp, W, bias, M, IC, OC, false);
  };

  // conditioning, B rows (every part computes all of it): c = silu(mlp.2(silu(mlp.0(e)))), then
  // every block's modulation
  const emb = buf.emb.subarray(0, B * E), h1 = buf.h1.subarray(0, B * Cd);
  const cv = buf.cv.subarray(0, B * Cd);
  timestepEmbedding(emb, sig, B, E);
  lin(h1, emb, w("sigma_map.mlp.0.weight"), w("sigma_map.mlp.0.bias"), B, E, Cd);
  siluForward(h1, h1, B * Cd);
  lin(cv, h1, w("sigma_map.mlp.2.weight"), w("sigma_map.mlp.2.bias"), B, Cd, Cd);
  siluForward(cv, cv, B * Cd);
  const mods: Float32Array[] = [];
  for (let l = 0; l < L; l++) {
    const mod = buf.mods.subarray(l * B * 6 * d, (l + 1) * B * 6 * d);
    const p = `blocks.${l}.adaLN_modulation`;
    lin(mod, cv, w(`${p}.weight`), w(`${p}.bias`), B, Cd, 6 * d);
    mods.push(mod);
  }
  const modF = buf.modF.subarray(0, B * 2 * d);
  const pF = "output_layer.adaLN_modulation";
  lin(modF, cv, w(`${pF}.weight`), w(`${pF}.bias`), B, Cd, 2 * d);

  const segs = segments(start, end, T);
  /** `f` on each segment's rows of `a` (`width` floats a row) with its sequence's `K`-chunk row of `mod`. */
  const perSequence = (
    a: Float32Array,
    width: number,
    mod: Float32Array,
    K: number,
    f: (rows: Float32Array, modRow: Float32Array, len: number, s: Segment) => void,
  ) => {
    for (const s of segs) {
      const len = s.t1 - s.t0;
      f(
        a.subarray(s.at * width, (s.at + len) * width),
        mod.subarray(s.b * K * d, (s.b + 1) * K * d),
        len,
        s,
      );
    }
  };
  const modulate = (mod: Float32Array, K: number, shift: number, scale: number) =>
    perSequence(n, d, mod, K, (rows, m, len) => {
      modulateForward(rows, rows, m, shift, scale, { K, B: 1, T: len, C: d });
    });
  const gated = (mod: Float32Array, gate: number) => {
    for (const s of segs) {
      const len = s.t1 - s.t0, r = [s.at * d, (s.at + len) * d] as const;
      const xs = x.subarray(...r);
      const m = mod.subarray(s.b * 6 * d, (s.b + 1) * 6 * d);
      gatedResidualForward(xs, xs, o.subarray(...r), m, gate, { K: 6, B: 1, T: len, C: d });
    }
  };

  const embed = model.layout["vocab_embed.embedding"];
  const table = model.params.subarray(embed.offset, embed.offset + V * d);
  embeddingForward(x, tokens.subarray(start, end), table, null, 1, R, d);
  for (let l = 0; l < L; l++) {
    const p = (name: string) => w(`blocks.${l}.${name}`);
    const mod = mods[l];
    // attention half: chunks 0, 1, 2 are shift, scale, gate
    layernormForward(n, mean, rstd, x, p("norm1.weight"), buf.zero, R, d);
    modulate(mod, 6, 0, 1);
    lin(qkv, n, p("attn_qkv.weight"), null, R, d, 3 * d);
    perSequence(qkv, 3 * d, mod, 6, (rows, _, len, s) => {
      const tab0 = s.t0 * HS / 2; // the rotary tables from position t0 on
      ropeForward(rows, cos.subarray(tab0), sin.subarray(tab0), 1, len, d, NH);
    });
    const shared = part.exchange(l, qkv);
    for (const s of segs) {
      const seq = (s.b * T - shared.row0) * 3 * d;
      attentionRows(
        k,
        y.subarray(s.at * d, (s.at + s.t1 - s.t0) * d),
        shared.qkv.subarray(seq, seq + T * 3 * d),
        s.t0,
        s.t1 - s.t0,
        T,
        d,
        NH,
        buf,
      );
    }
    lin(o, y, p("attn_out.weight"), null, R, d, d);
    gated(mod, 2);
    // MLP half: chunks 3, 4, 5
    layernormForward(n, mean, rstd, x, p("norm2.weight"), buf.zero, R, d);
    modulate(mod, 6, 3, 4);
    lin(h, n, p("mlp.0.weight"), p("mlp.0.bias"), R, d, 4 * d);
    geluTanhInPlace(h, R * 4 * d);
    lin(o, h, p("mlp.2.weight"), p("mlp.2.bias"), R, 4 * d, d);
    gated(mod, 5);
  }

  layernormForward(n, mean, rstd, x, w("output_layer.norm_final.weight"), buf.zero, R, d);
  modulate(modF, 2, 0, 1);
  const out = buf.out.subarray(0, R * V);
  const W = w("output_layer.linear.weight"), bias = w("output_layer.linear.bias");
  const sedd = cfg.output === "sedd" && raw !== true;
  if (sedd && cfg.scaleBySigma) {
    // out_b = n_b W^T + (bias - shift_b): the shift folded into a per-sequence bias
    const logV1 = Math.log(V - 1);
    for (const s of segs) {
      const shift = esigm1Log(sig[s.b]) + logV1, len = s.t1 - s.t0;
      for (let v = 0; v < V; v++) buf.bias[v] = bias[v] - shift;
      lin(
        out.subarray(s.at * V, (s.at + len) * V),
        n.subarray(s.at * d, (s.at + len) * d),
        W,
        buf.bias,
        len,
        d,
        V,
      );
    }
  } else {
    lin(out, n, W, bias, R, d, V);
  }
  if (sedd) { for (let i = 0; i < R; i++) out[i * V + tokens[start + i]] = 0; }
  return out;
}

/**
 * Attention of query rows `[q0, q0 + rows)` of one sequence over all its `T` keys, head by head:
 * the head's q rows and its k and v are gathered into the `(T,HS)` scratch, `S = q k^T` (one
 * `matmulABt`), a softmax per row (the exponential by `expScaledInPlace`), `y = S v` (one
 * `matmulAB`), scattered into `y` `(rows,d)`. Every step is per query row, so a row's result is
 * the same whichever rows are computed with it (the kernels' products are row by row too).
 */
function attentionRows(
  k: MatmulKernels,
  y: Float32Array,
  seq: Float32Array,
  q0: number,
  rows: number,
  T: number,
  d: number,
  NH: number,
  buf: Buffers,
): void {
  const HS = d / NH, d3 = 3 * d, scale = 1 / Math.sqrt(HS);
  const q = buf.qh.subarray(0, rows * HS), kh = buf.kh.subarray(0, T * HS);
  const v = buf.vh.subarray(0, T * HS), yh = buf.yh.subarray(0, rows * HS);
  const s = buf.att.subarray(0, rows * T);
  for (let head = 0; head < NH; head++) {
    const c = head * HS;
    for (let t = 0; t < rows; t++) {
      const src = (q0 + t) * d3 + c;
      q.set(seq.subarray(src, src + HS), t * HS);
    }
    for (let t = 0; t < T; t++) {
      const src = t * d3 + d + c;
      kh.set(seq.subarray(src, src + HS), t * HS);
      v.set(seq.subarray(src + d, src + d + HS), t * HS);
    }
    k.matmulABt(s, q, kh, null, rows, HS, T, false);
    for (let t = 0; t < rows; t++) {
      const r = t * T;
      let max = -Infinity;
      for (let j = 0; j < T; j++) if (s[r + j] > max) max = s[r + j];
      const inv = 1 / expScaledInPlace(s, r, T, scale, max * scale);
      for (let j = 0; j < T; j++) s[r + j] *= inv;
    }
    k.matmulAB(yh, s, v, rows, T, HS, false);
    for (let t = 0; t < rows; t++) y.set(yh.subarray(t * HS, (t + 1) * HS), t * d + c);
  }
}

/**
 * GELU with the tanh approximation IN PLACE (`geluTanhForward` of `src/nn/activations.ts`), as `0.5 x (1 + tanh(u)) = x / (1 + exp(-2u))` with
 * `u = sqrt(2/pi) (x + 0.044715 x^3)`, the exponential by `expFast` (within 1e-8 relative).
 *
 * @param a Values, overwritten with their activation.
 * @param n Elements.
 *
 * @example Matches `geluTanh`
 * ```ts
 * import { geluTanhInPlace } from "./dit_fast.ts";
 * import { geluTanh } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const a = new Float32Array([-3, -0.5, 0, 0.5, 3]);
 * const want = [...a].map(geluTanh);
 * geluTanhInPlace(a, a.length);
 * assert.ok([...a].every((v, i) => Math.abs(v - want[i]) < 1e-6));
 * ```
 */
export function geluTanhInPlace(a: Float32Array, n: number): void {
  geluTanhForward(a, a, n); // the training pass's op: the same expression, aliasing allowed
}

const runners = new WeakMap<DitModel, DitRunner>();

/** Options of {@linkcode ditForwardFast}. */
export interface DitForwardFastOptions extends DitRunOptions {
  /** Backend; default as {@linkcode createDitRunner}'s. */
  backend?: BackendName;
  /** Where the BLAS library is, for `"blas"`. */
  blas?: BlasOptions;
}

/**
 * The float32 forward pass through a runner cached per model (made, or made larger, on demand,
 * for the batch's shape and the backend asked), with the parameters copied in at every call so
 * that a model changed in place is always run as it is now. Returns a view, overwritten by the
 * next call on this model.
 *
 * @param model The DiT.
 * @param tokens Token ids, `(B,T)` flattened.
 * @param options `batch`, `sigma`, `raw`, `backend`, `blas`.
 * @returns The output `(B,T,V)` (a view into the runner).
 */
export function ditForwardFast(
  model: DitModel,
  tokens: Int32Array,
  options: DitForwardFastOptions,
): Float32Array {
  const { B, T } = checkDitInputs(model, tokens, options?.batch, options?.sigma);
  const backend = options.backend ?? defaultBackend();
  let r = runners.get(model);
  if (r === undefined || r.batch < B || r.length < T || r.backend !== backend) {
    r = createDitRunner(model, { batch: B, length: T, backend, blas: options.blas });
    runners.set(model, r);
  } else {
    r.syncParams();
  }
  return r.forward(tokens, options);
}
