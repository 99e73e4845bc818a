/**
 * The weighted softmax cross-entropy rows of `src/nn/cross_entropy.ts` in WGSL, on
 * {@linkcode GpuTensor}s, plus a sum that leaves the total loss on the GPU:
 * `losses[n] = weight[n] (logsumexp(logits[n]) - logits[n, target[n]])`.
 *
 * The forward pass runs one workgroup of 64 invocations per row (row maximum, then the sum of
 * `exp(logit - max)`, both reduced pairwise in workgroup memory); rows with weight 0 get loss 0
 * and lse 0, as in the reference. The backward pass is element-wise over `(N,V)`.
 *
 * Targets must already be validated (`0 <= target < V`): the kernels do not check them.
 *
 * @module
 */

import { checkDims, checkTensor, type GpuContext, type GpuTensor, grid } from "./context.ts";
import { entry, reductions } from "./wgsl.ts";

const WG = 64;
const SUM_WG = 256;

/**
 * Writes each row's weighted loss and its log-sum-exp (for the backward pass). The total is
 * {@linkcode gpuSum} of `losses`.
 *
 * @param ctx The context of every tensor.
 * @param losses Weighted loss per row, `(N)`.
 * @param lse Saved log-sum-exp per row, `(N)`.
 * @param logits Scores, `(N,V)`.
 * @param targets Target ids, `(N)` i32.
 * @param weights Weight per row, `(N)`.
 * @param N Rows.
 * @param V Vocabulary size: the row stride of `logits` (>= 1 where N > 0).
 * @param width The softmax runs over each row's first `width` logits (default `V`; `V - 1`
 *   leaves out a trailing mask column, as the `elbo` loss does).
 */
export function gpuCrossEntropyForward(
  ctx: GpuContext,
  losses: GpuTensor,
  lse: GpuTensor,
  logits: GpuTensor,
  targets: GpuTensor,
  weights: GpuTensor,
  N: number,
  V: number,
  width: number = V,
): void {
  checkDims("gpuCrossEntropyForward", { N, V, width });
  checkWidth("gpuCrossEntropyForward", N, V, width);
  checkTensor("gpuCrossEntropyForward losses (N)", losses, N);
  checkTensor("gpuCrossEntropyForward lse (N)", lse, N);
  checkTensor("gpuCrossEntropyForward logits (N,V)", logits, N * V);
  checkTensor("gpuCrossEntropyForward targets (N)", targets, N, "i32");
  checkTensor("gpuCrossEntropyForward weights (N)", weights, N);
  const pipeline = ctx.pipeline(
    "crossEntropyForward",
    () =>
      `struct Params { N: u32, V: u32, width: u32 }
@group(0) @binding(0) var<storage, read_write> losses: array<f32>;
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<i32>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${reductions(WG)}
${entry(WG)}
  let n = group;
  if (n >= p.N) { return; }
  let o = n * p.V;
  var mx = -3.402823466e38;
  for (var v = l; v < p.width; v += ${WG}u) { mx = max(mx, logits[o + v]); }
  let rowMax = wgMax(mx, l);
  var e = 0.0;
  for (var v = l; v < p.width; v += ${WG}u) { e += exp(logits[o + v] - rowMax); }
  let rowSum = wgSum(e, l);
  if (l == 0u) {
    let w = weights[n];
    if (w == 0.0) {
      losses[n] = 0.0;
      lse[n] = 0.0;
    } else {
      let r = rowMax + log(rowSum);
      lse[n] = r;
      losses[n] = w * (r - logits[o + u32(targets[n])]);
    }
  }
}`,
  );
  ctx.dispatch(pipeline, [losses, lse, logits, targets, weights], [N, V, width], grid(N));
}

/**
 * Backward of {@linkcode gpuCrossEntropyForward}. ADDS into `dlogits`:
 * `dlogits[n, v] += dloss w[n] (exp(logits[n, v] - lse[n]) - [v == target[n]])`, the target's
 * term subtracted after the softmax term, as the reference does.
 *
 * @param ctx The context of every tensor.
 * @param dlogits Gradient of the scores, `(N,V)`.
 * @param dloss Upstream gradient of the total loss (a scalar, passed as f32).
 * @param logits Scores, `(N,V)`.
 * @param lse Saved log-sum-exp, `(N)`.
 * @param targets Target ids, `(N)` i32.
 * @param weights Weight per row, `(N)`.
 * @param N Rows.
 * @param V Vocabulary size: the row stride of `logits` and `dlogits`.
 * @param width The forward pass's softmax width (default `V`); columns past it get nothing.
 */
export function gpuCrossEntropyBackward(
  ctx: GpuContext,
  dlogits: GpuTensor,
  dloss: number,
  logits: GpuTensor,
  lse: GpuTensor,
  targets: GpuTensor,
  weights: GpuTensor,
  N: number,
  V: number,
  width: number = V,
): void {
  checkDims("gpuCrossEntropyBackward", { N, V, width });
  checkWidth("gpuCrossEntropyBackward", N, V, width);
  if (!Number.isFinite(dloss)) {
    throw new RangeError(`gpuCrossEntropyBackward dloss: expected a finite number, got ${dloss}`);
  }
  checkTensor("gpuCrossEntropyBackward dlogits (N,V)", dlogits, N * V);
  checkTensor("gpuCrossEntropyBackward logits (N,V)", logits, N * V);
  checkTensor("gpuCrossEntropyBackward lse (N)", lse, N);
  checkTensor("gpuCrossEntropyBackward targets (N)", targets, N, "i32");
  checkTensor("gpuCrossEntropyBackward weights (N)", weights, N);
  const pipeline = ctx.pipeline(
    "crossEntropyBackward",
    () =>
      `struct Params { N: u32, V: u32, dloss: f32, width: u32 }
@group(0) @binding(0) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<i32>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${entry(SUM_WG)}
  let i = group * ${SUM_WG}u + l;
  if (i >= p.N * p.V) { return; }
  let n = i / p.V;
  let g = p.dloss * weights[n];
  if (g == 0.0 || i - n * p.V >= p.width) { return; }
  var d = dlogits[i] + g * exp(logits[i] - lse[n]);
  if (i - n * p.V == u32(targets[n])) { d -= g; }
  dlogits[i] = d;
}`,
  );
  ctx.dispatch(
    pipeline,
    [dlogits, logits, lse, targets, weights],
    [N, V, dloss, width],
    grid(Math.ceil(N * V / SUM_WG)),
    [2],
  );
}

