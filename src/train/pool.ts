/**
 * The gradient pool: Web Workers (wrapped with comlink) that each compute one shard of the batch.
 *
 * Dimensions: `B` batch, `T` context, `P` parameters, `W` workers.
 *
 * The parameters live in one `SharedArrayBuffer` every worker reads; worker k writes the gradient
 * of rows `[floor(kB/W), floor((k+1)B/W))` into its own shared gradient buffer; comlink carries
 * only the step number and the shard bounds. {@linkcode GradientPool.gradient} then sums the
 * buffers in worker order into the main thread's gradient, so the result depends on the worker
 * count only through that fixed summation order.
 *
 * With `workers: 0` (or 1) there is no Worker at all: one {@linkcode Shard} runs in-process over
 * plain `ArrayBuffer`s, for environments without workers or shared memory.
 *
 * A worker that throws, or dies (an uncaught error), fails the call with an error naming the
 * worker and the step; the pool then terminates every worker, so nothing is left hanging.
 *
 * @module
 */

import { startWorkers } from "../worker_group.ts";
import { checkInt } from "../check.ts";
import type { BackendName } from "../nn/backend.ts";
import type { AdamWState } from "../optim/adamw.ts";
import type { Settings } from "./setup.ts";
import { type AnyConfig, type AnyModel, modelOver } from "./net.ts";
import {
  type BatchBuffers,
  type BatchMemory,
  batchViews,
  createBatch,
  createBatchMemory,
  type GraphName,
  type LossName,
} from "./batch.ts";
import {
  type FaultInjection,
  Shard,
  type ShardOptions,
  type ShardSetup,
  type ShardWorkerApi,
} from "./shard.ts";

/** Options of {@linkcode createPool}. */
export interface PoolOptions {
  /** The model's config (a transformer's or a DiT's). */
  config: AnyConfig;
  /** Initial parameter values (copied into the pool's buffer). */
  params: Float32Array;
  /** Sequences per batch. */
  batch: number;
  /** Tokens per sequence. */
  context: number;
  /** Worker count; 0 or 1 with `inProcess` semantics below. */
  workers: number;
  /** Run seed (dropout keys). */
  seed: number;
  /** The objective. */
  loss: LossName;
  /** The graph of `score-entropy` (default `"absorb"`). */
  graph?: GraphName;
  /**
   * Rows per forward/backward pass inside a shard, in chunks aligned to its multiples. Default
   * {@linkcode DEFAULT_MICRO_BATCH}.
   */
  microBatch?: number;
  /** The compute backend of every shard, already resolved (see `resolveBackend`). */
  backend?: BackendName;
  /** The BLAS library of the `"blas"` backend. */
  blasPath?: string;
  /** A DiT only: whether the network reads sigma (false: it is given 0). Default true. */
  timeConditioned?: boolean;
  /** Test-only: make one worker fail at one step. */
  fault?: FaultInjection;
  /** The worker module (default: `workers/grad_worker.ts` beside this package). */
  workerUrl?: string | URL;
}

/**
 * Rows per forward/backward pass by default: 4 keeps the `small` run with two workers near
 * 190 MB resident instead of 380 MB (activations for 4 rows, not 8, per worker) at the same
 * speed, and chunks aligned to global rows make the chunks independent of the sharding.
 */
export const DEFAULT_MICRO_BATCH = 4;

