/**
 * Checkpoints trained elsewhere: the directory `tools/convert_checkpoint.py` writes from a SEDD
 * `checkpoint.pth`, a SEDD Hub `pytorch_model.bin` or an MDLM Lightning `.ckpt`, read from its
 * files' contents with no I/O (the CLI reads them from disk, the browser page from files the user
 * picks):
 *
 * - `model.safetensors`: the DiT's state dict under SEDD's names (`src/model/dit.ts`).
 * - `config.json`: `format` {@linkcode CONVERTED_FORMAT}, `kind` `"dit"`, `nHeads`, `context`,
 *   the shapes (`vocabSize`, `dModel`, `nLayers`, `condDim`, checked against the weights),
 *   `output` (`"sedd"`: SEDD's log-scores; `"logits"`: MDLM's SUBS), `scaleBySigma`, `graph`,
 *   `timeConditioning` (false: the network is given sigma 0, MDLM's default), `noise` (the
 *   schedule), `tokenizer` (the names of the tokenizer's files), and `source`, `step`, `ema`.
 * - The tokenizer: GPT-2's `tokenizer.json`, or `vocab.json` + `merges.txt`.
 *
 * @example A converted directory's files, read back
 * ```ts
 * import { convertedConfigJSON, parseConvertedDit } from "./converted.ts";
 * import { serializeSafetensors } from "./safetensors.ts";
 * import { createDit, ditStateDict } from "../model/dit.ts";
 * import { byteToUnicode } from "../tokenizer/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const vocab: Record<string, number> = {};
 * byteToUnicode().forEach((ch, b) => (vocab[ch] = b));
 * vocab["<|endoftext|>"] = 256;
 * const tokenizerJson = JSON.stringify({
 *   model: { type: "BPE", vocab, merges: [] },
 *   pre_tokenizer: { type: "ByteLevel", add_prefix_space: false },
 *   decoder: { type: "ByteLevel" },
 * });
 * const dit = createDit({ vocabSize: 258, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * const loaded = parseConvertedDit({
 *   model: serializeSafetensors(ditStateDict(dit)),
 *   config: convertedConfigJSON(dit, { graph: "absorb", noise: { type: "loglinear", eps: 1e-3 } }),
 *   tokenizer: { "tokenizer.json": tokenizerJson },
 * });
 * assert.equal(loaded.metadata.loss, "score-entropy");
 * assert.deepEqual(loaded.model.params, dit.params);
 * ```
 *
 * @module
 */

import { ditFromSafetensors } from "./model_io.ts";
import type { DitModel } from "../model/dit.ts";
import { createSchedule, type NoiseSchedule } from "../diffusion/schedule.ts";
import type { Tokenizer } from "../tokenizer/types.ts";
import { tokenizerFromHuggingFace, tokenizerFromVocabMerges } from "../tokenizer/hf.ts";

/** The value of a converted directory's `config.json` `format`. */
export const CONVERTED_FORMAT = "sedd-core/converted-dit/1";

/** The noise schedule a converted checkpoint was trained with, as SEDD and MDLM build it. */
export type ConvertedNoise =
  | { type: "loglinear"; eps: number }
  | { type: "geometric"; sigmaMin: number; sigmaMax: number };

/** A converted directory's `config.json`. */
export interface ConvertedConfig {
  /** {@linkcode CONVERTED_FORMAT}. */
  format: string;
  /** Always `"dit"`. */
  kind: "dit";
  /** Where the weights came from: `"sedd"` (checkpoint.pth), `"hub"`, `"mdlm"` (or another name). */
  source: string;
  /** Attention heads (a state dict cannot tell). */
  nHeads: number;
  /** The longest sequence. */
  context: number;
  /** V, including the mask (last id). */
  vocabSize: number;
  /** d. */
  dModel: number;
  /** Blocks. */
  nLayers: number;
  /** Width of the conditioning vector. */
  condDim: number;
  /** `"sedd"`: SEDD's log-scores; `"logits"`: MDLM's logits for SUBS. */
  output: "sedd" | "logits";
  /** SEDD's `scale_by_sigma`. */
  scaleBySigma: boolean;
  /** The forward process. */
  graph: "absorb" | "uniform";
  /** Whether the network reads sigma; false gives it 0 (MDLM's `time_conditioning: False`). */
  timeConditioning: boolean;
  /** The noise schedule. */
  noise: ConvertedNoise;
  /** The tokenizer's files: `["tokenizer.json"]` or `["vocab.json", "merges.txt"]`. */
  tokenizer: string[];
  /** Training steps, where the checkpoint said. */
  step?: number | null;
  /** Whether the weights are the EMA's. */
  ema?: boolean;
  /** Whether the converter appended a mask row (SEDD's uniform graph has no mask token). */
  maskPadded?: boolean;
}

/** The files of a converted directory, as bytes and text. */
export interface ConvertedFiles {
  /** `model.safetensors`. */
  model: Uint8Array;
  /** The text of `config.json`. */
  config: string;
  /** The tokenizer's files by name: `tokenizer.json`, or `vocab.json` and `merges.txt`. */
  tokenizer: Record<string, string>;
}

