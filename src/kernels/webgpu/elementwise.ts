/**
 * Small element-wise kernels the model's passes need between the bigger ones: a copy, and
 * dropout with a mask of scales drawn on the host (`dropoutMask` of `src/nn/dropout.ts`,
 * uploaded), forward in place and backward, as `dropoutForward` and `dropoutBackward`.
 *
 * @module
 */

import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry } from "./wgsl.ts";

const WG = 256;

function run(
  ctx: GpuContext,
  key: string,
  type: string,
  body: string,
  tensors: GpuTensor[],
  n: number,
  at = 0,
): void {
  const [first, ...rest] = tensors;
  const bindings = [
    `@group(0) @binding(0) var<storage, read_write> a: array<${type}>;`,
    ...rest.map((_, k) =>
      `@group(0) @binding(${k + 1}) var<storage, read> ${"bc"[k]}: array<${type}>;`
    ),
    `@group(0) @binding(${tensors.length}) var<uniform> p: Params;`,
  ].join("\n");
  const pipeline = ctx.pipeline(key, () =>
    `struct Params { n: u32, at: u32 }
${bindings}
${entry(WG)}
  let i = group * ${WG}u + l;
  if (i >= p.n) { return; }
  ${body}
}`);
  ctx.dispatch(pipeline, [first, ...rest], [n, at], grid(Math.ceil(n / WG)));
}

/**
 * `dst[at + i] = src[i]` for `i < n`, recorded with the dispatches around it.
 *
 * @param ctx The context of every tensor.
 * @param dst Destination, `(at + n)` (distinct from `src`).
 * @param src Source, `(n)`, of the same element type.
 * @param n Elements.
 * @param at First element of `dst` written (default 0).
 */
export function gpuCopy(
  ctx: GpuContext,
  dst: GpuTensor,
  src: GpuTensor,
  n: number,
  at = 0,
): void {
  checkDims("gpuCopy", { n, at });
  checkTensor("gpuCopy dst (at + n)", dst, at + n, src.dtype);
  checkTensor("gpuCopy src (n)", src, n, src.dtype);
  if (dst === src) throw new RangeError("gpuCopy: expected dst distinct from src, got the same");
  run(ctx, `copy_${src.dtype}`, src.dtype, "a[p.at + i] = b[i];", [dst, src], n, at);
}

/**
 * Dropout forward in place: `x = x * mask`.
 *
 * @param ctx The context of every tensor.
 * @param x Values, `(n)`, scaled in place.
 * @param mask Scales (0 or `1 / (1 - p)`), `(n)`.
 * @param n Elements.
 */
export function gpuDropoutInPlace(ctx: GpuContext, x: GpuTensor, mask: GpuTensor, n: number): void {
  checkDims("gpuDropoutInPlace", { n });
  checkTensor("gpuDropoutInPlace x (n)", x, n);
  checkTensor("gpuDropoutInPlace mask (n)", mask, n);
  run(ctx, "dropoutInPlace", "f32", "a[i] = a[i] * b[i];", [x, mask], n);
}

/**
 * Backward of dropout. ADDS into `dinp`: `dinp += dout * mask`.
 *
 * @param ctx The context of every tensor.
 * @param dinp Gradient of the input, `(n)`.
 * @param dout Upstream gradient, `(n)`.
 * @param mask Scales of the forward pass, `(n)`.
 * @param n Elements.
 */
export function gpuDropoutBackward(
  ctx: GpuContext,
  dinp: GpuTensor,
  dout: GpuTensor,
  mask: GpuTensor,
  n: number,
): void {
  checkDims("gpuDropoutBackward", { n });
  checkTensor("gpuDropoutBackward dinp (n)", dinp, n);
  checkTensor("gpuDropoutBackward dout (n)", dout, n);
  checkTensor("gpuDropoutBackward mask (n)", mask, n);
  run(ctx, "dropoutBackward", "f32", "a[i] = a[i] + b[i] * c[i];", [dinp, dout, mask], n);
}
