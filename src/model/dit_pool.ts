/**
 * A DiT forward pass on several Web Workers (wrapped with comlink): the denoiser of multi-worker
 * sampling on the CPU.
 *
 * Dimensions: `B` sequences, `T` tokens each, `N = B T` rows, `W` workers, `d`, `V` as in
 * `dit.ts`.
 *
 * The parameters live in one `SharedArrayBuffer` (the model's own when it already is one, else one
 * copy); each worker builds a {@linkcode DitRunner} over it with activations for its part of the
 * rows only. On `wasm` and `blas` the runner copies the parameters into its kernels' memory
 * (`weights: "copy"`, one more copy per worker) or stages each matmul's weight from the shared
 * buffer just before it (`weights: "stage"`); on `ts` it reads the shared buffer in place. Per call
 * the main thread writes the ids and the noise levels into shared buffers and comlink carries only
 * each worker's row range; worker `k` computes rows `[start_k, end_k)` and writes their output
 * into the shared `(N,V)` output. Two ways to cut the rows:
 *
 * - `"positions"`: rows `[floor(kN/W), floor((k+1)N/W))`, so a sequence may be cut between
 *   workers. Every per-token op (embedding, LayerNorms, modulation, every linear layer, GELU, the
 *   output layer) runs on the worker's rows only; once per block each worker copies its rows of
 *   q, k, v into a shared `(N,3d)` buffer and waits at a barrier (`Atomics.wait`) until every
 *   worker has, then computes attention for its query rows over all the keys of their sequences.
 *   The shared q, k, v buffer alternates between two by block, so one barrier per block
 *   suffices: a worker writes block `l + 1`'s rows into the other buffer than the one slower
 *   workers may still be reading for block `l`, and it cannot come back to the first buffer
 *   (block `l + 2`) before every worker has passed block `l + 1`'s barrier, which each reaches
 *   only after finishing block `l`'s attention. The conditioning (`B` rows) is computed by every
 *   worker. This splits batch 1.
 * - `"sequences"`: whole sequences, `[floor(kB/W), floor((k+1)B/W))` of them per worker, with no
 *   exchange and no barrier; a worker's attention reads only its own rows. At batch `B < W` some
 *   workers are idle.
 *
 * `"auto"` (the default) takes `"sequences"` when `W` divides `B` (equal work, no barrier or copy),
 * else `"positions"`. Both give every row exactly what one {@linkcode DitRunner} on the same
 * backend computes, bit for bit on `wasm` and `ts`: each op is per row and those kernels'
 * products are row by row. On `blas` the system library may compute a product of fewer rows
 * differently, in the last bits.
 *
 * A worker that throws or dies fails the call with a {@linkcode DitWorkerError} (one line naming
 * the worker and the call); the pool then sets an abort flag that wakes any worker waiting at the
 * barrier, terminates every worker, and refuses later calls.
 *
 * @module
 */

import { checkInt } from "../check.ts";
import { type BackendName, defaultBackend } from "../nn/backend.ts";
import { checkDitInputs, createDit, type DitConfig, type DitModel } from "./dit.ts";
import {
  createDitRunner,
  type DitPart,
  type DitRunner,
  type DitRunOptions,
  type DitWeights,
} from "./dit_fast.ts";
import { startWorkers } from "../worker_group.ts";

/** How a {@linkcode DitPool} cuts a call's rows between its workers (see the module doc). */
export type DitSplit = "auto" | "positions" | "sequences";

/** The split names {@linkcode createDitPool} accepts. */
export const DIT_SPLITS: readonly DitSplit[] = ["auto", "positions", "sequences"];

/** A deliberate failure, for tests of the pool's error handling. */
export interface DitPoolFault {
  /** Which worker fails. */
  worker: number;
  /** At which forward call (1, 2, ...). */
  call: number;
  /** `throw`: the call rejects; `crash`: an uncaught error kills the worker. */
  mode: "throw" | "crash";
}

