/**
 * The DiT denoiser of SEDD (Lou et al. 2024) and MDLM (Sahoo et al. 2024) as a second model kind,
 * beside the `nn.TransformerEncoder` tree of `layout.ts`: parameters named and shaped exactly as
 * their PyTorch state dicts, a forward pass that returns what their `forward(indices, sigma)`
 * returns, and a backward pass for fine-tuning.
 *
 * State dict, in registration order (d = `dModel`, c = `condDim`, V = `vocabSize`):
 *
 * ```
 * vocab_embed.embedding                 [V,d]
 * sigma_map.mlp.0.weight [c,256]  .bias [c]      Linear(256, c)
 * sigma_map.mlp.2.weight [c,c]    .bias [c]      Linear(c, c)   (mlp.1 is SiLU)
 * rotary_emb.inv_freq                   [d/NH/2]  a buffer: 10000^(-2i/HS); not trained
 * blocks.{i}.norm1.weight               [d]       LayerNorm without bias, eps 1e-5
 * blocks.{i}.attn_qkv.weight            [3d,d]    no bias
 * blocks.{i}.attn_out.weight            [d,d]     no bias
 * blocks.{i}.norm2.weight               [d]
 * blocks.{i}.mlp.0.weight [4d,d]  .bias [4d]
 * blocks.{i}.mlp.2.weight [d,4d]  .bias [d]      (mlp.1 is GELU, tanh approximation)
 * blocks.{i}.adaLN_modulation.weight [6d,c] .bias [6d]
 * output_layer.norm_final.weight        [d]
 * output_layer.linear.weight [V,d] .bias [V]
 * output_layer.adaLN_modulation.weight [2d,c] .bias [2d]
 * ```
 *
 * Forward pass (per sequence b with noise level sigma_b; `ln` normalises without weight or
 * bias):
 *
 * ```
 * e = [cos(sigma f), sin(sigma f)]            f_i = exp(-ln(10000) i / 128), i < 128
 * c = silu(mlp.2(silu(mlp.0(e))))
 * x = vocab_embed.embedding[tokens]
 * per block:
 *   shift1, scale1, gate1, shift2, scale2, gate2 = adaLN_modulation(c).chunk(6)
 *   q, k, v = attn_qkv(ln(x) * norm1.weight * (1 + scale1) + shift1)   heads of HS = d / NH
 *   q, k rotated: rotate-half over the whole head, angle(p, i) = p * 10000^(-i/(HS/2))
 *   x = x + gate1 * attn_out(softmax(q k^T / sqrt(HS)) v)                bidirectional
 *   x = x + gate2 * mlp.2(gelu_tanh(mlp.0(ln(x) * norm2.weight * (1 + scale2) + shift2)))
 * shift, scale = output_layer.adaLN_modulation(c).chunk(2)
 * logits = output_layer.linear(ln(x) * norm_final.weight * (1 + scale) + shift)
 * ```
 *
 * With `output: "sedd"` the result is SEDD's log-score: with `scaleBySigma`, `logits -
 * log(expm1(sigma)) - log(V - 1)` (`exp(sigma) - 1` in place of `expm1` for sigma >= 0.5, as
 * SEDD writes it), then the entry of each position's current token set to 0 (always, as SEDD's
 * `torch.scatter`). With `output: "logits"` it is the output layer's logits unchanged: what MDLM's
 * `DIT.forward` returns and its SUBS parameterisation consumes (that step, outside the network,
 * sends the mask logit to -inf, takes a log-softmax, and pins unmasked positions to their token).
 *
 * Everything is computed in float64; parameters may be a `Float32Array` (a model) or a
 * `Float64Array` (for finite-difference checks).
 *
 * @module
 */

import { timestepEmbedding } from "../nn/adaln.ts";
import { ropeTables } from "../nn/attention.ts";
import { LAYERNORM_EPS } from "../nn/layernorm.ts";
import { Rng } from "../rng.ts";
import { TIME_EMBED_DIM } from "./layout.ts";
import { validateTokens } from "./model.ts";

/** The shape of a DiT. */
export interface DitConfig {
  /** Marks the DiT model kind. */
  kind: "dit";
  /** V: vocabulary size (SEDD's absorbing graph counts the mask token in it). */
  vocabSize: number;
  /** T: the longest sequence (rotary positions have no table; this only bounds inputs). */
  context: number;
  /** d: channels (`hidden_size`). */
  dModel: number;
  /** NH: attention heads; `dModel / nHeads` must be even (rotary). */
  nHeads: number;
  /** Blocks (`n_blocks`). */
  nLayers: number;
  /** Width of the conditioning vector c (`cond_dim`). */
  condDim: number;
  /** SEDD's `scale_by_sigma` (only used with `output: "sedd"`). */
  scaleBySigma: boolean;
  /** `sedd`: log-scores as SEDD's forward returns them; `logits`: MDLM's raw logits. */
  output: "sedd" | "logits";
}

/** A DiT: config, flat parameter buffer, and where each tensor lives in it. */
export interface DitModel {
  /** The config. */
  config: DitConfig;
  /** All trainable parameters, packed in {@linkcode ditParamTable} order. */
  params: Float32Array;
  /** Tensor name to offset and PyTorch shape. */
  layout: Record<string, { offset: number; shape: number[] }>;
}

