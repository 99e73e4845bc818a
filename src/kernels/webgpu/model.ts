/**
 * The whole denoising transformer of `src/model/` on the GPU: its parameters as one
 * {@linkcode GpuTensor} per state-dict tensor, a workspace of GPU tensors sized exactly as
 * `src/model/workspace.ts` sizes the CPU one, and the forward and backward passes of
 * `src/model/embed.ts`, `block.ts` and `head.ts` line for line on the WGSL kernels (post-norm,
 * pre-norm, and pre-norm with adaLN time conditioning; learned or rotary positions; ReLU or
 * GELU; dropout). The passes only record dispatches into the context's pending encoder: nothing
 * is read back.
 *
 * What the host still computes, because it is a function of host inputs alone and costs nothing:
 * the sinusoidal embedding of sigma (in float64, as `timestepEmbedding`), the RoPE tables, and
 * the dropout masks, drawn by `drawMasks` of `src/model/block.ts` from the very stream the CPU
 * backends use (`new Rng(seed, step, firstRow + b, 1)`), then uploaded. The head always runs on
 * every row (the CPU backends' compaction to the weighted rows is a speed-up of the same math).
 *
 * Dimensions: `B` batch, `T` sequence, `C` channels, `F` feed-forward size, `V` vocabulary,
 * `L` layers, `NH` heads, `HS = C / NH`, `N = B * T`.
 *
 * @module
 */

import type { Model } from "../../model/model.ts";
import type { ModelConfig } from "../../model/config.ts";
import type { DropoutKeys } from "../../model/model.ts";
import { type Layout, TIME_EMBED_DIM } from "../../model/layout.ts";
import { workspaceBuffers } from "../../model/workspace.ts";
import { drawMasks, type DropoutMasks } from "../../model/block.ts";
import { ropeTables } from "../../nn/attention.ts";
import { timestepEmbedding } from "../../nn/adaln.ts";
import { checkTensor, type GpuContext, GpuTensor } from "./context.ts";
import { gpuLinearBackward, gpuLinearForward, gpuResidualForward } from "./linear.ts";
import { gpuLayernormBackward, gpuLayernormForward } from "./layernorm.ts";
import {
  gpuGeluForwardKeepGrad,
  gpuReluBackward,
  gpuReluForward,
  gpuScaleBackward,
} from "./activations.ts";
import { gpuAttentionBackward, gpuAttentionForward, gpuRopeForward } from "./attention.ts";
import { gpuEmbeddingBackward, gpuEmbeddingForward } from "./embedding.ts";
import {
  gpuGatedResidualBackward,
  gpuGatedResidualForward,
  gpuModulateBackward,
  gpuModulateForward,
  gpuSiluBackward,
  gpuSiluForward,
} from "./adaln.ts";
import { gpuCopy, gpuDropoutBackward, gpuDropoutInPlace } from "./elementwise.ts";
import { checkDenoiserIds, type GpuDenoiser } from "./sampler.ts";

/** `T` with every typed array replaced by a {@linkcode GpuTensor} (arrays and objects mapped). */
export type OnGpu<T> = T extends Float32Array | Float64Array | Int32Array ? GpuTensor
  : T extends readonly (infer U)[] ? OnGpu<U>[]
  : T extends object ? { -readonly [K in keyof T]: OnGpu<T[K]> }
  : T;

/** The parameter tensors of one layer on the GPU (the fields of `LayerTensors`). */
export interface GpuLayerTensors {
  /** `self_attn.in_proj_weight`, `(3C,C)`. */
  inProjW: GpuTensor;
  /** `self_attn.in_proj_bias`, `(3C)`. */
  inProjB: GpuTensor;
  /** `self_attn.out_proj.weight`, `(C,C)`. */
  outProjW: GpuTensor;
  /** `self_attn.out_proj.bias`, `(C)`. */
  outProjB: GpuTensor;
  /** `linear1.weight`, `(F,C)`. */
  lin1W: GpuTensor;
  /** `linear1.bias`, `(F)`. */
  lin1B: GpuTensor;
  /** `linear2.weight`, `(C,F)`. */
  lin2W: GpuTensor;
  /** `linear2.bias`, `(C)`. */
  lin2B: GpuTensor;
  /** `norm1.weight`, `(C)`. */
  norm1W: GpuTensor;
  /** `norm1.bias`, `(C)`. */
  norm1B: GpuTensor;
  /** `norm2.weight`, `(C)`. */
  norm2W: GpuTensor;
  /** `norm2.bias`, `(C)`. */
  norm2B: GpuTensor;
  /** `adaLN_modulation.weight`, `(6C,C)`, or `null` without time conditioning. */
  adaW: GpuTensor | null;
  /** `adaLN_modulation.bias`, `(6C)`, or `null`. */
  adaB: GpuTensor | null;
}