/** Options of {@linkcode createDitPool}. */
export interface DitPoolOptions {
  /** Workers; 0 or 1 runs one runner in-process, with no Worker. */
  workers: number;
  /** Most sequences per call. Default 1. */
  batch?: number;
  /** Longest sequence. Default the model's context. */
  length?: number;
  /** Backend of every worker's runner. Default: {@linkcode defaultBackend}. */
  backend?: BackendName;
  /** The BLAS library of the `"blas"` backend. */
  blasPath?: string;
  /** How the rows are cut. Default `"auto"`. */
  split?: DitSplit;
  /**
   * How each worker's runner reads the shared parameters on `wasm` and `blas`: `"copy"` (default)
   * into its kernels' memory once, or `"stage"`, each matmul's weight copied in just before it
   * (see `DitRunnerOptions.weights`): the memory of one copy per worker saved for a pass over the
   * parameters per call.
   */
  weights?: DitWeights;
  /** Test-only: make one worker fail at one call. */
  fault?: DitPoolFault;
  /** The worker module (default: `workers/dit_worker.ts` beside this package). */
  workerUrl?: string | URL;
}

/** A DiT forward pass over workers: see {@linkcode createDitPool}. */
export interface DitPool {
  /** Workers running (0 when in-process). */
  readonly workers: number;
  /** The backend of the runners. */
  readonly backend: BackendName;
  /** Most sequences per call. */
  readonly batch: number;
  /** Longest sequence. */
  readonly length: number;
  /** The split asked for. */
  readonly split: DitSplit;
  /**
   * The DiT's output `(B,T,V)` for `tokens`, as {@linkcode DitRunner.forward} returns it. A view
   * into the pool's shared output, overwritten by the next call; `tokens` is copied at the call.
   * One call at a time: a second before the first has settled is refused.
   */
  forward(tokens: Int32Array, options: DitRunOptions): Promise<Float32Array>;
  /** Stops every worker. Safe to call twice. */
  terminate(): void;
}

/** The error a failed DiT worker causes; names the worker and the call. */
export class DitWorkerError extends Error {
  /** The worker's index. */
  readonly worker: number;
  /** The forward call it was computing (0: starting). */
  readonly call: number;
  /**
   * The error of worker `worker` at forward call `call`.
   *
   * @param worker The worker's index.
   * @param call The call.
   * @param detail What went wrong (its first line is kept).
   * @param cause The underlying error.
   */
  constructor(worker: number, call: number, detail: string, cause?: unknown) {
    const what = call === 0 ? "while starting" : `at forward call ${call}`;
    super(`DiT worker ${worker} failed ${what}: ${detail.split("\n")[0]}`, { cause });
    this.name = "DitWorkerError";
    this.worker = worker;
    this.call = call;
  }
}

/** Everything a DiT worker needs, in cloneable values and shared memory. */
export interface DitWorkerSetup {
  /** The worker's index. */
  index: number;
  /** Workers in the pool (the barrier's count). */
  workers: number;
  /** The DiT's config. */
  config: DitConfig;
  /** The parameters, shared. */
  params: SharedArrayBuffer;
  /** Most sequences per call. */
  batch: number;
  /** Longest sequence. */
  length: number;
  /** Most rows of one worker's part. */
  rows: number;
  /** Backend of the runner. */
  backend: BackendName;
  /** How the runner reads the weights. */
  weights: DitWeights;
  /** The BLAS library of `"blas"`. */
  blasPath?: string;
  /** Ids `(B,T)`, Int32. */
  tokens: SharedArrayBuffer;
  /** Noise levels `(B)`, Float64. */
  sigma: SharedArrayBuffer;
  /** The two alternating q, k, v buffers `(N,3d)`, Float32. */
  qkv: [SharedArrayBuffer, SharedArrayBuffer];
  /** The output `(N,V)`, Float32. */
  out: SharedArrayBuffer;
  /** The barrier: arrived count, generation, abort flag (Int32). */
  control: SharedArrayBuffer;
  /** Test-only fault. */
  fault?: DitPoolFault;
}

/** One call's work for a worker. */
export interface DitWorkerCall {
  /** The call's number (1, 2, ...). */
  call: number;
  /** Sequences and tokens of this call. */
  batch: number;
  /** Tokens per sequence. */
  length: number;
  /** `raw` of {@linkcode DitRunOptions}. */
  raw: boolean;
  /** The worker's rows. */
  start: number;
  /** One past its last row. */
  end: number;
  /** Whether sequences are cut between workers (exchange q, k, v at a barrier). */
  exchange: boolean;
}