/** The per-block tensor suffixes with their shapes, in state-dict order. */
function blockTable(d: number, c: number): [string, number[]][] {
  return [
    ["norm1.weight", [d]],
    ["attn_qkv.weight", [3 * d, d]],
    ["attn_out.weight", [d, d]],
    ["norm2.weight", [d]],
    ["mlp.0.weight", [4 * d, d]],
    ["mlp.0.bias", [4 * d]],
    ["mlp.2.weight", [d, 4 * d]],
    ["mlp.2.bias", [d]],
    ["adaLN_modulation.weight", [6 * d, c]],
    ["adaLN_modulation.bias", [6 * d]],
  ];
}

/**
 * Lists every trainable tensor of a DiT in state-dict order (the `rotary_emb.inv_freq` buffer is
 * not trained and not listed; {@linkcode ditFromTensors} checks it when present).
 *
 * @param config A DiT config.
 * @returns Names and shapes.
 *
 * @example
 * ```ts
 * import { ditParamTable } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const t = ditParamTable({
 *   kind: "dit", vocabSize: 37, context: 8, dModel: 16, nHeads: 2, nLayers: 1, condDim: 8,
 *   scaleBySigma: true, output: "sedd",
 * });
 * assert.equal(t[0].name, "vocab_embed.embedding");
 * assert.deepEqual(t.at(-1), { name: "output_layer.adaLN_modulation.bias", shape: [32] });
 * ```
 */
export function ditParamTable(config: DitConfig): { name: string; shape: number[] }[] {
  const { vocabSize: V, dModel: d, condDim: c, nLayers: L } = config;
  const out = [
    { name: "vocab_embed.embedding", shape: [V, d] },
    { name: "sigma_map.mlp.0.weight", shape: [c, TIME_EMBED_DIM] },
    { name: "sigma_map.mlp.0.bias", shape: [c] },
    { name: "sigma_map.mlp.2.weight", shape: [c, c] },
    { name: "sigma_map.mlp.2.bias", shape: [c] },
  ];
  for (let i = 0; i < L; i++) {
    for (const [s, shape] of blockTable(d, c)) out.push({ name: `blocks.${i}.${s}`, shape });
  }
  out.push({ name: "output_layer.norm_final.weight", shape: [d] });
  out.push({ name: "output_layer.linear.weight", shape: [V, d] });
  out.push({ name: "output_layer.linear.bias", shape: [V] });
  out.push({ name: "output_layer.adaLN_modulation.weight", shape: [2 * d, c] });
  out.push({ name: "output_layer.adaLN_modulation.bias", shape: [2 * d] });
  return out;
}

/**
 * Throws a `RangeError` or `TypeError` naming the first bad field of a DiT config.
 *
 * @param c The config to check.
 */
export function validateDitConfig(c: DitConfig): void {
  if (c.kind !== "dit") {
    throw new TypeError(`Invalid config.kind: expected "dit", got ${c.kind}`);
  }
  for (const k of ["vocabSize", "context", "dModel", "nHeads", "nLayers", "condDim"] as const) {
    const v = c[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
      throw new RangeError(`Invalid config.${k}: expected a positive integer, got ${v}`);
    }
  }
  if (c.vocabSize < 2) {
    throw new RangeError(`Invalid config.vocabSize: expected at least 2, got ${c.vocabSize}`);
  }
  if (c.dModel % c.nHeads !== 0 || (c.dModel / c.nHeads) % 2 !== 0) {
    throw new RangeError(
      `Invalid config: expected dModel / nHeads an even integer (rotary), got dModel ${c.dModel}, ` +
        `nHeads ${c.nHeads}`,
    );
  }
  if (typeof c.scaleBySigma !== "boolean") {
    throw new TypeError(`Invalid config.scaleBySigma: expected a boolean, got ${c.scaleBySigma}`);
  }
  if (c.output !== "sedd" && c.output !== "logits") {
    throw new TypeError(`Invalid config.output: expected "sedd" or "logits", got ${c.output}`);
  }
}

function buildDitLayout(config: DitConfig): { layout: DitModel["layout"]; size: number } {
  const layout: DitModel["layout"] = {};
  let offset = 0;
  for (const { name, shape } of ditParamTable(config)) {
    layout[name] = { offset, shape };
    offset += shape.reduce((a, b) => a * b, 1);
  }
  return { layout, size: offset };
}

/** A DiT config as {@linkcode createDit} takes it: `scaleBySigma` and `output` may be left out. */
export type DitConfigInput =
  & Omit<DitConfig, "kind" | "scaleBySigma" | "output">
  & Partial<DitConfig>;

/** Options of {@linkcode createDit}. */
export interface CreateDitOptions {
  /** A parameter buffer to use (its length must match); otherwise a fresh initialised one. */
  params?: Float32Array;
  /** Seed of the initialisation. */
  seed?: number;
}

/**
 * Makes a DiT. Fresh parameters follow SEDD's initialisation in kind: LayerNorm weights 1,
 * adaLN modulations and the output linear zero (so a fresh model's output is all zeros before
 * scaling), the rest uniform in `±1/sqrt(fan_in)` (PyTorch's `nn.Linear` bound) from the seeded
 * generator.
 *
 * @param config The config (`kind: "dit"`; `scaleBySigma` defaults to true, `output` to `sedd`).
 * @param options `params` to wrap, or `seed` for fresh ones.
 * @returns The model.
 *
 * @example
 * ```ts
 * import { createDit, ditForward } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createDit({ vocabSize: 11, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * const out = ditForward(model, new Int32Array([1, 2, 3]), { batch: 1, sigma: new Float32Array([1]) });
 * assert.equal(out.length, 3 * 11);
 * ```
 */
