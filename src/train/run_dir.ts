/**
 * The run directory: checkpoints, metrics and the loss chart of one training run.
 *
 * ```
 * model.safetensors      weights under PyTorch's state-dict names; __metadata__: config,
 *                        tokenizer (JSON), step, loss and graph (how to read the output), and
 *                        in a run's final checkpoint why it stopped (steps, time or aborted)
 * optimizer.safetensors  everything to resume: params, AdamW moments m and v, step, the trainer
 *                        settings (seed, batch, schedule, ...) and the same config and tokenizer
 * metrics.jsonl          one JSON object per step (loss, lr, tokens/s, held-out loss)
 * loss.svg               training loss (raw, and its moving average) and held-out points against
 *                        step, in nats/token and bits/char
 * tokens-<hash>.safetensors  the tokenized corpus, keyed by the tokenizer's and the text's hash
 * ```
 *
 * Every file is written atomically (temporary file, then rename). A checkpoint's two files are
 * written as one: both temporary files first (a failure there leaves both old files as they
 * were), then the renames, `optimizer.safetensors` last. Resuming takes the parameters from
 * `optimizer.safetensors`, which holds its own copy of them, so the weights of one step are never
 * paired with the moments of another; and it refuses a directory whose `model.safetensors` is of
 * another step (a kill between the two renames), so what is sampled is what was resumed.
 *
 * The two checkpoint files' bytes are made and parsed by `src/checkpoint/run_files.ts`, which does
 * no I/O (the browser page uses it too); this module reads and writes them.
 *
 * @module
 */

import {
  type LoadedCheckpoint,
  type LoadedRun,
  modelCheckpointBytes,
  optimizerBytes,
  parseModelCheckpoint,
  parseOptimizer,
} from "../checkpoint/run_files.ts";
import { parseSafetensors, serializeSafetensors } from "../checkpoint/safetensors.ts";
import {
  CONVERTED_FORMAT,
  type LoadedDit,
  parseConvertedConfig,
  parseConvertedDit,
} from "../checkpoint/converted.ts";
import {
  appendLine,
  exists,
  joinPath,
  readBytes,
  readText,
  writeFileAtomic,
  writeFilesAtomic,
} from "../io.ts";
import type { AnyModel } from "./net.ts";
import type { AdamWState } from "../optim/adamw.ts";
import type { Tokenizer } from "../tokenizer/mod.ts";
import { lossChartSvg } from "./plot.ts";
import type { StepInfo } from "./train.ts";

/** What {@linkcode loadCheckpoint}, {@linkcode loadRun} and {@linkcode loadConverted} return. */
export type { LoadedCheckpoint, LoadedDit, LoadedRun };

/** One line of `metrics.jsonl`: a step's record without the step budget. */
export type MetricsRecord = Omit<StepInfo, "steps">;

/**
 * Writes both checkpoint files of a run directory as one (see `writeFilesAtomic`): both
 * temporary files first, then the renames, `optimizer.safetensors` (the state resuming reads)
 * last.
 *
 * @param dir The run directory.
 * @param model The model.
 * @param tokenizer Its tokenizer.
 * @param optimizer AdamW state.
 * @param settings Trainer settings for resuming.
 * @param options `metadata`: further metadata for both files (the trainer's final checkpoint
 *   adds `stopped`); `beforeRename`: called with each file's path once its temporary file is
 *   complete (fault injection).
 * @throws {WriteError} When a file cannot be written: both files then keep the previous
 *   checkpoint. Only a failed rename of `optimizer.safetensors` after `model.safetensors` was
 *   renamed leaves them of two steps, which {@linkcode loadRun} refuses, naming both.
 */
