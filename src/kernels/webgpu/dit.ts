/**
 * The DiT of `src/model/dit.ts` (SEDD's and MDLM's denoiser) on the GPU: its forward pass on the
 * kernels of this directory, as a `GpuDenoiser` (`sampler.ts`) for `sampleIdsGpu`, with the values
 * the CPU DiT denoiser gives (`forward(dit, ids, { batch, sigma })`, the float32 pass of
 * `src/model/dit_fast.ts`) up to float32 rounding.
 *
 * Per call, for `B` sequences of `T` tokens (`N = B T`):
 *
 * ```
 * host:  e = sinusoidal(sigma) (B,256) in float64, written; SEDD's shift per sequence, written
 * GPU:   c = silu(mlp.2(silu(mlp.0(e))))          (B,c)
 *        mod_l = adaLN_l(c), modF = output adaLN(c) (B,6d), (B,2d)
 *        x = vocab_embed[ids]                       (N,d)
 *        per block: n = ln(x) w1 (1 + scale1) + shift1; qkv = n Wqkv^T; rope(q, k)
 *                   x += gate1 (attention(qkv) Wout^T)
 *                   n = ln(x) w2 (1 + scale2) + shift2; x += gate2 (gelu_tanh(n W0^T + b0) W2^T + b2)
 *        out = (ln(x) wF (1 + scaleF) + shiftF) Wlin^T + blin        (N,V)
 *        "sedd": out -= log(expm1(sigma_b)) + log(V - 1) (with scaleBySigma), 0 at the current token
 * ```
 *
 * The LayerNorms are `gpuLayernormForward` with a zero bias, the modulation and gated residuals
 * the adaLN kernels (chunks shift, scale, gate for attention, then for the MLP), the rotary
 * embedding `gpuRopeForward` (rotate-half over the whole head, the tables of `ropeTables`, which
 * is the DiT's `rotary_emb.inv_freq` repeated over both halves). Three kernels are the DiT's own:
 *
 * - **attention** without a `(T,T)` buffer: one workgroup of 64 per query row walks the keys in
 *   chunks of 64 with a running maximum and sum (the softmax rescaled as the maximum grows), each
 *   invocation holding `ceil(HS/64)` output channels. Its workgroup memory is two arrays of 64
 *   floats whatever `T`, and nothing of size `T^2` is stored, so any `T` up to the context runs
 *   (SEDD's 1024 included) within the default limits.
 * - **GELU with the tanh approximation**, as `x / (1 + exp(-2u))`, `u = sqrt(2/pi)(x + 0.044715 x^3)`.
 * - **SEDD's output**: the per-sequence shift and the zeroed current-token entry, one pass.
 *
 * The parameters are uploaded once ({@linkcode createGpuDit}); the activations are allocated once
 * per `(B,T)`; a call writes the two small host inputs and records every dispatch into the
 * context's pending encoder, with no read-back.
 *
 * @module
 */

import { type DitModel, esigm1Log } from "../../model/dit.ts";
import { TIME_EMBED_DIM } from "../../model/layout.ts";
import { timestepEmbedding } from "../../nn/adaln.ts";
import { ropeTables } from "../../nn/attention.ts";
import { gpuGatedResidualForward, gpuModulateForward, gpuSiluForward } from "./adaln.ts";
import { ATTENTION_ROW, checkHeads, gpuRopeForward } from "./attention.ts";
import { checkDims, checkTensor, type GpuContext, GpuTensor, grid } from "./context.ts";
import { gpuEmbeddingForward } from "./embedding.ts";
import { gpuLayernormForward } from "./layernorm.ts";
import { gpuMatmulABt } from "./matmul.ts";
import { checkDenoiserIds } from "./sampler.ts";
import { entry, reductions } from "./wgsl.ts";

