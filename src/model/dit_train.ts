/**
 * The float32 training pass of the DiT (`dit.ts`): a forward pass that keeps its activations and a
 * backward pass that adds the parameter gradient into a buffer of the model's layout (the order
 * of `ditParamTable`, which is `ditStateDict`'s), on the compute backends of the transformer kind
 * (the WebAssembly SIMD matmuls, the system's BLAS on the same memory, or the plain TypeScript
 * reference). The float64 `ditForwardCached` / `ditBackward` stay the reference it is checked
 * against.
 *
 * Every buffer is allocated once, by {@linkcode createDitTrainer}, for up to `rows` sequences of
 * up to `length` tokens (`N = rows * length`). Kept per block `l` for the backward pass:
 *
 * ```
 * xs[l]        (N,d)      the block's input (xs[L] is the final layer's)
 * mean1, rstd1 (N)        norm1's statistics          mean2, rstd2 (N)  norm2's
 * qkv          (N,3d)     after the rotary embedding  att (rows,NH,T,T) attention probabilities
 * y            (N,d)      attention output            o   (N,d)         attn_out(y)
 * x2           (N,d)      after the attention residual
 * h            (N,4d)     mlp.0's output (before GELU) f  (N,d)         mlp.2's output
 * ```
 *
 * and the conditioning rows (`B` of them). The LayerNorm outputs, their modulations and the GELU
 * output are recomputed in the backward pass from what is kept (element-wise work, no matmul),
 * which saves `5 N d` floats per block. The logits and their gradient `(N,V)` are buffers of the
 * trainer, so a loss can read the one and write the other in place.
 *
 * On `wasm` and `blas` every operand of a matmul lives in the kernels' memory: the trainer
 * reserves it in one go ({@linkcode ditTrainBytes}; the growth rule of `src/kernels/wasm.ts`),
 * with a copy of every parameter but `vocab_embed.embedding` (gathered from `model.params`),
 * refreshed by each forward pass, and a gradient accumulator that each backward pass zeroes,
 * fills and adds into the caller's buffer once. On `ts` the buffers are ordinary arrays, the
 * parameters are read in place and the gradient is added straight into the caller's buffer.
 *
 * @module
 */

import type { BackendName, NNBackend } from "../nn/backend.ts";
import { tsBackend, wasmBackend } from "../nn/backend.ts";
import type { BlasOptions } from "../kernels/blas.ts";
import { arenaKernels } from "./workspace.ts";
import {
  gatedResidualBackward,
  gatedResidualForward,
  modulateBackward,
  modulateForward,
  timestepEmbedding,
} from "../nn/adaln.ts";
import { ropeBackward, ropeForward, ropeTables } from "../nn/attention.ts";
import { geluTanhBackward, geluTanhForward, siluBackward, siluForward } from "../nn/activations.ts";
import { embeddingBackward, embeddingForward } from "../nn/embedding.ts";
import { layernormBackward, layernormForward } from "../nn/layernorm.ts";
import { TIME_EMBED_DIM } from "./layout.ts";
import { checkDitInputs, type DitModel, esigm1Log } from "./dit.ts";
import { checkDitPass, ditArenaBytes } from "./dit_fast.ts";

/** Options of {@linkcode createDitTrainer}. */
export interface DitTrainerOptions {
  /** Most sequences per pass. Default 1. */
  rows?: number;
  /** Longest sequence. Default the model's context. */
  length?: number;
  /** `"wasm"`, `"blas"` or `"ts"`. Default: `"wasm"` where WebAssembly SIMD validates, else `"ts"`. */
  backend?: BackendName;
  /** Where the BLAS library is, for `"blas"`. */
  blas?: BlasOptions;
}

/** Options of {@linkcode DitTrainer.forward}. */
export interface DitTrainRunOptions {
  /** Sequences B in `tokens` (at most the trainer's `rows`). */
  batch: number;
  /** Noise level per sequence, `(B)` (> 0 with SEDD's `scaleBySigma`). */
  sigma: Float32Array | Float64Array;
  /**
   * Return the output layer's logits whatever `config.output` says (what the trainer's losses
   * read). Otherwise SEDD's log-scores for `output: "sedd"`, as `ditForward` returns them.
   */
  raw?: boolean;
}

