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
 * The passes are built from the ops of `src/nn/` (linear, LayerNorm with a zero bias, adaLN
 * modulation and gated residuals, rotary attention, SiLU, embedding) run on float64 buffers with
 * the plain reference matmul, plus the tanh GELU here; parameters may be a `Float32Array` (a
 * model) or a `Float64Array` (for finite-difference checks). The float32 passes on the wasm and
 * BLAS kernels of the transformer kind are in `dit_fast.ts` (forward) and `dit_train.ts`
 * (training), both checked against these.
 *
 * @module
 */

import {
  gatedResidualBackward,
  gatedResidualForward,
  modulateBackward,
  modulateForward,
  timestepEmbedding,
} from "../nn/adaln.ts";
import {
  attentionBackward,
  attentionForward,
  ropeBackward,
  ropeForward,
  ropeTables,
} from "../nn/attention.ts";
import { siluBackward, siluForward } from "../nn/activations.ts";
import { embeddingBackward, embeddingForward } from "../nn/embedding.ts";
import { layernormBackward, layernormForward } from "../nn/layernorm.ts";
import { linearBackward, linearForward } from "../nn/linear.ts";
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

// The nn ops only index their arrays, so they run in float64 on Float64Array buffers viewed as
// the Float32Array they are typed with (as the gradient checks run them).
const f = (a: Float32Array | Float64Array): Float32Array => a as unknown as Float32Array;

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

/** Activations of one block kept for the backward pass. */
interface BlockCache {
  x: Float64Array; // block input (N,d)
  mean1: Float64Array;
  rstd1: Float64Array;
  n1: Float64Array; // norm1(x)
  m1: Float64Array; // modulated
  qkv: Float64Array; // rotated (N,3d)
  att: Float64Array; // probabilities (B,NH,T,T)
  y: Float64Array; // attention output (N,d)
  o: Float64Array; // attn_out(y)
  x2: Float64Array; // after the attention residual
  mean2: Float64Array;
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
  meanF: Float64Array;
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

/** Views on the tensors of a flat buffer (parameters or gradients), by state-dict name. */
function viewer(
  model: DitModel,
  buf: Float32Array | Float64Array,
): (name: string) => Float32Array {
  return (name) => {
    const { offset, shape } = model.layout[name];
    return f(buf.subarray(offset, offset + shape.reduce((a, b) => a * b, 1)));
  };
}

/**
 * Checks a DiT forward pass's arguments: token ids in range, `batch` dividing them into
 * sequences no longer than `context`, and one finite noise level per sequence (> 0 where SEDD's
 * `scaleBySigma` divides by `expm1(sigma)`). Throws a one-line `RangeError` or `TypeError`.
 *
 * @param model The DiT.
 * @param tokens Token ids, `(B,T)` flattened.
 * @param batch Sequences B.
 * @param sigma Noise level per sequence.
 * @returns `B`, `T` and the noise levels in float64.
 */
export function checkDitInputs(
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
  const { B, T, sig } = checkDitInputs(model, tokens, options.batch, options.sigma);
  const cfg = model.config;
  const P = options.params ?? model.params;
  if (P.length !== model.params.length) {
    throw new RangeError(
      `Invalid params: expected ${model.params.length} values, got ${P.length}`,
    );
  }
  const w = viewer(model, P);
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: Cd } = cfg;
  const N = B * T, HS = d / NH, E = TIME_EMBED_DIM;
  const F64 = (n: number) => new Float64Array(n);
  const noBias = F64(d); // the LayerNorms have none

  // conditioning: c = silu(mlp.2(silu(mlp.0(embedding(sigma)))))
  const emb32 = new Float32Array(B * E); // float32, as SEDD builds it
  timestepEmbedding(emb32, sig, B, E);
  const emb = Float64Array.from(emb32);
  const h1 = F64(B * Cd), a1 = F64(B * Cd), s = F64(B * Cd), c = F64(B * Cd);
  linearForward(f(h1), f(emb), w("sigma_map.mlp.0.weight"), w("sigma_map.mlp.0.bias"), B, E, Cd);
  siluForward(f(a1), f(h1), B * Cd);
  linearForward(f(s), f(a1), w("sigma_map.mlp.2.weight"), w("sigma_map.mlp.2.bias"), B, Cd, Cd);
  siluForward(f(c), f(s), B * Cd);