/** A DiT's parameters on the GPU: see {@linkcode createGpuDit}. */
export interface GpuDit {
  /** The context every tensor belongs to. */
  readonly ctx: GpuContext;
  /** The model uploaded (later changes to its `params` are not seen). */
  readonly model: DitModel;
  /** One tensor per state-dict name of `model.layout`. */
  readonly params: Readonly<Record<string, GpuTensor>>;
  /** Frees every parameter tensor; the GpuDit must not be used afterwards. */
  destroy(): void;
}

/** The largest buffer a kernel may bind on this device, in bytes. */
function bindLimit(ctx: GpuContext): number {
  const { maxStorageBufferBindingSize, maxBufferSize } = ctx.device.limits;
  return Math.min(maxStorageBufferBindingSize, maxBufferSize);
}

/**
 * Uploads a DiT's parameters, one {@linkcode GpuTensor} per state-dict tensor (every kernel binds
 * whole buffers, so each tensor starts at offset 0).
 *
 * @param ctx The context.
 * @param model A DiT of `src/model/dit.ts` (`config.kind` `"dit"`).
 * @returns The parameters on the GPU.
 * @throws TypeError for a model that is not a DiT; RangeError for a tensor larger than the
 *   device lets a kernel bind.
 *
 * @example The embedding table on the GPU
 * ```ts
 * import assert from "node:assert/strict";
 * import { acquireGpu, GpuContext } from "./mod.ts";
 * import { createGpuDit } from "./dit.ts";
 * import { createDit } from "../../model/dit.ts";
 *
 * const gpu = await acquireGpu();
 * if (gpu.ok) {
 *   const ctx = new GpuContext(gpu.device);
 *   const dit = createDit({ vocabSize: 9, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 *   const gd = createGpuDit(ctx, dit);
 *   assert.equal(gd.params["vocab_embed.embedding"].length, 9 * 8);
 *   await ctx.destroy();
 * }
 * ```
 */
export function createGpuDit(ctx: GpuContext, model: DitModel): GpuDit {
  const kind = (model?.config as { kind?: string } | undefined)?.kind;
  if (kind !== "dit" || !(model.params instanceof Float32Array)) {
    throw new TypeError(`createGpuDit: expected a DiT (config.kind "dit"), got kind ${kind}`);
  }
  const limit = bindLimit(ctx);
  const params: Record<string, GpuTensor> = {};
  for (const [name, { offset, shape }] of Object.entries(model.layout)) {
    const size = shape.reduce((a, b) => a * b, 1);
    if (4 * size > limit) {
      for (const t of Object.values(params)) t.destroy();
      throw new RangeError(
        `DiT too large for this GPU: expected tensors of at most ${limit} bytes, got ` +
          `${4 * size} for ${name} [${shape.join(", ")}]`,
      );
    }
    params[name] = ctx.upload(model.params.subarray(offset, offset + size));
  }
  return {
    ctx,
    model,
    params,
    destroy() {
      for (const t of Object.values(params)) t.destroy();
    },
  };
}

/** The activations of one forward pass of `B` sequences of `T` tokens. */
interface DitWorkspace {
  B: number;
  T: number;
  emb: GpuTensor; // (B,256) sinusoidal embedding of sigma, written per call
  shift: GpuTensor; // (B) SEDD's log(expm1(sigma)) + log(V - 1), written per call
  c1: GpuTensor; // (B,c) conditioning scratch
  c2: GpuTensor; // (B,c) conditioning scratch
  cv: GpuTensor; // (B,c) the conditioning vector
  mods: GpuTensor[]; // per block (B,6d)
  modF: GpuTensor; // (B,2d)
  x: GpuTensor; // (N,d) residual stream
  x2: GpuTensor; // (N,d) the stream's other buffer (the gated residual writes a fresh one)
  n: GpuTensor; // (N,d) normed
  nm: GpuTensor; // (N,d) normed and modulated
  mean: GpuTensor; // (N)
  rstd: GpuTensor; // (N)
  qkv: GpuTensor; // (N,3d)
  y: GpuTensor; // (N,d) attention output
  o: GpuTensor; // (N,d) a branch's output
  h: GpuTensor; // (N,4d) MLP hidden
  out: GpuTensor; // (N,V)
  zero: GpuTensor; // (d) the LayerNorms' absent bias
  cos: GpuTensor; // (T,HS/2)
  sin: GpuTensor; // (T,HS/2)
}