export function createDit(
  config: DitConfigInput,
  options: CreateDitOptions = {},
): DitModel {
  const full: DitConfig = { scaleBySigma: true, output: "sedd", ...config, kind: "dit" };
  validateDitConfig(full);
  const { layout, size } = buildDitLayout(full);
  if (options.params !== undefined) {
    if (!(options.params instanceof Float32Array) || options.params.length !== size) {
      throw new RangeError(
        `Invalid params: expected a Float32Array of ${size} values for this config, got ${
          options.params instanceof Float32Array
            ? `${options.params.length} values`
            : typeof options.params
        }`,
      );
    }
    return { config: full, params: options.params, layout };
  }
  const params = new Float32Array(size);
  const rng = new Rng(options.seed ?? 0, 0, 0, 0);
  for (const [name, { offset, shape }] of Object.entries(layout)) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (
      name.endsWith("norm1.weight") || name.endsWith("norm2.weight") ||
      name.endsWith("norm_final.weight")
    ) {
      params.fill(1, offset, offset + n);
    } else if (name.includes("adaLN_modulation") || name.startsWith("output_layer.linear")) {
      // zero, as SEDD initialises them
    } else {
      const fanIn = shape.length === 2
        ? shape[1]
        : (layout[name.replace(/bias$/, "weight")]?.shape[1] ?? 1);
      const bound = name === "vocab_embed.embedding"
        ? 1 / Math.sqrt(full.dModel)
        : 1 / Math.sqrt(fanIn);
      for (let i = 0; i < n; i++) params[offset + i] = (2 * rng.uniform() - 1) * bound;
    }
  }
  return { config: full, params, layout };
}

type Arr = Float32Array | Float64Array;

// out[n,o] = sum_i inp[n,i] W[o,i] (+ bias[o])
function linF(
  out: Float64Array,
  inp: Float64Array,
  P: Arr,
  w: number,
  b: number,
  N: number,
  I: number,
  O: number,
): void {
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      let s = b >= 0 ? P[b + o] : 0;
      const wo = w + o * I, io = n * I;
      for (let i = 0; i < I; i++) s += inp[io + i] * P[wo + i];
      out[n * O + o] = s;
    }
  }
}

// dinp += dout W (when dinp), dW += dout^T inp, dbias += sum_n dout
function linB(
  dinp: Float64Array | null,
  G: Float64Array,
  dout: Float64Array,
  inp: Float64Array,
  P: Arr,
  w: number,
  b: number,
  N: number,
  I: number,
  O: number,
): void {
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      const g = dout[n * O + o];
      if (g === 0) continue;
      const wo = w + o * I, io = n * I;
      if (b >= 0) G[b + o] += g;
      for (let i = 0; i < I; i++) {
        G[wo + i] += g * inp[io + i];
        if (dinp) dinp[io + i] += g * P[wo + i];
      }
    }
  }
}

// bias-free LayerNorm: out = (x - mean) * rstd * weight; keeps xhat and rstd for the backward
function lnF(
  out: Float64Array,
  xhat: Float64Array,
  rstd: Float64Array,
  x: Float64Array,
  P: Arr,
  w: number,
  N: number,
  D: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = n * D;
    let m = 0;
    for (let i = 0; i < D; i++) m += x[o + i];
    m /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x[o + i] - m) ** 2;
    const r = 1 / Math.sqrt(v / D + LAYERNORM_EPS);
    rstd[n] = r;
    for (let i = 0; i < D; i++) {
      const h = (x[o + i] - m) * r;
      xhat[o + i] = h;
      out[o + i] = h * P[w + i];
    }
  }
}

// dx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * weight
function lnB(
  dx: Float64Array,
  G: Float64Array,
  dout: Float64Array,
  xhat: Float64Array,
  rstd: Float64Array,
  P: Arr,
  w: number,
  N: number,
  D: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = n * D;
    let m1 = 0, m2 = 0;
    for (let i = 0; i < D; i++) {
      const dh = dout[o + i] * P[w + i];
      G[w + i] += dout[o + i] * xhat[o + i];
      m1 += dh;
      m2 += dh * xhat[o + i];
    }
    m1 /= D;
    m2 /= D;
    for (let i = 0; i < D; i++) {
      const dh = dout[o + i] * P[w + i];
      dx[o + i] += rstd[n] * (dh - m1 - xhat[o + i] * m2);
    }
  }
}

const GELU_K = Math.sqrt(2 / Math.PI);

/**
 * GELU, tanh approximation (`nn.GELU(approximate="tanh")`):
 * `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
 *
 * @param x Input.
 * @returns The activation.
 *
 * @example
 * ```ts
 * import { geluTanh } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(geluTanh(0), 0);
 * assert.ok(Math.abs(geluTanh(1) - 0.8411919906) < 1e-9);
 * ```
 */
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(GELU_K * (x + 0.044715 * x * x * x)));
}

/**
 * Derivative of {@linkcode geluTanh}.
 *
 * @param x Input.
 * @returns `d geluTanh(x) / dx`.
 */
export function geluTanhGrad(x: number): number {
  const th = Math.tanh(GELU_K * (x + 0.044715 * x * x * x));
  return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * GELU_K * (1 + 3 * 0.044715 * x * x);
}

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

