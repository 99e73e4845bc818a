// Shared by the matmul kernel tests: the reference comparison with a summation-order bound.
//
// Tolerance: both sides sum K float32 products in different orders (blocked, SIMD lanes,
// fused multiply-add). The standard bound for a recursive float32 sum of n terms is
// gamma_n = n u / (1 - n u) times the sum of the terms' magnitudes, u = 2^-24, so two such sums
// differ by at most about 2 (K + 2) u (|C0| + |bias| + sum_k |a b|) (K + 2 terms: the
// products, C0 and bias). A wrong index or a dropped term misses by a whole term, orders of
// magnitude above that.

import assert from "node:assert/strict";
import { type MatmulKernels, refKernels } from "../../src/kernels/matmul_ref.ts";
import { Rng } from "../../src/rng.ts";

export function seeded(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.uniform();
}

export type Kind = "AB" | "ABt" | "AtB";
export const U = 2 ** -24;

export function randomArray(n: number, rand: () => number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = rand() * 2 - 1;
  return x;
}

export function intArray(n: number, rand: () => number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.floor(rand() * 7) - 3;
  return x;
}

/** One matmul call: which product, its operands and shape (C is passed separately). */
export interface Call {
  kind: Kind;
  a: Float32Array;
  b: Float32Array;
  bias: Float32Array | null;
  M: number;
  K: number;
  N: number;
  accumulate: boolean;
}

/** Element (i, j) of sum_k |a b| + |C0| + |bias|: the scale of the rounding error bound. */
export function magnitudes(call: Call, c0: Float32Array): Float64Array {
  const { kind, a, b, bias, M, K, N, accumulate } = call;
  const mag = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = (accumulate ? Math.abs(c0[i * N + j]) : 0) + (bias ? Math.abs(bias[j]) : 0);
      for (let k = 0; k < K; k++) {
        const av = kind === "AtB" ? a[k * M + i] : a[i * K + k];
        const bv = kind === "ABt" ? b[j * K + k] : b[k * N + j];
        s += Math.abs(av * bv);
      }
      mag[i * N + j] = s;
    }
  }
  return mag;
}

/** Runs `call` on kernels `k`, writing (or adding into) `c`. */
export function run(k: MatmulKernels, call: Call, c: Float32Array): void {
  const { kind, a, b, bias, M, K, N, accumulate } = call;
  if (kind === "AB") k.matmulAB(c, a, b, M, K, N, accumulate);
  else if (kind === "ABt") k.matmulABt(c, a, b, bias, M, K, N, accumulate);
  else k.matmulAtB(c, a, b, M, K, N, accumulate);
}

/**
 * Runs `call` on `k` into `c` (which holds C0 on entry) and on the reference into a copy of C0,
 * and asserts the two agree within the summation-order bound.
 */
export function assertMatchesRef(k: MatmulKernels, call: Call, c: Float32Array, label: string) {
  const c0 = c.slice(), want = c.slice();
  run(k, call, c);
  run(refKernels, call, want);
  assertClose(c, want, magnitudes(call, c0), call.K, label);
}

/** Throws with the first offending element and the largest error relative to its bound. */
export function assertClose(
  got: Float32Array,
  want: Float32Array,
  mag: Float64Array,
  K: number,
  label: string,
): void {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i], w = want[i];
    if (!Number.isFinite(g)) throw new Error(`${label}: element ${i} is ${g}, expected ${w}`);
    const bound = 2 * (K + 2) * U * mag[i] + 1e-30;
    const ratio = Math.abs(g - w) / bound;
    if (ratio > 1) {
      throw new Error(
        `${label}: element ${i} got ${g}, expected ${w} (|diff| ${
          Math.abs(g - w)
        } > bound ${bound})`,
      );
    }
    worst = Math.max(worst, ratio);
  }
  assert.ok(worst <= 1, `${label}: worst error/bound ${worst}`);
}