function createDitWorkspace(gd: GpuDit, B: number, T: number): DitWorkspace {
  const { ctx } = gd;
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: c, nLayers: L } = gd.model.config;
  const N = B * T, HS = d / NH;
  const limit = bindLimit(ctx);
  const largest: [string, number][] = [["(B*T,V) output", N * V], [
    "(B*T,4d) MLP hidden",
    4 * N * d,
  ]];
  for (const [what, n] of largest) {
    if (4 * n > limit) {
      throw new RangeError(
        `Batch too large for this GPU: expected tensors of at most ${limit} bytes, got ${4 * n} ` +
          `for the ${what} of ${B} sequences of ${T} tokens (lower the batch or the length)`,
      );
    }
  }
  const cos = new Float64Array(T * HS / 2), sin = new Float64Array(T * HS / 2);
  ropeTables(cos, sin, T, HS);
  const f = (n: number) => ctx.zeros(n);
  return {
    B,
    T,
    emb: f(B * TIME_EMBED_DIM),
    shift: f(B),
    c1: f(B * c),
    c2: f(B * c),
    cv: f(B * c),
    mods: Array.from({ length: L }, () => f(B * 6 * d)),
    modF: f(B * 2 * d),
    x: f(N * d),
    x2: f(N * d),
    n: f(N * d),
    nm: f(N * d),
    mean: f(N),
    rstd: f(N),
    qkv: f(3 * N * d),
    y: f(N * d),
    o: f(N * d),
    h: f(4 * N * d),
    out: f(N * V),
    zero: f(d),
    cos: ctx.upload(Float32Array.from(cos)),
    sin: ctx.upload(Float32Array.from(sin)),
  };
}

function destroyDitWorkspace(ws: DitWorkspace): void {
  for (const v of Object.values(ws)) {
    if (v instanceof GpuTensor) v.destroy();
  }
  for (const t of ws.mods) t.destroy();
}

/**
 * Records the forward pass (see the module doc); `sig` is the noise level the network reads per
 * sequence. Returns `ws.out`: `"sedd"` log-scores or `"logits"`, as `config.output` says.
 */