/** The object a DiT worker exposes over comlink. */
export interface DitWorkerApi {
  /** Opens the shared buffers and builds the runner; call once before anything else. */
  init(setup: DitWorkerSetup): void;
  /** Computes the worker's rows of one call into the shared output. */
  forward(call: DitWorkerCall): void;
}

const COUNT = 0, GENERATION = 1, ABORT = 2;

/** Waits until all `W` workers have arrived (a generation barrier); throws once aborted. */
function barrier(control: Int32Array, W: number): void {
  const gen = Atomics.load(control, GENERATION);
  if (Atomics.add(control, COUNT, 1) === W - 1) {
    Atomics.store(control, COUNT, 0);
    Atomics.add(control, GENERATION, 1);
    Atomics.notify(control, GENERATION);
    return;
  }
  while (Atomics.load(control, GENERATION) === gen) {
    if (Atomics.load(control, ABORT) !== 0) {
      throw new Error("stopped: another worker of the pool failed");
    }
    Atomics.wait(control, GENERATION, gen, 1000);
  }
}

/**
 * The rows of worker `k` of `W` for `B` sequences of `T` tokens under `split`, and whether the
 * split cuts sequences (so the workers exchange q, k and v).
 *
 * @param split The split.
 * @param k Worker.
 * @param W Workers.
 * @param B Sequences.
 * @param T Tokens per sequence.
 * @returns `[start, end)` rows of `(B,T)` and `exchange`.
 *
 * @example One sequence of 5 over 2 workers, and 4 sequences by whole sequences
 * ```ts
 * import { ditPartRows } from "./dit_pool.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(ditPartRows("auto", 1, 2, 1, 5), { start: 2, end: 5, exchange: true });
 * assert.deepEqual(ditPartRows("auto", 1, 2, 4, 5), { start: 10, end: 20, exchange: false });
 * ```
 */
export function ditPartRows(
  split: DitSplit,
  k: number,
  W: number,
  B: number,
  T: number,
): { start: number; end: number; exchange: boolean } {
  const bySequence = split === "sequences" || (split === "auto" && B % W === 0);
  if (bySequence) {
    return {
      start: Math.floor(k * B / W) * T,
      end: Math.floor((k + 1) * B / W) * T,
      exchange: false,
    };
  }
  const N = B * T;
  return { start: Math.floor(k * N / W), end: Math.floor((k + 1) * N / W), exchange: W > 1 };
}

/** The most rows any worker's part has for calls of up to `B` sequences of up to `T` tokens. */
function maxPartRows(split: DitSplit, W: number, B: number, T: number): number {
  let most = 1;
  for (let b = 1; b <= B; b++) {
    for (let k = 0; k < W; k++) {
      const { start, end } = ditPartRows(split, k, W, b, T);
      most = Math.max(most, end - start);
    }
  }
  return most;
}

/**
 * The functions a DiT worker exposes: `init`, `forward`.
 *
 * @returns A fresh API object, holding a runner once `init` has run.
 */
