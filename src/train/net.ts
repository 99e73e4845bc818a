/**
 * The network a shard trains, behind one small interface, so that the shard's loop (chunks,
 * losses, gradient accumulation) is the same for both model kinds:
 *
 * - the transformer of `src/model/model.ts` on its workspace and backend;
 * - the DiT of `src/model/dit.ts` (SEDD's and MDLM's denoiser): on `wasm` and `blas` its float32
 *   training pass of `src/model/dit_train.ts` on the backend's kernels; on `ts` its float64
 *   reference pass (`ditForwardCached` with `raw: true`, then `ditBackward`), exact and slow, for
 *   small models and the tests.
 *
 * A net returns the logits the losses of `src/diffusion/losses.ts` read, `(B,T,V)` float32, and
 * backpropagates a gradient on them into a parameter-layout buffer.
 *
 * Dimensions: `B` rows of the pass, `T` tokens per row, `V` vocabulary.
 *
 * @module
 */

import {
  createDit,
  ditBackward,
  type DitCache,
  type DitConfig,
  ditForwardCached,
  type DitModel,
} from "../model/dit.ts";
import { createDitTrainer } from "../model/dit_train.ts";
import type { ModelConfig } from "../model/config.ts";
import {
  createModel,
  createWorkspace,
  type DropoutKeys,
  type Model,
  modelBackward,
  modelForward,
  type Workspace,
} from "../model/model.ts";
import { type BackendName, defaultBackend } from "../nn/backend.ts";
import type { GraphName, LossName } from "./batch.ts";
import { addSigmaShift, ditNeedsShift } from "../diffusion/dit_logits.ts";

/** A model of either kind. */
export type AnyModel = Model | DitModel;

/** A config of either kind. */
export type AnyConfig = ModelConfig | DitConfig;

/**
 * Whether a model is a DiT (`config.kind === "dit"`).
 *
 * @param model A model of either kind.
 * @returns True for a DiT.
 */
export function isDitModel(model: AnyModel): model is DitModel {
  return (model.config as { kind?: string }).kind === "dit";
}

/**
 * A model of `config`'s kind over an existing parameter buffer (nothing copied).
 *
 * @param config A transformer's or a DiT's config.
 * @param params The parameters, in the kind's layout.
 * @returns The model.
 */
export function modelOver(config: AnyConfig, params: Float32Array): AnyModel {
  return (config as { kind?: string }).kind === "dit"
    ? createDit(config as DitConfig, { params })
    : createModel(config as ModelConfig, { params });
}

/**
 * The objective a DiT trains with, read from its output: SEDD's log-scores (`"sedd"`) train with
 * `score-entropy`, MDLM's logits (`"logits"`) with `elbo` (SUBS).
 *
 * @param config The DiT's config.
 * @returns The loss name.
 */
export function ditLoss(config: DitConfig): LossName {
  return config.output === "sedd" ? "score-entropy" : "elbo";
}

/**
 * Checks that a DiT can train with `loss` on `graph`, with a one-line RangeError otherwise: the
 * loss must be its own ({@linkcode ditLoss}), and SEDD's uniform graph needs a network without
 * scale-by-sigma (SEDD scales by sigma under absorb only).
 *
 * @param config The DiT's config.
 * @param loss The objective asked for.
 * @param graph The graph asked for.
 */
export function checkDitObjective(config: DitConfig, loss: LossName, graph: GraphName): void {
  const own = ditLoss(config);
  if (loss !== own) {
    throw new RangeError(
      `Invalid loss for this DiT: expected "${own}" (its config.output is "${config.output}"), ` +
        `got "${loss}"`,
    );
  }
  ditNeedsShift(config, graph); // throws for the uniform graph with scale-by-sigma
}

/** One forward/backward network of a shard. */
export interface ShardNet {
  /**
   * Runs rows of the batch and returns the logits the loss reads, `(rows,T,V)`: a view that the
   * next call overwrites.
   *
   * @param input Noised ids `(rows,T)`.
   * @param rows Rows B of the pass.
   * @param T Tokens per row.
   * @param sigma Noise level per row `(rows)`.
   * @param dropout Training-mode dropout keys (absent: eval mode).
   */
  forward(
    input: Int32Array,
    rows: number,
    T: number,
    sigma: Float64Array,
    dropout?: DropoutKeys,
  ): Float32Array;
  /**
   * A zeroed gradient buffer for `n` logits (`n` at most what {@linkcode ShardNet.forward}
   * returned).
   */
  dlogits(n: number): Float32Array;
  /** Backpropagates `dlogits` through the last forward pass and ADDS into `grads`. */
  backward(dlogits: Float32Array, grads: Float32Array): void;
}