function ditForwardGpu(
  gd: GpuDit,
  ws: DitWorkspace,
  ids: GpuTensor,
  sig: Float64Array,
): GpuTensor {
  const { ctx, params: P } = gd;
  const cfg = gd.model.config;
  const { vocabSize: V, dModel: d, nHeads: NH, condDim: Cd, nLayers: L } = cfg;
  const { B, T } = ws;
  const N = B * T, E = TIME_EMBED_DIM;
  const emb = new Float32Array(B * E);
  timestepEmbedding(emb, sig, B, E);
  ctx.write(ws.emb, emb);
  const sedd = cfg.output === "sedd";
  if (sedd && cfg.scaleBySigma) {
    const shift = new Float32Array(B);
    for (let b = 0; b < B; b++) shift[b] = esigm1Log(sig[b]) + Math.log(V - 1);
    ctx.write(ws.shift, shift);
  }
  // conditioning, B rows
  const lin = (
    out: GpuTensor,
    inp: GpuTensor,
    name: string,
    rows: number,
    ic: number,
    oc: number,
  ) => gpuMatmulABt(ctx, out, inp, P[`${name}.weight`], P[`${name}.bias`] ?? null, rows, ic, oc);
  lin(ws.c1, ws.emb, "sigma_map.mlp.0", B, E, Cd);
  gpuSiluForward(ctx, ws.c2, ws.c1, B * Cd);
  lin(ws.c1, ws.c2, "sigma_map.mlp.2", B, Cd, Cd);
  gpuSiluForward(ctx, ws.cv, ws.c1, B * Cd);
  for (let l = 0; l < L; l++) lin(ws.mods[l], ws.cv, `blocks.${l}.adaLN_modulation`, B, Cd, 6 * d);
  lin(ws.modF, ws.cv, "output_layer.adaLN_modulation", B, Cd, 2 * d);

  gpuEmbeddingForward(ctx, ws.x, ids, P["vocab_embed.embedding"], null, B, T, d);
  let x = ws.x, next = ws.x2;
  const K6 = { K: 6, B, T, C: d };
  for (let l = 0; l < L; l++) {
    const p = `blocks.${l}`;
    const mod = ws.mods[l];
    // attention half: chunks 0, 1, 2 are shift, scale, gate
    gpuLayernormForward(ctx, ws.n, ws.mean, ws.rstd, x, P[`${p}.norm1.weight`], ws.zero, N, d);
    gpuModulateForward(ctx, ws.nm, ws.n, mod, 0, 1, K6);
    gpuMatmulABt(ctx, ws.qkv, ws.nm, P[`${p}.attn_qkv.weight`], null, N, d, 3 * d);
    gpuRopeForward(ctx, ws.qkv, ws.cos, ws.sin, B, T, d, NH);
    gpuDitAttention(ctx, ws.y, ws.qkv, B, T, d, NH);
    gpuMatmulABt(ctx, ws.o, ws.y, P[`${p}.attn_out.weight`], null, N, d, d);
    gpuGatedResidualForward(ctx, next, x, ws.o, mod, 2, K6);
    [x, next] = [next, x];
    // MLP half: chunks 3, 4, 5
    gpuLayernormForward(ctx, ws.n, ws.mean, ws.rstd, x, P[`${p}.norm2.weight`], ws.zero, N, d);
    gpuModulateForward(ctx, ws.nm, ws.n, mod, 3, 4, K6);
    lin(ws.h, ws.nm, `${p}.mlp.0`, N, d, 4 * d);
    gpuGeluTanh(ctx, ws.h, 4 * N * d);
    lin(ws.o, ws.h, `${p}.mlp.2`, N, 4 * d, d);
    gpuGatedResidualForward(ctx, next, x, ws.o, mod, 5, K6);
    [x, next] = [next, x];
  }
  const wF = P["output_layer.norm_final.weight"];
  gpuLayernormForward(ctx, ws.n, ws.mean, ws.rstd, x, wF, ws.zero, N, d);
  gpuModulateForward(ctx, ws.nm, ws.n, ws.modF, 0, 1, { K: 2, B, T, C: d });
  lin(ws.out, ws.nm, "output_layer.linear", N, d, V);
  if (sedd) gpuSeddOutput(ctx, ws.out, ids, cfg.scaleBySigma ? ws.shift : null, B, T, V);
  return ws.out;
}

/** Options of {@linkcode createGpuDitDenoiser}. */
export interface GpuDitDenoiserOptions {
  /** Sequences of the first workspace (default: sized by the first call). */
  batch?: number;
  /** Tokens per sequence of the first workspace (default: sized by the first call). */
  context?: number;
  /**
   * Whether the network reads sigma. False gives it sigma 0 at every call, as `sample()` does for
   * a DiT trained without time conditioning (MDLM's default). Default true.
   */
  timeConditioned?: boolean;
}

/** The `GpuDenoiser` (`sampler.ts`) of {@linkcode createGpuDitDenoiser}, with a way to free it. */
export interface GpuDitDenoiser {
  /**
   * The network: ids `(B*T)` i32 and sigma `(B)` in, the `(B*T*V)` output out (valid until the
   * next call), recorded into the context's pending encoder.
   */
  (ids: GpuTensor, sigma: Float32Array, batch: number): GpuTensor;
  /**
   * Frees the activations, and the parameters where the denoiser uploaded them itself (a
   * {@linkcode GpuDit} passed in stays for its owner to destroy). Calls afterwards throw.
   */
  dispose(): void;
}