/**
 * Row weights that turn {@linkcode gpuCrossEntropyForward} into a masked diffusion loss:
 * `w[b*T + t] = scale * seqWeight[b]` where `xt[b*T + t]` is the mask id, else 0. The `seed`
 * loss is the softmax over all V logits with `seqWeight` null (1 per sequence); MDLM's `elbo` is
 * the softmax over the V - 1 real tokens (`width = V - 1`) with
 * `seqWeight[b] = dsigma_b / expm1(sigma_b)`. Computed on the host, which holds `xt` anyway.
 *
 * @param xt Corrupted ids, `(B,T)`.
 * @param maskId The mask id.
 * @param seqWeight Weight per sequence, `(B)`, or `null` for 1.
 * @param B Batch size.
 * @param T Sequence length.
 * @param scale Whole-batch normaliser.
 * @returns `(B*T)` weights, to upload.
 *
 * @example Only masked positions count
 * ```ts
 * import assert from "node:assert/strict";
 * import { maskedRowWeights } from "./cross_entropy.ts";
 * const w = maskedRowWeights(new Int32Array([3, 1, 3]), 3, null, 1, 3, 0.5);
 * assert.deepEqual([...w], [0.5, 0, 0.5]);
 * ```
 */
export function maskedRowWeights(
  xt: ArrayLike<number>,
  maskId: number,
  seqWeight: ArrayLike<number> | null,
  B: number,
  T: number,
  scale: number,
): Float32Array {
  checkDims("maskedRowWeights", { B, T });
  if (xt.length < B * T || (seqWeight !== null && seqWeight.length < B)) {
    throw new RangeError(
      `maskedRowWeights: expected xt of length B*T = ${
        B * T
      } and seqWeight of length B = ${B}, got ${xt.length} and ${seqWeight?.length}`,
    );
  }
  const w = new Float32Array(B * T);
  for (let b = 0; b < B; b++) {
    const sw = scale * (seqWeight ? seqWeight[b] : 1);
    for (let i = b * T; i < (b + 1) * T; i++) if (xt[i] === maskId) w[i] = sw;
  }
  return w;
}

function checkWidth(name: string, N: number, V: number, width: number): void {
  if (N > 0 && (width < 1 || width > V)) {
    throw new RangeError(`${name} width: expected 1 <= width <= V = ${V}, got ${width}`);
  }
}

/**
 * `out[0] = sum_i x[i]` (or `out[0] += ...` with `accumulate`), in one workgroup: each of 256
 * invocations sums a strided part in float32, then the partial sums are added pairwise. For the
 * loss total, so that only one float comes back per step.
 *
 * @param ctx The context of every tensor.
 * @param out Output, `(1)`.
 * @param x Values, `(n)`.
 * @param n Elements.
 * @param accumulate Add into `out[0]` instead of overwriting it (default false).
 */
export function gpuSum(
  ctx: GpuContext,
  out: GpuTensor,
  x: GpuTensor,
  n: number,
  accumulate = false,
): void {
  sumKernel(ctx, "gpuSum", "x[i]", out, x, n, accumulate);
}

/**
 * `out[0] = sum_i x[i]^2` (or `out[0] += ...` with `accumulate`), as {@linkcode gpuSum}: for the
 * gradient's global norm, summed tensor by tensor into one value.
 *
 * @param ctx The context of every tensor.
 * @param out Output: element `at` is written.
 * @param x Values, `(n)`.
 * @param n Elements.
 * @param accumulate Add into `out[at]` instead of overwriting it (default false).
 * @param at The element of `out` written (default 0).
 */
export function gpuSumSquares(
  ctx: GpuContext,
  out: GpuTensor,
  x: GpuTensor,
  n: number,
  accumulate = false,
  at = 0,
): void {
  sumKernel(ctx, "gpuSumSquares", "x[i] * x[i]", out, x, n, accumulate, at);
}

function sumKernel(
  ctx: GpuContext,
  name: string,
  term: string,
  out: GpuTensor,
  x: GpuTensor,
  n: number,
  accumulate: boolean,
  at = 0,
): void {
  checkDims(name, { n, at });
  checkTensor(`${name} out (at + 1)`, out, at + 1);
  checkTensor(`${name} x (n)`, x, n);
  if (out === x) throw new RangeError(`${name}: expected out distinct from x, got the same`);
  const pipeline = ctx.pipeline(name, () =>
    `struct Params { n: u32, accumulate: u32, at: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${reductions(SUM_WG)}
${entry(SUM_WG)}
  var s = 0.0;
  for (var i = l; i < p.n; i += ${SUM_WG}u) { s += ${term}; }
  let total = wgSum(s, l);
  if (l == 0u) {
    if (p.accumulate != 0u) { out[p.at] = out[p.at] + total; } else { out[p.at] = total; }
  }
}`);
  ctx.dispatch(pipeline, [out, x], [n, accumulate ? 1 : 0, at], [1, 1]);
}