/** Activations of one block kept for the backward pass. */
interface BlockCache {
  x: Float64Array; // block input (N,d)
  xhat1: Float64Array;
  rstd1: Float64Array;
  n1: Float64Array; // ln1 * weight
  m1: Float64Array; // modulated
  qkv: Float64Array; // rotated (N,3d)
  att: Float64Array; // probabilities (B,NH,T,T)
  y: Float64Array; // attention output (N,d)
  o: Float64Array; // attn_out(y)
  x2: Float64Array; // after the attention residual
  xhat2: Float64Array;
  rstd2: Float64Array;
  n2: Float64Array;
  m2: Float64Array;
  h: Float64Array; // mlp.0 (N,4d)
  g: Float64Array; // gelu(h)
  f: Float64Array; // mlp.2(g)
  mod: Float64Array; // (B,6d)
}

/** Activations of a whole pass kept for the backward pass. */
interface Activations {
  emb: Float64Array;
  h1: Float64Array;
  a1: Float64Array;
  s: Float64Array;
  c: Float64Array;
  cos: Float64Array;
  sin: Float64Array;
  blocks: BlockCache[];
  xf: Float64Array;
  xhatF: Float64Array;
  rstdF: Float64Array;
  nF: Float64Array;
  mF: Float64Array;
  modF: Float64Array;
}

/** The activations of a {@linkcode ditForwardCached} pass, for {@linkcode ditBackward}. */
export interface DitCache {
  /** Sequences. */
  B: number;
  /** Tokens per sequence. */
  T: number;
  /** Token ids `(B,T)`. */
  tokens: Int32Array;
  /** Noise level per sequence. */
  sigma: Float64Array;
  /** Parameters of the pass. */
  params: Float32Array | Float64Array;
  /** Whether the output was SEDD's (scaled, current-token entries zeroed) or raw logits. */
  sedd: boolean;
  /** The activations (internal to `dit.ts`). */
  _: unknown;
}

function modulate(
  out: Float64Array,
  inp: Float64Array,
  mod: Float64Array,
  K: number,
  shift: number,
  scale: number,
  B: number,
  T: number,
  d: number,
): void {
  for (let b = 0; b < B; b++) {
    const mo = b * K * d;
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * d;
      for (let i = 0; i < d; i++) {
        out[o + i] = inp[o + i] * (1 + mod[mo + scale * d + i]) + mod[mo + shift * d + i];
      }
    }
  }
}

// dinp = dout * (1 + scale), dmod[shift] += sum_t dout, dmod[scale] += sum_t dout * inp
function modulateB(
  dinp: Float64Array,
  dmod: Float64Array,
  dout: Float64Array,
  inp: Float64Array,
  mod: Float64Array,
  K: number,
  shift: number,
  scale: number,
  B: number,
  T: number,
  d: number,
): void {
  for (let b = 0; b < B; b++) {
    const mo = b * K * d;
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * d;
      for (let i = 0; i < d; i++) {
        const g = dout[o + i];
        dinp[o + i] = g * (1 + mod[mo + scale * d + i]);
        dmod[mo + shift * d + i] += g;
        dmod[mo + scale * d + i] += g * inp[o + i];
      }
    }
  }
}

// rotate q and k of every head by +angle (or -angle: the transpose)
function rope(
  qkv: Float64Array,
  cos: Float64Array,
  sin: Float64Array,
  B: number,
  T: number,
  d: number,
  NH: number,
  sign: number,
): void {
  const half = d / NH / 2;
  for (let n = 0; n < B * T; n++) {
    const t = n % T;
    for (let part = 0; part < 2; part++) {
      for (let h = 0; h < NH; h++) {
        const o = n * 3 * d + part * d + h * 2 * half;
        for (let i = 0; i < half; i++) {
          const z1 = qkv[o + i], z2 = qkv[o + half + i];
          const c = cos[t * half + i], s = sign * sin[t * half + i];
          qkv[o + i] = z1 * c - z2 * s;
          qkv[o + half + i] = z2 * c + z1 * s;
        }
      }
    }
  }
}

function checkInputs(
  model: DitModel,
  tokens: Int32Array,
  batch: number,
  sigma: ArrayLike<number> | undefined,
): { B: number; T: number; sig: Float64Array } {
  validateTokens(tokens, model.config.vocabSize, "tokens");
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`Invalid batch: expected a positive integer, got ${batch}`);
  }
  if (tokens.length === 0 || tokens.length % batch !== 0) {
    throw new RangeError(
      `Invalid tokens length: expected a positive multiple of batch ${batch}, got ${tokens.length}`,
    );
  }
  const T = tokens.length / batch;
  if (T > model.config.context) {
    throw new RangeError(
      `Sequence too long: expected T <= context ${model.config.context}, got ${T}`,
    );
  }
  if (!(sigma instanceof Float32Array || sigma instanceof Float64Array)) {
    throw new TypeError(
      `Missing sigma: expected a Float32Array or Float64Array of ${batch} noise levels, got ${typeof sigma}`,
    );
  }
  if (sigma.length !== batch) {
    throw new RangeError(
      `Invalid sigma length: expected ${batch} (one per sequence), got ${sigma.length}`,
    );
  }
  const sig = new Float64Array(batch);
  for (let b = 0; b < batch; b++) {
    const v = sigma[b];
    const bad = !Number.isFinite(v) || v < 0 ||
      (model.config.output === "sedd" && model.config.scaleBySigma && v === 0);
    if (bad) {
      throw new RangeError(
        `Invalid sigma[${b}]: expected a finite value ${
          model.config.output === "sedd" && model.config.scaleBySigma
            ? "> 0 (scaleBySigma)"
            : ">= 0"
        }, got ${v}`,
      );
    }
    sig[b] = v;
  }
  return { B: batch, T, sig };
}