/** Throws unless `sigma` holds `B` noise levels the DiT accepts; returns what the network reads. */
function networkSigma(
  model: DitModel,
  sigma: Float32Array,
  B: number,
  timeConditioned: boolean,
): Float64Array {
  if (!(sigma instanceof Float32Array) || sigma.length !== B) {
    throw new RangeError(
      `Invalid sigma: expected a Float32Array of ${B} noise levels, got ${
        sigma instanceof Float32Array ? `${sigma.length} values` : typeof sigma
      }`,
    );
  }
  const sig = timeConditioned ? Float64Array.from(sigma) : new Float64Array(B);
  const positive = model.config.output === "sedd" && model.config.scaleBySigma;
  for (let b = 0; b < B; b++) {
    const v = sig[b];
    if (!Number.isFinite(v) || v < 0 || (positive && v === 0)) {
      throw new RangeError(
        `Invalid sigma[${b}]${timeConditioned ? "" : " (timeConditioned false: 0)"}: expected a ` +
          `finite value ${positive ? "> 0 (scaleBySigma)" : ">= 0"}, got ${v}`,
      );
    }
  }
  return sig;
}

/**
 * A `GpuDenoiser` (`sampler.ts`) running a DiT on the GPU: for ids `(B*T)` and sigma `(B)` it records
 * the forward pass into the context's pending encoder (only the sigma embedding and SEDD's
 * per-sequence shift are written first; no read-back) and returns the `(B*T*V)` output the CPU
 * DiT denoiser of `sample()` gives: with `config.output` `"sedd"`, SEDD's log-scores (shifted by
 * `log(expm1(sigma)) + log(V - 1)` under `scaleBySigma`, 0 at each position's current token);
 * with `"logits"`, the output layer's logits (MDLM's; the samplers apply SUBS). The activations
 * fit the call's `(B,T)` exactly and are replaced when the shape changes, so the returned tensor
 * is valid until the next call.
 *
 * @param ctx The context (the ids passed in must belong to it).
 * @param model A DiT (uploaded now), or one already on the GPU from {@linkcode createGpuDit}.
 * @param options The first workspace's shape, and `timeConditioned`.
 * @returns The denoiser, for `sampleIdsGpu`, with its `dispose`.
 *
 * @example SEDD's log-scores of one sequence, on the GPU
 * ```ts
 * import assert from "node:assert/strict";
 * import { acquireGpu, GpuContext } from "./mod.ts";
 * import { createGpuDitDenoiser } from "./dit.ts";
 * import { createDit } from "../../model/dit.ts";
 *
 * const gpu = await acquireGpu();
 * if (gpu.ok) {
 *   const ctx = new GpuContext(gpu.device);
 *   const dit = createDit({ vocabSize: 9, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 *   const denoise = createGpuDitDenoiser(ctx, dit);
 *   const out = await ctx.readF32(denoise(ctx.upload(new Int32Array([8, 1, 8, 2])), new Float32Array([1]), 1));
 *   assert.equal(out.length, 4 * 9);
 *   assert.equal(out[1 * 9 + 1], 0); // the current token's entry
 *   await ctx.destroy();
 * }
 * ```
 */
