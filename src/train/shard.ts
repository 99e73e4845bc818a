/**
 * The work of one gradient worker: the loss and gradient of rows `[rowStart, rowEnd)` of the
 * shared batch, against the shared parameters, into the worker's own gradient buffer.
 *
 * Dimensions: `B` batch, `T` context, `V` vocabulary.
 *
 * The same {@linkcode Shard} runs inside a Web Worker (see `workers/grad_worker.ts`, a thin
 * comlink `expose()` over {@linkcode shardWorkerApi}) and in-process when the trainer runs with
 * `workers: 0`, so both paths compute exactly the same numbers.
 *
 * @module
 */

import type { BackendName } from "../nn/backend.ts";
import { lossBackward, lossForward, type LossInputs } from "../diffusion/losses.ts";
import { lossAndGrad, type Model, type Workspace } from "../model/model.ts";
import { crossEntropyForward } from "../nn/cross_entropy.ts";
import {
  type BatchBuffers,
  type BatchMemory,
  batchViews,
  type GraphName,
  type LossName,
} from "./batch.ts";
import {
  type AnyConfig,
  type AnyModel,
  checkDitObjective,
  createShardNet,
  isDitModel,
  modelOver,
  type ShardNet,
} from "./net.ts";

/** A deliberate failure, for tests of the trainer's error handling. */
export interface FaultInjection {
  /** Which worker fails (its index in the pool). */
  worker: number;
  /** The step at which it fails. */
  step: number;
  /** `throw`: the call rejects; `crash`: an uncaught error kills the worker and the call never returns. */
  mode: "throw" | "crash";
}

/** Everything a shard needs, in plain (cloneable) values and shared memory. */
export interface ShardSetup {
  /** The worker's index in the pool (for messages and fault injection). */
  index: number;
  /** The model's config (either kind). */
  config: AnyConfig;
  /** The parameters, shared with the main thread. */
  params: SharedArrayBuffer;
  /** This worker's own gradient buffer (parameters' layout). */
  grads: SharedArrayBuffer;
  /** The batch, shared with the main thread. */
  batch: BatchMemory;
  /** The most rows this shard will be given. */
  maxRows: number;
  /** Run seed (dropout keys). */
  seed: number;
  /** The objective. */
  loss: LossName;
  /** The graph of `score-entropy`. */
  graph: GraphName;
  /** Rows per forward/backward pass (chunks aligned to its multiples). Default: the whole shard. */
  microBatch?: number;
  /** The compute backend (already resolved: never `"auto"`). Default: `defaultBackend()`. */
  backend?: BackendName;
  /** The BLAS library of the `"blas"` backend (default: see `loadBlas`). */
  blasPath?: string;
  /**
   * A DiT only: whether the network reads sigma (false: it is given 0, MDLM's
   * `time_conditioning: False`). Default true.
   */
  timeConditioned?: boolean;
  /** Test-only failure. */
  fault?: FaultInjection;
}

/** The settings of a {@linkcode Shard} beyond its buffers. */
export type ShardOptions = Pick<
  ShardSetup,
  "maxRows" | "seed" | "loss" | "graph" | "microBatch" | "backend" | "blasPath" | "timeConditioned"
>;

/** One shard's model view, gradient buffer, batch view and network. */
export class Shard {
  /** The model over the (possibly shared) parameter buffer: a transformer or a DiT. */
  readonly model: AnyModel;
  /** Gradient buffer, zeroed and filled by {@linkcode Shard.gradient}. */
  readonly grads: Float32Array;
  /** The batch. */
  readonly batch: BatchBuffers;
  /** The forward/backward pass of the model's kind, for up to `microBatch` rows. */
  readonly net: ShardNet;
  /** The transformer's activations (its `seed` loss runs on them); undefined for a DiT. */
  readonly workspace: Workspace | undefined;
  /** Run seed. */
  readonly seed: number;
  /** The objective. */
  readonly loss: LossName;
  /** The graph of `score-entropy`. */
  readonly graph: GraphName;
  /** Rows per forward/backward pass. */
  readonly microBatch: number;