/** A DiT forward pass with a cache and its backward pass: see {@linkcode createDitTrainer}. */
export interface DitTrainer {
  /** The model it trains. */
  readonly model: DitModel;
  /** The backend of its matmuls and attention. */
  readonly backend: BackendName;
  /** Most sequences per pass. */
  readonly rows: number;
  /** Longest sequence. */
  readonly length: number;
  /** Bytes of its buffers in the kernels' memory (0 on `ts`). */
  readonly arenaBytes: number;
  /**
   * Runs the DiT on the current `model.params` (copied in on `wasm` and `blas`) and keeps its
   * activations. Returns the output `(B,T,V)`, a view into the trainer that the next call
   * overwrites.
   */
  forward(tokens: Int32Array, options: DitTrainRunOptions): Float32Array;
  /** The trainer's zeroed buffer for the gradient of the first `n` outputs of the last pass. */
  dlogits(n: number): Float32Array;
  /**
   * Backpropagates `dout` (the gradient w.r.t. the last forward pass's output, `(B,T,V)`; it may
   * be the view {@linkcode DitTrainer.dlogits} gave) and ADDS the parameter gradient into `grads`
   * (`model.params.length` values, the parameter layout). SEDD's zeroed current-token entries
   * pass no gradient.
   */
  backward(dout: Float32Array, grads: Float32Array | Float64Array): void;
}

/** The float buffers of a trainer, by what they hold, with their sizes. */
function bufferSizes(model: DitModel, B: number, T: number): Record<string, number> {
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: c, nLayers: L } = model.config;
  const N = B * T, E = TIME_EMBED_DIM;
  return {
    params: model.params.length - V * d, // every parameter after the embedding
    grads: model.params.length,
    // kept: conditioning rows, then per block
    emb: B * E,
    h1: B * c,
    a1: B * c,
    s: B * c,
    c: B * c,
    mods: L * B * 6 * d,
    modF: B * 2 * d,
    xs: (L + 1) * N * d,
    stats: (4 * L + 2) * N, // mean1, rstd1, mean2, rstd2 per block; meanF, rstdF
    qkv: L * 3 * N * d,
    att: L * B * NH * T * T,
    y: L * N * d,
    o: L * N * d,
    x2: L * N * d,
    h: L * 4 * N * d,
    f: L * N * d,
    // scratch of both passes
    n: N * d,
    m: N * d,
    g: 4 * N * d,
    out: N * V,
    dout: N * V,
    bias: V,
    dx: N * d,
    dn: N * d,
    dm: N * d,
    dbr: N * d, // a branch's output gradient
    dy: N * d,
    dqkv: 3 * N * d,
    dg: 4 * N * d,
    dmod: B * 6 * d,
    dmodF: B * 2 * d,
    dc: B * c,
    ds: B * c,
    da1: B * c,
    dh1: B * c,
    zero: d, // the LayerNorms' absent bias
    dzero: d, // where its gradient lands, discarded
    scratchT: T,
  };
}

/**
 * The bytes a trainer's buffers take in the kernels' memory on `wasm` and `blas`, computed
 * without allocating: the parameter copy (all but the embedding), the gradient accumulator, the
 * kept activations of `B` sequences of `T` tokens (the attention probabilities,
 * `4 B NH T^2` bytes per block, dominate at long contexts), the `(N,V)` logits and their
 * gradient, and the scratch. It must fit in the wasm32 memory (4 GiB) with the kernels' own few
 * MiB.
 *
 * @param model The DiT.
 * @param B Most sequences per pass.
 * @param T Longest sequence.
 * @returns Bytes.
 *
 * @example More than the parameter copy and the gradient
 * ```ts
 * import { ditTrainBytes } from "./dit_train.ts";
 * import { createDit } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const dit = createDit({ vocabSize: 9, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * assert.ok(ditTrainBytes(dit, 2, 8) > 4 * (2 * dit.params.length - 9 * 8));
 * ```
 */
