/**
 * The bytes of the trainer's two checkpoint files, with no I/O (so a browser page can write and
 * read them as downloads and uploads):
 *
 * - `model.safetensors`: the weights under PyTorch's state-dict names, and in `__metadata__` the
 *   config, the tokenizer (JSON), the step, and whatever the caller adds (the trainer: `loss`,
 *   `graph`, and in a run's final checkpoint `stopped`). What sampling reads.
 * - `optimizer.safetensors`: the parameters, AdamW's moments `m` and `v` (one `F32` tensor of `P`
 *   values each), and in `__metadata__` the same config, tokenizer and step plus the trainer's
 *   settings (JSON). What resuming reads.
 *
 * The run directory's reads and writes of these files are the trainer's (`src/train/run_dir.ts`).
 *
 * @module
 */

import { ditFromSafetensors, modelFromSafetensors, modelToSafetensors } from "./model_io.ts";
import { parseSafetensors, readSafetensorsHeader, serializeSafetensors } from "./safetensors.ts";
import { type ModelConfig, validateConfig } from "../model/config.ts";
import { buildLayout } from "../model/layout.ts";
import { createModel, type Model } from "../model/model.ts";
import {
  createDit,
  type DitConfig,
  type DitModel,
  ditParamTable,
  validateDitConfig,
} from "../model/dit.ts";
import type { AdamWState } from "../optim/adamw.ts";
import { type Tokenizer, tokenizerFromJSON, tokenizerToJSON } from "../tokenizer/mod.ts";

/** The value of both files' `__metadata__.format`. */
export const CHECKPOINT_FORMAT = "sedd-core/1";

/** A config of either kind. */
type AnyConfig = ModelConfig | DitConfig;

const isDitConfig = (c: AnyConfig): c is DitConfig => (c as { kind?: string }).kind === "dit";

/** A loaded model checkpoint. */
export interface LoadedCheckpoint {
  /** The model (fresh parameter buffer): a transformer, or a DiT a fine-tuning run wrote. */
  model: Model | DitModel;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** The training step it was saved at. */
  step: number;
  /** All `__metadata__` entries. */
  metadata: Record<string, string>;
}

/** What resuming needs: the checkpoint plus the optimizer state and trainer settings. */
export interface LoadedRun extends LoadedCheckpoint {
  /** AdamW moments and step. */
  optimizer: AdamWState;
  /** The trainer settings saved with the run (JSON object). */
  settings: Record<string, unknown>;
}

function baseMetadata(
  model: Model | DitModel,
  tokenizer: Tokenizer,
  step: number,
): Record<string, string> {
  return {
    format: CHECKPOINT_FORMAT,
    config: JSON.stringify(model.config),
    tokenizer: tokenizerToJSON(tokenizer),
    step: String(step),
  };
}

/**
 * The bytes of `model.safetensors`: one tensor per PyTorch state-dict name, and the config,
 * tokenizer and step in `__metadata__`. A DiT's tensors are SEDD's state dict, with the
 * `rotary_emb.inv_freq` buffer (see `modelToSafetensors`), and its config has `kind: "dit"`.
 *
 * @param model The model (either kind).
 * @param tokenizer Its tokenizer.
 * @param step Steps trained.
 * @param extra Further metadata (the trainer adds `loss` and `graph`, which tell a sampler how
 *   to read the network's output).
 * @returns The file's bytes.
 *
 * @example Round trip
 * ```ts
 * import { modelCheckpointBytes, parseModelCheckpoint } from "./run_files.ts";
 * import { createModel } from "../model/model.ts";
 * import { trainTokenizer } from "../tokenizer/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = trainTokenizer(["the whale and the sea"], { kind: "seed", numMerges: 2 });
 * const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 1 });
 * const bytes = modelCheckpointBytes(model, tokenizer, 12, { loss: "elbo" });
 * const loaded = parseModelCheckpoint(bytes);
 * assert.equal(loaded.step, 12);
 * assert.equal(loaded.metadata.loss, "elbo");
 * assert.deepEqual(loaded.model.params, model.params);
 * assert.equal(loaded.tokenizer.vocabSize, tokenizer.vocabSize);
 * ```
 */
export function modelCheckpointBytes(
  model: Model | DitModel,
  tokenizer: Tokenizer,
  step: number,
  extra: Record<string, string> = {},
): Uint8Array {
  const { config: _, ...rest } = baseMetadata(model, tokenizer, step);
  return modelToSafetensors(model, { ...extra, ...rest });
}

/** Parses `text` as a JSON object, or throws a RangeError saying what it got. */
function jsonObject(text: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new RangeError(
      `Invalid ${what}: expected JSON, got a parse error (${(e as Error).message})`,
    );
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new RangeError(`Invalid ${what}: expected a JSON object, got ${text.slice(0, 40)}`);
  }
  return v as Record<string, unknown>;
}

function readMeta(meta: Record<string, string>, what: string): {
  config: AnyConfig;
  tokenizer: Tokenizer;
  step: number;
} {
  for (const k of ["config", "tokenizer", "step"]) {
    if (!(k in meta)) {
      throw new RangeError(`Invalid ${what}: expected __metadata__.${k}, got none`);
    }
  }
  const config = jsonObject(meta.config, `${what} __metadata__.config`) as unknown as AnyConfig;
  if (isDitConfig(config)) validateDitConfig(config);
  else validateConfig(config);
  const tokenizer = tokenizerFromJSON(meta.tokenizer);
  const step = Number(meta.step);
  if (!Number.isInteger(step) || step < 0) {
    throw new RangeError(`Invalid ${what}: expected an integer step >= 0, got ${meta.step}`);
  }
  return { config, tokenizer, step };
}

