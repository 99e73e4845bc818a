/**
 * Fully connected layer with PyTorch's weight layout: `out = inp W^T + b`, `W` is `[OC, IC]`.
 *
 * All three products (forward, input gradient, weight gradient) run through one kernel,
 * {@linkcode matmulABt}, `out += A B^T` with both operands read along contiguous rows in 4x4
 * register tiles. The backward pass transposes `W`, `dout` and `inp` into scratch buffers kept
 * by this module (grown on demand, reused afterwards) to get there.
 *
 * Dimensions: `N` rows (B*T), `IC` input channels, `OC` output channels.
 *
 * @module
 */

/**
 * `out[m,n] += sum_k A[m,k] * B[n,k]`: the product `A B^T` added into `out`.
 *
 * @param out Accumulator, `(M,N)`.
 * @param A Left operand, `(M,K)`.
 * @param B Right operand, `(N,K)` (rows are output columns).
 * @param M Rows of `A`.
 * @param K Shared dimension.
 * @param N Rows of `B`.
 *
 * @example
 * ```ts
 * import { matmulABt } from "./linear.ts";
 * import assert from "node:assert/strict";
 *
 * const out = new Float32Array([1, 0, 0, 0]);
 * matmulABt(out, new Float32Array([1, 2, 3, 4]), new Float32Array([1, 0, 0, 1]), 2, 2, 2);
 * assert.deepEqual([...out], [2, 2, 3, 4]);
 * ```
 */
export function matmulABt(
  out: Float32Array, // (M,N)
  A: Float32Array, // (M,K)
  B: Float32Array, // (N,K)
  M: number,
  K: number,
  N: number,
): void {
  const M4 = M - (M % 4);
  const N4 = N - (N % 4);
  for (let m = 0; m < M4; m += 4) {
    const a0 = m * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
    const o0 = m * N, o1 = o0 + N, o2 = o1 + N, o3 = o2 + N;
    for (let n = 0; n < N4; n += 4) {
      const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = A[a0 + k], x1 = A[a1 + k], x2 = A[a2 + k], x3 = A[a3 + k];
        const y0 = B[b0 + k], y1 = B[b1 + k], y2 = B[b2 + k], y3 = B[b3 + k];
        s00 += x0 * y0, s01 += x0 * y1, s02 += x0 * y2, s03 += x0 * y3;
        s10 += x1 * y0, s11 += x1 * y1, s12 += x1 * y2, s13 += x1 * y3;
        s20 += x2 * y0, s21 += x2 * y1, s22 += x2 * y2, s23 += x2 * y3;
        s30 += x3 * y0, s31 += x3 * y1, s32 += x3 * y2, s33 += x3 * y3;
      }
      out[o0 + n] += s00, out[o0 + n + 1] += s01, out[o0 + n + 2] += s02, out[o0 + n + 3] += s03;
      out[o1 + n] += s10, out[o1 + n + 1] += s11, out[o1 + n + 2] += s12, out[o1 + n + 3] += s13;
      out[o2 + n] += s20, out[o2 + n + 1] += s21, out[o2 + n + 2] += s22, out[o2 + n + 3] += s23;
      out[o3 + n] += s30, out[o3 + n + 1] += s31, out[o3 + n + 2] += s32, out[o3 + n + 3] += s33;
    }
  }
  // Edges: leftover rows of A (all columns), leftover columns of B (tiled rows).
  for (let m = 0; m < M; m++) {
    const a = m * K, o = m * N;
    for (let n = m < M4 ? N4 : 0; n < N; n++) {
      const b = n * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += A[a + k] * B[b + k];
      out[o + n] += s;
    }
  }
}

/** Writes the transpose of `src` `(R,Q)` into `dst` `(Q,R)`. */
function transpose(dst: Float32Array, src: Float32Array, R: number, Q: number): void {
  for (let r = 0; r < R; r++) {
    const s = r * Q;
    for (let q = 0; q < Q; q++) dst[q * R + r] = src[s + q];
  }
}

// Scratch for the backward transposes, one set per element type so that float64 gradient
// checks stay in float64.
const scratch = new Map<unknown, Float32Array[]>();

function scratchLike(like: Float32Array, slot: number, n: number): Float32Array {
  const ctor = like.constructor as new (n: number) => Float32Array;
  let set = scratch.get(ctor);
  if (!set) scratch.set(ctor, set = []);
  if (!set[slot] || set[slot].length < n) set[slot] = new ctor(n);
  return set[slot];
}

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
  for (let n = 0; n < N; n++) {
    const o = n * OC;
    if (bias) { for (let j = 0; j < OC; j++) out[o + j] = bias[j]; }
    else out.fill(0, o, o + OC);
  }
  matmulABt(out, inp, weight, N, IC, OC);
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
  if (dinp) {
    const wT = scratchLike(dout, 0, IC * OC); // (IC,OC)
    transpose(wT, weight, OC, IC);
    matmulABt(dinp, dout, wT, N, OC, IC);
  }
  const doutT = scratchLike(dout, 1, OC * N); // (OC,N)
  const inpT = scratchLike(dout, 2, IC * N); // (IC,N)
  transpose(doutT, dout, N, OC);
  transpose(inpT, inp, N, IC);
  matmulABt(dweight, doutT, inpT, OC, N, IC);
  if (dbias) {
    for (let o = 0; o < OC; o++) {
      const r = o * N;
      let s = 0;
      for (let n = 0; n < N; n++) s += doutT[r + n];
      dbias[o] += s;
    }
  }
}