/** Every parameter tensor on the GPU, by role (the fields of `ModelTensors`). */
export interface GpuModelTensors {
  /** `embed.weight`, `(V,C)`. */
  embed: GpuTensor;
  /** `pos_embed.weight`, `(context,C)`, or `null` (rotary). */
  posEmbed: GpuTensor | null;
  /** One entry per layer. */
  layers: GpuLayerTensors[];
  /** `transformer.norm.weight`, `(C)`, or `null` (post-norm). */
  normW: GpuTensor | null;
  /** `transformer.norm.bias`, `(C)`, or `null`. */
  normB: GpuTensor | null;
  /** `sigma_map.mlp.0.weight`, `(C,256)`, or `null`. */
  sigma0W: GpuTensor | null;
  /** `sigma_map.mlp.0.bias`, `(C)`, or `null`. */
  sigma0B: GpuTensor | null;
  /** `sigma_map.mlp.2.weight`, `(C,C)`, or `null`. */
  sigma2W: GpuTensor | null;
  /** `sigma_map.mlp.2.bias`, `(C)`, or `null`. */
  sigma2B: GpuTensor | null;
  /** `final_adaLN_modulation.weight`, `(2C,C)`, or `null`. */
  finalAdaW: GpuTensor | null;
  /** `final_adaLN_modulation.bias`, `(2C)`, or `null`. */
  finalAdaB: GpuTensor | null;
  /** `head.weight`, `(V,C)`. */
  headW: GpuTensor;
  /** `head.bias`, `(V)`. */
  headB: GpuTensor;
}

/**
 * A set of tensors with the parameters' layout on the GPU: one tensor per state-dict name
 * (`byName`, in layout order) and the same tensors by role (`views`). Parameters, gradients and
 * both AdamW moments are each one such set.
 */
export interface GpuParamSet {
  /** State-dict name -> tensor, in the layout's order. */
  readonly byName: ReadonlyMap<string, GpuTensor>;
  /** The same tensors by role. */
  readonly views: GpuModelTensors;
}

const LAYER_NAMES: [keyof GpuLayerTensors, string][] = [
  ["inProjW", "self_attn.in_proj_weight"],
  ["inProjB", "self_attn.in_proj_bias"],
  ["outProjW", "self_attn.out_proj.weight"],
  ["outProjB", "self_attn.out_proj.bias"],
  ["lin1W", "linear1.weight"],
  ["lin1B", "linear1.bias"],
  ["lin2W", "linear2.weight"],
  ["lin2B", "linear2.bias"],
  ["norm1W", "norm1.weight"],
  ["norm1B", "norm1.bias"],
  ["norm2W", "norm2.weight"],
  ["norm2B", "norm2.bias"],
  ["adaW", "adaLN_modulation.weight"],
  ["adaB", "adaLN_modulation.bias"],
];

const TOP_NAMES: [Exclude<keyof GpuModelTensors, "layers">, string][] = [
  ["embed", "embed.weight"],
  ["posEmbed", "pos_embed.weight"],
  ["normW", "transformer.norm.weight"],
  ["normB", "transformer.norm.bias"],
  ["sigma0W", "sigma_map.mlp.0.weight"],
  ["sigma0B", "sigma_map.mlp.0.bias"],
  ["sigma2W", "sigma_map.mlp.2.weight"],
  ["sigma2B", "sigma_map.mlp.2.bias"],
  ["finalAdaW", "final_adaLN_modulation.weight"],
  ["finalAdaB", "final_adaLN_modulation.bias"],
  ["headW", "head.weight"],
  ["headB", "head.bias"],
];

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * A parameter set on the GPU: one tensor per layout entry, filled from `flat` (the parameters'
 * layout) or zero.
 *
 * @param ctx The context.
 * @param layout The model's layout.
 * @param config The model's config.
 * @param flat Values in the layout's order (`model.params`, AdamW's `m` or `v`), or `null` for
 *   zeros.
 * @returns The set.
 */
export function createGpuParamSet(
  ctx: GpuContext,
  layout: Layout,
  config: ModelConfig,
  flat: Float32Array | null,
): GpuParamSet {
  const byName = new Map<string, GpuTensor>();
  for (const [name, { offset, shape }] of Object.entries(layout)) {
    const n = sizeOf(shape);
    byName.set(name, flat ? ctx.upload(flat.subarray(offset, offset + n)) : ctx.zeros(n));
  }
  const get = (name: string): GpuTensor | null => byName.get(name) ?? null;
  const layers: GpuLayerTensors[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const entry = {} as Record<keyof GpuLayerTensors, GpuTensor | null>;
    for (const [key, suffix] of LAYER_NAMES) entry[key] = get(`transformer.layers.${l}.${suffix}`);
    layers.push(entry as GpuLayerTensors);
  }
  const top = {} as Record<string, GpuTensor | null>;
  for (const [key, name] of TOP_NAMES) top[key] = get(name);
  return { byName, views: { ...top, layers } as unknown as GpuModelTensors };
}

/**
 * Overwrites a parameter set from values in the layout's order.
 *
 * @param ctx The context.
 * @param set The set.
 * @param layout The layout.
 * @param flat The values.
 */