/** A pool of gradient workers (or one in-process shard). */
export interface GradientPool {
  /** Workers running (0 when in-process). */
  readonly workers: number;
  /** The model whose parameters the workers read; the optimizer updates `model.params` in place. */
  readonly model: AnyModel;
  /** The batch the main thread fills before each call. */
  readonly batch: BatchBuffers;
  /** The summed gradient of the last {@linkcode GradientPool.gradient} call, `(P)`. */
  readonly grads: Float32Array;
  /**
   * Computes the gradient of the current batch into `grads` (summed over shards in order).
   *
   * @param step The step (dropout keys, fault injection, messages).
   * @param after With workers: the parameters are still being written, part by part (the
   *   `forwardParts` of the model's layout), and part `j` is final once the gate reaches
   *   `after + j + 1` ({@linkcode GradientPool.publish}); each worker's forward pass waits for
   *   each part just before it reads it. Omitted: the parameters are final.
   * @returns The batch loss (sum of shard losses, in order).
   */
  gradient(step: number, after?: number): Promise<number>;
  /**
   * The sum of the squares of `grads` after the last {@linkcode GradientPool.gradient} call,
   * in float64 in index order (`clipGradNorm`'s sum, the same bits), where the pool computed it
   * while summing the workers' gradients; absent (or `undefined`) otherwise.
   */
  readonly sumSquares?: number;
  /**
   * The gate's value: how many parameter parts have been published so far (absent on a pool
   * without a gate: then `gradient` takes no `after`).
   */
  readonly gateValue?: number;
  /**
   * Sets the gate to `value` and wakes the workers waiting on it (see `gradient`'s `after`).
   *
   * @param value The new value (never lower than the last).
   */
  publish?(value: number): void;
  /**
   * The eval-mode loss of the current batch (no dropout, no gradient).
   *
   * @param step The step, for messages.
   * @returns The batch loss.
   */
  evaluate(step: number): Promise<number>;
  /** Stops every worker. Safe to call twice. */
  terminate(): void;
  /**
   * A pool that takes whole steps itself (the WebGPU one: gradient, clipping and AdamW on the
   * device, parameters and moments kept there): the step's loss and gradient norm before
   * clipping, with `optimizer.step` advanced when both are finite. Absent for the CPU pools,
   * whose gradient the trainer clips and applies.
   */
  fusedStep?(
    step: number,
    lr: number,
    settings: Pick<Settings, "seed" | "clip" | "weightDecay">,
    optimizer: AdamWState,
  ): Promise<{ loss: number; gradNorm: number }>;
  /**
   * Copies the device's parameters into `model.params` and its AdamW moments into `optimizer`
   * (the WebGPU pool, before a checkpoint and at the end of a run); absent for the CPU pools,
   * whose parameters are `model.params` already.
   */
  sync?(optimizer: AdamWState): Promise<void>;
}

/** The error a failed worker causes; names the worker and the step. */
export class WorkerError extends Error {
  /** The worker's index. */
  readonly worker: number;
  /** The step it was computing. */
  readonly step: number;
  /**
   * @param worker The worker's index.
   * @param step The step.
   * @param detail What went wrong.
   * @param cause The underlying error.
   */
  constructor(worker: number, step: number, detail: string, cause?: unknown) {
    super(`Gradient worker ${worker} failed at step ${step}: ${detail}`, { cause });
    this.name = "WorkerError";
    this.worker = worker;
    this.step = step;
  }
}

/**
 * The row range of shard `k` of `W` over `B` rows: `[floor(kB/W), floor((k+1)B/W))`.
 *
 * @param k Shard index.
 * @param W Shard count.
 * @param B Rows.
 * @returns `[rowStart, rowEnd)`.
 *
 * @example Five rows over two workers
 * ```ts
 * import { shardBounds } from "./pool.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(shardBounds(0, 2, 5), [0, 2]);
 * assert.deepEqual(shardBounds(1, 2, 5), [2, 5]);
 * ```
 */
export function shardBounds(k: number, W: number, B: number): [number, number] {
  return [Math.floor(k * B / W), Math.floor((k + 1) * B / W)];
}

/**
 * Starts the pool: allocates shared parameters, gradients and batch, spawns and initialises the
 * workers (none for `workers <= 1`).
 *
 * @param options Config, initial parameters, batch shape, worker count, seed, objective.
 * @returns The ready pool.
 */