export function ditTrainBytes(model: DitModel, B: number, T: number): number {
  return ditArenaBytes(model, Object.values(bufferSizes(model, B, T)), T);
}

/**
 * Makes a float32 training pass of `model` for up to `rows` sequences of up to `length` tokens,
 * allocating every buffer now; each forward and backward call then allocates nothing of the
 * batch's size.
 *
 * @param model The DiT.
 * @param options `rows`, `length`, `backend`, `blas`.
 * @returns The trainer.
 * @throws RangeError when the buffers do not fit in the wasm32 memory (naming the rows and
 *   context); Error when `"blas"` cannot load.
 *
 * @example Agrees with the float64 backward pass
 * ```ts
 * import { createDitTrainer } from "./dit_train.ts";
 * import { createDit, ditBackward, ditForwardCached } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const dit = createDit({ vocabSize: 11, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * const tokens = new Int32Array([1, 2, 10, 3]);
 * const sigma = new Float32Array([0.7]);
 * const trainer = createDitTrainer(dit, { rows: 1, length: 4 });
 * const out = trainer.forward(tokens, { batch: 1, sigma, raw: true });
 * trainer.backward(new Float32Array(out.length).fill(1), new Float32Array(dit.params.length));
 * const ref = ditForwardCached(dit, tokens, { batch: 1, sigma, raw: true });
 * assert.ok(out.every((v, i) => Math.abs(v - ref.out[i]) < 1e-4));
 * ```
 */
export function createDitTrainer(model: DitModel, options: DitTrainerOptions = {}): DitTrainer {
  const cfg = model.config;
  const B = options.rows ?? 1, T = options.length ?? cfg.context;
  const backend = checkDitPass(model, [["rows", B], ["length", T]], options.backend);
  const { vocabSize: V, dModel: d, nHeads: NH } = cfg;
  const HS = d / NH;
  const sizes = bufferSizes(model, B, T);
  const embedSize = V * d; // vocab_embed.embedding is the first tensor of the layout
  const buf: Record<string, Float32Array> = {};
  let nn: NNBackend, arenaBytes = 0;
  const arena = backend !== "ts";
  if (!arena) {
    for (const key of Object.keys(sizes)) {
      if (key !== "params" && key !== "grads") buf[key] = new Float32Array(sizes[key]);
    }
    buf.params = model.params.subarray(embedSize);
    nn = tsBackend;
  } else {
    const bytes = ditTrainBytes(model, B, T);
    const { wk, k, start } = arenaKernels(
      backend,
      bytes,
      options.blas,
      (room) =>
        `DiT training pass too large for the wasm32 memory: expected at most ${room} bytes, got ` +
        `${bytes} for ${B} rows per pass at context ${T} (vocabulary ${V}, dModel ${d}); lower ` +
        `the rows per pass (microBatch) or the context`,
    );
    for (const key of Object.keys(sizes)) buf[key] = k.alloc(sizes[key]);
    nn = wasmBackend(k, T, HS, backend);
    arenaBytes = wk.mark() - start;
  }
  const cos = new Float64Array(T * HS / 2), sin = new Float64Array(T * HS / 2);
  ropeTables(cos, sin, T, HS);
  const pass = new TrainPass(model, nn, buf, cos, sin);
  let last: { tokens: Int32Array; B: number; T: number; sedd: boolean } | undefined;
  return {
    model,
    backend,
    rows: B,
    length: T,
    arenaBytes,
    forward(tokens, opts) {
      const raw = opts?.raw === true;
      const { B: b, T: t, sig } = checkDitInputs(model, tokens, opts?.batch, opts?.sigma);
      if (b > B || t > T) {
        throw new RangeError(
          `Batch too large for this DiT trainer: expected B <= ${B} and T <= ${T}, got B ${b}, ` +
            `T ${t}`,
        );
      }
      if (arena) buf.params.set(model.params.subarray(embedSize));
      const sedd = cfg.output === "sedd" && !raw;
      pass.forward(tokens, b, t, sig, sedd);
      last = { tokens: tokens.slice(0, b * t), B: b, T: t, sedd };
      return buf.out.subarray(0, b * t * V);
    },
    dlogits: (n) => buf.dout.subarray(0, n).fill(0),
    backward(dout, grads) {
      if (last === undefined) {
        throw new Error("DiT trainer backward: expected a forward pass first");
      }
      const n = last.B * last.T * V;
      if (dout.length !== n) {
        throw new RangeError(`Invalid dout length: expected ${n} (B*T*V), got ${dout.length}`);
      }
      if (grads.length !== model.params.length) {
        throw new RangeError(
          `Invalid grads: expected ${model.params.length} values, got ${grads.length}`,
        );
      }
      const dl = buf.dout.subarray(0, n);
      if (dout !== dl) dl.set(dout);
      if (last.sedd) { for (let i = 0; i < last.B * last.T; i++) dl[i * V + last.tokens[i]] = 0; }
      // the accumulator: the arena's (zeroed, added out once) or the caller's float32 buffer
      const direct = !arena && grads instanceof Float32Array;
      const acc = direct ? grads : arena ? buf.grads : new Float32Array(grads.length);
      if (arena) acc.fill(0);
      pass.backward(last.tokens, last.B, last.T, acc);
      if (!direct) { for (let i = 0; i < grads.length; i++) grads[i] += acc[i]; }
    },
  };
}