export function writeGpuParamSet(
  ctx: GpuContext,
  set: GpuParamSet,
  layout: Layout,
  flat: Float32Array,
): void {
  for (const [name, t] of set.byName) {
    const { offset } = layout[name];
    ctx.write(t, flat.subarray(offset, offset + t.length));
  }
}

/**
 * Reads a parameter set back into one buffer in the layout's order (gathered on the GPU, then
 * one read-back).
 *
 * @param ctx The context.
 * @param set The set.
 * @param layout The layout.
 * @param out Where to write (a new buffer if absent); its length is the layout's size.
 * @returns `out`.
 */
export async function readGpuParamSet(
  ctx: GpuContext,
  set: GpuParamSet,
  layout: Layout,
  out?: Float32Array,
): Promise<Float32Array> {
  let size = 0;
  for (const { offset, shape } of Object.values(layout)) {
    size = Math.max(size, offset + sizeOf(shape));
  }
  const dst = out ?? new Float32Array(size);
  // every tensor copied into one buffer on the GPU, then one read-back
  const flat = ctx.zeros(size);
  try {
    for (const [name, t] of set.byName) gpuCopy(ctx, flat, t, t.length, layout[name].offset);
    dst.set(await ctx.readF32(flat));
  } finally {
    flat.destroy();
  }
  return dst;
}

/** Zeroes every tensor of a set (recorded into the pending encoder). */
export function clearGpuParamSet(ctx: GpuContext, set: GpuParamSet): void {
  for (const t of set.byName.values()) ctx.clear(t);
}

/** The model on the GPU: config, layout, and its parameters as GPU tensors. */
export interface GpuModel {
  /** The context every tensor belongs to. */
  readonly ctx: GpuContext;
  /** The model's config. */
  readonly config: ModelConfig;
  /** The layout (state-dict names, offsets, shapes) of the host model. */
  readonly layout: Layout;
  /** The parameters. */
  readonly params: GpuParamSet;
}

/**
 * Uploads a model's parameters.
 *
 * @param ctx The context.
 * @param model A model of `src/model/` (a DiT is not supported on the GPU).
 * @returns The model on the GPU.
 */
export function createGpuModel(ctx: GpuContext, model: Model): GpuModel {
  if ((model.config as { kind?: unknown }).kind === "dit") {
    throw new TypeError(
      'WebGPU model: expected a transformer of src/model/model.ts, got a DiT (kind "dit")',
    );
  }
  return {
    ctx,
    config: model.config,
    layout: model.layout,
    params: createGpuParamSet(ctx, model.layout, model.config, model.params),
  };
}

/** The CPU workspace's buffers that the GPU one holds as tensors. */
type WorkspaceArrays = ReturnType<typeof workspaceBuffers>;

/**
 * A GPU workspace: the buffers of the CPU workspace (`src/model/workspace.ts`, same sizes, same
 * names, as GPU tensors), plus what the GPU passes need besides: the attention backward's
 * scratch, the loss's targets, weights and per-sequence constants, the loss and gradient
 * statistics, and the dropout masks' host copies (drawn there, then uploaded).
 */
export interface GpuWorkspace extends
  Omit<
    OnGpu<WorkspaceArrays>,
    "config" | "B" | "T" | "lastB" | "lastT" | "lastDropout" | "lastHeadRows"
  > {
  /** The config it was sized for. */
  readonly config: ModelConfig;
  /** Capacity: most sequences. */
  readonly B: number;
  /** Capacity: longest sequence. */
  readonly T: number;
  /** Shape of the last forward pass (0 before any). */
  lastB: number;
  /** Sequence length of the last forward pass. */
  lastT: number;
  /** Whether the last forward pass applied dropout. */
  lastDropout: boolean;
  /** The ids the last forward pass read, `(N)` i32. */
  lastInput: GpuTensor | null;
  /** Attention backward scratch, `(B,NH,T,T)`. */
  readonly attScratch: GpuTensor;
  /** Loss targets (clean ids), `(N)` i32. */
  readonly targets: GpuTensor;
  /** Loss weights per position, `(N)`. */
  readonly weights: GpuTensor;
  /** Per-sequence loss constants (score entropy), `(B,5)`. */
  readonly consts: GpuTensor;
  /** `(2)`: the loss at 0, the gradient's sum of squares at 1. */
  readonly stats: GpuTensor;
  /** Host copies of the dropout masks, drawn by `drawMasks`, or `null` without dropout. */
  readonly hostMasks: DropoutMasks[] | null;
  /** Host scratch for the sigma embedding, `(B,256)`. */
  readonly hostTemb: Float32Array;
}

/**
 * Allocates a GPU workspace for batches of up to `B` sequences of up to `T` tokens.
 *
 * @param gm The model on the GPU.
 * @param B Most sequences.
 * @param T Longest sequence, at most `config.context`.
 * @returns The workspace.
 */