export function createGpuDitDenoiser(
  ctx: GpuContext,
  model: DitModel | GpuDit,
  options: GpuDitDenoiserOptions = {},
): GpuDitDenoiser {
  const owned = !("ctx" in model);
  const gd = "ctx" in model ? model : createGpuDit(ctx, model);
  if (gd.ctx !== ctx) {
    throw new RangeError("createGpuDitDenoiser: expected a GpuDit of this context, got another's");
  }
  const cfg = gd.model.config;
  const timeConditioned = options.timeConditioned ?? true;
  let ws: DitWorkspace | null = options.batch !== undefined && options.context !== undefined
    ? createDitWorkspace(gd, options.batch, options.context)
    : null;
  let disposed = false;
  const denoise = (ids: GpuTensor, sigma: Float32Array, batch: number): GpuTensor => {
    if (disposed) throw new Error("GPU DiT denoiser: expected a live denoiser, got a disposed one");
    const T = checkDenoiserIds(ids, batch, cfg.context);
    const sig = networkSigma(gd.model, sigma, batch, timeConditioned);
    if (ws === null || ws.B !== batch || ws.T !== T) {
      if (ws) destroyDitWorkspace(ws);
      ws = createDitWorkspace(gd, batch, T);
    }
    return ditForwardGpu(gd, ws, ids, sig);
  };
  const dispose = () => {
    if (disposed) return;
    disposed = true;
    if (ws) destroyDitWorkspace(ws);
    ws = null;
    if (owned) gd.destroy();
  };
  return Object.assign(denoise, { dispose });
}

/** Invocations per workgroup of the attention kernel, and keys per chunk. */
const ATT_WG = 64;

/**
 * Bidirectional attention per head without a `(T,T)` buffer: `out = softmax(q k^T / sqrt(HS)) v`,
 * heads concatenated along channels, as `attentionForward` of `src/nn/attention.ts` without
 * dropout. One workgroup per query row; keys in chunks of 64 with a running maximum `m` and sum
 * `s`: a chunk's weights are `exp(score - m')` for the new maximum `m'`, and what was summed so
 * far is scaled by `exp(m - m')`.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(B,T,C)`.
 * @param qkv Packed projections, `(B,T,3C)` (q, k already rotated).
 * @param B Batch size.
 * @param T Sequence length.
 * @param C Channels.
 * @param NH Heads (dividing C).
 */
export function gpuDitAttention(
  ctx: GpuContext,
  out: GpuTensor,
  qkv: GpuTensor,
  B: number,
  T: number,
  C: number,
  NH: number,
): void {
  checkDims("gpuDitAttention", { B, T, C, NH });
  const HS = checkHeads("gpuDitAttention", C, NH);
  checkTensor("gpuDitAttention out (B,T,C)", out, B * T * C);
  checkTensor("gpuDitAttention qkv (B,T,3C)", qkv, B * T * 3 * C);
  if (B * T * C === 0) return;
  const K = Math.ceil(HS / ATT_WG); // output channels per invocation
  const pipeline = ctx.pipeline(
    `ditAttention${K}`,
    () =>
      `struct Params { rows: u32, T: u32, C: u32, NH: u32, HS: u32, scale: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> w: array<f32, ${ATT_WG}>;
${reductions(ATT_WG)}
${entry(ATT_WG)}
${ATTENTION_ROW}
  let q = head + t * C3; // the query row
  var m = -3.402823466e38;
  var s = 0.0;
  var acc: array<f32, ${K}>;
  for (var c0 = 0u; c0 < p.T; c0 += ${ATT_WG}u) {
    let t2 = c0 + l;
    var sc = -3.402823466e38;
    if (t2 < p.T) {
      let k = head + p.C + t2 * C3;
      var dot = 0.0;
      for (var i = 0u; i < p.HS; i++) { dot += qkv[q + i] * qkv[k + i]; }
      sc = dot * p.scale;
    }
    let m2 = max(m, wgMax(sc, l));
    var e = 0.0;
    if (t2 < p.T) { e = exp(sc - m2); }
    w[l] = e;
    let alpha = exp(m - m2);
    s = s * alpha + wgSum(e, l); // its barriers make every w[] visible
    let n = min(${ATT_WG}u, p.T - c0);
    for (var j = 0u; j < ${K}u; j++) {
      let i = l + ${ATT_WG}u * j;
      if (i < p.HS) {
        let v = head + 2u * p.C + c0 * C3 + i;
        var a = acc[j] * alpha;
        for (var u = 0u; u < n; u++) { a += w[u] * qkv[v + u * C3]; }
        acc[j] = a;
      }
    }
    m = m2;
    workgroupBarrier();
  }
  let y = (b * p.T + t) * p.C + h * p.HS;
  let inv = 1.0 / s;
  for (var j = 0u; j < ${K}u; j++) {
    let i = l + ${ATT_WG}u * j;
    if (i < p.HS) { out[y + i] = acc[j] * inv; }
  }
}`,
  );
  const rows = B * NH * T;
  ctx.dispatch(pipeline, [out, qkv], [rows, T, C, NH, HS, 1 / Math.sqrt(HS)], grid(rows), [5]);
}