/** The model of a `model.safetensors`, of the kind its `__metadata__.config` names. */
function readModel(
  bytes: Uint8Array,
): { model: Model | DitModel; metadata: Record<string, string> } {
  const head = readSafetensorsHeader(bytes).metadata;
  let kind: unknown;
  try {
    kind = JSON.parse(head.config ?? "{}")?.kind;
  } catch {
    kind = undefined; // modelFromSafetensors names the parse error
  }
  if (kind !== "dit") return modelFromSafetensors(bytes);
  const config = jsonObject(
    head.config,
    "model checkpoint __metadata__.config",
  ) as unknown as DitConfig;
  validateDitConfig(config);
  return ditFromSafetensors(bytes, { config });
}

/**
 * Reads a `model.safetensors` written by {@linkcode modelCheckpointBytes}.
 *
 * @param bytes The file's bytes.
 * @returns The model, tokenizer, step and metadata.
 * @throws {RangeError | TypeError} When the bytes are not such a file (not safetensors, no
 *   tokenizer, a bad step, vocabularies that disagree); one line saying what was expected.
 */
export function parseModelCheckpoint(bytes: Uint8Array): LoadedCheckpoint {
  const { model, metadata } = readModel(bytes);
  if (!("tokenizer" in metadata)) {
    throw new RangeError(
      "Invalid model checkpoint: expected __metadata__.tokenizer (a file written by the trainer), got none",
    );
  }
  const tokenizer = tokenizerFromJSON(metadata.tokenizer);
  const step = Number(metadata.step ?? "0");
  if (!Number.isInteger(step) || step < 0) {
    throw new RangeError(
      `Invalid model checkpoint: expected an integer step >= 0, got ${metadata.step}`,
    );
  }
  if (tokenizer.vocabSize !== model.config.vocabSize) {
    throw new RangeError(
      `Invalid model checkpoint: expected the tokenizer's vocabulary (${tokenizer.vocabSize}) to equal the model's (${model.config.vocabSize})`,
    );
  }
  return { model, tokenizer, step, metadata };
}

/**
 * The bytes of `optimizer.safetensors`: parameters, moments, step, settings, config, tokenizer.
 *
 * @param model The model.
 * @param tokenizer Its tokenizer.
 * @param optimizer AdamW state (its `step` is the training step).
 * @param settings Trainer settings to restore on resume (JSON-serialisable).
 * @param extra Further metadata.
 * @returns The file's bytes.
 *
 * @example Round trip
 * ```ts
 * import { optimizerBytes, parseOptimizer } from "./run_files.ts";
 * import { createModel } from "../model/model.ts";
 * import { createAdamW } from "../optim/adamw.ts";
 * import { trainTokenizer } from "../tokenizer/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = trainTokenizer(["the whale and the sea"], { kind: "seed", numMerges: 2 });
 * const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 1 });
 * const optimizer = { ...createAdamW(model.params.length), step: 3 };
 * const run = parseOptimizer(optimizerBytes(model, tokenizer, optimizer, { seed: 1 }));
 * assert.equal(run.step, 3);
 * assert.deepEqual(run.settings, { seed: 1 });
 * assert.deepEqual(run.model.params, model.params);
 * ```
 */
export function optimizerBytes(
  model: Model | DitModel,
  tokenizer: Tokenizer,
  optimizer: AdamWState,
  settings: Record<string, unknown>,
  extra: Record<string, string> = {},
): Uint8Array {
  const P = model.params.length;
  return serializeSafetensors(
    {
      params: { shape: [P], data: model.params },
      m: { shape: [P], data: optimizer.m },
      v: { shape: [P], data: optimizer.v },
    },
    {
      ...extra,
      ...baseMetadata(model, tokenizer, optimizer.step),
      settings: JSON.stringify(settings),
    },
  );
}

/**
 * Reads an `optimizer.safetensors` written by {@linkcode optimizerBytes}.
 *
 * @param bytes The file's bytes.
 * @returns Model, tokenizer, optimizer state and settings.
 * @throws {RangeError | TypeError} When the bytes are not such a file (missing or malformed
 *   metadata, tensors of the wrong dtype or size); one line saying what was expected.
 */
export function parseOptimizer(bytes: Uint8Array): LoadedRun {
  const { tensors, metadata } = parseSafetensors(bytes);
  const { config, tokenizer, step } = readMeta(metadata, "optimizer checkpoint");
  // checked against the tensors before allocating a model
  const P = isDitConfig(config)
    ? ditParamTable(config).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0)
    : buildLayout(config).size;
  const get = (name: string): Float32Array => {
    const t = tensors[name];
    if (!t || t.dtype !== "F32" || t.data.length !== P) {
      throw new RangeError(
        `Invalid optimizer checkpoint: expected F32 tensor "${name}" of ${P} values, got ${
          t ? `${t.dtype} of ${t.data.length}` : "none"
        }`,
      );
    }
    return t.data as Float32Array;
  };
  const params = get("params"), m = get("m"), v = get("v");
  const settings = jsonObject(
    metadata.settings ?? "{}",
    "optimizer checkpoint __metadata__.settings",
  );
  if (tokenizer.vocabSize !== config.vocabSize) {
    throw new RangeError(
      `Invalid optimizer checkpoint: expected the tokenizer's vocabulary (${tokenizer.vocabSize}) to equal the model's (${config.vocabSize})`,
    );
  }
  const model = isDitConfig(config)
    ? createDit(config, { params })
    : createModel(config, { params });
  const optimizer: AdamWState = { m, v, step };
  return { model, tokenizer, step, metadata, optimizer, settings };
}