/** The two passes over a trainer's buffers. */
class TrainPass {
  private readonly cfg: DitModel["config"];
  private readonly embedSize: number;

  constructor(
    private readonly model: DitModel,
    private readonly nn: NNBackend,
    private readonly buf: Record<string, Float32Array>,
    private readonly cos: Float64Array,
    private readonly sin: Float64Array,
  ) {
    this.cfg = model.config;
    this.embedSize = model.config.vocabSize * model.config.dModel;
  }

  /** A parameter by name: the embedding from `model.params`, the rest from the copy. */
  private w(name: string): Float32Array {
    const { offset, shape } = this.model.layout[name];
    const n = shape.reduce((a, b) => a * b, 1);
    if (offset < this.embedSize) return this.model.params.subarray(offset, offset + n);
    const o = offset - this.embedSize;
    return this.buf.params.subarray(o, o + n);
  }

  /** A tensor's view on a gradient accumulator of the parameter layout. */
  private g(acc: Float32Array, name: string): Float32Array {
    const { offset, shape } = this.model.layout[name];
    return acc.subarray(offset, offset + shape.reduce((a, b) => a * b, 1));
  }

  /** Block `l`'s (or, at `l = L`, the final layer's) slice of a per-block buffer. */
  private at(key: string, l: number, size: number): Float32Array {
    return this.buf[key].subarray(l * size, (l + 1) * size);
  }

  /** The kept per-block views for `B` sequences of `T` tokens. */
  private block(l: number, B: number, T: number) {
    const { dModel: d, nHeads: NH } = this.cfg;
    const N = B * T;
    // per-block slices are laid out for the trainer's full size, used from their start
    const full = this.buf.xs.length / (this.cfg.nLayers + 1) / d; // rows * length
    const st = (j: number) => this.buf.stats.subarray(j * full, j * full + N);
    const attFull = this.buf.att.length / this.cfg.nLayers;
    return {
      x: this.at("xs", l, full * d).subarray(0, N * d),
      x2: this.at("x2", l, full * d).subarray(0, N * d),
      mean1: st(4 * l),
      rstd1: st(4 * l + 1),
      mean2: st(4 * l + 2),
      rstd2: st(4 * l + 3),
      qkv: this.at("qkv", l, 3 * full * d).subarray(0, 3 * N * d),
      att: this.at("att", l, attFull).subarray(0, B * NH * T * T),
      y: this.at("y", l, full * d).subarray(0, N * d),
      o: this.at("o", l, full * d).subarray(0, N * d),
      h: this.at("h", l, 4 * full * d).subarray(0, 4 * N * d),
      f: this.at("f", l, full * d).subarray(0, N * d),
      mod: this.at("mods", l, this.buf.mods.length / this.cfg.nLayers).subarray(0, B * 6 * d),
    };
  }