const WG = 256;

/**
 * GELU with the tanh approximation IN PLACE (the DiT's MLP), as `geluTanh` of
 * `src/model/dit.ts`: `0.5 x (1 + tanh(u)) = x / (1 + exp(-2u))`, `u = sqrt(2/pi)(x + 0.044715 x^3)`.
 *
 * @param ctx The context.
 * @param a Values, `(n)`, overwritten with their activation.
 * @param n Elements.
 */
export function gpuGeluTanh(ctx: GpuContext, a: GpuTensor, n: number): void {
  checkDims("gpuGeluTanh", { n });
  checkTensor("gpuGeluTanh a (n)", a, n);
  const pipeline = ctx.pipeline(
    "geluTanh",
    () =>
      `struct Params { n: u32 }
@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
${entry(WG)}
  let i = group * ${WG}u + l;
  if (i >= p.n) { return; }
  let x = a[i];
  let u = ${2 * Math.sqrt(2 / Math.PI)} * (x + 0.044715 * x * x * x);
  a[i] = x / (1.0 + exp(-u));
}`,
  );
  ctx.dispatch(pipeline, [a], [n], grid(Math.ceil(n / WG)));
}

/**
 * SEDD's output from the output layer's logits IN PLACE: minus `shift[b]` for every entry of
 * sequence `b` (where `shift` is given: scale-by-sigma), and 0 at each position's current token.
 *
 * @param ctx The context.
 * @param out Logits, `(B,T,V)`, overwritten.
 * @param ids Current tokens, `(B,T)` i32.
 * @param shift Per sequence `log(expm1(sigma)) + log(V - 1)`, `(B)`, or null for no shift.
 * @param B Batch size.
 * @param T Sequence length.
 * @param V Vocabulary size.
 */
export function gpuSeddOutput(
  ctx: GpuContext,
  out: GpuTensor,
  ids: GpuTensor,
  shift: GpuTensor | null,
  B: number,
  T: number,
  V: number,
): void {
  checkDims("gpuSeddOutput", { B, T, V });
  const n = B * T * V;
  if (n > 0xffffffff) throw new RangeError(`gpuSeddOutput: expected B*T*V < 2^32, got ${n}`);
  checkTensor("gpuSeddOutput out (B,T,V)", out, n);
  checkTensor("gpuSeddOutput ids (B,T)", ids, B * T, "i32");
  if (shift) checkTensor("gpuSeddOutput shift (B)", shift, B);
  const pipeline = ctx.pipeline(
    "seddOutput",
    () =>
      `struct Params { n: u32, T: u32, V: u32, shifted: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> shift: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${entry(WG)}
  let i = group * ${WG}u + l;
  if (i >= p.n) { return; }
  let row = i / p.V;
  if (u32(ids[row]) == i - row * p.V) {
    out[i] = 0.0;
  } else if (p.shifted != 0u) {
    out[i] = out[i] - shift[row / p.T];
  }
}`,
  );
  ctx.dispatch(
    pipeline,
    [out, ids, shift ?? ctx.dummy],
    [n, T, V, shift ? 1 : 0],
    grid(Math.ceil(n / WG)),
  );
}