  const cos = F64(T * HS / 2), sin = F64(T * HS / 2);
  ropeTables(cos, sin, T, HS);

  let x = F64(N * d);
  embeddingForward(f(x), tokens, w("vocab_embed.embedding"), null, B, T, d);

  const blocks: BlockCache[] = [];
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = (name: string) => w(`blocks.${l}.${name}`);
    const bc: BlockCache = {
      x,
      mean1: F64(N),
      rstd1: F64(N),
      n1: F64(N * d),
      m1: F64(N * d),
      qkv: F64(N * 3 * d),
      att: F64(B * NH * T * T),
      y: F64(N * d),
      o: F64(N * d),
      x2: F64(N * d),
      mean2: F64(N),
      rstd2: F64(N),
      n2: F64(N * d),
      m2: F64(N * d),
      h: F64(N * 4 * d),
      g: F64(N * 4 * d),
      f: F64(N * d),
      mod: F64(B * 6 * d),
    };
    const mod = f(bc.mod);
    linearForward(
      mod,
      f(c),
      p("adaLN_modulation.weight"),
      p("adaLN_modulation.bias"),
      B,
      Cd,
      6 * d,
    );
    // attention half: chunks 0, 1, 2 are shift, scale, gate
    layernormForward(f(bc.n1), f(bc.mean1), f(bc.rstd1), f(x), p("norm1.weight"), f(noBias), N, d);
    modulateForward(f(bc.m1), f(bc.n1), mod, 0, 1, { K: 6, B, T, C: d });
    linearForward(f(bc.qkv), f(bc.m1), p("attn_qkv.weight"), null, N, d, 3 * d);
    ropeForward(f(bc.qkv), cos, sin, B, T, d, NH);
    attentionForward(f(bc.y), f(bc.att), f(bc.qkv), null, B, T, d, NH);
    linearForward(f(bc.o), f(bc.y), p("attn_out.weight"), null, N, d, d);
    gatedResidualForward(f(bc.x2), f(x), f(bc.o), mod, 2, { K: 6, B, T, C: d });
    // MLP half: chunks 3, 4, 5
    layernormForward(
      f(bc.n2),
      f(bc.mean2),
      f(bc.rstd2),
      f(bc.x2),
      p("norm2.weight"),
      f(noBias),
      N,
      d,
    );
    modulateForward(f(bc.m2), f(bc.n2), mod, 3, 4, { K: 6, B, T, C: d });
    linearForward(f(bc.h), f(bc.m2), p("mlp.0.weight"), p("mlp.0.bias"), N, d, 4 * d);
    for (let i = 0; i < bc.h.length; i++) bc.g[i] = geluTanh(bc.h[i]);
    linearForward(f(bc.f), f(bc.g), p("mlp.2.weight"), p("mlp.2.bias"), N, 4 * d, d);
    const x3 = F64(N * d);
    gatedResidualForward(f(x3), f(bc.x2), f(bc.f), mod, 5, { K: 6, B, T, C: d });
    blocks.push(bc);
    x = x3;
  }

  const modF = F64(B * 2 * d);
  linearForward(
    f(modF),
    f(c),
    w("output_layer.adaLN_modulation.weight"),
    w("output_layer.adaLN_modulation.bias"),
    B,
    Cd,
    2 * d,
  );
  const meanF = F64(N), rstdF = F64(N), nF = F64(N * d), mF = F64(N * d);
  layernormForward(
    f(nF),
    f(meanF),
    f(rstdF),
    f(x),
    w("output_layer.norm_final.weight"),
    f(noBias),
    N,
    d,
  );
  modulateForward(f(mF), f(nF), f(modF), 0, 1, { K: 2, B, T, C: d });
  const out = F64(N * V);
  linearForward(
    f(out),
    f(mF),
    w("output_layer.linear.weight"),
    w("output_layer.linear.bias"),
    N,
    d,
    V,
  );
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
  const act: Activations = {
    emb,
    h1,
    a1,
    s,
    c,
    cos,
    sin,
    blocks,
    xf: x,
    meanF,
    rstdF,
    nF,
    mF,
    modF,
  };
  const cache: DitCache = { B, T, tokens: tokens.slice(), sigma: sig, params: P, sedd, _: act };
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
  const N = B * T, E = TIME_EMBED_DIM;
  if (dout.length !== N * V) {
    throw new RangeError(`Invalid dout length: expected ${N * V} (B*T*V), got ${dout.length}`);
  }
  if (grads.length !== model.params.length) {
    throw new RangeError(
      `Invalid grads: expected ${model.params.length} values, got ${grads.length}`,
    );
  }
  const G = new Float64Array(grads.length); // accumulated in float64, added out once
  const w = viewer(model, P), g = viewer(model, G);
  const a = cache._ as Activations;
  const F64 = (n: number) => new Float64Array(n);
  const dNoBias = F64(d); // the LayerNorms' (absent) bias gradients land here

  const dlogits = Float64Array.from(dout);
  if (cache.sedd) { for (let n = 0; n < N; n++) dlogits[n * V + tokens[n]] = 0; }
  const dmF = F64(N * d);
  linearBackward(
    f(dmF),
    g("output_layer.linear.weight"),
    g("output_layer.linear.bias"),
    f(dlogits),
    f(a.mF),
    w("output_layer.linear.weight"),
    N,
    d,
    V,
  );
  const dnF = F64(N * d), dmodF = F64(B * 2 * d);
  modulateBackward(f(dnF), f(dmodF), f(dmF), f(a.nF), f(a.modF), 0, 1, { K: 2, B, T, C: d });
  const dc = F64(B * Cd); // summed into by the output layer and every block
  linearBackward(
    f(dc),
    g("output_layer.adaLN_modulation.weight"),
    g("output_layer.adaLN_modulation.bias"),
    f(dmodF),
    f(a.c),
    w("output_layer.adaLN_modulation.weight"),
    B,
    Cd,
    2 * d,
  );
  let dx = F64(N * d);
  layernormBackward(
    f(dx),
    g("output_layer.norm_final.weight"),
    f(dNoBias),
    f(dnF),
    f(a.xf),
    w("output_layer.norm_final.weight"),
    f(a.meanF),
    f(a.rstdF),
    N,
    d,
  );

  const scratch = F64(T);
  for (let l = cfg.nLayers - 1; l >= 0; l--) {
    const p = (name: string) => w(`blocks.${l}.${name}`);
    const q = (name: string) => g(`blocks.${l}.${name}`);
    const bc = a.blocks[l];
    const mod = f(bc.mod), dmod = F64(B * 6 * d);
    // MLP half, from x3 = x2 + gate_mlp * f
    const dx2 = F64(N * d), df = F64(N * d);
    gatedResidualBackward(f(dx2), f(df), f(dmod), f(dx), f(bc.f), mod, 5, { K: 6, B, T, C: d });
    const dg = F64(N * 4 * d);
    linearBackward(
      f(dg),
      q("mlp.2.weight"),
      q("mlp.2.bias"),
      f(df),
      f(bc.g),
      p("mlp.2.weight"),
      N,
      4 * d,
      d,
    );
    for (let i = 0; i < dg.length; i++) dg[i] *= geluTanhGrad(bc.h[i]);
    const dm2 = F64(N * d);
    linearBackward(
      f(dm2),
      q("mlp.0.weight"),
      q("mlp.0.bias"),
      f(dg),
      f(bc.m2),
      p("mlp.0.weight"),
      N,
      d,
      4 * d,
    );
    const dn2 = F64(N * d);
    modulateBackward(f(dn2), f(dmod), f(dm2), f(bc.n2), mod, 3, 4, { K: 6, B, T, C: d });
    layernormBackward(
      f(dx2),
      q("norm2.weight"),
      f(dNoBias),
      f(dn2),
      f(bc.x2),
      p("norm2.weight"),
      f(bc.mean2),
      f(bc.rstd2),
      N,
      d,
    );
    // attention half, from x2 = x + gate_msa * o
    const dx1 = F64(N * d), dO = F64(N * d);
    gatedResidualBackward(f(dx1), f(dO), f(dmod), f(dx2), f(bc.o), mod, 2, { K: 6, B, T, C: d });
    const dy = F64(N * d);
    linearBackward(
      f(dy),
      q("attn_out.weight"),
      null,
      f(dO),
      f(bc.y),
      p("attn_out.weight"),
      N,
      d,
      d,
    );
    const dqkv = F64(N * 3 * d);
    attentionBackward(f(dqkv), f(dy), f(bc.qkv), f(bc.att), null, f(scratch), B, T, d, NH);
    ropeBackward(f(dqkv), a.cos, a.sin, B, T, d, NH);
    const dm1 = F64(N * d);
    linearBackward(
      f(dm1),
      q("attn_qkv.weight"),
      null,
      f(dqkv),
      f(bc.m1),
      p("attn_qkv.weight"),
      N,
      d,
      3 * d,
    );
    const dn1 = F64(N * d);
    modulateBackward(f(dn1), f(dmod), f(dm1), f(bc.n1), mod, 0, 1, { K: 6, B, T, C: d });
    layernormBackward(
      f(dx1),
      q("norm1.weight"),
      f(dNoBias),
      f(dn1),
      f(bc.x),
      p("norm1.weight"),
      f(bc.mean1),
      f(bc.rstd1),
      N,
      d,
    );
    linearBackward(
      f(dc),
      q("adaLN_modulation.weight"),
      q("adaLN_modulation.bias"),
      f(dmod),
      f(a.c),
      p("adaLN_modulation.weight"),
      B,
      Cd,
      6 * d,
    );
    dx = dx1;
  }

  embeddingBackward(g("vocab_embed.embedding"), null, f(dx), tokens, B, T, d);
  // c = silu(s), s = mlp.2(a1), a1 = silu(h1), h1 = mlp.0(emb)
  const ds = F64(B * Cd), da1 = F64(B * Cd), dh1 = F64(B * Cd);
  siluBackward(f(ds), f(dc), f(a.s), B * Cd);
  linearBackward(
    f(da1),
    g("sigma_map.mlp.2.weight"),
    g("sigma_map.mlp.2.bias"),
    f(ds),
    f(a.a1),
    w("sigma_map.mlp.2.weight"),
    B,
    Cd,
    Cd,
  );
  siluBackward(f(dh1), f(da1), f(a.h1), B * Cd);
  linearBackward(
    null,
    g("sigma_map.mlp.0.weight"),
    g("sigma_map.mlp.0.bias"),
    f(dh1),
    f(a.emb),
    w("sigma_map.mlp.0.weight"),
    B,
    E,
    Cd,
  );
  for (let i = 0; i < G.length; i++) grads[i] += G[i];
}