export function createGpuWorkspace(gm: GpuModel, B: number, T: number): GpuWorkspace {
  const { ctx, config } = gm;
  for (const [name, v] of [["batch size", B], ["sequence length", T]] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`Invalid ${name}: expected a positive integer, got ${v}`);
    }
  }
  if (T > config.context) {
    throw new RangeError(`Sequence too long: expected T <= context ${config.context}, got ${T}`);
  }
  const { dModel: C, nHeads: NH, dFF: F } = config;
  const bufs = workspaceBuffers(config, B, T, {
    f32: (n) => ctx.zeros(n) as unknown as Float32Array,
    i32: (n) => ctx.zeros(n, "i32") as unknown as Int32Array,
    f64: (n) => ctx.zeros(n) as unknown as Float64Array,
  }, false) as unknown as OnGpu<WorkspaceArrays>;
  const HS = C / NH;
  if (config.positions === "rotary") {
    const n = T * HS / 2;
    const cos = new Float64Array(n), sin = new Float64Array(n);
    ropeTables(cos, sin, T, HS);
    ctx.write(bufs.cos, Float32Array.from(cos));
    ctx.write(bufs.sin, Float32Array.from(sin));
  }
  const N = B * T;
  const hostMasks = config.dropout > 0
    ? Array.from({ length: config.nLayers }, () => ({
      maskAtt: new Float32Array(B * NH * T * T),
      mask1: new Float32Array(N * C),
      maskF: new Float32Array(N * F),
      mask2: new Float32Array(N * C),
    }))
    : null;
  return {
    ...bufs,
    config,
    B,
    T,
    lastB: 0,
    lastT: 0,
    lastDropout: false,
    lastInput: null,
    attScratch: ctx.zeros(B * NH * T * T),
    targets: ctx.zeros(N, "i32"),
    weights: ctx.zeros(N),
    consts: ctx.zeros(5 * B),
    stats: ctx.zeros(2),
    hostMasks,
    hostTemb: new Float32Array(B * TIME_EMBED_DIM),
  };
}

/** Options of {@linkcode gpuModelForward}. */
export interface GpuForwardOptions {
  /** Training-mode dropout keys (with `config.dropout > 0`); absent: eval mode. */
  dropout?: DropoutKeys;
  /** Noise level per sequence `(B)`: required by a time-conditioned model. */
  sigma?: ArrayLike<number>;
}

/**
 * Records the forward pass of `B` sequences of `T` ids on the GPU and returns the logits tensor
 * (`ws.logits`; its first `B*T*V` values are the logits, overwritten by the next call). The
 * sigma embedding and the dropout masks are uploaded first (each upload submits what is
 * pending, in order); then every dispatch goes into the pending encoder, nothing is read back.
 *
 * @param gm The model on the GPU.
 * @param ws A workspace of this model with room for `(B,T)`.
 * @param ids Token ids, `(B*T)` i32, on the GPU (not checked against the vocabulary there).
 * @param B Sequences.
 * @param T Tokens per sequence.
 * @param options `dropout` keys for training, `sigma` for a time-conditioned model.
 * @returns The logits, `(B,T,V)` at the front of `ws.logits`.
 */
export function gpuModelForward(
  gm: GpuModel,
  ws: GpuWorkspace,
  ids: GpuTensor,
  B: number,
  T: number,
  options: GpuForwardOptions = {},
): GpuTensor {
  const cfg = gm.config;
  if (ws.config !== cfg) {
    throw new RangeError("Workspace mismatch: expected one created for this model's config");
  }
  if (!Number.isInteger(B) || !Number.isInteger(T) || B < 1 || T < 1 || B > ws.B || T > ws.T) {
    throw new RangeError(
      `Batch too large for workspace: expected 1 <= B <= ${ws.B} and 1 <= T <= ${ws.T}, got B ${B}, T ${T}`,
    );
  }
  checkTensor("gpuModelForward ids (B*T)", ids, B * T, "i32");
  const ctx = gm.ctx;
  const tm = ws.time;
  if (tm) {
    const sigma = options.sigma;
    if (!sigma || sigma.length < B) {
      throw new TypeError(
        `Missing sigma: expected ${B} noise levels for a time-conditioned model, got ${
          sigma ? sigma.length : "none"
        }`,
      );
    }
    timestepEmbedding(ws.hostTemb, sigma, B, TIME_EMBED_DIM);
    ctx.write(tm.temb, ws.hostTemb.subarray(0, B * TIME_EMBED_DIM));
  }
  const useDrop = options.dropout !== undefined && cfg.dropout > 0;
  if (useDrop) {
    const masks = ws.hostMasks!;
    drawMasks({ config: cfg, layers: masks }, options.dropout!, B, T);
    const { dModel: C, dFF: F, nHeads: NH } = cfg;
    const N = B * T;
    ws.layers.forEach((a, l) => {
      const h = masks[l];
      ctx.write(a.maskAtt!, h.maskAtt!.subarray(0, B * NH * T * T));
      ctx.write(a.mask1!, h.mask1!.subarray(0, N * C));
      ctx.write(a.maskF!, h.maskF!.subarray(0, N * F));
      ctx.write(a.mask2!, h.mask2!.subarray(0, N * C));
    });
  }
  ws.lastB = B;
  ws.lastT = T;
  ws.lastDropout = useDrop;
  ws.lastInput = ids;
  const P = gm.params.views;
  embedForward(gm, ws, P, ids);
  for (let l = 0; l < cfg.nLayers; l++) layerForward(gm, ws, P, l);
  return finalForward(gm, ws, P);
}