export function ditWorkerApi(): DitWorkerApi {
  let setup: DitWorkerSetup | undefined;
  let runner: DitRunner | undefined;
  let views:
    | {
      tokens: Int32Array;
      sigma: Float64Array;
      qkv: Float32Array[];
      out: Float32Array;
      control: Int32Array;
    }
    | undefined;
  return {
    init(s: DitWorkerSetup): void {
      setup = s;
      const model = createDit(s.config, { params: new Float32Array(s.params) });
      runner = createDitRunner(model, {
        batch: s.batch,
        length: s.length,
        rows: s.rows,
        backend: s.backend,
        weights: s.weights,
        blas: s.blasPath === undefined ? undefined : { path: s.blasPath },
      });
      views = {
        tokens: new Int32Array(s.tokens),
        sigma: new Float64Array(s.sigma),
        qkv: s.qkv.map((m) => new Float32Array(m)),
        out: new Float32Array(s.out),
        control: new Int32Array(s.control),
      };
    },
    forward(c: DitWorkerCall): void {
      if (!setup || !runner || !views) {
        throw new Error("Worker not initialised: expected init() first");
      }
      const f = setup.fault;
      if (f && f.worker === setup.index && f.call === c.call) {
        const msg = `injected fault in DiT worker ${f.worker} at call ${c.call}`;
        if (f.mode === "throw") throw new Error(msg);
        // An uncaught error outside the call: the worker dies and this call never answers.
        setTimeout(() => {
          throw new Error(msg);
        }, 0);
        return;
      }
      const { batch: B, length: T, start, end } = c;
      const d = setup.config.dModel, V = setup.config.vocabSize, W = setup.workers;
      const v = views;
      const part: DitPart = {
        start,
        end,
        exchange: c.exchange
          ? (block, qkv) => {
            const all = v.qkv[block & 1];
            all.set(qkv.subarray(0, (end - start) * 3 * d), start * 3 * d);
            barrier(v.control, W);
            return { qkv: all, row0: 0 };
          }
          : (_, qkv) => ({ qkv, row0: start }),
      };
      const tokens = v.tokens.subarray(0, B * T);
      const out = runner.forwardRows(
        tokens,
        { batch: B, sigma: v.sigma.subarray(0, B), raw: c.raw },
        part,
      );
      v.out.set(out.subarray(0, (end - start) * V), start * V);
    },
  };
}

/**
 * Starts a pool of `workers` DiT workers for up to `batch` sequences of up to `length` tokens:
 * shares the parameters, allocates the shared ids, noise levels, q, k, v and output, and builds
 * every worker's runner. With `workers` 0 or 1 there is no Worker: one runner runs in-process.
 *
 * @param model The DiT (its parameters are read at this call; later changes are not seen).
 * @param options `workers`, `batch`, `length`, `backend`, `blasPath`, `split`.
 * @returns The ready pool; `terminate()` it when done.
 * @throws RangeError for a bad count or size; {@linkcode DitWorkerError} when a worker fails to
 *   start.
 *
 * @example One sequence over two workers: the floats of one runner
 * ```ts
 * import { createDitPool } from "./dit_pool.ts";
 * import { createDitRunner } from "./dit_fast.ts";
 * import { createDit } from "./dit.ts";
 * import assert from "node:assert/strict";
 *
 * const dit = createDit({ vocabSize: 11, context: 8, dModel: 8, nHeads: 2, nLayers: 1, condDim: 4 });
 * const pool = await createDitPool(dit, { workers: 2, length: 8 });
 * try {
 *   const tokens = new Int32Array([1, 2, 10, 3, 4, 10, 5, 6]);
 *   const opts = { batch: 1, sigma: new Float32Array([0.7]) };
 *   const out = await pool.forward(tokens, opts);
 *   assert.deepEqual(out, createDitRunner(dit, { length: 8 }).forward(tokens, opts));
 * } finally {
 *   pool.terminate();
 * }
 * ```
 */
