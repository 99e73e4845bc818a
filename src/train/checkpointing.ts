/**
 * The run directory's writes during training: the metrics line of every step, a checkpoint
 * every `checkpointEvery` steps and at the end (with the loss chart), and what a stopped run
 * can say about the newest checkpoint it left behind.
 *
 * Without a run directory every method is a no-op, so `train()` runs on strings and arrays alone.
 *
 * @module
 */

import type { AnyModel } from "./net.ts";
import type { AdamWState } from "../optim/adamw.ts";
import type { Tokenizer } from "../tokenizer/mod.ts";
import { metricsRecord } from "./report.ts";
import type { RunDir, Settings } from "./setup.ts";
import type { StepInfo } from "./train.ts";

/** What {@linkcode Checkpoints} writes, and where. */
export interface CheckpointTarget {
  /** The run-directory module (needed when `out` is set). */
  fsx: RunDir | undefined;
  /** The run directory; `undefined`: nothing is written. */
  out: string | undefined;
  /** The live model (the pool's shared parameters). */
  model: AnyModel;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** AdamW state; its `step` is the step a checkpoint records. */
  optimizer: AdamWState;
  /** The settings saved for resuming. */
  settings: Settings;
  /** Checkpoint every this many steps; 0 only at the end. */
  checkpointEvery: number;
  /** The loss chart's title and the data's characters per token (its bits/char axis). */
  chart: { title: string; charsPerToken?: number };
  /** Whether the run resumed from a checkpoint (which then counts as the newest one). */
  resumed: boolean;
  /** Test-only: the checkpoint after this step fails once a temporary file is written. */
  writeFault?: WriteFault;
  /**
   * Called before a checkpoint is written: brings `model` and `optimizer` up to date where they
   * live elsewhere (the WebGPU pool's device).
   */
  beforeSave?: () => Promise<void>;
}

/** Test-only: a checkpoint write that fails as a full disk would. */
export interface WriteFault {
  /** The step whose checkpoint fails. */
  step: number;
  /**
   * The file whose temporary file is the last written: `"model.safetensors"` (written first),
   * `"optimizer.safetensors"` (second, after the model's), or `"loss.svg"` (the chart, written
   * after both checkpoint files are in place). Default `"model.safetensors"`.
   */
  file?: "model.safetensors" | "optimizer.safetensors" | "loss.svg";
}

/** A checkpoint that could not be written: the run stops, the previous checkpoint is kept. */
export class CheckpointError extends Error {
  /** The step whose checkpoint failed. */
  readonly step: number;
  /**
   * Makes the error.
   *
   * @param step The step.
   * @param message The message.
   * @param cause The write's error.
   */
  constructor(step: number, message: string, cause: unknown) {
    super(message, { cause });
    this.name = "CheckpointError";
    this.step = step;
  }
}

/** The checkpoints and metrics of one run. */
export class Checkpoints {
  /** The step of the newest checkpoint on disk (or resumed from). */
  lastGood: number;
  /** Whether any checkpoint is on disk. */
  haveCheckpoint: boolean;
  readonly #t: CheckpointTarget;
  #wrote = false; // whether this call of train() wrote a checkpoint

  /**
   * Starts at the optimizer's step.
   *
   * @param target The run directory and what goes into it.
   */
  constructor(target: CheckpointTarget) {
    this.#t = target;
    this.lastGood = target.optimizer.step;
    this.haveCheckpoint = target.resumed;
  }

  /** A resumed run drops the metrics its predecessor logged after its last checkpoint. */
  async start(): Promise<void> {
    const { fsx, out, resumed, optimizer } = this.#t;
    if (out !== undefined && resumed) await fsx!.truncateMetrics(out, optimizer.step);
  }

  /**
   * Appends the step's metrics line, then checkpoints when the step is a multiple of
   * `checkpointEvery`.
   *
   * @param info The step's record.
   */
  async record(info: StepInfo): Promise<void> {
    const { fsx, out, checkpointEvery } = this.#t;
    if (out === undefined) return;
    await fsx!.appendMetrics(out, metricsRecord(info));
    if (checkpointEvery > 0 && info.step % checkpointEvery === 0) await this.save();
  }

  /**
   * Rewrites the last metrics line (the held-out loss measured after a stopped run's last step).
   *
   * @param info The step's complete record.
   */
  async replaceLast(info: StepInfo): Promise<void> {
    const { fsx, out } = this.#t;
    if (out !== undefined) await fsx!.replaceLastMetrics(out, metricsRecord(info));
  }

  /**
   * Writes both checkpoint files and the loss chart.
   *
   * @param stopped Why the run stopped, for the final checkpoint's metadata (`stopped`); a
   *   periodic checkpoint has none.
   */
  async save(stopped?: string): Promise<void> {
    const { fsx, out, model, tokenizer, optimizer, settings, chart } = this.#t;
    if (out === undefined) return;
    await this.#t.beforeSave?.();
    const step = optimizer.step;
    const fault = this.#t.writeFault;
    const failAt = fault?.step === step ? (fault.file ?? "model.safetensors") : undefined;
    const beforeRename = failAt === undefined ? undefined : (file: string) => {
      if (file.split(/[\\/]/).at(-1) === failAt) {
        throw new Error(`injected write fault (no space left) on ${file}`);
      }
    };
    try {
      await fsx!.saveCheckpoint(
        out,
        model,
        tokenizer,
        optimizer,
        settings as unknown as Record<string, unknown>,
        {
          metadata: stopped === undefined ? {} : { stopped },
          beforeRename,
        },
      );
    } catch (e) {
      throw new CheckpointError(
        step,
        `Checkpoint of step ${step} failed: ${(e as Error).message}; training ` +
          `stopped${this.whereKept()}`,
        e,
      );
    }
    this.lastGood = step;
    this.haveCheckpoint = true;
    this.#wrote = true;
    try {
      await fsx!.writeLossChart(out, chart.title, chart.charsPerToken, { beforeRename });
    } catch (e) {
      throw new CheckpointError(
        step,
        `Loss chart of step ${step} failed: ${(e as Error).message}; training ` +
          `stopped${this.whereKept()}`,
        e,
      );
    }
  }

  /**
   * The final save, recording why the run stopped. Skipped only when this call wrote nothing and
   * took no step (a resumed run already at its budget, or a run of 0 steps).
   *
   * @param stopped Why the run stopped.
   */
  async finish(stopped: string): Promise<void> {
    if (this.#t.optimizer.step !== this.lastGood || this.#wrote) await this.save(stopped);
  }

  /**
   * What a run stopped by an error says about the checkpoint it leaves.
   *
   * @returns `""` without a run directory, else a clause starting with `"; "`.
   */
  whereKept(): string {
    const out = this.#t.out;
    if (out === undefined) return "";
    return this.haveCheckpoint
      ? `; the last good checkpoint (step ${this.lastGood}) is kept in ${out}`
      : `; no checkpoint had been written to ${out} yet`;
  }
}