/** Options of {@linkcode createShardNet}. */
export interface ShardNetOptions {
  /** The most rows one pass is given. */
  rows: number;
  /** Tokens per row. */
  T: number;
  /** The graph of `score-entropy` (a DiT without scale-by-sigma shifts its logits under absorb). */
  graph: GraphName;
  /**
   * A DiT only: whether the network reads sigma; false gives it 0, as MDLM's
   * `time_conditioning: False` does (the loss still reads the real sigma). Default true.
   */
  timeConditioned?: boolean;
  /** The backend (already resolved; default `defaultBackend()`). A DiT runs its float64 pass on `"ts"`. */
  backend?: BackendName;
  /** The BLAS library of the `"blas"` backend. */
  blasPath?: string;
}

/**
 * The net of a shard: the model's kind picks the implementation.
 *
 * @param model The model (its parameters are read, never written).
 * @param options Pass size, graph, and the kind's own settings.
 * @returns The net.
 */
export function createShardNet(model: AnyModel, options: ShardNetOptions): ShardNet {
  return isDitModel(model) ? ditNet(model, options) : transformerNet(model, options);
}

/** The transformer on its workspace (`modelForward` / `modelBackward`). */
function transformerNet(model: Model, options: ShardNetOptions): ShardNet & {
  workspace: Workspace;
} {
  const ws = createWorkspace(model.config, options.rows, options.T, {
    backend: options.backend,
    blas: options.blasPath === undefined ? undefined : { path: options.blasPath },
  });
  const timed = model.config.timeConditioning === true;
  return {
    workspace: ws,
    forward: (input, rows, T, sigma, dropout) =>
      modelForward(model, ws, input, rows, T, { dropout, sigma: timed ? sigma : undefined }),
    dlogits: (n) => ws.dlogits.subarray(0, n).fill(0),
    backward: (dlogits, grads) => modelBackward(model, ws, dlogits, grads),
  };
}

/**
 * The DiT, its raw logits read by the losses as `src/diffusion/dit_logits.ts` says (the bound
 * reads them the same way): shifted by scale-by-sigma's term for a SEDD network without it on the
 * absorb graph, as they are otherwise. On `wasm` and `blas` the float32 training pass, on `ts`
 * the float64 reference pass.
 */
function ditNet(model: DitModel, options: ShardNetOptions): ShardNet {
  const V = model.config.vocabSize;
  const addShift = ditNeedsShift(model.config, options.graph);
  const timed = options.timeConditioned ?? true;
  const zeros = new Float64Array(options.rows);
  const backend = options.backend ?? defaultBackend();
  if (backend !== "ts") {
    const trainer = createDitTrainer(model, {
      rows: options.rows,
      length: options.T,
      backend,
      blas: options.blasPath === undefined ? undefined : { path: options.blasPath },
    });
    return {
      forward(input, rows, _T, sigma) {
        const out = trainer.forward(input, {
          batch: rows,
          sigma: timed ? sigma.subarray(0, rows) : zeros.subarray(0, rows),
          raw: true,
        });
        if (addShift) addSigmaShift(out, sigma.subarray(0, rows), V);
        return out;
      },
      dlogits: (n) => trainer.dlogits(n),
      backward: (d, grads) => trainer.backward(d, grads),
    };
  }
  const logits = new Float32Array(options.rows * options.T * V);
  const dlogits = new Float32Array(logits.length);
  let cache: DitCache | undefined;
  return {
    forward(input, rows, _T, sigma) {
      const pass = ditForwardCached(model, input, {
        batch: rows,
        sigma: timed ? sigma : zeros.subarray(0, rows),
        raw: true,
      });
      cache = pass.cache;
      const out = logits.subarray(0, pass.out.length);
      out.set(pass.out);
      if (addShift) addSigmaShift(out, sigma.subarray(0, rows), V);
      return out;
    },
    dlogits: (n) => dlogits.subarray(0, n).fill(0),
    backward(d, grads) {
      if (!cache) throw new Error("DiT backward: expected a forward pass first");
      ditBackward(model, cache, d, grads);
    },
  };
}
