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
 *            y = attention(qkv), one sequence at a time over an (NH,T,T) tile
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
 * On `wasm` and `blas` every operand of a matmul lives in the kernels' memory: the runner
 * reserves it in one go (the growth rule of `src/kernels/wasm.ts`), and holds a copy of every
 * parameter except `vocab_embed.embedding` (read by a gather, straight from `model.params`), made
 * by {@linkcode DitRunner.syncParams}. On `ts` the runner reads `model.params` directly.
 *
 * @module
 */

import type { BackendName, NNBackend } from "../nn/backend.ts";
import { defaultBackend, tsBackend, wasmBackend } from "../nn/backend.ts";
import type { BlasOptions } from "../kernels/blas.ts";
import { arenaKernels } from "./workspace.ts";
import { gatedResidualForward, modulateForward, timestepEmbedding } from "../nn/adaln.ts";
import { ropeForward, ropeTables } from "../nn/attention.ts";
import { siluForward } from "../nn/activations.ts";
import { embeddingForward } from "../nn/embedding.ts";
import { layernormForward } from "../nn/layernorm.ts";
import { expFast } from "../nn/fast_exp.ts";
import { TIME_EMBED_DIM } from "./layout.ts";
import { checkDitInputs, type DitModel, esigm1Log } from "./dit.ts";

/** Options of {@linkcode createDitRunner}. */
export interface DitRunnerOptions {
  /** Most sequences per call. Default 1. */
  batch?: number;
  /** Longest sequence. Default the model's context. */
  length?: number;
  /** `"wasm"`, `"blas"` or `"ts"`. Default: `"wasm"` where WebAssembly SIMD validates, else `"ts"`. */
  backend?: BackendName;
  /** Where the BLAS library is, for `"blas"`. */
  blas?: BlasOptions;
}

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
  /** Bytes of its buffers in the kernels' memory (0 on `ts`). */
  readonly arenaBytes: number;
  /**
   * Copies `model.params` into the runner's parameter copy (wasm and blas; a no-op on ts, which
   * reads them in place). Call it after changing the parameters.
   */
  syncParams(): void;
  /**
   * Runs the DiT: SEDD's log-scores (`output: "sedd"`) or MDLM's logits, `(B,T,V)` in float32.
   * The result is a view into the runner, overwritten by the next call.
   */
  forward(tokens: Int32Array, options: DitRunOptions): Float32Array;
}

/** Float32 buffers of a runner, by what they hold. */
interface Buffers {
  params: Float32Array; // every parameter after the embedding (wasm copy, or a view on ts)
  x: Float32Array; // (N,d) residual stream
  n: Float32Array; // (N,d) normed and modulated
  qkv: Float32Array; // (N,3d)
  y: Float32Array; // (N,d) attention output
  o: Float32Array; // (N,d) a branch's output
  h: Float32Array; // (N,4d) MLP hidden
  out: Float32Array; // (N,V)
  att: Float32Array; // (NH,T,T) one sequence's probabilities
  bias: Float32Array; // (V) the output bias minus one sequence's SEDD shift
  emb: Float32Array; // (B,256)
  h1: Float32Array; // (B,c)
  cv: Float32Array; // (B,c) the conditioning vector
  mods: Float32Array; // (L,B,6d)
  modF: Float32Array; // (B,2d)
  zero: Float32Array; // (d) the LayerNorms' absent bias
}