/**
 * A DiT's PyTorch state dict: every trained tensor under its name (views on `model.params`) and
 * the `rotary_emb.inv_freq` buffer, so `serializeSafetensors(ditStateDict(model))` writes a file
 * that SEDD's or MDLM's module loads with `load_state_dict(strict=True)` and
 * {@linkcode ditFromTensors} reads back.
 *
 * @param model The DiT.
 * @returns Name to `{ shape, data }`, in state-dict order.
 *
 * @example
 * ```ts
 * import { createDit, ditFromTensors, ditStateDict } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const dit = createDit({ vocabSize: 9, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * const sd = ditStateDict(dit);
 * assert.deepEqual(sd["rotary_emb.inv_freq"].shape, [2]);
 * assert.deepEqual(ditFromTensors(sd, { nHeads: 2 }).params, dit.params);
 * ```
 */
export function ditStateDict(
  model: DitModel,
): Record<string, { shape: number[]; data: Float32Array }> {
  const { dModel: d, nHeads: NH } = model.config;
  const HS = d / NH;
  const inv = new Float32Array(HS / 2);
  for (let i = 0; i < HS / 2; i++) inv[i] = Math.pow(10000, -(2 * i) / HS);
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const { name, shape } of ditParamTable(model.config)) {
    if (name === "blocks.0.norm1.weight") { // the buffer registers between sigma_map and blocks
      out["rotary_emb.inv_freq"] = { shape: [HS / 2], data: inv };
    }
    const { offset } = model.layout[name];
    out[name] = {
      shape,
      data: model.params.subarray(offset, offset + shape.reduce((a, b) => a * b, 1)),
    };
  }
  return out;
}