export async function saveCheckpoint(
  dir: string,
  model: AnyModel,
  tokenizer: Tokenizer,
  optimizer: AdamWState,
  settings: Record<string, unknown>,
  options: { metadata?: Record<string, string>; beforeRename?: (file: string) => void } = {},
): Promise<void> {
  const extra = options.metadata ?? {};
  await writeFilesAtomic([
    {
      path: joinPath(dir, "model.safetensors"),
      data: modelCheckpointBytes(model, tokenizer, optimizer.step, {
        ...extra,
        loss: String(settings.loss ?? "seed"),
        graph: String(settings.graph ?? "absorb"),
        ...ditMetadata(model, settings),
      }),
    },
    {
      path: joinPath(dir, "optimizer.safetensors"),
      data: optimizerBytes(model, tokenizer, optimizer, settings, extra),
    },
  ], { beforeRename: options.beforeRename });
}

/**
 * What a sampler needs beyond `loss` and `graph` to read a fine-tuned DiT as it was trained, under
 * the keys of a converted checkpoint's metadata: `timeConditioning` (`"false"`: the network was
 * given sigma 0) and `schedule` (the trainer's loglinear noise). Nothing for the transformer.
 */
function ditMetadata(model: AnyModel, settings: Record<string, unknown>): Record<string, string> {
  if ((model.config as { kind?: string }).kind !== "dit") return {};
  return {
    timeConditioning: String(settings.timeConditioned !== false),
    // createSchedule("loglinear")'s default eps, the schedule fillBatch draws sigma from
    schedule: JSON.stringify({ type: "loglinear", eps: 1e-3 }),
  };
}

/** A run-directory file that exists but cannot be read as what it should be. */
export class RunFileError extends RangeError {
  /** The file. */
  readonly path: string;
  /**
   * Makes the error.
   *
   * @param path The file.
   * @param cause Why it could not be read (its message becomes this one's tail).
   */
  constructor(path: string, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(`Invalid file ${path}: ${why.split("\n")[0]}`, { cause });
    this.name = "RunFileError";
    this.path = path;
  }
}

/** Reads and parses `file`, any failure a {@linkcode RunFileError} naming it. */
async function readFileAs<T>(file: string, parse: (bytes: Uint8Array) => T): Promise<T> {
  try {
    return parse(await readBytes(file));
  } catch (e) {
    throw new RunFileError(file, e);
  }
}

/**
 * Loads `model.safetensors` from a run directory (or a path to the file itself).
 *
 * @param path A run directory or a `.safetensors` file.
 * @returns The model, tokenizer, step and metadata.
 * @throws {RangeError} When the file does not exist, or the directory is a converted DiT (load
 *   that with {@linkcode loadConverted} or {@linkcode loadAnyCheckpoint}).
 * @throws {RunFileError} When it cannot be read or parsed (truncated, corrupted, not a checkpoint
 *   of this trainer); nothing is half-loaded.
 */
export async function loadCheckpoint(path: string): Promise<LoadedCheckpoint> {
  const file = path.endsWith(".safetensors") ? path : joinPath(path, "model.safetensors");
  if (!(await exists(file))) {
    throw new RangeError(`Checkpoint not found: expected ${file} to exist`);
  }
  if (!path.endsWith(".safetensors") && await isConvertedDir(path)) {
    throw new RangeError(
      `${path} is a converted DiT checkpoint (config.json format ${CONVERTED_FORMAT}): ` +
        "expected loadConverted or loadAnyCheckpoint to read it",
    );
  }
  return await readFileAs(file, parseModelCheckpoint);
}

/** Whether `dir` holds a `config.json` of {@linkcode CONVERTED_FORMAT}. */
async function isConvertedDir(dir: string): Promise<boolean> {
  const file = joinPath(dir, "config.json");
  if (!(await exists(file))) return false;
  try {
    return JSON.parse(await readText(file))?.format === CONVERTED_FORMAT;
  } catch {
    return false;
  }
}

/**
 * Loads a directory written by `tools/convert_checkpoint.py` (a SEDD or MDLM DiT):
 * `model.safetensors`, `config.json` and the tokenizer's files it names.
 *
 * @param dir The directory.
 * @returns The DiT, tokenizer, step, metadata (loss, graph, schedule, time conditioning) and
 *   the parsed config.
 * @throws {RangeError} When a file is missing: one line naming it.
 * @throws {RunFileError} When a file cannot be parsed, or the files disagree (a wrong nHeads, a
 *   tokenizer of another vocabulary): one line naming the file.
 */
