/**
 * Element-wise WGSL kernels with the signatures of `src/nn/activations.ts` on
 * {@linkcode GpuTensor}s: ReLU forward and backward, the exact (erf) GELU forward that keeps its
 * derivative in place of the input, and the backward of an op whose derivative was kept.
 *
 * WGSL has no `erf`, so the GELU kernel evaluates `erfc` by the Chebyshev-fitted formula of
 * Numerical Recipes (`erfcc`, fractional error below 1.2e-7 for every argument):
 * `erfc(z) = t exp(-z^2 - 1.26551223 + t (1.00002368 + ... + t 0.17087277))`,
 * `t = 1 / (1 + z/2)`, `z >= 0`. Then `Phi(x) = erfc(-x/sqrt 2) / 2`, the form without
 * cancellation on either side, `gelu(x) = x Phi(x)` and `gelu'(x) = Phi(x) + x phi(x)`.
 *
 * NaN inputs are not propagated the way the TypeScript kernels do (GPU compilers may fold the
 * comparisons); the model never feeds NaN.
 *
 * @module
 */

import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry } from "./wgsl.ts";

/** Invocations per workgroup of the 1-D element-wise kernels. */
const WG = 256;

/** WGSL: the opening of an element-wise kernel, `i` the element. */
const ENTRY = `${entry(WG)}
  let i = group * ${WG}u + l;
  if (i >= p.n) { return; }`;

function elementwise(
  ctx: GpuContext,
  key: string,
  body: string,
  bindings: string,
  tensors: GpuTensor[],
  N: number,
  hasMask: boolean,
): void {
  const pipeline = ctx.pipeline(key, () =>
    `struct Params { n: u32, mask: u32 }
${bindings}
${ENTRY}
  var m = 1.0;
  if (p.mask != 0u) { m = mask[i]; }
${body}
}`);
  ctx.dispatch(pipeline, tensors, [N, hasMask ? 1 : 0], grid(Math.ceil(N / WG)));
}

function checkUnary(name: string, a: GpuTensor, b: GpuTensor, N: number, mask: GpuTensor | null) {
  checkDims(name, { N });
  checkTensor(`${name} first buffer (N)`, a, N);
  checkTensor(`${name} second buffer (N)`, b, N);
  if (mask) checkTensor(`${name} mask (N)`, mask, N);
}

/**
 * `out = max(inp, 0) * mask`. `out` may be `inp`.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(N)`.
 * @param inp Input, `(N)`.
 * @param N Elements.
 * @param mask Dropout scales applied after the activation, `(N)`, or `null` (default).
 */
export function gpuReluForward(
  ctx: GpuContext,
  out: GpuTensor,
  inp: GpuTensor,
  N: number,
  mask: GpuTensor | null = null,
): void {
  checkUnary("gpuReluForward", out, inp, N, mask);
  // one read_write binding when out is inp: a buffer may not be bound twice for writing
  const same = out === inp;
  elementwise(
    ctx,
    same ? "reluForwardInPlace" : "reluForward",
    `  let x = ${same ? "out" : "inp"}[i];
  out[i] = (x + abs(x)) * 0.5 * m;`,
    `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
${same ? "" : "@group(0) @binding(1) var<storage, read> inp: array<f32>;"}
@group(0) @binding(${same ? 1 : 2}) var<storage, read> mask: array<f32>;
@group(0) @binding(${same ? 2 : 3}) var<uniform> p: Params;`,
    same ? [out, mask ?? ctx.dummy] : [out, inp, mask ?? ctx.dummy],
    N,
    mask !== null,
  );
}

/**
 * The exact GELU `out = x Phi(x) * mask`, keeping `gelu'(x) = Phi(x) + x phi(x)` IN PLACE of the
 * input for {@linkcode gpuScaleBackward}, as `geluForwardKeepGrad` does.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(N)`; must not be `inp`.
 * @param inp Input, `(N)`; overwritten with the derivative.
 * @param N Elements.
 * @param mask Dropout scales applied after the activation, `(N)`, or `null` (default).
 */
export function gpuGeluForwardKeepGrad(
  ctx: GpuContext,
  out: GpuTensor,
  inp: GpuTensor,
  N: number,
  mask: GpuTensor | null = null,
): void {
  checkUnary("gpuGeluForwardKeepGrad", out, inp, N, mask);
  if (out === inp) {
    throw new RangeError("gpuGeluForwardKeepGrad: expected out distinct from inp, got the same");
  }
  elementwise(
    ctx,
    "geluForwardKeepGrad",
    `  let x = inp[i];
  let z = abs(x) * 0.70710678118654752;
  let t = 1.0 / (1.0 + 0.5 * z);
  let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
    t * (-0.82215223 + t * 0.17087277))))))));
  let erfcz = t * exp(-z * z + poly);
  // Phi(x) = erfc(-x / sqrt 2) / 2: erfc of a negative argument is 2 - erfc(|.|)
  var cdf = 0.5 * erfcz;
  if (x > 0.0) { cdf = 1.0 - cdf; }
  let pdf = 0.39894228040143268 * exp(-0.5 * x * x);
  out[i] = x * cdf * m;
  inp[i] = cdf + x * pdf;`,
    `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> inp: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;`,
    [out, inp, mask ?? ctx.dummy],
    N,
    mask !== null,
  );
}

/**
 * A backward kernel of an element-wise op that reads one saved buffer: ADDS into `dinp`, with
 * `d = dout * mask` (a float32 product, as a separate dropout op stores it), `d` times the
 * op's derivative read from `saved[i]` (the WGSL expression `grad`).
 */
function savedBackward(name: string, grad: string, savedName: string): typeof gpuScaleBackward {
  return (ctx, dinp, dout, saved, N, mask = null) => {
    checkUnary(name, dinp, dout, N, mask);
    checkTensor(`${name} ${savedName} (N)`, saved, N);
    elementwise(
      ctx,
      name,
      `  let d = dout[i] * m;
  let x = saved[i];
  dinp[i] = dinp[i] + ${grad};`,
      `@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> saved: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;`,
      [dinp, dout, saved, mask ?? ctx.dummy],
      N,
      mask !== null,
    );
  };
}

/**
 * Backward of an element-wise op whose derivative the forward pass kept (for example
 * {@linkcode gpuGeluForwardKeepGrad}). ADDS into `dinp`: `dinp += dout * mask * dsaved`.
 *
 * @param ctx The context of every tensor.
 * @param dinp Gradient of the input, `(N)`.
 * @param dout Upstream gradient, `(N)`.
 * @param dsaved The derivative at each input, `(N)`.
 * @param N Elements.
 * @param mask Dropout scales of the forward pass, `(N)`, or `null` (default).
 */
export function gpuScaleBackward(
  ctx: GpuContext,
  dinp: GpuTensor,
  dout: GpuTensor,
  dsaved: GpuTensor,
  N: number,
  mask: GpuTensor | null = null,
): void {
  scaleBackwardKernel(ctx, dinp, dout, dsaved, N, mask);
}

const scaleBackwardKernel = savedBackward("gpuScaleBackward", "d * x", "dsaved");

/**
 * Backward of {@linkcode gpuReluForward}. ADDS into `dinp`: `dinp += (dout * mask) [inp > 0]`.
 * Arguments as {@linkcode gpuScaleBackward}'s, with the forward input `inp` in place of the
 * saved derivative.
 */
export const gpuReluBackward: typeof gpuScaleBackward = savedBackward(
  "gpuReluBackward",
  "select(0.0, d, x > 0.0)",
  "inp",
);