/**
 * Records the backward pass of the last {@linkcode gpuModelForward} on `ws` from `ws.dlogits`
 * (the loss's gradient of the logits, `(B,T,V)` at its front) and ADDS the parameter gradients
 * into `grads`.
 *
 * @param gm The model on the GPU (parameters unchanged since the forward pass).
 * @param ws The workspace of the forward pass.
 * @param grads Gradient set (see {@linkcode createGpuParamSet}), added into.
 */
export function gpuModelBackward(gm: GpuModel, ws: GpuWorkspace, grads: GpuParamSet): void {
  if (ws.lastB === 0 || ws.lastInput === null) {
    throw new RangeError(
      "No forward pass to differentiate: expected gpuModelForward first, got none",
    );
  }
  const P = gm.params.views, G = grads.views;
  if (ws.time) gm.ctx.clear(ws.time.dcond);
  finalBackward(gm, ws, P, G);
  for (let l = gm.config.nLayers - 1; l >= 0; l--) layerBackward(gm, ws, P, G, l);
  embedBackward(gm, ws, P, G);
}

// The passes below are those of src/model/embed.ts, block.ts and head.ts, op for op.

function embedForward(gm: GpuModel, ws: GpuWorkspace, P: GpuModelTensors, ids: GpuTensor): void {
  const ctx = gm.ctx, C = gm.config.dModel;
  const B = ws.lastB, T = ws.lastT;
  const tm = ws.time;
  if (tm) {
    gpuLinearForward(ctx, tm.h1, tm.temb, P.sigma0W!, P.sigma0B!, B, TIME_EMBED_DIM, C);
    gpuSiluForward(ctx, tm.a1, tm.h1, B * C);
    gpuLinearForward(ctx, tm.h2, tm.a1, P.sigma2W!, P.sigma2B!, B, C, C);
    gpuSiluForward(ctx, tm.cond, tm.h2, B * C);
    gpuLinearForward(ctx, tm.finalMod, tm.cond, P.finalAdaW!, P.finalAdaB!, B, C, 2 * C);
  }
  gpuEmbeddingForward(ctx, ws.resid[0], ids, P.embed, P.posEmbed, B, T, C);
}

function embedBackward(
  gm: GpuModel,
  ws: GpuWorkspace,
  P: GpuModelTensors,
  G: GpuModelTensors,
): void {
  const ctx = gm.ctx, C = gm.config.dModel;
  const B = ws.lastB, T = ws.lastT;
  gpuEmbeddingBackward(ctx, G.embed, G.posEmbed, ws.dresid, ws.lastInput!, B, T, C);
  const tm = ws.time;
  if (!tm) return;
  ctx.clear(tm.dh2);
  gpuSiluBackward(ctx, tm.dh2, tm.dcond, tm.h2, B * C);
  ctx.clear(tm.da1);
  gpuLinearBackward(ctx, tm.da1, G.sigma2W!, G.sigma2B!, tm.dh2, tm.a1, P.sigma2W!, B, C, C);
  ctx.clear(tm.dh1);
  gpuSiluBackward(ctx, tm.dh1, tm.da1, tm.h1, B * C);
  gpuLinearBackward(
    ctx,
    null,
    G.sigma0W!,
    G.sigma0B!,
    tm.dh1,
    tm.temb,
    P.sigma0W!,
    B,
    TIME_EMBED_DIM,
    C,
  );
}