/** Options of {@linkcode ditForward}. */
export interface DitForwardOptions {
  /** Sequences B in `tokens`. */
  batch: number;
  /** Noise level per sequence, `(B)` (> 0 with SEDD's `scaleBySigma`). */
  sigma: Float32Array | Float64Array;
  /** Parameters to use in place of `model.params` (same layout; float64 for gradient checks). */
  params?: Float32Array | Float64Array;
  /**
   * Return the output layer's logits whatever `config.output` says (the losses of
   * `src/diffusion/losses.ts` apply SEDD's and MDLM's parameterisations themselves).
   */
  raw?: boolean;
}

/**
 * Runs the DiT and returns SEDD's log-scores (`output: "sedd"`) or MDLM's logits
 * (`output: "logits"`), `(B,T,V)`, in float64.
 *
 * @param model The model.
 * @param tokens Token ids, `(B,T)` flattened.
 * @param options `batch`, `sigma`, and optionally `params`.
 * @returns The output.
 */
export function ditForward(
  model: DitModel,
  tokens: Int32Array,
  options: DitForwardOptions,
): Float64Array {
  return ditForwardCached(model, tokens, options).out;
}

/**
 * {@linkcode ditForward}, also returning the activations {@linkcode ditBackward} needs.
 *
 * @param model The model.
 * @param tokens Token ids, `(B,T)` flattened.
 * @param options `batch`, `sigma`, and optionally `params`.
 * @returns The output `(B,T,V)` and the cache.
 *
 * @example Gradient of a scalar loss
 * ```ts
 * import { createDit, ditBackward, ditForwardCached } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createDit({ vocabSize: 7, context: 4, dModel: 4, nHeads: 1, nLayers: 1, condDim: 2 });
 * const tokens = new Int32Array([6, 1, 6]);
 * const { out, cache } = ditForwardCached(model, tokens, { batch: 1, sigma: new Float32Array([0.3]) });
 * const grads = new Float64Array(model.params.length);
 * ditBackward(model, cache, new Float64Array(out.length).fill(1), grads); // loss = sum(out)
 * assert.ok(grads.some((g) => g !== 0));
 * ```
 */
export function ditForwardCached(
  model: DitModel,
  tokens: Int32Array,
  options: DitForwardOptions,
): { out: Float64Array; cache: DitCache } {
  const { B, T, sig } = checkInputs(model, tokens, options.batch, options.sigma);
  const cfg = model.config;
  const P = options.params ?? model.params;
  if (P.length !== model.params.length) {
    throw new RangeError(
      `Invalid params: expected ${model.params.length} values, got ${P.length}`,
    );
  }
  const L = model.layout;
  const off = (name: string): number => L[name].offset;
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: Cd } = cfg;
  const N = B * T, HS = d / NH, E = TIME_EMBED_DIM;

  // conditioning: c = silu(mlp.2(silu(mlp.0(embedding(sigma)))))
  const emb32 = new Float32Array(B * E); // float32, as SEDD builds it
  timestepEmbedding(emb32, sig, B, E);
  const emb = Float64Array.from(emb32);
  const h1 = new Float64Array(B * Cd), a1 = new Float64Array(B * Cd);
  const s = new Float64Array(B * Cd), c = new Float64Array(B * Cd);
  linF(h1, emb, P, off("sigma_map.mlp.0.weight"), off("sigma_map.mlp.0.bias"), B, E, Cd);
  for (let i = 0; i < B * Cd; i++) a1[i] = h1[i] * sigmoid(h1[i]);
  linF(s, a1, P, off("sigma_map.mlp.2.weight"), off("sigma_map.mlp.2.bias"), B, Cd, Cd);
  for (let i = 0; i < B * Cd; i++) c[i] = s[i] * sigmoid(s[i]);

  const cos = new Float64Array(T * HS / 2), sin = new Float64Array(T * HS / 2);
  ropeTables(cos, sin, T, HS);

  let x = new Float64Array(N * d);
  const embOff = off("vocab_embed.embedding");
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < d; i++) x[n * d + i] = P[embOff + tokens[n] * d + i];
  }

  const blocks: BlockCache[] = [];
  const scale = 1 / Math.sqrt(HS);
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = (s: string): number => off(`blocks.${l}.${s}`);
    const bc: BlockCache = {
      x,
      xhat1: new Float64Array(N * d),
      rstd1: new Float64Array(N),
      n1: new Float64Array(N * d),
      m1: new Float64Array(N * d),
      qkv: new Float64Array(N * 3 * d),
      att: new Float64Array(B * NH * T * T),
      y: new Float64Array(N * d),
      o: new Float64Array(N * d),
      x2: new Float64Array(N * d),
      xhat2: new Float64Array(N * d),
      rstd2: new Float64Array(N),
      n2: new Float64Array(N * d),
      m2: new Float64Array(N * d),
      h: new Float64Array(N * 4 * d),
      g: new Float64Array(N * 4 * d),
      f: new Float64Array(N * d),
      mod: new Float64Array(B * 6 * d),
    };
    linF(bc.mod, c, P, p("adaLN_modulation.weight"), p("adaLN_modulation.bias"), B, Cd, 6 * d);
    lnF(bc.n1, bc.xhat1, bc.rstd1, x, P, p("norm1.weight"), N, d);
    modulate(bc.m1, bc.n1, bc.mod, 6, 0, 1, B, T, d);
    linF(bc.qkv, bc.m1, P, p("attn_qkv.weight"), -1, N, d, 3 * d);
    rope(bc.qkv, cos, sin, B, T, d, NH, 1);
    attentionF(bc, B, T, d, NH, scale);
    linF(bc.o, bc.y, P, p("attn_out.weight"), -1, N, d, d);
    gatedAdd(bc.x2, x, bc.o, bc.mod, 2, B, T, d);
    lnF(bc.n2, bc.xhat2, bc.rstd2, bc.x2, P, p("norm2.weight"), N, d);
    modulate(bc.m2, bc.n2, bc.mod, 6, 3, 4, B, T, d);
    linF(bc.h, bc.m2, P, p("mlp.0.weight"), p("mlp.0.bias"), N, d, 4 * d);
    for (let i = 0; i < bc.h.length; i++) bc.g[i] = geluTanh(bc.h[i]);
    linF(bc.f, bc.g, P, p("mlp.2.weight"), p("mlp.2.bias"), N, 4 * d, d);
    const x3 = new Float64Array(N * d);
    gatedAdd(x3, bc.x2, bc.f, bc.mod, 5, B, T, d);
    blocks.push(bc);
    x = x3;
  }

  const modF = new Float64Array(B * 2 * d);
  linF(
    modF,
    c,
    P,
    off("output_layer.adaLN_modulation.weight"),
    off("output_layer.adaLN_modulation.bias"),
    B,
    Cd,
    2 * d,
  );
  const xhatF = new Float64Array(N * d), rstdF = new Float64Array(N);
  const nF = new Float64Array(N * d), mF = new Float64Array(N * d);
  lnF(nF, xhatF, rstdF, x, P, off("output_layer.norm_final.weight"), N, d);
  modulate(mF, nF, modF, 2, 0, 1, B, T, d);
  const out = new Float64Array(N * V);
  linF(out, mF, P, off("output_layer.linear.weight"), off("output_layer.linear.bias"), N, d, V);
  const sedd = cfg.output === "sedd" && options.raw !== true;
  if (sedd) {
    const logV1 = Math.log(V - 1);
    for (let b = 0; b < B; b++) {
      const shift = cfg.scaleBySigma ? esigm1Log(sig[b]) + logV1 : 0;
      for (let t = 0; t < T; t++) {
        const n = b * T + t;
        for (let v = 0; v < V; v++) out[n * V + v] -= shift;
        out[n * V + tokens[n]] = 0;
      }
    }
  }
  const cache: DitCache = {
    B,
    T,
    tokens: tokens.slice(),
    sigma: sig,
    params: P,
    sedd,
    _: { emb, h1, a1, s, c, cos, sin, blocks, xf: x, xhatF, rstdF, nF, mF, modF },
  };
  return { out, cache };
}

