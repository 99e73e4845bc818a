/**
 * Fully connected layer with PyTorch's weight layout: `out = inp W^T + b`, `W` is `[OC, IC]`.
 *
 * Dimensions: `N` rows (B*T), `IC` input channels, `OC` output channels.
 *
 * @module
 */

/**
 * `out[n,o] = bias[o] + sum_i inp[n,i] * weight[o,i]`.
 *
 * Both operands are read along contiguous rows; four output channels share each load of the
 * input row.
 *
 * @param out Output, `(N,OC)`.
 * @param inp Input, `(N,IC)`.
 * @param weight Weights, `(OC,IC)`.
 * @param bias Bias, `(OC)`, or `null`.
 * @param N Rows.
 * @param IC Input channels.
 * @param OC Output channels.
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
): void {
  const OC4 = OC - (OC % 4);
  for (let n = 0; n < N; n++) {
    const xi = n * IC;
    const yo = n * OC;
    let o = 0;
    for (; o < OC4; o += 4) {
      const w0 = o * IC, w1 = w0 + IC, w2 = w1 + IC, w3 = w2 + IC;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let i = 0; i < IC; i++) {
        const x = inp[xi + i];
        a0 += x * weight[w0 + i];
        a1 += x * weight[w1 + i];
        a2 += x * weight[w2 + i];
        a3 += x * weight[w3 + i];
      }
      if (bias) {
        a0 += bias[o];
        a1 += bias[o + 1];
        a2 += bias[o + 2];
        a3 += bias[o + 3];
      }
      out[yo + o] = a0;
      out[yo + o + 1] = a1;
      out[yo + o + 2] = a2;
      out[yo + o + 3] = a3;
    }
    for (; o < OC; o++) {
      const w0 = o * IC;
      let a = 0;
      for (let i = 0; i < IC; i++) a += inp[xi + i] * weight[w0 + i];
      out[yo + o] = bias ? a + bias[o] : a;
    }
  }
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
): void {
  for (let n = 0; n < N; n++) {
    const xi = n * IC;
    const yo = n * OC;
    for (let o = 0; o < OC; o++) {
      const d = dout[yo + o];
      if (d === 0) continue;
      const wo = o * IC;
      if (dinp) { for (let i = 0; i < IC; i++) dinp[xi + i] += d * weight[wo + i]; }
      for (let i = 0; i < IC; i++) dweight[wo + i] += d * inp[xi + i];
      if (dbias) dbias[o] += d;
    }
  }
}