export async function loadConverted(dir: string): Promise<LoadedDit> {
  const need = async (name: string): Promise<string> => {
    const file = joinPath(dir, name);
    if (!(await exists(file))) {
      throw new RangeError(
        `Incomplete converted checkpoint: expected ${file} (tools/convert_checkpoint.py writes ` +
          "model.safetensors, config.json and the tokenizer), got none",
      );
    }
    return file;
  };
  const configFile = await need("config.json");
  const configText = await readText(configFile);
  const config = (() => {
    try {
      return parseConvertedConfig(configText);
    } catch (e) {
      throw new RunFileError(configFile, e);
    }
  })();
  const modelFile = await need("model.safetensors");
  const tokenizer: Record<string, string> = {};
  for (const name of config.tokenizer) tokenizer[name] = await readText(await need(name));
  return await readFileAs(
    modelFile,
    (model) => parseConvertedDit({ model, config: configText, tokenizer }),
  );
}

/**
 * Loads either kind of checkpoint: a converted DiT directory ({@linkcode loadConverted}, when
 * its `config.json` says so), else a run directory or `model.safetensors` file of this trainer
 * ({@linkcode loadCheckpoint}).
 *
 * @param path A directory or a `.safetensors` file.
 * @returns The loaded checkpoint; `model.config.kind` is `"dit"` for a converted one.
 */
export async function loadAnyCheckpoint(path: string): Promise<LoadedCheckpoint | LoadedDit> {
  if (!path.endsWith(".safetensors") && await isConvertedDir(path)) {
    return await loadConverted(path);
  }
  return await loadCheckpoint(path);
}

/**
 * Loads the resumable state of a run directory (`optimizer.safetensors`), after checking that
 * its `model.safetensors`, when there is one, is the same checkpoint.
 *
 * @param dir The run directory.
 * @returns Model, tokenizer, optimizer state, settings.
 * @throws {RangeError} When `optimizer.safetensors` does not exist, or when `model.safetensors`
 *   is of another step or holds other weights (a checkpoint cut off between its two renames):
 *   a one-line message naming both files and their steps.
 * @throws {RunFileError} When either file cannot be read or parsed; nothing is half-loaded.
 */
export async function loadRun(dir: string): Promise<LoadedRun> {
  const file = joinPath(dir, "optimizer.safetensors");
  if (!(await exists(file))) {
    throw new RangeError(`Nothing to resume: expected ${file} to exist`);
  }
  const run = await readFileAs(file, parseOptimizer);
  const modelFile = joinPath(dir, "model.safetensors");
  if (await exists(modelFile)) {
    const ckpt = await readFileAs(modelFile, parseModelCheckpoint);
    const a = ckpt.model.params, b = run.model.params;
    const same = ckpt.step === run.step && a.length === b.length &&
      a.every((x, i) => Object.is(x, b[i]));
    if (!same) {
      const got = ckpt.step === run.step
        ? `other weights at the same step ${run.step} (files of two runs?)`
        : `step ${ckpt.step} and step ${run.step} (a checkpoint cut off between its two renames)`;
      throw new RangeError(
        `Inconsistent run directory: expected ${modelFile} and ${file} to be one checkpoint, ` +
          `got ${got}; delete ${modelFile} to resume from step ${run.step}, which ${file} ` +
          `holds whole`,
      );
    }
  }
  return run;
}

/**
 * Appends one record to `metrics.jsonl`.
 *
 * @param dir The run directory.
 * @param record The record.
 */
export function appendMetrics(dir: string, record: MetricsRecord): Promise<void> {
  return appendLine(joinPath(dir, "metrics.jsonl"), JSON.stringify(record));
}

/**
 * Reads `metrics.jsonl` (an empty list when it does not exist). A last line that is not JSON is
 * an append cut short by a kill and is dropped; a bad line before it is a {@linkcode RunFileError}.
 *
 * @param dir The run directory.
 * @returns The records in file order.
 */