export async function createPool(options: PoolOptions): Promise<GradientPool> {
  const { config, batch: B, context: T } = options;
  const W = Math.min(checkInt("workers", options.workers, 0), B);
  if (options.microBatch !== undefined) checkInt("microBatch", options.microBatch, 1);
  const P = options.params.length;
  if (W <= 1) return inProcessPool(options);

  const paramsMem = new SharedArrayBuffer(P * 4);
  const model = modelOver(config, new Float32Array(paramsMem));
  model.params.set(options.params);
  const batchMem: BatchMemory = createBatchMemory(B, T);
  const batch = batchViews(batchMem);
  const grads = new Float32Array(P);
  let sumSquares: number | undefined; // of grads, by the last gradient() call
  const gateMem = new SharedArrayBuffer(4);
  const gate = new Int32Array(gateMem);
  const gradMems: SharedArrayBuffer[] = [];
  const gradViews: Float32Array[] = [];
  for (let k = 0; k < W; k++) {
    const mem = new SharedArrayBuffer(P * 4);
    gradMems.push(mem);
    gradViews.push(new Float32Array(mem));
  }
  const url = options.workerUrl ?? new URL("../../workers/grad_worker.ts", import.meta.url);
  const group = startWorkers<ShardWorkerApi>(url, W, {
    fail: (k, step, detail, cause) => new WorkerError(k, step, detail, cause),
    terminatedMessage: "Gradient pool terminated: expected a live pool",
  });
  const call = group.run;
  const terminate = group.terminate;

  await call(0, (api, k) => {
    const setup: ShardSetup = {
      ...shardOptions(options, Math.ceil(B / W)),
      index: k,
      config,
      params: paramsMem,
      grads: gradMems[k],
      batch: batchMem,
      fault: options.fault,
      gate: gateMem,
    };
    return api.init(setup);
  });

  return {
    workers: W,
    model,
    batch,
    grads,
    get sumSquares() {
      return sumSquares;
    },
    get gateValue() {
      return Atomics.load(gate, 0);
    },
    publish(value: number): void {
      Atomics.store(gate, 0, value);
      Atomics.notify(gate, 0);
    },
    async gradient(step: number, after?: number): Promise<number> {
      // The sum runs in worker order, each worker's gradient added as soon as it and every
      // worker before it have finished, so it overlaps the slower workers' compute and gives
      // the same bits as summing after the last one.
      // The last worker's pass also sums the squares of the result (clipGradNorm's loop, fused
      // into it: one pass over the gradient less on the step's critical path).
      const arrived = new Array<boolean>(W).fill(false);
      let next = 0;
      sumSquares = undefined;
      const addArrived = (k: number) => {
        arrived[k] = true;
        for (; next < W && arrived[next]; next++) {
          const g = gradViews[next];
          if (next === 0) grads.set(g);
          else if (next === W - 1) sumSquares = addSquares(grads, g); // W >= 2 here
          else for (let i = 0; i < P; i++) grads[i] += g[i];
        }
      };
      const losses = await call(step, async (api, k) => {
        const l = await api.gradient(step, ...shardBounds(k, W, B), after);
        addArrived(k);
        return l;
      });
      let loss = 0;
      for (const l of losses) loss += l;
      return loss;
    },
    async evaluate(step: number): Promise<number> {
      const losses = await call(step, (api, k) => api.evaluate(...shardBounds(k, W, B)));
      let loss = 0;
      for (const l of losses) loss += l;
      return loss;
    },
    terminate,
  };
}

/** `grads += g`, returning the sum of the squares of the result (float64, index order). */
function addSquares(grads: Float32Array, g: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < grads.length; i++) {
    grads[i] += g[i];
    sum += grads[i] * grads[i];
  }
  return sum;
}

/** A shard's settings from the pool's options: shards of at most `maxRows` rows. */
function shardOptions(options: PoolOptions, maxRows: number): ShardOptions {
  return {
    maxRows,
    seed: options.seed,
    loss: options.loss,
    graph: options.graph ?? "absorb",
    microBatch: options.microBatch ?? DEFAULT_MICRO_BATCH,
    backend: options.backend,
    blasPath: options.blasPath,
    timeConditioned: options.timeConditioned,
  };
}

function inProcessPool(options: PoolOptions): GradientPool {
  const { config, batch: B, context: T } = options;
  const model = modelOver(config, options.params.slice());
  const batch = createBatch(B, T);
  const grads = new Float32Array(model.params.length);
  const shard = new Shard(model, grads, batch, shardOptions(options, B));
  const fault = options.fault;
  let gateValue = 0;
  return {
    workers: 0,
    model,
    batch,
    grads,
    get gateValue() {
      return gateValue;
    },
    publish(value: number): void {
      gateValue = value;
    },
    gradient(step: number, after?: number): Promise<number> {
      if (after !== undefined) {
        // in-process the gradient runs now: it cannot wait for parameters still to be written
        return Promise.reject(
          new RangeError(
            "In-process gradient: expected final parameters (no after), got after " + after,
          ),
        );
      }
      try {
        if (fault && fault.worker === 0 && fault.step === step) {
          throw new Error(`injected fault in worker 0 at step ${step}`);
        }
        return Promise.resolve(shard.gradient(step, 0, B));
      } catch (e) {
        const detail = e instanceof Error ? e.message : String(e);
        return Promise.reject(new WorkerError(0, step, detail, e));
      }
    },
    evaluate(): Promise<number> {
      return Promise.resolve(shard.evaluate(0, B));
    },
    terminate(): void {},
  };
}