/** A loaded converted checkpoint: the same fields as a trainer checkpoint, with a DiT. */
export interface LoadedDit {
  /** The DiT. */
  model: DitModel;
  /** Its tokenizer (GPT-2's byte-level BPE, the mask appended as the last id). */
  tokenizer: Tokenizer;
  /** The training step (0 where the checkpoint did not say). */
  step: number;
  /**
   * What a sampler and the bound read, as a trainer checkpoint's metadata says it: `loss`
   * (`"score-entropy"` for SEDD's log-scores, `"elbo"` for MDLM's SUBS), `graph`, `schedule`
   * (the noise as JSON), `timeConditioning` (`"true"` / `"false"`), `source`, `step`.
   */
  metadata: Record<string, string>;
  /** The parsed `config.json`. */
  converted: ConvertedConfig;
}

const fail = (detail: string): never => {
  throw new RangeError(`Invalid config.json: ${detail}`);
};

function positiveInt(c: Record<string, unknown>, k: string): number {
  const v = c[k];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    fail(`expected ${k} a positive integer, got ${JSON.stringify(v)}`);
  }
  return v as number;
}

function oneOfField<T extends string>(c: Record<string, unknown>, k: string, allowed: T[]): T {
  if (!allowed.includes(c[k] as T)) {
    fail(
      `expected ${k} one of ${allowed.map((a) => `"${a}"`).join(", ")}, got ${
        JSON.stringify(c[k])
      }`,
    );
  }
  return c[k] as T;
}

function bool(c: Record<string, unknown>, k: string): boolean {
  if (typeof c[k] !== "boolean") fail(`expected ${k} a boolean, got ${JSON.stringify(c[k])}`);
  return c[k] as boolean;
}

/**
 * Parses and checks a converted directory's `config.json`.
 *
 * @param text The file's text.
 * @returns The config.
 * @throws {RangeError} `Invalid config.json: expected ..., got ...` for the first bad field.
 */
export function parseConvertedConfig(text: string): ConvertedConfig {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return fail(`expected JSON, got a parse error (${(e as Error).message})`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    return fail(`expected a JSON object, got ${text.slice(0, 40)}`);
  }
  const c = v as Record<string, unknown>;
  if (c.format !== CONVERTED_FORMAT) {
    fail(
      `expected format "${CONVERTED_FORMAT}" (tools/convert_checkpoint.py), got ${
        JSON.stringify(c.format)
      }`,
    );
  }
  if (c.kind !== "dit") fail(`expected kind "dit", got ${JSON.stringify(c.kind)}`);
  for (const k of ["nHeads", "context", "vocabSize", "dModel", "nLayers", "condDim"]) {
    positiveInt(c, k);
  }
  oneOfField(c, "output", ["sedd", "logits"]);
  oneOfField(c, "graph", ["absorb", "uniform"]);
  bool(c, "scaleBySigma");
  bool(c, "timeConditioning");
  if (c.graph === "uniform" && c.output !== "sedd") {
    fail(`expected output "sedd" with the uniform graph (MDLM's SUBS is absorbing), got "logits"`);
  }
  const n = c.noise as Record<string, unknown> | undefined;
  if (typeof n !== "object" || n === null) {
    fail(`expected noise an object, got ${JSON.stringify(n)}`);
  }
  if (n!.type === "loglinear") {
    if (typeof n!.eps !== "number") fail(`expected noise.eps a number, got ${n!.eps}`);
  } else if (n!.type === "geometric") {
    if (typeof n!.sigmaMin !== "number" || typeof n!.sigmaMax !== "number") {
      fail(`expected noise.sigmaMin and sigmaMax numbers, got ${JSON.stringify(n)}`);
    }
  } else fail(`expected noise.type "loglinear" or "geometric", got ${JSON.stringify(n!.type)}`);
  const tok = c.tokenizer;
  const okTok = Array.isArray(tok) &&
    ((tok.length === 1 && tok[0] === "tokenizer.json") ||
      (tok.length === 2 && tok[0] === "vocab.json" && tok[1] === "merges.txt"));
  if (!okTok) {
    fail(
      `expected tokenizer ["tokenizer.json"] or ["vocab.json", "merges.txt"], got ${
        JSON.stringify(tok)
      }`,
    );
  }
  if (c.step !== undefined && c.step !== null) {
    if (typeof c.step !== "number" || !Number.isInteger(c.step) || c.step < 0) {
      fail(`expected step an integer >= 0 or null, got ${JSON.stringify(c.step)}`);
    }
  }
  return c as unknown as ConvertedConfig;
}

/**
 * The noise schedule of a converted checkpoint.
 *
 * @param noise `config.json`'s `noise`.
 * @returns The schedule (`loglinear` with its eps, `geometric` with sigmaMin and sigmaMax).
 */
export function convertedSchedule(noise: ConvertedNoise): NoiseSchedule {
  return noise.type === "loglinear"
    ? createSchedule("loglinear", { eps: noise.eps })
    : createSchedule("geometric", { sigmaMin: noise.sigmaMin, sigmaMax: noise.sigmaMax });
}