function layerForward(gm: GpuModel, ws: GpuWorkspace, P: GpuModelTensors, l: number): void {
  const ctx = gm.ctx, cfg = gm.config;
  const { dModel: C, dFF: F, nHeads: NH } = cfg;
  const B = ws.lastB, T = ws.lastT, N = B * T;
  const useDrop = ws.lastDropout;
  const w = P.layers[l], a = ws.layers[l];
  const x = ws.resid[l], out = ws.resid[l + 1];
  const pre = cfg.normFirst;
  const tm = ws.time;
  const shape = { K: 6, B, T, C };
  if (tm) gpuLinearForward(ctx, a.mod, tm.cond, w.adaW!, w.adaB!, B, C, 6 * C);

  let saIn = x;
  if (pre) {
    gpuLayernormForward(ctx, a.ln1, a.ln1Mean, a.ln1Rstd, x, w.norm1W, w.norm1B, N, C);
    saIn = a.ln1;
    if (tm) {
      gpuModulateForward(ctx, a.m1, a.ln1, a.mod, 0, 1, shape);
      saIn = a.m1;
    }
  }
  gpuLinearForward(ctx, a.qkv, saIn, w.inProjW, w.inProjB, N, C, 3 * C);
  if (cfg.positions === "rotary") gpuRopeForward(ctx, a.qkv, ws.cos, ws.sin, B, T, C, NH);
  gpuAttentionForward(ctx, a.attY, a.att, a.qkv, useDrop ? a.maskAtt : null, B, T, C, NH);
  const projD = tm ? a.projD : ws.branch;
  gpuLinearForward(ctx, projD, a.attY, w.outProjW, w.outProjB, N, C, C);
  if (useDrop) gpuDropoutInPlace(ctx, projD, a.mask1!, N * C);
  if (tm) gpuGatedResidualForward(ctx, a.r1, x, projD, a.mod, 2, shape);
  else gpuResidualForward(ctx, a.r1, x, projD, N * C);

  let ffIn: GpuTensor;
  if (pre) {
    gpuLayernormForward(ctx, a.ln2, a.ln2Mean, a.ln2Rstd, a.r1, w.norm2W, w.norm2B, N, C);
    ffIn = a.ln2;
    if (tm) {
      gpuModulateForward(ctx, a.m2, a.ln2, a.mod, 3, 4, shape);
      ffIn = a.m2;
    }
  } else {
    gpuLayernormForward(ctx, a.ln1, a.ln1Mean, a.ln1Rstd, a.r1, w.norm1W, w.norm1B, N, C);
    ffIn = a.ln1;
  }
  gpuLinearForward(ctx, a.fch, ffIn, w.lin1W, w.lin1B, N, C, F);
  const maskF = useDrop ? a.maskF : null;
  if (cfg.activation === "gelu") gpuGeluForwardKeepGrad(ctx, a.fh, a.fch, N * F, maskF);
  else gpuReluForward(ctx, a.fh, a.fch, N * F, maskF);
  const foD = tm ? a.foD : ws.branch;
  gpuLinearForward(ctx, foD, a.fh, w.lin2W, w.lin2B, N, F, C);
  if (useDrop) gpuDropoutInPlace(ctx, foD, a.mask2!, N * C);
  if (tm) {
    gpuGatedResidualForward(ctx, out, a.r1, foD, a.mod, 5, shape);
  } else if (pre) {
    gpuResidualForward(ctx, out, a.r1, foD, N * C);
  } else {
    gpuResidualForward(ctx, a.r2, a.ln1, foD, N * C);
    gpuLayernormForward(ctx, out, a.ln2Mean, a.ln2Rstd, a.r2, w.norm2W, w.norm2B, N, C);
  }
}

