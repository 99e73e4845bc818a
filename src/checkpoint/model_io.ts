/**
 * Models to and from safetensors: one F32 tensor per PyTorch state-dict name, so a file written
 * here loads with `load_state_dict(strict=True)` into the PyTorch module tree that
 * `src/model/layout.ts` describes (the notebook's `nn.Embedding`, `nn.TransformerEncoder` of
 * `nn.TransformerEncoderLayer`s and `nn.Linear` head, plus the rotary and time-conditioned
 * variants), and a plain PyTorch state dict of that tree saved as safetensors loads here.
 *
 * @example Round trip
 * ```ts
 * import { modelFromSafetensors, modelToSafetensors } from "./model_io.ts";
 * import { createModel } from "../model/model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("tiny", { vocabSize: 12, seed: 3 });
 * const bytes = modelToSafetensors(model, { step: "100" });
 * const loaded = modelFromSafetensors(bytes);
 * assert.deepEqual(loaded.model.params, model.params);
 * assert.equal(loaded.metadata.step, "100");
 * ```
 *
 * @module
 */

import {
  floatTensorReaders,
  parseSafetensors,
  serializeSafetensors,
  type TensorInput,
} from "./safetensors.ts";
import { type ModelConfig, validateConfig } from "../model/config.ts";
import { buildLayout } from "../model/layout.ts";
import { createModel, type Model } from "../model/model.ts";
import {
  type DitConfig,
  ditFromTensors,
  type DitModel,
  ditStateDict,
  validateDitConfig,
} from "../model/dit.ts";

