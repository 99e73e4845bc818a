/**
 * LayerNorm forward and backward in WGSL, with the signatures of `src/nn/layernorm.ts` on
 * {@linkcode GpuTensor}s (PyTorch's `nn.LayerNorm`, biased variance, eps 1e-5).
 *
 * One workgroup of 64 invocations per row: each invocation sums a strided part of the row, then
 * the 64 partial sums are added pairwise in workgroup memory. The forward pass takes the mean,
 * then the variance of the deviations (two passes, no `E[x^2] - E[x]^2` cancellation). The
 * backward pass has a row kernel for `dinp` and a column kernel (one invocation per channel,
 * rows in order) for `dweight` and `dbias`.
 *
 * @module
 */

import { LAYERNORM_EPS } from "../../nn/layernorm.ts";
import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry, reductions } from "./wgsl.ts";

const ROW_WG = 64;

/** WGSL: the opening of a row kernel: `n` the row, `o` its first element, `l` the invocation. */
const ROW_ENTRY = `${entry(ROW_WG)}
  let n = group;
  if (n >= p.N) { return; }
  let o = n * p.C;`;

/**
 * `out = (inp - mean) / sqrt(var + eps) * weight + bias` per row; saves `mean` and `rstd`.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(N,C)`.
 * @param mean Saved row means, `(N)`.
 * @param rstd Saved reciprocal standard deviations, `(N)`.
 * @param inp Input, `(N,C)`.
 * @param weight Scale, `(C)`.
 * @param bias Shift, `(C)`.
 * @param N Rows.
 * @param C Channels.
 */
export function gpuLayernormForward(
  ctx: GpuContext,
  out: GpuTensor,
  mean: GpuTensor,
  rstd: GpuTensor,
  inp: GpuTensor,
  weight: GpuTensor,
  bias: GpuTensor,
  N: number,
  C: number,
): void {
  checkDims("gpuLayernormForward", { N, C });
  checkTensor("gpuLayernormForward out (N,C)", out, N * C);
  checkTensor("gpuLayernormForward mean (N)", mean, N);
  checkTensor("gpuLayernormForward rstd (N)", rstd, N);
  checkTensor("gpuLayernormForward inp (N,C)", inp, N * C);
  checkTensor("gpuLayernormForward weight (C)", weight, C);
  checkTensor("gpuLayernormForward bias (C)", bias, C);
  if (C === 0) return;
  const pipeline = ctx.pipeline(
    "layernormForward",
    () =>
      `struct Params { N: u32, C: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(3) var<storage, read> inp: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
${reductions(ROW_WG)}
${ROW_ENTRY}
  var s = 0.0;
  for (var c = l; c < p.C; c += ${ROW_WG}u) { s += inp[o + c]; }
  let m = wgSum(s, l) / f32(p.C);
  var v = 0.0;
  for (var c = l; c < p.C; c += ${ROW_WG}u) { let d = inp[o + c] - m; v += d * d; }
  let r = 1.0 / sqrt(wgSum(v, l) / f32(p.C) + p.eps);
  for (var c = l; c < p.C; c += ${ROW_WG}u) {
    out[o + c] = (inp[o + c] - m) * r * weight[c] + bias[c];
  }
  if (l == 0u) { mean[n] = m; rstd[n] = r; }
}`,
  );
  ctx.dispatch(pipeline, [out, mean, rstd, inp, weight, bias], [N, C, LAYERNORM_EPS], grid(N), [
    2,
  ]);
}

/**
 * Backward of {@linkcode gpuLayernormForward}. ADDS into `dinp`, `dweight` and `dbias`:
 * with `xhat = (inp - mean) rstd` and `g = dout weight`,
 * `dinp += rstd (g - mean(g) - xhat mean(g xhat))`, `dweight += sum_rows dout xhat`,
 * `dbias += sum_rows dout`. Two dispatches (rows, then channels).
 *
 * @param ctx The context of every tensor.
 * @param dinp Gradient of the input, `(N,C)`.
 * @param dweight Gradient of the scale, `(C)`.
 * @param dbias Gradient of the shift, `(C)`.
 * @param dout Upstream gradient, `(N,C)`.
 * @param inp The forward input, `(N,C)`.
 * @param weight Scale, `(C)`.
 * @param mean Saved means, `(N)`.
 * @param rstd Saved reciprocal standard deviations, `(N)`.
 * @param N Rows.
 * @param C Channels.
 */
export function gpuLayernormBackward(
  ctx: GpuContext,
  dinp: GpuTensor,
  dweight: GpuTensor,
  dbias: GpuTensor,
  dout: GpuTensor,
  inp: GpuTensor,
  weight: GpuTensor,
  mean: GpuTensor,
  rstd: GpuTensor,
  N: number,
  C: number,
): void {
  checkDims("gpuLayernormBackward", { N, C });
  checkTensor("gpuLayernormBackward dinp (N,C)", dinp, N * C);
  checkTensor("gpuLayernormBackward dweight (C)", dweight, C);
  checkTensor("gpuLayernormBackward dbias (C)", dbias, C);
  checkTensor("gpuLayernormBackward dout (N,C)", dout, N * C);
  checkTensor("gpuLayernormBackward inp (N,C)", inp, N * C);
  checkTensor("gpuLayernormBackward weight (C)", weight, C);
  checkTensor("gpuLayernormBackward mean (N)", mean, N);
  checkTensor("gpuLayernormBackward rstd (N)", rstd, N);
  if (C === 0 || N === 0) return;
  const rows = ctx.pipeline("layernormBackwardRows", () =>
    `struct Params { N: u32, C: u32 }
@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
${reductions(ROW_WG)}
${ROW_ENTRY}
  let m = mean[n];
  let r = rstd[n];
  var gs = 0.0;
  var gxs = 0.0;
  for (var c = l; c < p.C; c += ${ROW_WG}u) {
    let xhat = (inp[o + c] - m) * r;
    let g = dout[o + c] * weight[c];
    gs += g;
    gxs += g * xhat;
  }
  let gMean = wgSum(gs, l) / f32(p.C);
  let gxMean = wgSum(gxs, l) / f32(p.C);
  for (var c = l; c < p.C; c += ${ROW_WG}u) {
    let xhat = (inp[o + c] - m) * r;
    dinp[o + c] = dinp[o + c] + r * (dout[o + c] * weight[c] - gMean - xhat * gxMean);
  }
}`);
  ctx.dispatch(rows, [dinp, dout, inp, weight, mean, rstd], [N, C], grid(N));
  const cols = ctx.pipeline("layernormBackwardColumns", () =>
    `struct Params { N: u32, C: u32 }
@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> inp: array<f32>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  if (c >= p.C) { return; }
  var db = 0.0;
  var dw = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let d = dout[n * p.C + c];
    db += d;
    dw += d * (inp[n * p.C + c] - mean[n]) * rstd[n];
  }
  dbias[c] = dbias[c] + db;
  dweight[c] = dweight[c] + dw;
}`);
  ctx.dispatch(cols, [dweight, dbias, dout, inp, mean, rstd], [N, C], [Math.ceil(C / 64), 1]);
}
