/**
 * The page's logic that touches no DOM: corpus checks, the denoising view's cells, the loss
 * chart's geometry, the progress line, the worker count, and checkpoints to and from bytes.
 * `main.ts` wires these to the page; the tests run them in Deno.
 *
 * @module
 */

import { decode, type Tokenizer } from "../src/tokenizer/mod.ts";
import type { DitModel, Model } from "../src/model/mod.ts";
import type { SampleTextOptions } from "../src/sampler/mod.ts";
import {
  type LoadedCheckpoint,
  type LoadedDit,
  modelCheckpointBytes,
  parseConvertedConfig,
  parseConvertedDit,
  parseModelCheckpoint,
} from "../src/checkpoint/mod.ts";

/** The most gradient workers the page starts by default. */
export const MAX_WORKERS = 4;

/**
 * Gradient workers for this browser: `navigator.hardwareConcurrency` capped at
 * {@linkcode MAX_WORKERS}, or 0 (in-process) without cross-origin isolation, where there is no
 * `SharedArrayBuffer` for the pool to share.
 *
 * @param cores `navigator.hardwareConcurrency` (may be undefined).
 * @param isolated `crossOriginIsolated`.
 * @returns The worker count.
 */
export function defaultWorkers(cores: number | undefined, isolated: boolean): number {
  if (!isolated) return 0;
  const n = Number.isInteger(cores) && cores! > 0 ? cores! : 1;
  return Math.min(n, MAX_WORKERS);
}

/**
 * Checks a dropped or chosen corpus file and returns its text.
 *
 * @param name The file's name (for messages).
 * @param bytes Its bytes.
 * @returns The text (UTF-8).
 * @throws RangeError for a file that is not UTF-8 text or holds no text.
 */
export function corpusFromBytes(name: string, bytes: Uint8Array): string {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new RangeError(`Not a text file: expected UTF-8 text in ${name}, got binary data`);
  }
  if (text.includes("\u0000")) {
    throw new RangeError(`Not a text file: expected UTF-8 text in ${name}, got NUL bytes`);
  }
  return checkCorpus(text, name);
}

/**
 * Checks that a corpus holds enough text to train on.
 *
 * @param text The corpus.
 * @param what Its name, for the message.
 * @returns The text.
 * @throws RangeError for an empty (or whitespace-only) corpus.
 */
export function checkCorpus(text: string, what = "the corpus"): string {
  if (text.trim().length === 0) {
    throw new RangeError(`Empty corpus: expected some text in ${what}, got none`);
  }
  return text;
}

/** One position of the denoising view. */
export interface Cell {
  /** The token's text (empty for a masked cell). */
  text: string;
  /** Whether the position is still MASK. */
  masked: boolean;
}

/**
 * The cells of one state of the sequence: every position, masked or decoded on its own.
 *
 * @param ids The ids of one sequence.
 * @param tokenizer The tokenizer (its `maskId` marks masked positions).
 * @returns One cell per position.
 */
export function cellsOf(ids: ArrayLike<number>, tokenizer: Tokenizer): Cell[] {
  const cells: Cell[] = [];
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    cells.push(
      id === tokenizer.maskId ? { text: "", masked: true } : {
        text: decode(tokenizer, [id]),
        masked: false,
      },
    );
  }
  return cells;
}

/**
 * The sequence before the first step: the fixed tokens in place, MASK everywhere else.
 *
 * @param length Positions.
 * @param fixed Fixed positions and their ids.
 * @param maskId The MASK id.
 * @returns The ids.
 */
export function initialIds(
  length: number,
  fixed: { positions: number[]; ids: number[] },
  maskId: number,
): Int32Array {
  const ids = new Int32Array(length).fill(maskId);
  fixed.positions.forEach((p, j) => (ids[p] = fixed.ids[j]));
  return ids;
}

/** A point of the loss chart. */
export interface LossPoint {
  /** Steps completed. */
  step: number;
  /** The value. */
  loss: number;
}

