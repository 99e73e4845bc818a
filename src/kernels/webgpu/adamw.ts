/**
 * AdamW in WGSL with the semantics of `src/optim/adamw.ts` (PyTorch's `torch.optim.AdamW`):
 * parameters, gradients and both moments stay in GPU buffers; one dispatch per step.
 *
 * The step's scalars (`lr / (1 - beta1^t)`, `sqrt(1 - beta2^t)`, `1 - lr wd`, and `1 - beta1`,
 * `1 - beta2`, which lose digits if formed from float32 betas) are computed in float64 on the
 * host and passed as float32; the per-element update runs in float32.
 *
 * @module
 */

import type { AdamWOptions } from "../../optim/adamw.ts";
import { checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry } from "./wgsl.ts";

const WG = 256;

/** The optimizer's GPU state: moments with the parameters' layout, and the step count. */
export interface GpuAdamWState {
  /** First moments, one per parameter. */
  m: GpuTensor;
  /** Second moments, one per parameter. */
  v: GpuTensor;
  /** Steps taken so far. */
  step: number;
}

/**
 * A zeroed AdamW state for `n` parameters, on the GPU.
 *
 * @param ctx The context.
 * @param n The number of parameters.
 * @returns Zero moments and step 0.
 */
export function createGpuAdamW(ctx: GpuContext, n: number): GpuAdamWState {
  return { m: ctx.zeros(n), v: ctx.zeros(n), step: 0 };
}

/**
 * One AdamW step in place: `p = p (1 - lr wd) - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`
 * after the moment updates, as `adamwStep` does.
 *
 * @param ctx The context of every tensor.
 * @param params Parameters, `(n)`, updated in place.
 * @param grads Gradients, `(n)` (read only).
 * @param state Moments and step, updated in place.
 * @param options Hyper-parameters (PyTorch's defaults).
 * @param clip Optional: clip the gradient by its global norm on the GPU, as `clipGradNorm` does
 *   (the update uses `grads * min(1, maxNorm / (norm + 1e-6))`, `norm = sqrt(stats[1])`, with
 *   `maxNorm <= 0` meaning no clipping), and skip the update entirely where `stats[0]` (the
 *   loss) or `stats[1]` (the gradient's sum of squares) is not finite, so that a step the host
 *   will reject leaves the parameters and moments as they were.
 */
export function gpuAdamwStep(
  ctx: GpuContext,
  params: GpuTensor,
  grads: GpuTensor,
  state: GpuAdamWState,
  options: AdamWOptions = {},
  clip?: GpuAdamwClip,
): void {
  const { lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01 } = options;
  const n = params.length;
  checkTensor("gpuAdamwStep params", params, n);
  if (grads.length !== n || state.m.length !== n || state.v.length !== n) {
    throw new RangeError(
      `gpuAdamwStep buffers disagree: expected ${n} values each, got grads ${grads.length}, ` +
        `m ${state.m.length}, v ${state.v.length}`,
    );
  }
  checkTensor("gpuAdamwStep grads", grads, n);
  if (clip) checkTensor("gpuAdamwStep clip stats (2)", clip.stats, 2);
  state.step++;
  const bc1 = 1 - Math.pow(beta1, state.step);
  const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, state.step));
  const clipped = clip !== undefined;
  const pipeline = ctx.pipeline(
    clipped ? "adamwClipped" : "adamw",
    () =>
      `struct Params { n: u32, beta1: f32, beta2: f32, eps: f32, stepSize: f32, decay: f32,
  bc2Sqrt: f32, oneMinusBeta1: f32, oneMinusBeta2: f32, maxNorm: f32 }
@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read_write> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read> grads: array<f32>;
${clipped ? "@group(0) @binding(4) var<storage, read> stats: array<f32>;" : ""}
@group(0) @binding(${clipped ? 5 : 4}) var<uniform> p: Params;
${clipped ? FINITE : ""}
${entry(WG)}
  let i = group * ${WG}u + l;
  if (i >= p.n) { return; }
  ${clipped ? CLIPPED_GRAD : "let g = grads[i];"}
  let mi = p.beta1 * m[i] + p.oneMinusBeta1 * g;
  let vi = p.beta2 * v[i] + p.oneMinusBeta2 * g * g;
  m[i] = mi;
  v[i] = vi;
  params[i] = params[i] * p.decay - p.stepSize * mi / (sqrt(vi) / p.bc2Sqrt + p.eps);
}`,
  );
  ctx.dispatch(
    pipeline,
    clipped ? [params, state.m, state.v, grads, clip.stats] : [params, state.m, state.v, grads],
    [
      n,
      beta1,
      beta2,
      eps,
      lr / bc1,
      1 - lr * weightDecay,
      bc2Sqrt,
      1 - beta1,
      1 - beta2,
      clip?.maxNorm ?? 0,
    ],
    grid(Math.ceil(n / WG)),
    [1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
}

/** The global-norm clipping of {@linkcode gpuAdamwStep}. */
export interface GpuAdamwClip {
  /** `(2)`: the loss at 0, the gradient's sum of squares over every tensor at 1. */
  stats: GpuTensor;
  /** The largest norm allowed; 0 or less: no clipping. */
  maxNorm: number;
}

/** WGSL: whether a float32 is finite (by its exponent bits: compilers may fold `x != x`). */
const FINITE =
  `fn finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }`;

/** WGSL: `g`, the clipped gradient, or an early return where the step is not finite. */
const CLIPPED_GRAD = `let loss = stats[0];
  let ss = stats[1];
  if (!finite(loss) || !finite(ss)) { return; }
  let norm = sqrt(ss);
  var coef = 1.0;
  if (p.maxNorm > 0.0) { coef = min(1.0, p.maxNorm / (norm + 1e-6)); }
  var g = grads[i];
  if (coef < 1.0) { g = g * coef; }`;