/** Options of {@linkcode modelFromSafetensors}. */
export interface ModelFromSafetensorsOptions {
  /**
   * Config fields to use over the file's: required for what a plain state dict cannot tell
   * (`nHeads`, `activation`, and `context` with rotary positions); `dropout` defaults to 0.
   */
  config?: Partial<ModelConfig>;
}

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Writes a model as safetensors: an F32 tensor per parameter under its PyTorch state-dict name,
 * and `__metadata__.config` = the config as JSON, plus the caller's entries. A DiT is written as
 * {@linkcode ditStateDict} gives it: SEDD's names with the `rotary_emb.inv_freq` buffer, which
 * PyTorch's `load_state_dict(strict=True)` reads.
 *
 * @param model The model.
 * @param metadata Further string entries (for example the tokenizer's JSON, the step);
 *   `config` is reserved.
 * @returns The file's bytes.
 *
 * @example The config travels with the weights
 * ```ts
 * import { modelToSafetensors } from "./model_io.ts";
 * import { parseSafetensors } from "./safetensors.ts";
 * import { createModel } from "../model/model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("seed", { vocabSize: 37 });
 * const { tensors, metadata } = parseSafetensors(modelToSafetensors(model));
 * assert.deepEqual(tensors["pos_embed.weight"].shape, [8, 4]);
 * assert.equal(JSON.parse(metadata.config).dFF, 2048);
 * ```
 */
export function modelToSafetensors(
  model: Model | DitModel,
  metadata: Record<string, string> = {},
): Uint8Array {
  if (typeof model !== "object" || model === null || !(model.params instanceof Float32Array)) {
    throw new TypeError("Invalid model: expected { config, params: Float32Array, layout }");
  }
  if (Object.hasOwn(metadata, "config")) {
    throw new RangeError(
      'Invalid metadata: "config" is reserved for the model config, got a caller entry "config"',
    );
  }
  if ((model.config as { kind?: string }).kind === "dit") {
    // SEDD's state dict, its rotary buffer included, as PyTorch's strict load_state_dict wants.
    validateDitConfig(model.config as DitConfig);
    return serializeSafetensors(ditStateDict(model as DitModel), {
      config: JSON.stringify(model.config),
      ...metadata,
    });
  }
  const tensors: Record<string, TensorInput> = {};
  for (const [name, { offset, shape }] of Object.entries(model.layout)) {
    const n = size(shape);
    if (offset < 0 || offset + n > model.params.length) {
      throw new RangeError(
        `Invalid model: tensor "${name}" at [${offset}, ${offset + n}) lies outside the ` +
          `${model.params.length} parameters`,
      );
    }
    tensors[name] = { dtype: "F32", shape, data: model.params.subarray(offset, offset + n) };
  }
  return serializeSafetensors(tensors, { config: JSON.stringify(model.config), ...metadata });
}

/** Reads shapes of a plain state dict into the config fields they determine. */
function inferConfig(shapes: Record<string, number[]>): Partial<ModelConfig> {
  const embed = shapes["embed.weight"];
  if (!embed || embed.length !== 2) {
    throw new RangeError(
      `Cannot infer the config: expected an "embed.weight" tensor of shape [V, d], got ${
        embed ? JSON.stringify(embed) : "none"
      }`,
    );
  }
  const [vocabSize, dModel] = embed;
  const out: Partial<ModelConfig> = { vocabSize, dModel };
  const pos = shapes["pos_embed.weight"];
  if (pos) {
    out.positions = "learned";
    out.context = pos[0];
  } else {
    out.positions = "rotary";
  }
  let nLayers = 0;
  for (const name of Object.keys(shapes)) {
    const m = /^transformer\.layers\.(\d+)\./.exec(name);
    if (m) nLayers = Math.max(nLayers, Number(m[1]) + 1);
  }
  if (nLayers === 0) {
    throw new RangeError(
      'Cannot infer the config: expected "transformer.layers.0.*" tensors, got none',
    );
  }
  out.nLayers = nLayers;
  const linear1 = shapes["transformer.layers.0.linear1.weight"];
  if (!linear1) {
    throw new RangeError(
      'Cannot infer the config: expected "transformer.layers.0.linear1.weight" [dFF, d], got none',
    );
  }
  out.dFF = linear1[0];
  out.normFirst = "transformer.norm.weight" in shapes;
  if ("sigma_map.mlp.0.weight" in shapes) out.timeConditioning = true;
  return out;
}

/**
 * Reads a model from safetensors: a file from {@linkcode modelToSafetensors}, or a plain PyTorch
 * state dict of the module tree of `src/model/layout.ts` (then the config is inferred from the
 * shapes: vocabulary, width, context of learned positions, layers, feed-forward size, learned or
 * rotary positions by the presence of `pos_embed.weight`, pre- or post-norm by the presence of
 * `transformer.norm.weight`; `nHeads` and `activation` must come from `options.config`).
 *
 * @param bytes The file's bytes.
 * @param options `config` fields to use over the file's or the inferred ones.
 * @returns The model (a fresh parameter buffer) and the file's `__metadata__`.
 *
 * @example A PyTorch state dict needs nHeads and activation
 * ```ts
 * import { modelFromSafetensors, modelToSafetensors } from "./model_io.ts";
 * import { parseSafetensors, serializeSafetensors } from "./safetensors.ts";
 * import { createModel } from "../model/model.ts";
 * import assert from "node:assert/strict";
 *
 * const model = createModel("seed", { vocabSize: 37, seed: 1 });
 * // The same tensors without the config, as PyTorch's state_dict() would give them.
 * const plain = serializeSafetensors(parseSafetensors(modelToSafetensors(model)).tensors);
 * assert.throws(() => modelFromSafetensors(plain), /nHeads/);
 * const { model: loaded } = modelFromSafetensors(plain, {
 *   config: { nHeads: 2, activation: "relu" },
 * });
 * assert.equal(loaded.config.dFF, 2048);
 * assert.deepEqual(loaded.params, model.params);
 * ```
 */
export function modelFromSafetensors(
  bytes: Uint8Array,
  options?: ModelFromSafetensorsOptions,
): { model: Model; metadata: Record<string, string> };
/**
 * Reads a SEDD or MDLM DiT state dict: {@linkcode ditFromSafetensors}, chosen by
 * `config.kind: "dit"`.
 *
 * @param bytes The file's bytes.
 * @param options `config`: `kind: "dit"`, `nHeads`, and `output: "logits"` for MDLM.
 * @returns The DiT and the file's `__metadata__`.
 */
export function modelFromSafetensors(
  bytes: Uint8Array,
  options: { config: Partial<DitConfig> & { kind: "dit"; nHeads: number } },
): { model: DitModel; metadata: Record<string, string> };
export function modelFromSafetensors(
  bytes: Uint8Array,
  options: ModelFromSafetensorsOptions | {
    config: Partial<DitConfig> & { kind: "dit"; nHeads: number };
  } = {},
): { model: Model | DitModel; metadata: Record<string, string> } {
  if ((options.config as { kind?: unknown } | undefined)?.kind === "dit") {
    return ditFromSafetensors(
      bytes,
      options as { config: Partial<DitConfig> & { nHeads: number } },
    );
  }
  const { tensors, metadata } = parseSafetensors(bytes);
  const given = (options.config ?? {}) as Partial<ModelConfig>;
  let config: ModelConfig;
  if (Object.hasOwn(metadata, "config")) {
    let fromFile: unknown;
    try {
      fromFile = JSON.parse(metadata.config);
    } catch (e) {
      throw new TypeError(
        `Invalid __metadata__.config: expected the JSON of a model config, got a parse error ` +
          `(${(e as Error).message})`,
      );
    }
    if (typeof fromFile !== "object" || fromFile === null || Array.isArray(fromFile)) {
      throw new TypeError(
        `Invalid __metadata__.config: expected a JSON object, got ${metadata.config.slice(0, 40)}`,
      );
    }
    if ((fromFile as { kind?: unknown }).kind === "dit") {
      throw new TypeError(
        'A DiT checkpoint (__metadata__.config kind "dit"): expected options.config.kind "dit" ' +
          "(parseModelCheckpoint reads it so), got none",
      );
    }
    config = { ...(fromFile as ModelConfig), ...given };
  } else {
    if (Object.hasOwn(tensors, "vocab_embed.embedding")) {
      throw new TypeError(
        "A DiT state dict (SEDD's or MDLM's names): expected options.config.kind \"dit\" " +
          "(and nHeads) to read it, got none",
      );
    }
    const shapes: Record<string, number[]> = {};
    for (const [name, t] of Object.entries(tensors)) shapes[name] = t.shape;
    const inferred = inferConfig(shapes);
    const missing: string[] = [];
    if (given.nHeads === undefined) missing.push("nHeads");
    if (given.activation === undefined) missing.push("activation");
    if (inferred.positions === "rotary" && given.context === undefined) missing.push("context");
    if (missing.length > 0) {
      throw new TypeError(
        `Cannot infer ${missing.join(" and ")} from a state dict without config metadata: ` +
          `expected options.config to give ${missing.join(", ")}, got ${JSON.stringify(given)}` +
          (missing.includes("context") ? " (rotary positions have no position table)" : ""),
      );
    }
    config = { dropout: 0, ...inferred, ...given } as ModelConfig;
  }
  validateConfig(config);

  const { layout, size: total } = buildLayout(config);
  const missing = Object.keys(layout).filter((name) => !Object.hasOwn(tensors, name));
  if (missing.length > 0) {
    throw new RangeError(
      `Missing tensors: expected ${missing.map((n) => `"${n}"`).join(", ")}, got none ` +
        `(${missing.length} of ${Object.keys(layout).length} absent)`,
    );
  }
  const extra = Object.keys(tensors).filter((name) => !Object.hasOwn(layout, name));
  if (extra.length > 0) {
    throw new RangeError(
      `Unexpected tensors for this config: ${extra.map((n) => `"${n}"`).join(", ")}`,
    );
  }
  const params = new Float32Array(total);
  for (const [name, { offset, shape }] of Object.entries(layout)) {
    const t = tensors[name];
    if (t.dtype !== "F32") {
      throw new TypeError(`Invalid tensor "${name}": expected dtype F32, got ${t.dtype}`);
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new RangeError(
        `Invalid tensor "${name}": expected shape [${shape}], got [${t.shape}]`,
      );
    }
    params.set(t.data, offset);
  }
  const model = createModel(config, { params });
  return { model, metadata };
}

/**
 * Reads a SEDD or MDLM DiT from safetensors holding its PyTorch state dict (the names of
 * `src/model/dit.ts`), in F32, F64, F16 or BF16, each tensor decoded straight from `bytes` into
 * the model's float32 buffer (so the peak is the file plus one model). `vocabSize`, `dModel`, `condDim` and `nLayers` come from the
 * shapes; `nHeads` must be given (and is checked against `rotary_emb.inv_freq` when present).
 *
 * @param bytes The file's bytes.
 * @param options `config`: at least `nHeads`; `output: "logits"` for an MDLM checkpoint.
 * @returns The model and the file's `__metadata__`.
 *
 * @example
 * ```ts
 * import { ditFromSafetensors } from "./model_io.ts";
 * import { serializeSafetensors } from "./safetensors.ts";
 * import { createDit, ditStateDict } from "../model/dit.ts";
 * import assert from "node:assert/strict";
 *
 * const dit = createDit({ vocabSize: 9, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * const tensors = ditStateDict(dit);
 * const { model } = ditFromSafetensors(serializeSafetensors(tensors), { config: { nHeads: 2 } });
 * assert.equal(model.config.condDim, 4);
 * assert.deepEqual(model.params, dit.params);
 * ```
 */
export function ditFromSafetensors(
  bytes: Uint8Array,
  options: { config: Partial<DitConfig> & { nHeads: number } },
): { model: DitModel; metadata: Record<string, string> } {
  const { tensors, metadata } = floatTensorReaders(bytes);
  const model = ditFromTensors(tensors, options?.config);
  return { model, metadata };
}