/**
 * The polylines of the loss chart: both series scaled into one box (steps on x, loss on y).
 *
 * @param train Training losses.
 * @param heldOut Held-out losses.
 * @param width Box width.
 * @param height Box height.
 * @returns SVG `points` strings, and the step and loss ranges drawn.
 */
export function chartLines(
  train: readonly LossPoint[],
  heldOut: readonly LossPoint[],
  width: number,
  height: number,
): { train: string; heldOut: string; maxStep: number; minLoss: number; maxLoss: number } {
  const all = [...train, ...heldOut].filter((p) => Number.isFinite(p.loss));
  const maxStep = Math.max(1, ...all.map((p) => p.step));
  let minLoss = Math.min(...all.map((p) => p.loss));
  let maxLoss = Math.max(...all.map((p) => p.loss));
  if (!all.length) (minLoss = 0), (maxLoss = 1);
  if (maxLoss - minLoss < 1e-9) (minLoss -= 0.5), (maxLoss += 0.5);
  const line = (ps: readonly LossPoint[]) =>
    ps.filter((p) => Number.isFinite(p.loss)).map((p) => {
      const x = (p.step / maxStep) * width;
      const y = height - ((p.loss - minLoss) / (maxLoss - minLoss)) * height;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    }).join(" ");
  return { train: line(train), heldOut: line(heldOut), maxStep, minLoss, maxLoss };
}

/**
 * Minutes and seconds, `m:ss`; `?` for an unknown duration.
 *
 * @param seconds The duration.
 * @returns The text.
 */
export function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/**
 * The progress line under the bar: step, tokens/s and the time left at the current pace.
 *
 * @param step Steps done.
 * @param steps Steps planned.
 * @param seconds Seconds spent training so far.
 * @param tokensPerSecond Recent throughput.
 * @returns The line, and the fraction done in [0, 1].
 */
export function progressLine(
  step: number,
  steps: number,
  seconds: number,
  tokensPerSecond: number,
): { text: string; fraction: number } {
  const fraction = steps > 0 ? Math.min(1, step / steps) : 0;
  const eta = step > 0 ? (seconds / step) * (steps - step) : NaN;
  const tps = Number.isFinite(tokensPerSecond)
    ? Math.round(tokensPerSecond).toLocaleString("en-US")
    : "?";
  return { text: `step ${step} / ${steps} · ${tps} tokens/s · ETA ${clock(eta)}`, fraction };
}

/**
 * How the sampler reads a network trained with `loss` on `graph`: log-scores for score entropy,
 * logits otherwise (as the command line reads a checkpoint's metadata).
 *
 * @param loss The training objective (`seed` when unknown).
 * @param graph The graph (`absorb` when unknown).
 * @returns The sampler's `output` and `graph`.
 */
export function samplerReading(
  loss: string | undefined,
  graph: string | undefined,
): Pick<SampleTextOptions, "output" | "graph"> {
  const g = graph === "uniform" ? "uniform" : "absorb";
  return loss === "score-entropy" ? { output: "logScore", graph: g } : { output: "logits" };
}

/** A model the page can sample from. */
export interface PageModel {
  /** The model: trained here or by the CLI, or a converted SEDD / MDLM DiT. */
  model: Model | DitModel;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** Steps it was trained. */
  step: number;
  /** Its training objective. */
  loss: string;
  /** Its graph. */
  graph: string;
  /** Where it came from, for the page. */
  source: string;
  /**
   * A converted DiT's metadata (`LoadedDit.metadata`): the sample worker reads its graph,
   * schedule and time conditioning from it with `convertedSampling`.
   */
  converted?: Record<string, string>;
}

const SAFETENSORS_HINT = "a model.safetensors written by deno task train or by this page";

/**
 * Reads a `model.safetensors` file, with a message that names the file and what is wrong.
 *
 * @param name The file's name.
 * @param bytes Its bytes.
 * @returns The model, tokenizer and training metadata.
 * @throws RangeError naming the problem.
 */