/**
 * Reads a converted directory from its files' contents.
 *
 * @param files `model.safetensors`, `config.json` and the tokenizer's files.
 * @returns The DiT, tokenizer, step, the metadata a sampler reads, and the config.
 * @throws {RangeError | TypeError} One line naming the file and what was expected: a bad or
 *   missing field of `config.json`, a missing tokenizer file, a wrong `nHeads`, shapes or a
 *   vocabulary that disagree with the config.
 */
export function parseConvertedDit(files: ConvertedFiles): LoadedDit {
  const c = parseConvertedConfig(files.config);
  const text = (name: string): string => {
    const t = files.tokenizer?.[name];
    if (typeof t !== "string") {
      throw new RangeError(
        `Missing tokenizer file: expected ${name} (config.json names ${
          c.tokenizer.join(" + ")
        }), got none`,
      );
    }
    return t;
  };
  const tokenizer = c.tokenizer[0] === "tokenizer.json"
    ? tokenizerFromHuggingFace(text("tokenizer.json"))
    : tokenizerFromVocabMerges(text("vocab.json"), text("merges.txt"));
  const model = ditFromSafetensors(files.model, {
    config: {
      nHeads: c.nHeads,
      context: c.context,
      output: c.output,
      scaleBySigma: c.scaleBySigma,
    },
  }).model;
  for (const k of ["vocabSize", "dModel", "nLayers", "condDim"] as const) {
    if (model.config[k] !== c[k]) {
      throw new RangeError(
        `Mismatched converted checkpoint: config.json says ${k} ${c[k]}, model.safetensors has ${
          model.config[k]
        }`,
      );
    }
  }
  if (tokenizer.vocabSize !== model.config.vocabSize) {
    throw new RangeError(
      `Mismatched tokenizer: expected a vocabulary of ${model.config.vocabSize} (the model's, ` +
        `the mask included), got ${tokenizer.vocabSize} from ${c.tokenizer.join(" + ")}`,
    );
  }
  const step = c.step ?? 0;
  const metadata: Record<string, string> = {
    format: CONVERTED_FORMAT,
    source: c.source,
    loss: c.output === "sedd" ? "score-entropy" : "elbo",
    graph: c.graph,
    schedule: JSON.stringify(c.noise),
    timeConditioning: String(c.timeConditioning),
    step: String(step),
  };
  return { model, tokenizer, step, metadata, converted: c };
}

/**
 * The text of a `config.json` for a DiT, as `tools/convert_checkpoint.py` writes it (for tests
 * and for writing a converted directory from a DiT made here).
 *
 * @param model The DiT.
 * @param options The graph, noise, and optionally time conditioning (default true), source
 *   (default `"sedd-core"`), step and tokenizer files (default `["tokenizer.json"]`).
 * @returns The JSON text.
 */
export function convertedConfigJSON(
  model: DitModel,
  options: {
    graph: "absorb" | "uniform";
    noise: ConvertedNoise;
    timeConditioning?: boolean;
    source?: string;
    step?: number;
    tokenizer?: string[];
  },
): string {
  const { nHeads, context, vocabSize, dModel, nLayers, condDim, output, scaleBySigma } =
    model.config;
  const c: ConvertedConfig = {
    format: CONVERTED_FORMAT,
    kind: "dit",
    source: options.source ?? "sedd-core",
    nHeads,
    context,
    vocabSize,
    dModel,
    nLayers,
    condDim,
    output,
    scaleBySigma,
    graph: options.graph,
    timeConditioning: options.timeConditioning ?? true,
    noise: options.noise,
    tokenizer: options.tokenizer ?? ["tokenizer.json"],
    step: options.step ?? null,
  };
  return JSON.stringify(c, null, 2) + "\n";
}

/**
 * The sampler's and the bound's reading of a converted checkpoint's metadata (the `metadata`
 * of {@linkcode LoadedDit}): its graph, noise schedule and time conditioning.
 *
 * @param metadata The metadata.
 * @returns `graph`, `schedule` and `timeConditioned`, as `sample()` and `evaluate()` take them.
 * @throws {RangeError} When the metadata is not a converted checkpoint's.
 */
export function convertedSampling(metadata: Record<string, string>): {
  graph: "absorb" | "uniform";
  schedule: NoiseSchedule;
  timeConditioned: boolean;
} {
  if (metadata.format !== CONVERTED_FORMAT) {
    throw new RangeError(
      `Not a converted checkpoint: expected metadata.format "${CONVERTED_FORMAT}", got ${
        JSON.stringify(metadata.format)
      }`,
    );
  }
  let noise: ConvertedNoise;
  try {
    noise = JSON.parse(metadata.schedule);
  } catch {
    throw new RangeError(
      `Invalid converted metadata: expected schedule JSON, got ${metadata.schedule}`,
    );
  }
  return {
    graph: metadata.graph === "uniform" ? "uniform" : "absorb",
    schedule: convertedSchedule(noise),
    timeConditioned: metadata.timeConditioning !== "false",
  };
}