  /**
   * Wraps existing buffers; nothing is copied.
   *
   * @param model The model of either kind (parameters are read, never written).
   * @param grads Gradient buffer with the parameters' length.
   * @param batch The batch buffers.
   * @param options `maxRows`, `seed`, `loss`, `graph`, `microBatch`, `backend`, `blasPath`,
   *   `timeConditioned`.
   */
  constructor(
    model: AnyModel,
    grads: Float32Array,
    batch: BatchBuffers,
    options: ShardOptions,
  ) {
    this.model = model;
    this.grads = grads;
    this.batch = batch;
    this.seed = options.seed;
    this.loss = options.loss;
    this.graph = options.graph;
    this.microBatch = options.microBatch ?? options.maxRows;
    if (isDitModel(model)) checkDitObjective(model.config, this.loss, this.graph);
    const net = createShardNet(model, {
      rows: Math.min(options.maxRows, this.microBatch),
      T: batch.T,
      graph: this.graph,
      timeConditioned: options.timeConditioned,
      backend: options.backend,
      blasPath: options.blasPath,
    });
    this.net = net;
    this.workspace = (net as { workspace?: Workspace }).workspace;
  }

  /**
   * Zeroes the gradient buffer, then writes the gradient of rows `[rowStart, rowEnd)`.
   *
   * @param step The training step (dropout keys).
   * @param rowStart First row (global index in the batch).
   * @param rowEnd One past the last row.
   * @returns The shard's part of the loss (the batch loss is the sum over shards).
   */
  gradient(step: number, rowStart: number, rowEnd: number): number {
    this.grads.fill(0);
    let loss = 0;
    for (const [a, b] of this.chunks(rowStart, rowEnd)) loss += this.chunkGradient(step, a, b);
    return loss;
  }

  /**
   * Splits `[rowStart, rowEnd)` at the multiples of `microBatch` (global row indices), so every
   * chunk is the same whatever the sharding and only the order of the final sums depends on it.
   */
  private chunks(rowStart: number, rowEnd: number): [number, number][] {
    const M = this.microBatch;
    const out: [number, number][] = [];
    for (let a = rowStart; a < rowEnd;) {
      const b = Math.min(rowEnd, (Math.floor(a / M) + 1) * M);
      out.push([a, b]);
      a = b;
    }
    return out;
  }

  /** Adds the gradient of rows `[rowStart, rowEnd)` (at most `microBatch`) into `grads`. */
  private chunkGradient(step: number, rowStart: number, rowEnd: number): number {
    const { T, input, target, weight, sigma } = this.batch;
    const rows = rowEnd - rowStart;
    const a = rowStart * T, b = rowEnd * T;
    const dropout = (this.model.config as { dropout?: number }).dropout! > 0
      ? { seed: this.seed, step, firstRow: rowStart }
      : undefined;
    const sig = sigma.subarray(rowStart, rowEnd);
    if (this.loss === "seed") {
      // The notebook's masked cross-entropy is the transformer's weighted cross-entropy.
      const model = this.model as Model;
      return lossAndGrad(
        model,
        {
          input: input.subarray(a, b),
          target: target.subarray(a, b),
          weight: weight.subarray(a, b),
        },
        {
          batch: rows,
          grads: this.grads,
          workspace: this.workspace,
          dropout,
          sigma: model.config.timeConditioning ? sig : undefined,
        },
      ).loss;
    }
    const logits = this.net.forward(input.subarray(a, b), rows, T, sig, dropout);
    const inputs = this.lossInputs(rowStart, rowEnd);
    const loss = lossForward(logits, inputs);
    const dlogits = this.net.dlogits(logits.length);
    lossBackward(dlogits, logits, inputs);
    this.net.backward(dlogits, this.grads);
    return loss;
  }