/**
 * A tensor for {@linkcode ditFromTensors}: its values in memory (`data`), or a `read` that writes
 * them into the model's buffer (a loader decoding a file's tensors one by one, so that no second
 * copy of the model is ever held).
 */
export type DitTensorInput =
  | { shape: number[]; data: ArrayLike<number> }
  | { shape: number[]; read(dst: Float32Array): void };

/**
 * Builds a DiT from named tensors (a SEDD or MDLM state dict), inferring `vocabSize`, `dModel`,
 * `condDim` and `nLayers` from the shapes. `nHeads` cannot be inferred and must be given; the
 * `rotary_emb.inv_freq` buffer, when present, is checked against it. `context` defaults to
 * 1024 (SEDD's and MDLM's OpenWebText length); `output` to `sedd`, `scaleBySigma` to true.
 * The names and shapes are all checked before any value is read; the values then go straight
 * into the one fresh parameter buffer (no initialisation is drawn first).
 *
 * @param tensors Name to `{ shape, data }` or `{ shape, read }`.
 * @param config At least `nHeads`; any other field overrides the inferred one.
 * @returns The model (a fresh float32 parameter buffer).
 */
export function ditFromTensors(
  tensors: Record<string, DitTensorInput>,
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
  const full: DitConfig = {
    scaleBySigma: true,
    output: "sedd",
    vocabSize: embed.shape[0],
    dModel: embed.shape[1],
    condDim: sm0.shape[0],
    nLayers,
    context: 1024,
    ...config,
    kind: "dit",
  };
  validateDitConfig(full);
  const size = ditParamTable(full).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  const model = createDit(full, { params: new Float32Array(size) });
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
  for (const [name, { shape }] of Object.entries(model.layout)) {
    const t = tensors[name];
    if (t.shape.length !== shape.length || t.shape.some((v, i) => v !== shape[i])) {
      throw new RangeError(`Invalid tensor "${name}": expected shape [${shape}], got [${t.shape}]`);
    }
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
    const got = new Float32Array(HS / 2);
    fillFrom(inv, got);
    for (let i = 0; i < HS / 2; i++) {
      const want = Math.pow(10000, -(2 * i) / HS);
      // 1e-6 relative covers float32; a half-float file holds inv_freq to 2^-11 relative
      if (!(Math.abs(got[i] - want) <= 1e-3 * want)) {
        throw new RangeError(
          `Invalid "rotary_emb.inv_freq"[${i}]: expected base 10000 (${want}), got ${got[i]}`,
        );
      }
    }
  }
  for (const [name, { offset, shape }] of Object.entries(model.layout)) {
    fillFrom(tensors[name], model.params.subarray(offset, offset + shape.reduce((a, b) => a * b)));
  }
  return model;
}

function fillFrom(t: DitTensorInput, dst: Float32Array): void {
  if ("read" in t) t.read(dst);
  else dst.set(t.data);
}
