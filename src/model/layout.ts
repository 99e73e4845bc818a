/**
 * The parameter table: every tensor of the model, named and shaped exactly as the PyTorch
 * state dict of the equivalent module tree, packed in that order into one flat buffer.
 *
 * Module tree (registration order, which is the state-dict order):
 *
 * ```
 * embed            nn.Embedding(V, C)                      embed.weight [V,C]
 * pos_embed        nn.Embedding(context, C)  (learned)     pos_embed.weight [context,C]
 * transformer      nn.TransformerEncoder(layer, L, norm=LayerNorm(C) if normFirst)
 *   layers.{i}     nn.TransformerEncoderLayer(C, NH, dFF, activation, norm_first)
 *     self_attn    in_proj_weight [3C,C], in_proj_bias [3C], out_proj.weight [C,C], out_proj.bias [C]
 *     linear1      weight [dFF,C], bias [dFF]
 *     linear2      weight [C,dFF], bias [C]
 *     norm1, norm2 weight [C], bias [C]
 *   norm           weight [C], bias [C]                    (normFirst only)
 * head             nn.Linear(C, V)                         head.weight [V,C], head.bias [V]
 * ```
 *
 * With `timeConditioning` (SEDD's adaLN-Zero; pre-norm only) three more modules join, giving
 * this order:
 *
 * ```
 * embed, pos_embed (learned)
 * sigma_map        SEDD's TimestepEmbedder(C, 256): mlp = Sequential(Linear(256, C), SiLU(), Linear(C, C))
 *                  sigma_map.mlp.0.weight [C,256] .bias [C]   sigma_map.mlp.2.weight [C,C] .bias [C]
 * transformer.layers.{i}: the 12 tensors above, then
 *   adaLN_modulation  nn.Linear(C, 6C), zero-initialised    weight [6C,C], bias [6C]
 * transformer.norm
 * final_adaLN_modulation  nn.Linear(C, 2C), zero-initialised   weight [2C,C], bias [2C]
 * head             (zero-initialised, as SEDD's final linear)
 * ```
 *
 * and the forward pass (c is the conditioning vector of each sequence, `(B,C)`):
 *
 * ```
 * c = silu(sigma_map(sigma))          sigma_map(s) = mlp([cos(s f), sin(s f)]), f_i = 10000^(-i/128)
 * shift1, scale1, gate1, shift2, scale2, gate2 = adaLN_modulation(c).chunk(6, dim=-1)
 * x = x + gate1 * drop(SA(norm1(x) * (1 + scale1) + shift1))
 * x = x + gate2 * drop(FF(norm2(x) * (1 + scale2) + shift2))
 * shift, scale = final_adaLN_modulation(c).chunk(2, dim=-1)
 * logits = head(transformer.norm(x) * (1 + scale) + shift)
 * ```
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";

/** Size of the sinusoidal sigma embedding (SEDD's `frequency_embedding_size`). */
export const TIME_EMBED_DIM = 256;

/** Where a tensor lives in the flat buffer. */
export interface TensorInfo {
  /** Index of the first element. */
  offset: number;
  /** PyTorch shape. */
  shape: number[];
}

/** Tensor name to position and shape. */
export type Layout = Record<string, TensorInfo>;

/** The per-layer tensor suffixes, in state-dict order, with their shapes. */
function layerTable(C: number, F: number): [string, number[]][] {
  return [
    ["self_attn.in_proj_weight", [3 * C, C]],
    ["self_attn.in_proj_bias", [3 * C]],
    ["self_attn.out_proj.weight", [C, C]],
    ["self_attn.out_proj.bias", [C]],
    ["linear1.weight", [F, C]],
    ["linear1.bias", [F]],
    ["linear2.weight", [C, F]],
    ["linear2.bias", [C]],
    ["norm1.weight", [C]],
    ["norm1.bias", [C]],
    ["norm2.weight", [C]],
    ["norm2.bias", [C]],
  ];
}

/**
 * Lists every parameter tensor in PyTorch state-dict order.
 *
 * @param config A complete model config.
 * @returns Names and shapes.
 *
 * @example The notebook's model
 * ```ts
 * import { paramTable } from "./layout.ts";
 * import { resolveConfig } from "./config.ts";
 * import assert from "node:assert/strict";
 *
 * const table = paramTable(resolveConfig("seed", { vocabSize: 37 }));
 * assert.equal(table[0].name, "embed.weight");
 * assert.equal(table[1].name, "pos_embed.weight");
 * assert.equal(table.at(-1)!.name, "head.bias");
 * ```
 */