/**
 * SEDD's `log(expm1(sigma))`, written as it writes it: `expm1` below 0.5, `exp(sigma) - 1` from
 * there on.
 *
 * @param sigma Noise level (> 0).
 * @returns `log(e^sigma - 1)`.
 */
export function esigm1Log(sigma: number): number {
  return Math.log(sigma < 0.5 ? Math.expm1(sigma) : Math.exp(sigma) - 1);
}

// out = x + gate * branch, gate = chunk `gate` of mod (B,6d)
function gatedAdd(
  out: Float64Array,
  x: Float64Array,
  branch: Float64Array,
  mod: Float64Array,
  gate: number,
  B: number,
  T: number,
  d: number,
): void {
  for (let n = 0; n < B * T; n++) {
    const mo = Math.floor(n / T) * 6 * d + gate * d;
    for (let i = 0; i < d; i++) out[n * d + i] = x[n * d + i] + mod[mo + i] * branch[n * d + i];
  }
}

function attentionF(bc: BlockCache, B: number, T: number, d: number, NH: number, scale: number) {
  const HS = d / NH, { qkv, att, y } = bc;
  const row = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let i = 0; i < T; i++) {
        const qo = (b * T + i) * 3 * d + h * HS;
        let mx = -Infinity;
        for (let j = 0; j < T; j++) {
          const ko = (b * T + j) * 3 * d + d + h * HS;
          let sc = 0;
          for (let k = 0; k < HS; k++) sc += qkv[qo + k] * qkv[ko + k];
          row[j] = sc * scale;
          if (row[j] > mx) mx = row[j];
        }
        let z = 0;
        for (let j = 0; j < T; j++) z += row[j] = Math.exp(row[j] - mx);
        const ao = ((b * NH + h) * T + i) * T;
        const yo = (b * T + i) * d + h * HS;
        for (let j = 0; j < T; j++) {
          const pr = row[j] / z;
          att[ao + j] = pr;
          const vo = (b * T + j) * 3 * d + 2 * d + h * HS;
          for (let k = 0; k < HS; k++) y[yo + k] += pr * qkv[vo + k];
        }
      }
    }
  }
}

// dqkv from dy (dqkv zeroed by the caller)
function attentionB(
  dqkv: Float64Array,
  dy: Float64Array,
  bc: BlockCache,
  B: number,
  T: number,
  d: number,
  NH: number,
  scale: number,
) {
  const HS = d / NH, { qkv, att } = bc;
  const dp = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let i = 0; i < T; i++) {
        const ao = ((b * NH + h) * T + i) * T;
        const yo = (b * T + i) * d + h * HS;
        const qo = (b * T + i) * 3 * d + h * HS;
        let dot = 0;
        for (let j = 0; j < T; j++) {
          const vo = (b * T + j) * 3 * d + 2 * d + h * HS;
          let s = 0;
          for (let k = 0; k < HS; k++) {
            s += dy[yo + k] * qkv[vo + k];
            dqkv[vo + k] += att[ao + j] * dy[yo + k];
          }
          dp[j] = s;
          dot += att[ao + j] * s;
        }
        for (let j = 0; j < T; j++) {
          const ds = att[ao + j] * (dp[j] - dot) * scale;
          const ko = (b * T + j) * 3 * d + d + h * HS;
          for (let k = 0; k < HS; k++) {
            dqkv[qo + k] += ds * qkv[ko + k];
            dqkv[ko + k] += ds * qkv[qo + k];
          }
        }
      }
    }
  }
}