export async function readMetrics(dir: string): Promise<MetricsRecord[]> {
  const file = joinPath(dir, "metrics.jsonl");
  if (!(await exists(file))) return [];
  const lines = (await readText(file)).split("\n").filter((l) => l.trim() !== "");
  const records: MetricsRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    let r: unknown;
    try {
      r = JSON.parse(lines[i]);
    } catch {
      if (i === lines.length - 1) break;
      r = undefined;
    }
    if (typeof r !== "object" || r === null || !Number.isInteger((r as MetricsRecord).step)) {
      throw new RunFileError(
        file,
        `expected line ${i + 1} to be a JSON record with an integer step, got ${
          lines[i].slice(0, 60)
        }`,
      );
    }
    records.push(r as MetricsRecord);
  }
  return records;
}

/**
 * Keeps only records up to `step` (a resumed run drops what the interrupted run logged after its
 * last checkpoint), rewriting the file atomically.
 *
 * @param dir The run directory.
 * @param step The last step to keep.
 */
export async function truncateMetrics(dir: string, step: number): Promise<void> {
  await writeMetrics(dir, (await readMetrics(dir)).filter((r) => r.step <= step));
}

/**
 * Replaces the last record of `metrics.jsonl`, which must be of the same step, rewriting the file
 * atomically: the trainer adds the held-out loss it measures after a run's last step, so that each
 * step keeps exactly one line.
 *
 * @param dir The run directory.
 * @param record The step's complete record.
 */
export async function replaceLastMetrics(dir: string, record: MetricsRecord): Promise<void> {
  const records = await readMetrics(dir);
  const last = records.at(-1);
  if (last?.step !== record.step) {
    throw new RangeError(
      `Invalid metrics replacement: expected the last line of metrics.jsonl to be step ${record.step}, got ${
        last === undefined ? "no lines" : `step ${last.step}`
      }`,
    );
  }
  records[records.length - 1] = record;
  await writeMetrics(dir, records);
}

/** Writes `metrics.jsonl` atomically with exactly these records. */
async function writeMetrics(dir: string, records: MetricsRecord[]): Promise<void> {
  await writeFileAtomic(
    joinPath(dir, "metrics.jsonl"),
    records.map((r) => JSON.stringify(r) + "\n").join(""),
  );
}

/**
 * Draws `loss.svg` from `metrics.jsonl` (see `lossChartSvg`): raw and smoothed training loss,
 * held-out points, and the bits/char axis when the characters per token are known.
 *
 * @param dir The run directory.
 * @param title The chart's title.
 * @param charsPerToken Characters per token of the data, for the bits/char axis (none if absent).
 * @param options `beforeRename`: see `writeFileAtomic` (fault injection).
 */
export async function writeLossChart(
  dir: string,
  title: string,
  charsPerToken?: number,
  options: { beforeRename?: (file: string) => void } = {},
): Promise<void> {
  const records = await readMetrics(dir);
  const svg = lossChartSvg({
    train: records.map((r) => [r.step, r.loss]),
    heldOut: records.filter((r) => r.heldOutLoss !== undefined).map((
      r,
    ) => [r.step, r.heldOutLoss!]),
  }, { title, charsPerToken });
  await writeFileAtomic(joinPath(dir, "loss.svg"), svg, options);
}

/**
 * Reads a cached token stream, or `undefined` when absent or unreadable (a cache: the caller
 * tokenizes again and rewrites it).
 *
 * @param file The cache file.
 * @returns The tokens.
 */
export async function readTokenCache(file: string): Promise<Int32Array | undefined> {
  if (!(await exists(file))) return undefined;
  try {
    const t = parseSafetensors(await readBytes(file)).tensors.tokens;
    if (!t || t.dtype !== "I32" || t.shape.length !== 1) return undefined;
    return t.data as Int32Array;
  } catch {
    return undefined;
  }
}

/**
 * Writes a token stream cache atomically.
 *
 * @param file The cache file.
 * @param tokens The stream.
 */
export async function writeTokenCache(file: string, tokens: Int32Array): Promise<void> {
  await writeFileAtomic(
    file,
    serializeSafetensors({ tokens: { shape: [tokens.length], data: tokens } }),
  );
}
