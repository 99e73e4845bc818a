/**
 * Layer normalisation over the channel axis (PyTorch's `nn.LayerNorm`, eps 1e-5).
 *
 * Dimensions: `N` rows (B*T), `C` channels.
 *
 * @module
 */

/** PyTorch's default LayerNorm epsilon. */
export const LAYERNORM_EPS = 1e-5;

/**
 * `out = (inp - mean) / sqrt(var + eps) * weight + bias`, per row, with the biased variance.
 *
 * @param out Output, `(N,C)`.
 * @param mean Saved row means for the backward pass, `(N)`.
 * @param rstd Saved reciprocal standard deviations, `(N)`.
 * @param inp Input, `(N,C)`.
 * @param weight Scale, `(C)`.
 * @param bias Shift, `(C)`.
 * @param N Rows.
 * @param C Channels.
 *
 * @example A row is centred and scaled
 * ```ts
 * import { layernormForward } from "./layernorm.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array(2);
 * const mean = new Float32Array(1);
 * const rstd = new Float32Array(1);
 * const ones = new Float32Array([1, 1]);
 * layernormForward(out, mean, rstd, new Float32Array([1, 3]), ones, new Float32Array(2), 1, 2);
 * assert.equal(mean[0], 2);
 * assert.ok(Math.abs(out[0] + 1) < 1e-4 && Math.abs(out[1] - 1) < 1e-4);
 * ```
 */
export function layernormForward(
  out: Float32Array, // (N,C)
  mean: Float32Array, // (N)
  rstd: Float32Array, // (N)
  inp: Float32Array, // (N,C)
  weight: Float32Array, // (C)
  bias: Float32Array, // (C)
  N: number,
  C: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = n * C;
    let m = 0;
    for (let c = 0; c < C; c++) m += inp[o + c];
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) {
      const d = inp[o + c] - m;
      v += d * d;
    }
    v /= C;
    const s = 1 / Math.sqrt(v + LAYERNORM_EPS);
    for (let c = 0; c < C; c++) out[o + c] = (inp[o + c] - m) * s * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

/**
 * Backward of {@linkcode layernormForward}. ADDS into `dinp`, `dweight` and `dbias`.
 *
 * Differentiates `out = (inp - mean) * rstd * weight + bias`: with `xhat = (inp - mean) * rstd`
 * and `g = dout * weight`, `dinp = rstd * (g - mean(g) - xhat * mean(g * xhat))`.
 *
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
export function layernormBackward(
  dinp: Float32Array, // (N,C)
  dweight: Float32Array, // (C)
  dbias: Float32Array, // (C)
  dout: Float32Array, // (N,C)
  inp: Float32Array, // (N,C)
  weight: Float32Array, // (C)
  mean: Float32Array, // (N)
  rstd: Float32Array, // (N)
  N: number,
  C: number,
): void {
  // dweight and dbias are summed over rows in double scratch and added once: no float32
  // read-modify-write per element.
  if (sums.length < 2 * C) sums = new Float64Array(2 * C);
  const db = sums, dwOff = C;
  db.fill(0, 0, 2 * C);
  for (let n = 0; n < N; n++) {
    const o = n * C;
    const m = mean[n];
    const s = rstd[n];
    let gMean = 0;
    let gxMean = 0;
    for (let c = 0; c < C; c++) {
      const xhat = (inp[o + c] - m) * s;
      const g = dout[o + c] * weight[c];
      gMean += g;
      gxMean += g * xhat;
    }
    gMean /= C;
    gxMean /= C;
    for (let c = 0; c < C; c++) {
      const xhat = (inp[o + c] - m) * s;
      const d = dout[o + c];
      db[c] += d;
      db[dwOff + c] += d * xhat;
      dinp[o + c] += s * (d * weight[c] - gMean - xhat * gxMean);
    }
  }
  for (let c = 0; c < C; c++) {
    dbias[c] += db[c];
    dweight[c] += db[dwOff + c];
  }
}

let sums = new Float64Array(0); // (2C) scratch of layernormBackward