export function checkpointFromBytes(name: string, bytes: Uint8Array): PageModel {
  let loaded: LoadedCheckpoint;
  try {
    loaded = parseModelCheckpoint(bytes);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new RangeError(`Cannot load ${name}: expected ${SAFETENSORS_HINT}; ${why}`);
  }
  return {
    model: loaded.model,
    tokenizer: loaded.tokenizer,
    step: loaded.step,
    loss: loaded.metadata.loss ?? "seed",
    graph: loaded.metadata.graph ?? "absorb",
    source: name,
  };
}

/**
 * The bytes of a `model.safetensors` that `deno task sample --checkpoint` reads.
 *
 * @param m The model and its metadata.
 * @returns The file's bytes.
 */
export function checkpointToBytes(m: PageModel): Uint8Array {
  if (m.converted !== undefined) {
    throw new RangeError(
      "Nothing to download: a converted DiT is already on disk as the files it was loaded from",
    );
  }
  return modelCheckpointBytes(m.model as Model, m.tokenizer, m.step, {
    loss: m.loss,
    graph: m.graph,
  });
}

/** The files of a converted directory that the page reads, by name. */
const CONVERTED_FILES = ["model.safetensors", "config.json"];

/**
 * Reads a converted SEDD or MDLM directory from files the user chose together
 * (`model.safetensors`, `config.json` and the tokenizer's files that `config.json` names), with
 * a message that names what is missing or wrong.
 *
 * @param files The chosen files: their names and bytes.
 * @returns The DiT, tokenizer and the metadata the sample worker reads.
 */
export function convertedFromFiles(files: { name: string; bytes: Uint8Array }[]): PageModel {
  const byName = new Map(files.map((f) => [f.name, f.bytes]));
  const text = (name: string) => new TextDecoder().decode(byName.get(name));
  const missing = CONVERTED_FILES.filter((n) => !byName.has(n));
  if (missing.length > 0) {
    throw new RangeError(
      `Cannot load a converted checkpoint: expected ${
        missing.join(" and ")
      } among the chosen files, got ${files.map((f) => f.name).join(", ")}`,
    );
  }
  let loaded: LoadedDit;
  try {
    const names = parseConvertedConfig(text("config.json")).tokenizer;
    const tokenizer: Record<string, string> = {};
    for (const n of names) if (byName.has(n)) tokenizer[n] = text(n);
    loaded = parseConvertedDit({
      model: byName.get("model.safetensors")!,
      config: text("config.json"),
      tokenizer,
    });
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new RangeError(`Cannot load the converted checkpoint: ${why}`);
  }
  return {
    model: loaded.model,
    tokenizer: loaded.tokenizer,
    step: loaded.step,
    loss: loaded.metadata.loss,
    graph: loaded.metadata.graph,
    source: `Converted ${loaded.converted.source} DiT`,
    converted: loaded.metadata,
  };
}

/** What the page says about WebGPU: whether it may be chosen, and the line shown. */
export interface WebGpuStatus {
  /** True when an adapter passed the backend's self-check. */
  available: boolean;
  /** One line: the adapter, or why there is none and that the CPU is used. */
  text: string;
}

/**
 * Asks for the WebGPU backend once, as training and sampling would (`resolveAnyBackend`), and
 * turns the answer into the page's line: the adapter found, or the one-line reason there is
 * none (the CLI's own message) and that training and sampling stay on the CPU.
 *
 * @param open Opens the backend, releases it, and returns its note; throws without an adapter.
 * @returns Whether WebGPU may be chosen, and the line to show.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { probeWebGpu } from "./view.ts";
 *
 * const none = await probeWebGpu(() => Promise.reject(new Error("no adapter\nmore")));
 * assert.deepEqual(none, {
 *   available: false,
 *   text: "no adapter; training and sampling run on the CPU",
 * });
 * ```
 */
export async function probeWebGpu(open: () => Promise<string>): Promise<WebGpuStatus> {
  try {
    const note = await open();
    return { available: true, text: `Backend ${note}: training and sampling may run on it` };
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split("\n")[0];
    return { available: false, text: `${why}; training and sampling run on the CPU` };
  }
}
