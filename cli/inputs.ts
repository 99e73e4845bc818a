/**
 * The files a subcommand reads, read before it prints anything, so that a bad path or a
 * malformed file is its one line of output: checkpoints, run directories and corpora.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { CONVERTED_FORMAT, convertedSampling, type SampleTextOptions } from "../mod.ts";
import {
  loadAnyCheckpoint,
  type LoadedCheckpoint,
  type LoadedDit,
  type LoadedRun,
  loadRun,
} from "../src/files/mod.ts";
import { InputError } from "./errors.ts";

/** Whether `path` names an existing regular file. */
async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return false;
    throw e;
  }
}

/**
 * Parses a file with `load`, naming the file in any error its content causes. The library
 * reports malformed bytes with a `TypeError` or `RangeError` that describes the content but not
 * the file.
 */
async function parseFile<T>(file: string, what: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError || e instanceof SyntaxError) {
      throw new InputError(`Invalid ${what} ${file}: ${e.message}`, { cause: e });
    }
    throw e;
  }
}

/**
 * The model file a checkpoint path names: the path itself for a `.safetensors` file, else the
 * `model.safetensors` of a run directory.
 */
function modelFile(checkpoint: string): string {
  return checkpoint.endsWith(".safetensors") ? checkpoint : join(checkpoint, "model.safetensors");
}

/** Whether `file` is a `config.json` of `tools/convert_checkpoint.py`. */
async function isConverted(file: string): Promise<boolean> {
  if (!(await isFile(file))) return false;
  try {
    return JSON.parse(await Deno.readTextFile(file))?.format === CONVERTED_FORMAT;
  } catch {
    return false;
  }
}

/**
 * Loads a checkpoint: a run directory or a `model.safetensors` file of this trainer, or a
 * directory converted by `tools/convert_checkpoint.py` (a SEDD or MDLM DiT).
 *
 * @param checkpoint The path given with `--checkpoint`.
 * @returns The model, tokenizer, step and metadata.
 */
export async function readCheckpoint(checkpoint: string): Promise<LoadedCheckpoint | LoadedDit> {
  const file = modelFile(checkpoint);
  const converted = !checkpoint.endsWith(".safetensors") &&
    await isConverted(join(checkpoint, "config.json"));
  if (!converted && !(await isFile(file))) {
    const raw = /\.(pth|bin|ckpt)$/.test(checkpoint) ||
      await isFile(join(checkpoint, "pytorch_model.bin"));
    throw new InputError(
      `Checkpoint not found: expected a run directory or a .safetensors file, got "${checkpoint}"` +
        (raw
          ? " (a PyTorch checkpoint: convert it first with python3 tools/convert_checkpoint.py)"
          : file !== checkpoint
          ? ` (no ${file})`
          : ""),
    );
  }
  // A converted directory's errors name the file they are about.
  return converted
    ? await loadAnyCheckpoint(checkpoint)
    : await parseFile(file, "checkpoint", () => loadAnyCheckpoint(file));
}

/**
 * The resumable state of a run directory (`optimizer.safetensors`), or `undefined` where the
 * directory has none.
 *
 * @param dir The run directory.
 * @returns The run, or `undefined`.
 */
export async function readRun(dir: string): Promise<LoadedRun | undefined> {
  const file = join(dir, "optimizer.safetensors");
  if (!(await isFile(file))) return undefined;
  return await parseFile(file, "run state", () => loadRun(dir));
}

/**
 * The run directory beside a checkpoint path, and the settings saved in it (an empty object for
 * a model file on its own).
 *
 * @param checkpoint A run directory or a `.safetensors` file.
 * @returns The trainer's settings.
 */
export async function runSettings(checkpoint: string): Promise<Record<string, unknown>> {
  const dir = checkpoint.endsWith(".safetensors") ? dirname(checkpoint) : checkpoint;
  return (await readRun(dir))?.settings ?? {};
}

/**
 * The sampler's reading of the network: log-scores for score entropy, logits otherwise. A
 * converted DiT says its output itself; its graph, noise schedule and time conditioning come
 * from its metadata.
 *
 * @param metadata A checkpoint's metadata, or a run's loss and graph.
 * @returns The sampler options that say so.
 */
export function samplerOutput(metadata: Record<string, string>): SampleTextOptions {
  if (metadata.format === CONVERTED_FORMAT) return convertedSampling(metadata);
  const loss = metadata.loss ?? "seed";
  const graph = metadata.graph === "uniform" ? "uniform" : "absorb";
  // a DiT fine-tuned here without time conditioning (MDLM's default) says so in its metadata
  const timed = metadata.timeConditioning === "false" ? { timeConditioned: false } : {};
  return loss === "score-entropy"
    ? { output: "logScore", graph, ...timed }
    : { output: "logits", ...timed };
}