/**
 * Backpropagates `dout` (the gradient of a loss w.r.t. the output of the pass that made `cache`)
 * and ADDS the parameter gradients into `grads` (parameter layout). The zeroed current-token
 * entries of SEDD's output pass no gradient.
 *
 * @param model The model.
 * @param cache From {@linkcode ditForwardCached}.
 * @param dout Gradient w.r.t. the output, `(B,T,V)`.
 * @param grads Gradient buffer, `params.length` values, added into.
 */
export function ditBackward(
  model: DitModel,
  cache: DitCache,
  dout: ArrayLike<number>,
  grads: Float32Array | Float64Array,
): void {
  const cfg = model.config;
  const { B, T, tokens, params: P } = cache;
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: Cd } = cfg;
  const N = B * T, HS = d / NH, E = TIME_EMBED_DIM;
  if (dout.length !== N * V) {
    throw new RangeError(`Invalid dout length: expected ${N * V} (B*T*V), got ${dout.length}`);
  }
  if (grads.length !== model.params.length) {
    throw new RangeError(
      `Invalid grads: expected ${model.params.length} values, got ${grads.length}`,
    );
  }
  const G = new Float64Array(grads.length);
  const L = model.layout;
  const off = (name: string): number => L[name].offset;
  const a = cache._ as Activations;

  const dlogits = Float64Array.from(dout);
  if (cache.sedd) { for (let n = 0; n < N; n++) dlogits[n * V + tokens[n]] = 0; }
  const dmF = new Float64Array(N * d);
  linB(
    dmF,
    G,
    dlogits,
    a.mF,
    P,
    off("output_layer.linear.weight"),
    off("output_layer.linear.bias"),
    N,
    d,
    V,
  );
  const dnF = new Float64Array(N * d), dmodF = new Float64Array(B * 2 * d);
  modulateB(dnF, dmodF, dmF, a.nF, a.modF, 2, 0, 1, B, T, d);
  const dc = new Float64Array(B * Cd);
  linB(
    dc,
    G,
    dmodF,
    a.c,
    P,
    off("output_layer.adaLN_modulation.weight"),
    off("output_layer.adaLN_modulation.bias"),
    B,
    Cd,
    2 * d,
  );
  let dx = new Float64Array(N * d);
  lnB(dx, G, dnF, a.xhatF, a.rstdF, P, off("output_layer.norm_final.weight"), N, d);

  const scale = 1 / Math.sqrt(HS);
  for (let l = cfg.nLayers - 1; l >= 0; l--) {
    const p = (s: string): number => off(`blocks.${l}.${s}`);
    const bc = a.blocks[l];
    const dmod = new Float64Array(B * 6 * d);
    // x3 = x2 + gate_mlp * f
    const dx2 = Float64Array.from(dx);
    const df = new Float64Array(N * d);
    gatedB(df, dmod, dx, bc.f, bc.mod, 5, B, T, d);
    const dg = new Float64Array(N * 4 * d);
    linB(dg, G, df, bc.g, P, p("mlp.2.weight"), p("mlp.2.bias"), N, 4 * d, d);
    for (let i = 0; i < dg.length; i++) dg[i] *= geluTanhGrad(bc.h[i]);
    const dm2 = new Float64Array(N * d);
    linB(dm2, G, dg, bc.m2, P, p("mlp.0.weight"), p("mlp.0.bias"), N, d, 4 * d);
    const dn2 = new Float64Array(N * d);
    modulateB(dn2, dmod, dm2, bc.n2, bc.mod, 6, 3, 4, B, T, d);
    lnB(dx2, G, dn2, bc.xhat2, bc.rstd2, P, p("norm2.weight"), N, d);
    // x2 = x + gate_msa * o
    const dxIn = Float64Array.from(dx2);
    const dO = new Float64Array(N * d);
    gatedB(dO, dmod, dx2, bc.o, bc.mod, 2, B, T, d);
    const dy = new Float64Array(N * d);
    linB(dy, G, dO, bc.y, P, p("attn_out.weight"), -1, N, d, d);
    const dqkv = new Float64Array(N * 3 * d);
    attentionB(dqkv, dy, bc, B, T, d, NH, scale);
    rope(dqkv, a.cos, a.sin, B, T, d, NH, -1);
    const dm1 = new Float64Array(N * d);
    // the rotated qkv was kept; attn_qkv's input gradient and weight gradient need m1 only
    linB(dm1, G, dqkv, bc.m1, P, p("attn_qkv.weight"), -1, N, d, 3 * d);
    const dn1 = new Float64Array(N * d);
    modulateB(dn1, dmod, dm1, bc.n1, bc.mod, 6, 0, 1, B, T, d);
    lnB(dxIn, G, dn1, bc.xhat1, bc.rstd1, P, p("norm1.weight"), N, d);
    linB(
      dc,
      G,
      dmod,
      a.c,
      P,
      p("adaLN_modulation.weight"),
      p("adaLN_modulation.bias"),
      B,
      Cd,
      6 * d,
    );
    dx = dxIn;
  }

  const embOff = off("vocab_embed.embedding");
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < d; i++) G[embOff + tokens[n] * d + i] += dx[n * d + i];
  }
  // c = silu(s), s = mlp.2(a1), a1 = silu(h1), h1 = mlp.0(emb)
  const ds = new Float64Array(B * Cd);
  for (let i = 0; i < ds.length; i++) ds[i] = dc[i] * siluGrad(a.s[i]);
  const da1 = new Float64Array(B * Cd);
  linB(da1, G, ds, a.a1, P, off("sigma_map.mlp.2.weight"), off("sigma_map.mlp.2.bias"), B, Cd, Cd);
  for (let i = 0; i < da1.length; i++) da1[i] *= siluGrad(a.h1[i]);
  linB(
    null,
    G,
    da1,
    a.emb,
    P,
    off("sigma_map.mlp.0.weight"),
    off("sigma_map.mlp.0.bias"),
    B,
    E,
    Cd,
  );
  for (let i = 0; i < G.length; i++) grads[i] += G[i];
}