function layerBackward(
  gm: GpuModel,
  ws: GpuWorkspace,
  P: GpuModelTensors,
  G: GpuModelTensors,
  l: number,
): void {
  const ctx = gm.ctx, cfg = gm.config;
  const { dModel: C, dFF: F, nHeads: NH } = cfg;
  const B = ws.lastB, T = ws.lastT, N = B * T, NC = N * C, NF = N * F;
  const useDrop = ws.lastDropout;
  const w = P.layers[l], dw = G.layers[l], a = ws.layers[l];
  const x = ws.resid[l];
  const pre = cfg.normFirst;
  const tm = ws.time;
  const d = ws.d;
  const dout = ws.dresid;
  const shape = { K: 6, B, T, C };
  const dropGrad = (dx: GpuTensor, dy: GpuTensor, mask: GpuTensor): GpuTensor => {
    ctx.clear(dx);
    gpuDropoutBackward(ctx, dx, dy, mask, NC);
    return dx;
  };
  if (tm) ctx.clear(tm.dmod);

  let dfoD: GpuTensor;
  if (tm) {
    ctx.clear(d.dfoD);
    gpuGatedResidualBackward(ctx, null, d.dfoD, tm.dmod, dout, a.foD, a.mod, 5, shape);
    dfoD = d.dfoD;
  } else if (pre) {
    dfoD = dout;
  } else {
    ctx.clear(d.dr2);
    gpuLayernormBackward(
      ctx,
      d.dr2,
      dw.norm2W,
      dw.norm2B,
      dout,
      a.r2,
      w.norm2W,
      a.ln2Mean,
      a.ln2Rstd,
      N,
      C,
    );
    dfoD = d.dr2;
  }
  const dfo = useDrop ? dropGrad(d.dfo, dfoD, a.mask2!) : dfoD;
  ctx.clear(d.dfh);
  gpuLinearBackward(ctx, d.dfh, dw.lin2W, dw.lin2B, dfo, a.fh, w.lin2W, N, F, C);
  ctx.clear(d.dfch);
  const maskF = useDrop ? a.maskF : null;
  if (cfg.activation === "gelu") gpuScaleBackward(ctx, d.dfch, d.dfh, a.fch, NF, maskF);
  else gpuReluBackward(ctx, d.dfch, d.dfh, a.fch, NF, maskF);
  if (pre) {
    const dffIn = tm ? d.dm2 : d.dln2;
    ctx.clear(dffIn);
    gpuLinearBackward(
      ctx,
      dffIn,
      dw.lin1W,
      dw.lin1B,
      d.dfch,
      tm ? a.m2 : a.ln2,
      w.lin1W,
      N,
      C,
      F,
    );
    if (tm) {
      ctx.clear(d.dln2);
      gpuModulateBackward(ctx, d.dln2, tm.dmod, d.dm2, a.ln2, a.mod, 3, 4, shape);
    }
    gpuCopy(ctx, d.dr1, dout, NC);
    gpuLayernormBackward(
      ctx,
      d.dr1,
      dw.norm2W,
      dw.norm2B,
      d.dln2,
      a.r1,
      w.norm2W,
      a.ln2Mean,
      a.ln2Rstd,
      N,
      C,
    );
  } else {
    gpuCopy(ctx, d.dln1, dfoD, NC);
    gpuLinearBackward(ctx, d.dln1, dw.lin1W, dw.lin1B, d.dfch, a.ln1, w.lin1W, N, C, F);
    ctx.clear(d.dr1);
    gpuLayernormBackward(
      ctx,
      d.dr1,
      dw.norm1W,
      dw.norm1B,
      d.dln1,
      a.r1,
      w.norm1W,
      a.ln1Mean,
      a.ln1Rstd,
      N,
      C,
    );
  }

  let dprojD = d.dr1;
  if (tm) {
    ctx.clear(d.dprojD);
    gpuGatedResidualBackward(ctx, null, d.dprojD, tm.dmod, d.dr1, a.projD, a.mod, 2, shape);
    dprojD = d.dprojD;
  }
  const dproj = useDrop ? dropGrad(d.dproj, dprojD, a.mask1!) : dprojD;
  ctx.clear(d.dattY);
  gpuLinearBackward(ctx, d.dattY, dw.outProjW, dw.outProjB, dproj, a.attY, w.outProjW, N, C, C);
  ctx.clear(d.dqkv);
  gpuAttentionBackward(
    ctx,
    d.dqkv,
    d.dattY,
    a.qkv,
    a.att,
    useDrop ? a.maskAtt : null,
    ws.attScratch,
    B,
    T,
    C,
    NH,
  );
  if (cfg.positions === "rotary") gpuRopeForward(ctx, d.dqkv, ws.cos, ws.sin, B, T, C, NH, true);
  const dx = dout;
  if (pre) {
    const dsaIn = tm ? d.dm1 : d.dln1;
    ctx.clear(dsaIn);
    gpuLinearBackward(
      ctx,
      dsaIn,
      dw.inProjW,
      dw.inProjB,
      d.dqkv,
      tm ? a.m1 : a.ln1,
      w.inProjW,
      N,
      C,
      3 * C,
    );
    if (tm) {
      ctx.clear(d.dln1);
      gpuModulateBackward(ctx, d.dln1, tm.dmod, d.dm1, a.ln1, a.mod, 0, 1, shape);
    }
    gpuCopy(ctx, dx, d.dr1, NC);
    gpuLayernormBackward(
      ctx,
      dx,
      dw.norm1W,
      dw.norm1B,
      d.dln1,
      x,
      w.norm1W,
      a.ln1Mean,
      a.ln1Rstd,
      N,
      C,
    );
  } else {
    gpuCopy(ctx, dx, d.dr1, NC);
    gpuLinearBackward(ctx, dx, dw.inProjW, dw.inProjB, d.dqkv, x, w.inProjW, N, C, 3 * C);
  }
  if (tm) {
    gpuLinearBackward(ctx, tm.dcond, dw.adaW!, dw.adaB!, tm.dmod, tm.cond, w.adaW!, B, C, 6 * C);
  }
}

/** The head's input: `mf` (time conditioning), `lnf` (pre-norm) or the last residual. */
function headInput(gm: GpuModel, ws: GpuWorkspace): GpuTensor {
  if (ws.time) return ws.time.mf;
  return gm.config.normFirst ? ws.lnf : ws.resid[gm.config.nLayers];
}

function finalForward(gm: GpuModel, ws: GpuWorkspace, P: GpuModelTensors): GpuTensor {
  const ctx = gm.ctx, cfg = gm.config;
  const { dModel: C, vocabSize: V } = cfg;
  const B = ws.lastB, T = ws.lastT, N = B * T;
  const tm = ws.time;
  if (cfg.normFirst) {
    const last = ws.resid[cfg.nLayers];
    gpuLayernormForward(ctx, ws.lnf, ws.lnfMean, ws.lnfRstd, last, P.normW!, P.normB!, N, C);
    if (tm) gpuModulateForward(ctx, tm.mf, ws.lnf, tm.finalMod, 0, 1, { K: 2, B, T, C });
  }
  gpuLinearForward(ctx, ws.logits, headInput(gm, ws), P.headW, P.headB, N, C, V);
  return ws.logits;
}

