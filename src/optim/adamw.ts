/**
 * AdamW with PyTorch's semantics (`torch.optim.AdamW`): decoupled weight decay applied to every
 * parameter, bias-corrected moments, one flat loop over the parameter buffer.
 *
 * @module
 */

/** AdamW hyper-parameters; the defaults are PyTorch's. */
export interface AdamWOptions {
  /** Learning rate. Default 1e-3 (PyTorch). */
  lr?: number;
  /** First-moment decay. Default 0.9 (PyTorch). */
  beta1?: number;
  /** Second-moment decay. Default 0.999 (PyTorch). */
  beta2?: number;
  /** Denominator guard. Default 1e-8 (PyTorch). */
  eps?: number;
  /** Decoupled weight decay. Default 0.01 (PyTorch's AdamW). */
  weightDecay?: number;
}

/** The optimizer's state: moments with the parameters' layout, and the step count. */
export interface AdamWState {
  /** First moments, one per parameter. */
  m: Float32Array;
  /** Second moments, one per parameter. */
  v: Float32Array;
  /** Steps taken so far. */
  step: number;
}

/**
 * Creates a zeroed AdamW state for `n` parameters.
 *
 * @param n The number of parameters.
 * @returns Zero moments and step 0.
 */
export function createAdamW(n: number): AdamWState {
  return { m: new Float32Array(n), v: new Float32Array(n), step: 0 };
}

/**
 * Takes one AdamW step in place: `p -= lr * wd * p`, then the Adam update with bias correction.
 *
 * @param params Parameters, updated in place.
 * @param grads Gradients with the same layout (read only).
 * @param state Moments and step, updated in place.
 * @param options Hyper-parameters (PyTorch's defaults).
 *
 * @example One step on a single parameter
 * ```ts
 * import { adamwStep, createAdamW } from "./adamw.ts";
 * import assert from "node:assert/strict";
 *
 * const p = new Float32Array([1]);
 * const state = createAdamW(1);
 * adamwStep(p, new Float32Array([0.5]), state, { lr: 0.1, weightDecay: 0 });
 * // The first bias-corrected step moves by lr * g / |g| = 0.1.
 * assert.ok(Math.abs(p[0] - 0.9) < 1e-6);
 * ```
 */
export function adamwStep(
  params: Float32Array,
  grads: Float32Array,
  state: AdamWState,
  options: AdamWOptions = {},
): void {
  const { lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01 } = options;
  const n = params.length;
  if (grads.length !== n || state.m.length !== n || state.v.length !== n) {
    throw new RangeError(
      `AdamW buffers disagree: expected ${n} values each, got grads ${grads.length}, ` +
        `m ${state.m.length}, v ${state.v.length}`,
    );
  }
  state.step++;
  const bc1 = 1 - Math.pow(beta1, state.step);
  const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, state.step));
  const stepSize = lr / bc1;
  const decay = 1 - lr * weightDecay;
  const { m, v } = state;
  for (let i = 0; i < n; i++) {
    const g = grads[i];
    // Moments are stored as float32 and read back, as PyTorch's float32 state is.
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    params[i] = params[i] * decay - stepSize * m[i] / (Math.sqrt(v[i]) / bc2Sqrt + eps);
  }
}
