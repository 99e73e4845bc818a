/**
 * The linear layer and the residual add on {@linkcode GpuTensor}s, with the signatures of
 * `src/nn/linear.ts` and `src/nn/residual.ts`: forward `y = x W^T + b` is one
 * {@linkcode gpuMatmulABt}; backward `dx += dy W` ({@linkcode gpuMatmulAB}), `dW += dy^T x`
 * ({@linkcode gpuMatmulAtB}) and `db += sum_rows dy` (one invocation per output channel,
 * rows in order), all recorded into the same command encoder.
 *
 * @module
 */

import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { gpuMatmulAB, gpuMatmulABt, gpuMatmulAtB } from "./matmul.ts";
import { entry } from "./wgsl.ts";

/**
 * `out = inp W^T + bias`.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(N,OC)`.
 * @param inp Input, `(N,IC)`.
 * @param weight Weights, `(OC,IC)`.
 * @param bias Bias, `(OC)`, or `null`.
 * @param N Rows.
 * @param IC Input channels.
 * @param OC Output channels.
 */
export function gpuLinearForward(
  ctx: GpuContext,
  out: GpuTensor,
  inp: GpuTensor,
  weight: GpuTensor,
  bias: GpuTensor | null,
  N: number,
  IC: number,
  OC: number,
): void {
  gpuMatmulABt(ctx, out, inp, weight, bias, N, IC, OC);
}

/**
 * Backward of {@linkcode gpuLinearForward}. ADDS into `dinp`, `dweight` and `dbias`.
 *
 * @param ctx The context of every tensor.
 * @param dinp Gradient of the input, `(N,IC)`, or `null` when not needed.
 * @param dweight Gradient of the weights, `(OC,IC)`.
 * @param dbias Gradient of the bias, `(OC)`, or `null`.
 * @param dout Upstream gradient, `(N,OC)`.
 * @param inp The forward input, `(N,IC)`.
 * @param weight Weights, `(OC,IC)`.
 * @param N Rows.
 * @param IC Input channels.
 * @param OC Output channels.
 */
export function gpuLinearBackward(
  ctx: GpuContext,
  dinp: GpuTensor | null,
  dweight: GpuTensor,
  dbias: GpuTensor | null,
  dout: GpuTensor,
  inp: GpuTensor,
  weight: GpuTensor,
  N: number,
  IC: number,
  OC: number,
): void {
  checkDims("gpuLinearBackward", { N, IC, OC });
  if (dbias) checkTensor("gpuLinearBackward dbias (OC)", dbias, OC);
  checkTensor("gpuLinearBackward dout (N,OC)", dout, N * OC);
  if (dinp) gpuMatmulAB(ctx, dinp, dout, weight, N, OC, IC, true);
  gpuMatmulAtB(ctx, dweight, dout, inp, OC, N, IC, true);
  if (!dbias || OC === 0) return;
  const pipeline = ctx.pipeline("columnSums", () =>
    `struct Params { N: u32, OC: u32 }
@group(0) @binding(0) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let o = gid.x;
  if (o >= p.OC) { return; }
  var s = 0.0;
  for (var n = 0u; n < p.N; n++) { s += dout[n * p.OC + o]; }
  dbias[o] = dbias[o] + s;
}`);
  ctx.dispatch(pipeline, [dbias, dout], [N, OC], [Math.ceil(OC / 64), 1]);
}

/**
 * `out = a + b`, element-wise (`out` may be `a`).
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(N)`.
 * @param a First input, `(N)`.
 * @param b Second input, `(N)`.
 * @param N Elements.
 */
export function gpuResidualForward(
  ctx: GpuContext,
  out: GpuTensor,
  a: GpuTensor,
  b: GpuTensor,
  N: number,
): void {
  checkDims("gpuResidualForward", { N });
  checkTensor("gpuResidualForward out (N)", out, N);
  checkTensor("gpuResidualForward a (N)", a, N);
  checkTensor("gpuResidualForward b (N)", b, N);
  if (out === b) {
    throw new RangeError("gpuResidualForward: expected out distinct from b, got the same");
  }
  const inPlace = out === a;
  const pipeline = ctx.pipeline(
    inPlace ? "residualInPlace" : "residual",
    () =>
      `struct Params { n: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
${inPlace ? "" : "@group(0) @binding(1) var<storage, read> a: array<f32>;"}
@group(0) @binding(${inPlace ? 1 : 2}) var<storage, read> b: array<f32>;
@group(0) @binding(${inPlace ? 2 : 3}) var<uniform> p: Params;
${entry(256)}
  let i = group * 256u + l;
  if (i >= p.n) { return; }
  out[i] = ${inPlace ? "out" : "a"}[i] + b[i];
}`,
  );
  ctx.dispatch(pipeline, inPlace ? [out, b] : [out, a, b], [N], grid(Math.ceil(N / 256)));
}