function finalBackward(
  gm: GpuModel,
  ws: GpuWorkspace,
  P: GpuModelTensors,
  G: GpuModelTensors,
): void {
  const ctx = gm.ctx, cfg = gm.config;
  const { dModel: C, vocabSize: V } = cfg;
  const B = ws.lastB, T = ws.lastT, N = B * T;
  const tm = ws.time;
  const dresid = ws.dresid;
  const dfinal = tm ? tm.dmf : cfg.normFirst ? ws.dlnf : dresid;
  ctx.clear(dfinal);
  gpuLinearBackward(ctx, dfinal, G.headW, G.headB, ws.dlogits, headInput(gm, ws), P.headW, N, C, V);
  if (!cfg.normFirst) return;
  if (tm) {
    ctx.clear(ws.dlnf);
    ctx.clear(tm.dfinalMod);
    const shape = { K: 2, B, T, C };
    gpuModulateBackward(ctx, ws.dlnf, tm.dfinalMod, tm.dmf, ws.lnf, tm.finalMod, 0, 1, shape);
    gpuLinearBackward(
      ctx,
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
  }
  ctx.clear(dresid);
  gpuLayernormBackward(
    ctx,
    dresid,
    G.normW!,
    G.normB!,
    ws.dlnf,
    ws.resid[cfg.nLayers],
    P.normW!,
    ws.lnfMean,
    ws.lnfRstd,
    N,
    C,
  );
}

/**
 * Frees every GPU tensor of a workspace now; it must not be used afterwards.
 *
 * @param ws The workspace.
 */
export function destroyGpuWorkspace(ws: GpuWorkspace): void {
  const seen = new Set<unknown>();
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== "object" || seen.has(v) || ArrayBuffer.isView(v)) return;
    seen.add(v);
    if (v instanceof GpuTensor) return v.destroy();
    for (const x of Object.values(v as Record<string, unknown>)) walk(x);
  };
  for (const [key, v] of Object.entries(ws)) if (key !== "config" && key !== "lastInput") walk(v);
}

/** The {@linkcode GpuDenoiser} of {@linkcode createGpuDenoiser}, with a way to free it. */
export type GpuModelDenoiser = GpuDenoiser & {
  /** Frees its parameters and workspace on the GPU (the context stays open). */
  dispose(): void;
};

/** Options of {@linkcode createGpuDenoiser}. */
export interface GpuDenoiserConfig {
  /** Sequences of the first workspace (default: sized by the first call). */
  batch?: number;
  /** Tokens per sequence of the first workspace (default: sized by the first call). */
  context?: number;
}

/**
 * A {@linkcode GpuDenoiser} for `model`: its parameters are uploaded once (later changes to
 * `model.params` are not seen), and each call records the forward pass into the context's
 * pending encoder (only the sigma embedding of a time-conditioned model is written first; no
 * read-back). The workspace fits the call's `(B,T)` exactly, so the logits tensor has
 * `B*T*V` elements; a call with another shape replaces it (freeing the old one).
 *
 * @param ctx The context (the ids passed in must belong to it).
 * @param model A transformer of `src/model/model.ts`.
 * @param config The first workspace's shape, optional.
 * @returns The denoiser, with `dispose()` to free its parameters and workspace.
 *
 * @example Logits of two sequences, on the GPU
 * ```ts
 * import assert from "node:assert/strict";
 * import { acquireGpu, GpuContext } from "./mod.ts";
 * import { createGpuDenoiser } from "./model.ts";
 * import { createModel } from "../../model/model.ts";
 *
 * const gpu = await acquireGpu();
 * if (gpu.ok) {
 *   const ctx = new GpuContext(gpu.device);
 *   const model = createModel("tiny", { vocabSize: 12 });
 *   const denoise = createGpuDenoiser(ctx, model);
 *   const ids = ctx.upload(new Int32Array([11, 2, 11, 4]));
 *   const logits = denoise(ids, new Float32Array([1, 1]), 2);
 *   assert.equal((await ctx.readF32(logits)).length, 4 * 12);
 *   await ctx.destroy();
 * }
 * ```
 */
export function createGpuDenoiser(
  ctx: GpuContext,
  model: Model,
  config: GpuDenoiserConfig = {},
): GpuModelDenoiser {
  const gm = createGpuModel(ctx, model);
  const cfg = gm.config;
  let ws: GpuWorkspace | null = config.batch !== undefined && config.context !== undefined
    ? createGpuWorkspace(gm, config.batch, config.context)
    : null;
  const denoise: GpuDenoiser = (ids, sigma, batch) => {
    const T = checkDenoiserIds(ids, batch, cfg.context);
    if (
      cfg.timeConditioning === true && !(sigma instanceof Float32Array && sigma.length === batch)
    ) {
      throw new RangeError(
        `Invalid sigma: expected a Float32Array of ${batch} noise levels, got ${
          sigma instanceof Float32Array ? `${sigma.length} values` : typeof sigma
        }`,
      );
    }
    if (ws === null || ws.B !== batch || ws.T !== T) {
      if (ws) destroyGpuWorkspace(ws);
      ws = createGpuWorkspace(gm, batch, T);
    }
    return gpuModelForward(gm, ws, ids, batch, T, { sigma });
  };
  const dispose = () => {
    if (ws) destroyGpuWorkspace(ws);
    ws = null;
    for (const t of gm.params.byName.values()) t.destroy();
  };
  return Object.assign(denoise, { dispose });
}