export async function createDitPool(model: DitModel, options: DitPoolOptions): Promise<DitPool> {
  if (options === null || typeof options !== "object") {
    throw new TypeError(`Invalid options: expected an object, got ${String(options)}`);
  }
  const cfg = model.config;
  const W = checkInt("workers", options.workers, 0);
  const B = checkInt("batch", options.batch ?? 1, 1);
  const T = checkInt("length", options.length ?? cfg.context, 1);
  if (T > cfg.context) {
    throw new RangeError(`Invalid length: expected at most context ${cfg.context}, got ${T}`);
  }
  const split = options.split ?? "auto";
  if (!DIT_SPLITS.includes(split)) {
    throw new RangeError(
      `Invalid split: expected one of ${DIT_SPLITS.join(", ")}, got ${JSON.stringify(split)}`,
    );
  }
  const backend = options.backend ?? defaultBackend();
  const blas = options.blasPath === undefined ? undefined : { path: options.blasPath };
  if (W <= 1) {
    const runner = createDitRunner(model, {
      batch: B,
      length: T,
      backend,
      blas,
      weights: options.weights,
    });
    let calls = 0, stopped = false;
    return {
      workers: 0,
      backend,
      batch: B,
      length: T,
      split,
      forward(tokens, opts) {
        if (stopped) return Promise.reject(new Error("DiT pool terminated: expected a live pool"));
        calls++;
        const f = options.fault;
        if (f && f.worker === 0 && f.call === calls) {
          const e = new DitWorkerError(0, calls, `injected fault in DiT worker 0 at call ${calls}`);
          return Promise.reject(e);
        }
        try {
          return Promise.resolve(runner.forward(tokens, opts));
        } catch (e) {
          return Promise.reject(e);
        }
      },
      terminate() {
        stopped = true;
      },
    };
  }

  if (typeof Worker === "undefined" || typeof SharedArrayBuffer === "undefined") {
    throw new Error(
      `DiT pool unavailable: expected Worker and SharedArrayBuffer (in a browser, a ` +
        `cross-origin isolated page), got ${
          typeof Worker === "undefined" ? "no Worker" : "no SharedArrayBuffer"
        }; ` +
        `use workers: 0`,
    );
  }
  const { vocabSize: V, dModel: d } = cfg;
  const N = B * T;
  const own = model.params.buffer instanceof SharedArrayBuffer && model.params.byteOffset === 0 &&
    model.params.byteLength === model.params.buffer.byteLength;
  const params = own
    ? model.params.buffer as SharedArrayBuffer
    : new SharedArrayBuffer(model.params.byteLength);
  if (!own) new Float32Array(params).set(model.params);
  const tokensMem = new SharedArrayBuffer(4 * N), sigmaMem = new SharedArrayBuffer(8 * B);
  let cuts = false; // whether some call size cuts sequences
  for (let b = 1; b <= B; b++) cuts ||= ditPartRows(split, 0, W, b, T).exchange;
  const qkvFloats = cuts ? 3 * N * d : 0;
  const qkv: [SharedArrayBuffer, SharedArrayBuffer] = [
    new SharedArrayBuffer(4 * qkvFloats),
    new SharedArrayBuffer(4 * qkvFloats),
  ];
  const outMem = new SharedArrayBuffer(4 * N * V);
  const control = new SharedArrayBuffer(4 * 3);
  const tokensView = new Int32Array(tokensMem), sigmaView = new Float64Array(sigmaMem);
  const outView = new Float32Array(outMem), controlView = new Int32Array(control);
  const rows = maxPartRows(split, W, B, T);

  const url = options.workerUrl ?? new URL("../../workers/dit_worker.ts", import.meta.url);
  const group = startWorkers<DitWorkerApi>(url, W, {
    fail: (k, call, detail, cause) => new DitWorkerError(k, call, detail, cause),
    terminatedMessage:
      "DiT pool terminated: expected a live pool (a worker failed or terminate() was called)",
    onTerminate() {
      // wake any worker waiting at the barrier
      Atomics.store(controlView, ABORT, 1);
      Atomics.notify(controlView, GENERATION);
    },
  });
  await group.run(0, (api, k) =>
    api.init({
      index: k,
      workers: W,
      config: cfg,
      params,
      batch: B,
      length: T,
      rows,
      backend,
      weights: options.weights ?? "copy",
      blasPath: options.blasPath,
      tokens: tokensMem,
      sigma: sigmaMem,
      qkv,
      out: outMem,
      control,
      fault: options.fault,
    }));
  let calls = 0, busy = false;
  return {
    workers: W,
    backend,
    batch: B,
    length: T,
    split,
    async forward(tokens, opts) {
      const { B: b, T: t, sig } = checkDitInputs(model, tokens, opts?.batch, opts?.sigma);
      if (b > B || t > T) {
        throw new RangeError(
          `Batch too large for this DiT pool: expected B <= ${B} and T <= ${T}, got B ${b}, T ${t}`,
        );
      }
      if (busy) {
        throw new Error("DiT pool busy: expected one forward call at a time, got a second one");
      }
      busy = true;
      try {
        tokensView.set(tokens);
        sigmaView.set(sig);
        const call = ++calls;
        const raw = opts.raw === true;
        await group.run(
          call,
          (api, k) =>
            api.forward({ call, batch: b, length: t, raw, ...ditPartRows(split, k, W, b, t) }),
        );
        return outView.subarray(0, b * t * V);
      } finally {
        busy = false;
      }
    },
    terminate: group.terminate,
  };
}