/** Float counts of {@linkcode Buffers} for `B` sequences of `T` tokens. */
function bufferSizes(model: DitModel, B: number, T: number): Record<keyof Buffers, number> {
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: c, nLayers: L } = model.config;
  const N = B * T;
  return {
    params: model.params.length - V * d,
    x: N * d,
    n: N * d,
    qkv: 3 * N * d,
    y: N * d,
    o: N * d,
    h: 4 * N * d,
    out: N * V,
    att: NH * T * T,
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
 * allocating: the parameter copy (all but the embedding), the activations of `B` sequences of `T`
 * tokens, the `(N,V)` output and the attention scratch. It must fit in the wasm32 memory (4 GiB)
 * with the kernels' own few MiB.
 *
 * @param model The DiT.
 * @param B Most sequences per call.
 * @param T Longest sequence.
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
 * ```
 */
export function ditRunnerBytes(model: DitModel, B: number, T: number): number {
  return ditArenaBytes(model, Object.values(bufferSizes(model, B, T)), T);
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
 * @param options `batch`, `length`, `backend`, `blas`.
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
  const backend = checkDitPass(model, [["batch", B], ["length", T]], options.backend);
  const { vocabSize: V, dModel: d, nHeads: NH } = cfg;
  const HS = d / NH;
  const sizes = bufferSizes(model, B, T);
  const embedSize = V * d; // vocab_embed.embedding is the first tensor of the layout
  let nn: NNBackend, bufs: Buffers, arenaBytes = 0, copy = false;
  if (backend === "ts") {
    const make = (key: keyof Buffers) => new Float32Array(sizes[key]);
    bufs = allocate(sizes, make, model.params.subarray(embedSize));
    nn = tsBackend;
  } else {
    const bytes = ditRunnerBytes(model, B, T);
    const { wk, k, start } = arenaKernels(
      backend,
      bytes,
      options.blas,
      (room) =>
        `DiT runner too large for the wasm32 memory: expected at most ${room} bytes, got ` +
        `${bytes} for ${B} sequences of ${T} tokens (vocabulary ${V}, dModel ${d})`,
    );
    bufs = allocate(sizes, (key) => k.alloc(sizes[key]), null);
    nn = wasmBackend(k, T, HS, backend);
    arenaBytes = wk.mark() - start;
    copy = true;
  }
  const cos = new Float64Array(T * HS / 2), sin = new Float64Array(T * HS / 2);
  ropeTables(cos, sin, T, HS);
  const mean = new Float32Array(B * T), rstd = new Float32Array(B * T);
  const w = paramViews(model, bufs.params, embedSize);
  const runner: DitRunner = {
    model,
    backend,
    batch: B,
    length: T,
    arenaBytes,
    syncParams() {
      if (copy) bufs.params.set(model.params.subarray(embedSize));
    },
    forward(tokens, opts) {
      const { B: b, T: t, sig } = checkDitInputs(model, tokens, opts?.batch, opts?.sigma);
      if (b > B || t > T) {
        throw new RangeError(
          `Batch too large for this DiT runner: expected B <= ${B} and T <= ${T}, got B ${b}, T ${t}`,
        );
      }
      return run(model, nn, bufs, w, { cos, sin, mean, rstd }, tokens, b, t, sig, opts.raw);
    },
  };
  runner.syncParams();
  return runner;
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

function run(
  model: DitModel,
  nn: NNBackend,
  buf: Buffers,
  w: (name: string) => Float32Array,
  tab: Tables,
  tokens: Int32Array,
  B: number,
  T: number,
  sig: Float64Array,
  raw: boolean | undefined,
): Float32Array {
  const cfg = model.config;
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: Cd, nLayers: L } = cfg;
  const N = B * T, E = TIME_EMBED_DIM;
  const x = buf.x.subarray(0, N * d), n = buf.n.subarray(0, N * d);
  const qkv = buf.qkv.subarray(0, 3 * N * d), y = buf.y.subarray(0, N * d);
  const o = buf.o.subarray(0, N * d), h = buf.h.subarray(0, 4 * N * d);
  const { mean, rstd, cos, sin } = tab;

  // conditioning, B rows: c = silu(mlp.2(silu(mlp.0(e)))), then every block's modulation
  const emb = buf.emb.subarray(0, B * E), h1 = buf.h1.subarray(0, B * Cd);
  const cv = buf.cv.subarray(0, B * Cd);
  timestepEmbedding(emb, sig, B, E);
  nn.linearForward(h1, emb, w("sigma_map.mlp.0.weight"), w("sigma_map.mlp.0.bias"), B, E, Cd);
  siluForward(h1, h1, B * Cd);
  nn.linearForward(cv, h1, w("sigma_map.mlp.2.weight"), w("sigma_map.mlp.2.bias"), B, Cd, Cd);
  siluForward(cv, cv, B * Cd);
  const mods: Float32Array[] = [];
  for (let l = 0; l < L; l++) {
    const mod = buf.mods.subarray(l * B * 6 * d, (l + 1) * B * 6 * d);
    const p = `blocks.${l}.adaLN_modulation`;
    nn.linearForward(mod, cv, w(`${p}.weight`), w(`${p}.bias`), B, Cd, 6 * d);
    mods.push(mod);
  }
  const modF = buf.modF.subarray(0, B * 2 * d);
  const pF = "output_layer.adaLN_modulation";
  nn.linearForward(modF, cv, w(`${pF}.weight`), w(`${pF}.bias`), B, Cd, 2 * d);

  const embed = model.layout["vocab_embed.embedding"];
  embeddingForward(
    x,
    tokens,
    model.params.subarray(embed.offset, embed.offset + V * d),
    null,
    B,
    T,
    d,
  );
  const K6 = { K: 6, B, T, C: d };
  for (let l = 0; l < L; l++) {
    const p = (name: string) => w(`blocks.${l}.${name}`);
    const mod = mods[l];
    // attention half: chunks 0, 1, 2 are shift, scale, gate
    layernormForward(n, mean, rstd, x, p("norm1.weight"), buf.zero, N, d);
    modulateForward(n, n, mod, 0, 1, K6);
    nn.linearForward(qkv, n, p("attn_qkv.weight"), null, N, d, 3 * d);
    ropeForward(qkv, cos, sin, B, T, d, NH);
    for (let b = 0; b < B; b++) {
      nn.attentionForward(
        y.subarray(b * T * d, (b + 1) * T * d),
        buf.att,
        qkv.subarray(b * T * 3 * d, (b + 1) * T * 3 * d),
        null,
        1,
        T,
        d,
        NH,
      );
    }
    nn.linearForward(o, y, p("attn_out.weight"), null, N, d, d);
    gatedResidualForward(x, x, o, mod, 2, K6);
    // MLP half: chunks 3, 4, 5
    layernormForward(n, mean, rstd, x, p("norm2.weight"), buf.zero, N, d);
    modulateForward(n, n, mod, 3, 4, K6);
    nn.linearForward(h, n, p("mlp.0.weight"), p("mlp.0.bias"), N, d, 4 * d);
    geluTanhInPlace(h, N * 4 * d);
    nn.linearForward(o, h, p("mlp.2.weight"), p("mlp.2.bias"), N, 4 * d, d);
    gatedResidualForward(x, x, o, mod, 5, K6);
  }

  layernormForward(n, mean, rstd, x, w("output_layer.norm_final.weight"), buf.zero, N, d);
  modulateForward(n, n, modF, 0, 1, { K: 2, B, T, C: d });
  const out = buf.out.subarray(0, N * V);
  const W = w("output_layer.linear.weight"), bias = w("output_layer.linear.bias");
  const sedd = cfg.output === "sedd" && raw !== true;
  if (sedd && cfg.scaleBySigma) {
    // out_b = n_b W^T + (bias - shift_b): the shift folded into a per-sequence bias
    const logV1 = Math.log(V - 1);
    for (let b = 0; b < B; b++) {
      const shift = esigm1Log(sig[b]) + logV1;
      for (let v = 0; v < V; v++) buf.bias[v] = bias[v] - shift;
      nn.linearForward(
        out.subarray(b * T * V, (b + 1) * T * V),
        n.subarray(b * T * d, (b + 1) * T * d),
        W,
        buf.bias,
        T,
        d,
        V,
      );
    }
  } else {
    nn.linearForward(out, n, W, bias, N, d, V);
  }
  if (sedd) { for (let i = 0; i < N; i++) out[i * V + tokens[i]] = 0; }
  return out;
}

const GELU_K2 = 2 * Math.sqrt(2 / Math.PI);

/**
 * GELU with the tanh approximation IN PLACE, as `0.5 x (1 + tanh(u)) = x / (1 + exp(-2u))` with
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
  for (let i = 0; i < n; i++) {
    const x = a[i];
    a[i] = x / (1 + expFast(-GELU_K2 * (x + 0.044715 * x * x * x)));
  }
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