  /** The final layer's kept views. */
  private final(B: number, T: number) {
    const { dModel: d, nLayers: L } = this.cfg;
    const N = B * T;
    const full = this.buf.xs.length / (L + 1) / d;
    return {
      x: this.at("xs", L, full * d).subarray(0, N * d),
      mean: this.buf.stats.subarray(4 * L * full, 4 * L * full + N),
      rstd: this.buf.stats.subarray((4 * L + 1) * full, (4 * L + 1) * full + N),
      mod: this.buf.modF.subarray(0, B * 2 * d),
    };
  }

  /** A scratch buffer's first `n` floats, zeroed when `zero`. */
  private s(key: string, n: number, zero = false): Float32Array {
    const v = this.buf[key].subarray(0, n);
    return zero ? v.fill(0) : v;
  }

  forward(tokens: Int32Array, B: number, T: number, sig: Float64Array, sedd: boolean): void {
    const { nn, cfg } = this;
    const { vocabSize: V, dModel: d, nHeads: NH, condDim: Cd, nLayers: L } = cfg;
    const N = B * T, E = TIME_EMBED_DIM;
    const w = (name: string) => this.w(name);

    // conditioning, B rows: c = silu(s), s = mlp.2(a1), a1 = silu(h1), h1 = mlp.0(emb)
    const emb = this.s("emb", B * E), h1 = this.s("h1", B * Cd), a1 = this.s("a1", B * Cd);
    const s = this.s("s", B * Cd), c = this.s("c", B * Cd);
    timestepEmbedding(emb, sig, B, E);
    nn.linearForward(h1, emb, w("sigma_map.mlp.0.weight"), w("sigma_map.mlp.0.bias"), B, E, Cd);
    siluForward(a1, h1, B * Cd);
    nn.linearForward(s, a1, w("sigma_map.mlp.2.weight"), w("sigma_map.mlp.2.bias"), B, Cd, Cd);
    siluForward(c, s, B * Cd);

    const first = this.block(0, B, T);
    embeddingForward(first.x, tokens, w("vocab_embed.embedding"), null, B, T, d);
    const n = this.s("n", N * d), g = this.s("g", 4 * N * d), zero = this.buf.zero;
    const K6 = { K: 6, B, T, C: d };
    for (let l = 0; l < L; l++) {
      const p = (name: string) => w(`blocks.${l}.${name}`);
      const k = this.block(l, B, T);
      const next = l + 1 < L ? this.block(l + 1, B, T).x : this.final(B, T).x;
      nn.linearForward(
        k.mod,
        c,
        p("adaLN_modulation.weight"),
        p("adaLN_modulation.bias"),
        B,
        Cd,
        6 * d,
      );
      // attention half: chunks 0, 1, 2 are shift, scale, gate
      layernormForward(n, k.mean1, k.rstd1, k.x, p("norm1.weight"), zero, N, d);
      modulateForward(n, n, k.mod, 0, 1, K6);
      nn.linearForward(k.qkv, n, p("attn_qkv.weight"), null, N, d, 3 * d);
      ropeForward(k.qkv, this.cos, this.sin, B, T, d, NH);
      nn.attentionForward(k.y, k.att, k.qkv, null, B, T, d, NH);
      nn.linearForward(k.o, k.y, p("attn_out.weight"), null, N, d, d);
      gatedResidualForward(k.x2, k.x, k.o, k.mod, 2, K6);
      // MLP half: chunks 3, 4, 5
      layernormForward(n, k.mean2, k.rstd2, k.x2, p("norm2.weight"), zero, N, d);
      modulateForward(n, n, k.mod, 3, 4, K6);
      nn.linearForward(k.h, n, p("mlp.0.weight"), p("mlp.0.bias"), N, d, 4 * d);
      geluTanhForward(g, k.h, N * 4 * d);
      nn.linearForward(k.f, g, p("mlp.2.weight"), p("mlp.2.bias"), N, 4 * d, d);
      gatedResidualForward(next, k.x2, k.f, k.mod, 5, K6);
    }

    const fin = this.final(B, T);
    const pF = "output_layer.adaLN_modulation";
    nn.linearForward(fin.mod, c, w(`${pF}.weight`), w(`${pF}.bias`), B, Cd, 2 * d);
    layernormForward(n, fin.mean, fin.rstd, fin.x, w("output_layer.norm_final.weight"), zero, N, d);
    modulateForward(n, n, fin.mod, 0, 1, { K: 2, B, T, C: d });
    const out = this.s("out", N * V);
    const W = w("output_layer.linear.weight"), bias = w("output_layer.linear.bias");
    if (sedd && cfg.scaleBySigma) {
      // out_b = n_b W^T + (bias - shift_b): the shift folded into a per-sequence bias
      const logV1 = Math.log(V - 1), bb = this.buf.bias;
      for (let b = 0; b < B; b++) {
        const shift = esigm1Log(sig[b]) + logV1;
        for (let v = 0; v < V; v++) bb[v] = bias[v] - shift;
        nn.linearForward(
          out.subarray(b * T * V, (b + 1) * T * V),
          n.subarray(b * T * d, (b + 1) * T * d),
          W,
          bb,
          T,
          d,
          V,
        );
      }
    } else {
      nn.linearForward(out, n, W, bias, N, d, V);
    }
    if (sedd) { for (let i = 0; i < N; i++) out[i * V + tokens[i]] = 0; }
  }