export function paramTable(config: ModelConfig): { name: string; shape: number[] }[] {
  const { vocabSize: V, context, dModel: C, dFF: F, nLayers: L } = config;
  const out: { name: string; shape: number[] }[] = [{ name: "embed.weight", shape: [V, C] }];
  if (config.positions === "learned") out.push({ name: "pos_embed.weight", shape: [context, C] });
  const tc = config.timeConditioning === true;
  if (tc) {
    out.push({ name: "sigma_map.mlp.0.weight", shape: [C, TIME_EMBED_DIM] });
    out.push({ name: "sigma_map.mlp.0.bias", shape: [C] });
    out.push({ name: "sigma_map.mlp.2.weight", shape: [C, C] });
    out.push({ name: "sigma_map.mlp.2.bias", shape: [C] });
  }
  for (let i = 0; i < L; i++) {
    for (const [suffix, shape] of layerTable(C, F)) {
      out.push({ name: `transformer.layers.${i}.${suffix}`, shape });
    }
    if (tc) {
      out.push({ name: `transformer.layers.${i}.adaLN_modulation.weight`, shape: [6 * C, C] });
      out.push({ name: `transformer.layers.${i}.adaLN_modulation.bias`, shape: [6 * C] });
    }
  }
  if (config.normFirst) {
    out.push({ name: "transformer.norm.weight", shape: [C] });
    out.push({ name: "transformer.norm.bias", shape: [C] });
  }
  if (tc) {
    out.push({ name: "final_adaLN_modulation.weight", shape: [2 * C, C] });
    out.push({ name: "final_adaLN_modulation.bias", shape: [2 * C] });
  }
  out.push({ name: "head.weight", shape: [V, C] });
  out.push({ name: "head.bias", shape: [V] });
  return out;
}

/**
 * Packs the parameter table into one flat buffer, in table order without gaps.
 *
 * @param config A complete model config.
 * @returns The layout and the total number of parameters.
 *
 * @example
 * ```ts
 * import { buildLayout } from "./layout.ts";
 * import { resolveConfig } from "./config.ts";
 * import assert from "node:assert/strict";
 *
 * const { layout, size } = buildLayout(resolveConfig("tiny", { vocabSize: 10 }));
 * assert.equal(layout["embed.weight"].offset, 0);
 * assert.equal(layout["head.bias"].offset + 10, size);
 * ```
 */
export function buildLayout(config: ModelConfig): { layout: Layout; size: number } {
  const layout: Layout = {};
  let offset = 0;
  for (const { name, shape } of paramTable(config)) {
    layout[name] = { offset, shape };
    offset += shape.reduce((a, b) => a * b, 1);
  }
  return { layout, size: offset };
}

/** Views on one layer's tensors (parameters or gradients). */
export interface LayerTensors {
  /** `self_attn.in_proj_weight`, `(3C,C)`. */
  inProjW: Float32Array;
  /** `self_attn.in_proj_bias`, `(3C)`. */
  inProjB: Float32Array;
  /** `self_attn.out_proj.weight`, `(C,C)`. */
  outProjW: Float32Array;
  /** `self_attn.out_proj.bias`, `(C)`. */
  outProjB: Float32Array;
  /** `linear1.weight`, `(F,C)`. */
  lin1W: Float32Array;
  /** `linear1.bias`, `(F)`. */
  lin1B: Float32Array;
  /** `linear2.weight`, `(C,F)`. */
  lin2W: Float32Array;
  /** `linear2.bias`, `(C)`. */
  lin2B: Float32Array;
  /** `norm1.weight`, `(C)`. */
  norm1W: Float32Array;
  /** `norm1.bias`, `(C)`. */
  norm1B: Float32Array;
  /** `norm2.weight`, `(C)`. */
  norm2W: Float32Array;
  /** `norm2.bias`, `(C)`. */
  norm2B: Float32Array;
  /** `adaLN_modulation.weight`, `(6C,C)`, or `null` without time conditioning. */
  adaW: Float32Array | null;
  /** `adaLN_modulation.bias`, `(6C)`, or `null`. */
  adaB: Float32Array | null;
}

/** Views on every tensor of a flat buffer (parameters or gradients). */
export interface ModelTensors {
  /** `embed.weight`, `(V,C)`. */
  embed: Float32Array;
  /** `pos_embed.weight`, `(context,C)`, or `null` with rotary positions. */
  posEmbed: Float32Array | null;
  /** One entry per layer. */
  layers: LayerTensors[];
  /** `transformer.norm.weight`, `(C)`, or `null` for post-norm. */
  normW: Float32Array | null;
  /** `transformer.norm.bias`, `(C)`, or `null` for post-norm. */
  normB: Float32Array | null;
  /** `sigma_map.mlp.0.weight`, `(C,256)`, or `null` without time conditioning. */
  sigma0W: Float32Array | null;
  /** `sigma_map.mlp.0.bias`, `(C)`, or `null`. */
  sigma0B: Float32Array | null;
  /** `sigma_map.mlp.2.weight`, `(C,C)`, or `null`. */
  sigma2W: Float32Array | null;
  /** `sigma_map.mlp.2.bias`, `(C)`, or `null`. */
  sigma2B: Float32Array | null;
  /** `final_adaLN_modulation.weight`, `(2C,C)`, or `null`. */
  finalAdaW: Float32Array | null;
  /** `final_adaLN_modulation.bias`, `(2C)`, or `null`. */
  finalAdaB: Float32Array | null;
  /** `head.weight`, `(V,C)`. */
  headW: Float32Array;
  /** `head.bias`, `(V)`. */
  headB: Float32Array;
}