function siluGrad(z: number): number {
  const sg = sigmoid(z);
  return sg * (1 + z * (1 - sg));
}

// out = x + gate * branch: dbranch = dout * gate, dmod[gate] += sum_t dout * branch
function gatedB(
  dbranch: Float64Array,
  dmod: Float64Array,
  dout: Float64Array,
  branch: Float64Array,
  mod: Float64Array,
  gate: number,
  B: number,
  T: number,
  d: number,
): void {
  for (let n = 0; n < B * T; n++) {
    const mo = Math.floor(n / T) * 6 * d + gate * d;
    for (let i = 0; i < d; i++) {
      dbranch[n * d + i] = dout[n * d + i] * mod[mo + i];
      dmod[mo + i] += dout[n * d + i] * branch[n * d + i];
    }
  }
}

/**
 * Builds a DiT from named tensors (a SEDD or MDLM state dict), inferring `vocabSize`, `dModel`,
 * `condDim` and `nLayers` from the shapes. `nHeads` cannot be inferred and must be given; the
 * `rotary_emb.inv_freq` buffer, when present, is checked against it. `context` defaults to
 * 1024 (SEDD's and MDLM's OpenWebText length); `output` to `sedd`, `scaleBySigma` to true.
 *
 * @param tensors Name to `{ shape, data }`.
 * @param config At least `nHeads`; any other field overrides the inferred one.
 * @returns The model (a fresh float32 parameter buffer).
 */
export function ditFromTensors(
  tensors: Record<string, { shape: number[]; data: ArrayLike<number> }>,
  config: Partial<DitConfig> & { nHeads: number },
): DitModel {
  const embed = tensors["vocab_embed.embedding"];
  const sm0 = tensors["sigma_map.mlp.0.weight"];
  if (!embed || embed.shape.length !== 2) {
    throw new RangeError('Not a DiT state dict: expected "vocab_embed.embedding" [V,d], got none');
  }
  if (!sm0 || sm0.shape.length !== 2) {
    throw new RangeError(
      'Not a DiT state dict: expected "sigma_map.mlp.0.weight" [cond,256], got none',
    );
  }
  if (typeof config?.nHeads !== "number") {
    throw new TypeError(
      `Cannot infer nHeads from a DiT state dict: expected config.nHeads, got ${config?.nHeads}`,
    );
  }
  let nLayers = 0;
  for (const name of Object.keys(tensors)) {
    const m = /^blocks\.(\d+)\./.exec(name);
    if (m) nLayers = Math.max(nLayers, Number(m[1]) + 1);
  }
  const model = createDit({
    vocabSize: embed.shape[0],
    dModel: embed.shape[1],
    condDim: sm0.shape[0],
    nLayers,
    context: 1024,
    ...config,
  }, { params: undefined, seed: 0 });
  const names = new Set(Object.keys(model.layout));
  const missing = [...names].filter((n) => !Object.hasOwn(tensors, n));
  if (missing.length > 0) {
    throw new RangeError(
      `Missing DiT tensors: expected ${missing.map((n) => `"${n}"`).join(", ")}, got none`,
    );
  }
  const extra = Object.keys(tensors).filter((n) => !names.has(n) && n !== "rotary_emb.inv_freq");
  if (extra.length > 0) {
    throw new RangeError(`Unexpected tensors for a DiT: ${extra.map((n) => `"${n}"`).join(", ")}`);
  }
  const inv = tensors["rotary_emb.inv_freq"];
  if (inv) {
    const HS = model.config.dModel / model.config.nHeads;
    if (inv.shape.length !== 1 || inv.shape[0] !== HS / 2) {
      throw new RangeError(
        `Invalid "rotary_emb.inv_freq": expected shape [${
          HS / 2
        }] for nHeads ${model.config.nHeads}, got [${inv.shape}]`,
      );
    }
    for (let i = 0; i < HS / 2; i++) {
      const want = Math.pow(10000, -(2 * i) / HS);
      if (Math.abs(inv.data[i] - want) > 1e-6 * Math.max(1, want)) {
        throw new RangeError(
          `Invalid "rotary_emb.inv_freq"[${i}]: expected base 10000 (${want}), got ${inv.data[i]}`,
        );
      }
    }
  }
  for (const [name, { offset, shape }] of Object.entries(model.layout)) {
    const t = tensors[name];
    if (t.shape.length !== shape.length || t.shape.some((v, i) => v !== shape[i])) {
      throw new RangeError(`Invalid tensor "${name}": expected shape [${shape}], got [${t.shape}]`);
    }
    model.params.set(t.data, offset);
  }
  return model;
}