  /** Backpropagates the trainer's `dout` buffer, adding into `acc` (the parameter layout). */
  backward(tokens: Int32Array, B: number, T: number, acc: Float32Array): void {
    const { nn, cfg } = this;
    const { vocabSize: V, dModel: d, nHeads: NH, condDim: Cd, nLayers: L } = cfg;
    const N = B * T, E = TIME_EMBED_DIM;
    const w = (name: string) => this.w(name), gr = (name: string) => this.g(acc, name);
    const zero = this.buf.zero, dzero = this.buf.dzero;
    const n = this.s("n", N * d), m = this.s("m", N * d), c = this.s("c", B * Cd);
    const dx = this.s("dx", N * d, true), dc = this.s("dc", B * Cd, true);
    const dout = this.s("dout", N * V);

    // output layer: logits = m W^T + b, m = modulate(ln(x) * wF), (shift, scale) = adaLN(c)
    const fin = this.final(B, T);
    const wF = w("output_layer.norm_final.weight");
    layernormForward(n, fin.mean, fin.rstd, fin.x, wF, zero, N, d);
    modulateForward(m, n, fin.mod, 0, 1, { K: 2, B, T, C: d });
    const dm = this.s("dm", N * d, true);
    nn.linearBackward(
      dm,
      gr("output_layer.linear.weight"),
      gr("output_layer.linear.bias"),
      dout,
      m,
      w("output_layer.linear.weight"),
      N,
      d,
      V,
    );
    const dn = this.s("dn", N * d, true), dmodF = this.s("dmodF", B * 2 * d, true);
    modulateBackward(dn, dmodF, dm, n, fin.mod, 0, 1, { K: 2, B, T, C: d });
    const pF = "output_layer.adaLN_modulation";
    nn.linearBackward(
      dc,
      gr(`${pF}.weight`),
      gr(`${pF}.bias`),
      dmodF,
      c,
      w(`${pF}.weight`),
      B,
      Cd,
      2 * d,
    );
    layernormBackward(
      dx,
      gr("output_layer.norm_final.weight"),
      dzero,
      dn,
      fin.x,
      wF,
      fin.mean,
      fin.rstd,
      N,
      d,
    );

    const g = this.s("g", 4 * N * d), K6 = { K: 6, B, T, C: d };
    for (let l = L - 1; l >= 0; l--) {
      // dx holds the gradient of the block's output
      const p = (name: string) => w(`blocks.${l}.${name}`);
      const q = (name: string) => gr(`blocks.${l}.${name}`);
      const k = this.block(l, B, T);
      const dmod = this.s("dmod", B * 6 * d, true);
      // MLP half, from out = x2 + gate2 * f: dx goes on as the gradient of x2
      const df = this.s("dbr", N * d, true);
      gatedResidualBackward(null, df, dmod, dx, k.f, k.mod, 5, K6);
      geluTanhForward(g, k.h, N * 4 * d);
      const dg = this.s("dg", 4 * N * d, true);
      nn.linearBackward(
        dg,
        q("mlp.2.weight"),
        q("mlp.2.bias"),
        df,
        g,
        p("mlp.2.weight"),
        N,
        4 * d,
        d,
      );
      const dh = g.fill(0); // g is not needed any more
      geluTanhBackward(dh, dg, k.h, N * 4 * d);
      layernormForward(n, k.mean2, k.rstd2, k.x2, p("norm2.weight"), zero, N, d);
      modulateForward(m, n, k.mod, 3, 4, K6);
      dm.fill(0);
      nn.linearBackward(
        dm,
        q("mlp.0.weight"),
        q("mlp.0.bias"),
        dh,
        m,
        p("mlp.0.weight"),
        N,
        d,
        4 * d,
      );
      dn.fill(0);
      modulateBackward(dn, dmod, dm, n, k.mod, 3, 4, K6);
      layernormBackward(
        dx,
        q("norm2.weight"),
        dzero,
        dn,
        k.x2,
        p("norm2.weight"),
        k.mean2,
        k.rstd2,
        N,
        d,
      );
      // attention half, from x2 = x + gate1 * o: dx goes on as the gradient of x
      const dO = df.fill(0);
      gatedResidualBackward(null, dO, dmod, dx, k.o, k.mod, 2, K6);
      const dy = this.s("dy", N * d, true);
      nn.linearBackward(dy, q("attn_out.weight"), null, dO, k.y, p("attn_out.weight"), N, d, d);
      const dqkv = this.s("dqkv", 3 * N * d, true);
      nn.attentionBackward(dqkv, dy, k.qkv, k.att, null, this.buf.scratchT, B, T, d, NH);
      ropeBackward(dqkv, this.cos, this.sin, B, T, d, NH);
      layernormForward(n, k.mean1, k.rstd1, k.x, p("norm1.weight"), zero, N, d);
      modulateForward(m, n, k.mod, 0, 1, K6);
      dm.fill(0);
      nn.linearBackward(dm, q("attn_qkv.weight"), null, dqkv, m, p("attn_qkv.weight"), N, d, 3 * d);
      dn.fill(0);
      modulateBackward(dn, dmod, dm, n, k.mod, 0, 1, K6);
      layernormBackward(
        dx,
        q("norm1.weight"),
        dzero,
        dn,
        k.x,
        p("norm1.weight"),
        k.mean1,
        k.rstd1,
        N,
        d,
      );
      const pa = "adaLN_modulation";
      nn.linearBackward(
        dc,
        q(`${pa}.weight`),
        q(`${pa}.bias`),
        dmod,
        c,
        p(`${pa}.weight`),
        B,
        Cd,
        6 * d,
      );
    }

    embeddingBackward(gr("vocab_embed.embedding"), null, dx, tokens, B, T, d);
    const ds = this.s("ds", B * Cd, true), da1 = this.s("da1", B * Cd, true);
    const dh1 = this.s("dh1", B * Cd, true);
    siluBackward(ds, dc, this.s("s", B * Cd), B * Cd);
    nn.linearBackward(
      da1,
      gr("sigma_map.mlp.2.weight"),
      gr("sigma_map.mlp.2.bias"),
      ds,
      this.s("a1", B * Cd),
      w("sigma_map.mlp.2.weight"),
      B,
      Cd,
      Cd,
    );
    siluBackward(dh1, da1, this.s("h1", B * Cd), B * Cd);
    nn.linearBackward(
      null,
      gr("sigma_map.mlp.0.weight"),
      gr("sigma_map.mlp.0.bias"),
      dh1,
      this.s("emb", B * E),
      w("sigma_map.mlp.0.weight"),
      B,
      E,
      Cd,
    );
  }
}