const viewCache = new WeakMap<Float32Array, { layout: Layout; views: ModelTensors }>();

/**
 * The single view helper that both the forward and the backward pass use: subarrays of `buf`
 * for every tensor, by name through the layout. Views are cached per buffer, so calling this
 * every step allocates nothing after the first call.
 *
 * @param buf A flat buffer with the layout (parameters or gradients).
 * @param layout From {@linkcode buildLayout}.
 * @param config The config the layout was built from.
 * @returns Named views.
 */
export function tensorViews(buf: Float32Array, layout: Layout, config: ModelConfig): ModelTensors {
  const cached = viewCache.get(buf);
  if (cached && cached.layout === layout) return cached.views;
  const get = (name: string): Float32Array => {
    const info = layout[name];
    if (!info) throw new RangeError(`Missing tensor in layout: expected "${name}", got none`);
    return buf.subarray(info.offset, info.offset + info.shape.reduce((a, b) => a * b, 1));
  };
  const maybe = (name: string): Float32Array | null => (layout[name] ? get(name) : null);
  const layers: LayerTensors[] = [];
  for (let i = 0; i < config.nLayers; i++) {
    const p = `transformer.layers.${i}.`;
    layers.push({
      inProjW: get(p + "self_attn.in_proj_weight"),
      inProjB: get(p + "self_attn.in_proj_bias"),
      outProjW: get(p + "self_attn.out_proj.weight"),
      outProjB: get(p + "self_attn.out_proj.bias"),
      lin1W: get(p + "linear1.weight"),
      lin1B: get(p + "linear1.bias"),
      lin2W: get(p + "linear2.weight"),
      lin2B: get(p + "linear2.bias"),
      norm1W: get(p + "norm1.weight"),
      norm1B: get(p + "norm1.bias"),
      norm2W: get(p + "norm2.weight"),
      norm2B: get(p + "norm2.bias"),
      adaW: maybe(p + "adaLN_modulation.weight"),
      adaB: maybe(p + "adaLN_modulation.bias"),
    });
  }
  const views: ModelTensors = {
    embed: get("embed.weight"),
    posEmbed: maybe("pos_embed.weight"),
    layers,
    normW: maybe("transformer.norm.weight"),
    normB: maybe("transformer.norm.bias"),
    sigma0W: maybe("sigma_map.mlp.0.weight"),
    sigma0B: maybe("sigma_map.mlp.0.bias"),
    sigma2W: maybe("sigma_map.mlp.2.weight"),
    sigma2B: maybe("sigma_map.mlp.2.bias"),
    finalAdaW: maybe("final_adaLN_modulation.weight"),
    finalAdaB: maybe("final_adaLN_modulation.bias"),
    headW: get("head.weight"),
    headB: get("head.bias"),
  };
  viewCache.set(buf, { layout, views });
  return views;
}

/**
 * The parameter buffer cut into the parts a forward pass reads in turn: part 0 everything outside
 * the layers (embedding, positions, time conditioning, final norm, head), part `l + 1` layer
 * `l`'s tensors. Each part is a list of `[start, end)` ranges of the buffer, merged where
 * adjacent; together the parts cover the buffer once.
 *
 * @param layout The parameter table.
 * @param nLayers Layers of the model.
 * @returns `nLayers + 1` parts.
 *
 * @example
 * ```ts
 * import { buildLayout, forwardParts } from "./layout.ts";
 * import { presets } from "./config.ts";
 * import assert from "node:assert/strict";
 *
 * const config = { ...presets.tiny, vocabSize: 5, context: 4 };
 * const { layout, size } = buildLayout(config);
 * const parts = forwardParts(layout, config.nLayers);
 * assert.equal(parts.length, config.nLayers + 1);
 * const covered = parts.flat().reduce((n, [a, b]) => n + b - a, 0);
 * assert.equal(covered, size);
 * ```
 */
export function forwardParts(layout: Layout, nLayers: number): [number, number][][] {
  const parts: [number, number][][] = Array.from({ length: nLayers + 1 }, () => []);
  const entries = Object.values(layout).map((t, i) => ({ t, name: Object.keys(layout)[i] }));
  entries.sort((x, y) => x.t.offset - y.t.offset);
  for (const { t, name } of entries) {
    const m = /^transformer\.layers\.(\d+)\./.exec(name);
    const part = parts[m ? Number(m[1]) + 1 : 0];
    const end = t.offset + t.shape.reduce((a, b) => a * b, 1);
    const last = part.at(-1);
    if (last && last[1] === t.offset) last[1] = end;
    else part.push([t.offset, end]);
  }
  return parts;
}
