/**
 * Fully connected layer with PyTorch's weight layout: `out = inp W^T + b`, `W` is `[OC, IC]`.
 *
 * Each product is one call of a matmul kernel, with no materialised transpose: the forward pass
 * `out = inp W^T + b` is `matmulABt`, the input gradient `dinp += dout W` is `matmulAB` and the
 * weight gradient `dW += dout^T inp` is `matmulAtB`. The kernels are the plain reference of
 * `src/kernels/matmul_ref.ts` unless the caller passes others (the wasm backend passes its
 * own), so both backends run this one code path.
 *
 * Dimensions: `N` rows (B*T), `IC` input channels, `OC` output channels.
 *
 * @module
 */

import { type MatmulKernels, refKernels } from "../kernels/matmul_ref.ts";

let colSum = new Float64Array(0); // (OC) bias-gradient column sums, in double

/**
 * `out[n,o] = bias[o] + sum_i inp[n,i] * weight[o,i]`.
 *
 * @param out Output, `(N,OC)`.
 * @param inp Input, `(N,IC)`.
 * @param weight Weights, `(OC,IC)`.
 * @param bias Bias, `(OC)`, or `null`.
 * @param N Rows.
 * @param IC Input channels.
 * @param OC Output channels.
 * @param k The matmul kernels to run on. Default: the plain reference.
 *
 * @example A 2x2 weight
 * ```ts
 * import { linearForward } from "./linear.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(2);
 * const w = new Float32Array([1, 2, 3, 4]); // rows are output channels
 * linearForward(out, new Float32Array([1, 1]), w, new Float32Array([0, 10]), 1, 2, 2);
 * assert.deepEqual([...out], [3, 17]);
 * ```
 */
export function linearForward(
  out: Float32Array, // (N,OC)
  inp: Float32Array, // (N,IC)
  weight: Float32Array, // (OC,IC)
  bias: Float32Array | null, // (OC)
  N: number,
  IC: number,
  OC: number,
  k: MatmulKernels = refKernels,
): void {
  k.matmulABt(out, inp, weight, bias, N, IC, OC, false);
}

/**
 * Backward of {@linkcode linearForward}. ADDS into `dinp`, `dweight` and `dbias`.
 *
 * Differentiates `out = inp W^T + b`: `dinp += dout W`, `dW += dout^T inp`, `db += sum_n dout`.
 *
 * @param dinp Gradient of the input, `(N,IC)`, or `null` when not needed.
 * @param dweight Gradient of the weights, `(OC,IC)`.
 * @param dbias Gradient of the bias, `(OC)`, or `null`.
 * @param dout Upstream gradient, `(N,OC)`.
 * @param inp The forward input, `(N,IC)`.
 * @param weight Weights, `(OC,IC)`.
 * @param N Rows.
 * @param IC Input channels.
 * @param OC Output channels.
 * @param k The matmul kernels to run on. Default: the plain reference.
 */
export function linearBackward(
  dinp: Float32Array | null, // (N,IC)
  dweight: Float32Array, // (OC,IC)
  dbias: Float32Array | null, // (OC)
  dout: Float32Array, // (N,OC)
  inp: Float32Array, // (N,IC)
  weight: Float32Array, // (OC,IC)
  N: number,
  IC: number,
  OC: number,
  k: MatmulKernels = refKernels,
): void {
  if (dinp) k.matmulAB(dinp, dout, weight, N, OC, IC, true);
  k.matmulAtB(dweight, dout, inp, OC, N, IC, true);
  if (dbias) {
    if (colSum.length < OC) colSum = new Float64Array(OC);
    const s = colSum;
    s.fill(0, 0, OC);
    for (let n = 0; n < N; n++) {
      const r = n * OC;
      for (let o = 0; o < OC; o++) s[o] += dout[r + o];
    }
    for (let o = 0; o < OC; o++) dbias[o] += s[o];
  }
}