  private lossInputs(rowStart: number, rowEnd: number): LossInputs {
    const { T, input, target, sigma, dsigma, scale } = this.batch;
    return {
      loss: this.loss,
      graph: this.graph,
      x0: target.subarray(rowStart * T, rowEnd * T),
      xt: input.subarray(rowStart * T, rowEnd * T),
      sigma: sigma.subarray(rowStart, rowEnd),
      dsigma: dsigma.subarray(rowStart, rowEnd),
      B: rowEnd - rowStart,
      T,
      V: this.model.config.vocabSize,
      scale: scale[0],
    };
  }

  /**
   * The loss of rows `[rowStart, rowEnd)` in eval mode (no dropout, no gradient).
   *
   * @param rowStart First row.
   * @param rowEnd One past the last row.
   * @returns The shard's part of the loss.
   */
  evaluate(rowStart: number, rowEnd: number): number {
    let loss = 0;
    for (const [a, b] of this.chunks(rowStart, rowEnd)) loss += this.chunkLoss(a, b);
    return loss;
  }

  private chunkLoss(rowStart: number, rowEnd: number): number {
    const { T, input, target, weight, sigma } = this.batch;
    const rows = rowEnd - rowStart;
    const a = rowStart * T, b = rowEnd * T;
    const logits = this.net.forward(
      input.subarray(a, b),
      rows,
      T,
      sigma.subarray(rowStart, rowEnd),
    );
    if (this.loss !== "seed") return lossForward(logits, this.lossInputs(rowStart, rowEnd));
    const ws = this.workspace!;
    return crossEntropyForward(
      ws.losses,
      ws.lse,
      logits,
      target.subarray(a, b),
      weight.subarray(a, b),
      rows * T,
      this.model.config.vocabSize,
    );
  }
}

/**
 * Opens a shard over shared memory, as a worker does on `init`.
 *
 * @param setup Config, shared buffers, seed, objective.
 * @returns The shard.
 */
export function openShard(setup: ShardSetup): Shard {
  const model = modelOver(setup.config, new Float32Array(setup.params));
  return new Shard(model, new Float32Array(setup.grads), batchViews(setup.batch), setup);
}

/** The object a gradient worker exposes over comlink. */
export interface ShardWorkerApi {
  /** Opens the shared buffers; call once before anything else. */
  init(setup: ShardSetup): void;
  /** {@linkcode Shard.gradient} of the worker's shard. */
  gradient(step: number, rowStart: number, rowEnd: number): number | Promise<number>;
  /** {@linkcode Shard.evaluate} of the worker's shard. */
  evaluate(rowStart: number, rowEnd: number): number;
}

/**
 * The functions a gradient worker exposes: `init`, `gradient`, `evaluate`.
 *
 * @returns A fresh API object holding one shard once `init` has run.
 */
export function shardWorkerApi(): ShardWorkerApi {
  let shard: Shard | undefined;
  let setup: ShardSetup | undefined;
  const opened = (): Shard => {
    if (!shard) throw new Error("Worker not initialised: expected init() first");
    return shard;
  };
  return {
    init(s: ShardSetup): void {
      setup = s;
      shard = openShard(s);
    },
    gradient(step: number, rowStart: number, rowEnd: number): number | Promise<number> {
      const f = setup?.fault;
      if (f && f.worker === setup!.index && f.step === step) {
        const msg = `injected fault in worker ${f.worker} at step ${step}`;
        if (f.mode === "throw") throw new Error(msg);
        // An uncaught error outside the call: the worker dies and this call never answers.
        setTimeout(() => {
          throw new Error(msg);
        }, 0);
        return new Promise<number>(() => {});
      }
      return opened().gradient(step, rowStart, rowEnd);
    },
    evaluate(rowStart: number, rowEnd: number): number {
      return opened().evaluate(rowStart, rowEnd);
    },
  };
}
