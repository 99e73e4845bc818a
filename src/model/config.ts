/**
 * Model configuration and named presets.
 *
 * A preset name is accepted wherever a config is; vocabulary size and context come from the
 * tokenizer and the data unless the caller gives them.
 *
 * @module
 */

/** The shape and flavour of the denoising transformer. */
export interface ModelConfig {
  /** V: vocabulary size including `<|endoftext|>` and `<|mask|>` (MASK is the last id). */
  vocabSize: number;
  /** T: the longest sequence; the size of the learned position table. */
  context: number;
  /** C: channels (`d_model`). */
  dModel: number;
  /** NH: attention heads; `dModel` must be a multiple of it. */
  nHeads: number;
  /** L: transformer layers. */
  nLayers: number;
  /** Hidden size of the feed-forward block (`dim_feedforward`). */
  dFF: number;
  /** `learned` adds `pos_embed` (the notebook); `rotary` rotates q and k in every layer (SEDD). */
  positions: "learned" | "rotary";
  /** Pre-norm blocks plus a final LayerNorm (`norm_first=True`), or post-norm (PyTorch's default). */
  normFirst: boolean;
  /** Feed-forward activation: `relu` (PyTorch's default) or `gelu` (exact erf form). */
  activation: "relu" | "gelu";
  /** Dropout probability in training, as `nn.TransformerEncoderLayer` applies it. */
  dropout: number;
  /**
   * Condition on the noise level sigma with SEDD's adaLN-Zero modulation (sinusoidal sigma
   * embedding -> MLP -> per-block shift/scale/gate around the pre-norm LayerNorms, and a
   * modulated final norm). Needs `normFirst`. Default false: the notebook's model, and MDLM
   * trains well without it on the absorbing graph; SEDD's uniform graph needs it.
   */
  timeConditioning?: boolean;
}

/** The names of the built-in presets. */
export type PresetName = "seed" | "tiny" | "small";

/** A preset leaves vocabulary size and context to the tokenizer and the data. */
export type Preset = Omit<ModelConfig, "vocabSize" | "context"> & { context: number };

/** Built-in presets. */
export const presets: Readonly<Record<PresetName, Readonly<Preset>>> = Object.freeze({
  /** The notebook's `SimpleDiffusionTransformer`: `n_embd` 4, 2 heads, 2 layers, PyTorch defaults. */
  seed: Object.freeze({
    context: 8, // the notebook's T_context
    dModel: 4, // the notebook's n_embd
    nHeads: 2,
    nLayers: 2, // num_layers=2
    dFF: 2048, // nn.TransformerEncoderLayer's default dim_feedforward
    positions: "learned" as const, // the notebook's pos_embed
    normFirst: false, // PyTorch's default: post-norm
    activation: "relu" as const, // PyTorch's default
    dropout: 0.1, // PyTorch's default, active in model.train()
  }),
  /** Small enough for gradient checks and fast tests. */
  tiny: Object.freeze({
    context: 16,
    dModel: 16,
    nHeads: 2,
    nLayers: 2,
    dFF: 32,
    positions: "rotary" as const, // rotary learns context far sooner than learned positions
    normFirst: true, // pre-norm trains stably without warm-up tricks
    activation: "gelu" as const,
    dropout: 0, // SEDD trains without dropout at these sizes
  }),
  /** The default run: about 1M parameters at V = 512. */
  small: Object.freeze({
    context: 128,
    dModel: 128,
    nHeads: 4,
    nLayers: 4,
    dFF: 512,
    positions: "rotary" as const,
    normFirst: true,
    activation: "gelu" as const,
    dropout: 0,
  }),
});

/**
 * Turns a preset name or a partial config into a complete, validated {@linkcode ModelConfig}.
 *
 * @param config A preset name, or a config (fields it lacks come from `options`).
 * @param options `vocabSize` and `context` from the tokenizer and data; they override a preset's
 *   context but not a full config's.
 * @returns A complete config.
 *
 * @example From a preset
 * ```ts
 * import { resolveConfig } from "./config.ts";
 * import assert from "node:assert/strict";
 *
 * const config = resolveConfig("tiny", { vocabSize: 40 });
 * assert.equal(config.vocabSize, 40);
 * assert.equal(config.context, 16);
 * ```
 */
export function resolveConfig(
  config: PresetName | Partial<ModelConfig>,
  options: { vocabSize?: number; context?: number } = {},
): ModelConfig {
  let base: Partial<ModelConfig>;
  if (typeof config === "string") {
    if (!(config in presets)) {
      throw new RangeError(
        `Unknown preset: expected one of ${Object.keys(presets).join(", ")}, got "${config}"`,
      );
    }
    base = { ...presets[config as PresetName], ...dropUndefined(options) };
  } else {
    base = { ...dropUndefined(options), ...config };
  }
  const full = base as ModelConfig;
  validateConfig(full);
  return { ...full };
}

function dropUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Throws a `TypeError` or `RangeError` naming the first bad field of a config.
 *
 * @param c The config to check.
 */
export function validateConfig(c: ModelConfig): void {
  const ints: (keyof ModelConfig)[] = [
    "vocabSize",
    "context",
    "dModel",
    "nHeads",
    "nLayers",
    "dFF",
  ];
  for (const k of ints) {
    const v = c[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
      throw new RangeError(`Invalid config.${k}: expected a positive integer, got ${v}`);
    }
  }
  if (c.vocabSize < 3) {
    throw new RangeError(
      `Invalid config.vocabSize: expected at least 3 (a token, EOT, MASK), got ${c.vocabSize}`,
    );
  }
  if (c.dModel % c.nHeads !== 0) {
    throw new RangeError(
      `Invalid config: expected dModel divisible by nHeads, got dModel ${c.dModel}, nHeads ${c.nHeads}`,
    );
  }
  if (c.positions !== "learned" && c.positions !== "rotary") {
    throw new TypeError(
      `Invalid config.positions: expected "learned" or "rotary", got ${c.positions}`,
    );
  }
  if (c.positions === "rotary" && (c.dModel / c.nHeads) % 2 !== 0) {
    throw new RangeError(
      `Invalid config: rotary positions need an even head size, got ${c.dModel / c.nHeads}`,
    );
  }
  if (typeof c.normFirst !== "boolean") {
    throw new TypeError(`Invalid config.normFirst: expected a boolean, got ${c.normFirst}`);
  }
  if (c.activation !== "relu" && c.activation !== "gelu") {
    throw new TypeError(
      `Invalid config.activation: expected "relu" or "gelu", got ${c.activation}`,
    );
  }
  if (typeof c.dropout !== "number" || !(c.dropout >= 0 && c.dropout < 1)) {
    throw new RangeError(`Invalid config.dropout: expected 0 <= p < 1, got ${c.dropout}`);
  }
  if (c.timeConditioning !== undefined && typeof c.timeConditioning !== "boolean") {
    throw new TypeError(
      `Invalid config.timeConditioning: expected a boolean, got ${c.timeConditioning}`,
    );
  }
  if (c.timeConditioning && !c.normFirst) {
    throw new RangeError(
      "Invalid config: timeConditioning modulates the pre-norm LayerNorms, expected normFirst " +
        "true, got false",
    );
  }
}
