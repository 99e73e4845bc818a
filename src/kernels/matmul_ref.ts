/**
 * Plain TypeScript matmul kernels: the ground truth every WebAssembly kernel is tested
 * against, and the fallback where WebAssembly SIMD is missing.
 *
 * Row-major float32 buffers in PyTorch's layout. Dimension names: `M` rows of C, `N` columns
 * of C, `K` the summed dimension.
 *
 * - `matmulAB`:  C(M,N) = A(M,K) B(K,N)
 * - `matmulABt`: C(M,N) = A(M,K) B(N,K)^T + bias(N)   (the linear forward y = x W^T + b)
 * - `matmulAtB`: C(M,N) = A(K,M)^T B(K,N)             (the weight gradient dW = dy^T x)
 *
 * With `accumulate` true each kernel ADDS into C (`C += ...`), which is what a backward pass
 * does with gradient buffers; otherwise C is overwritten. C must not overlap A, B or bias.
 *
 * @example Both orders of a linear layer
 * ```ts
 * import assert from "node:assert/strict";
 * import { matmulABt, matmulAtB } from "./matmul_ref.ts";
 * const x = new Float32Array([1, 2, 3, 4]); // (2,2)
 * const w = new Float32Array([1, 0, 1, 1, 0, 2]); // (3,2): out 3, in 2
 * const y = new Float32Array(6); // (2,3)
 * matmulABt(y, x, w, new Float32Array([0, 0, 10]), 2, 2, 3);
 * assert.deepEqual([...y], [1, 3, 14, 3, 7, 18]);
 * const dw = new Float32Array(6); // (3,2) = dy^T x
 * matmulAtB(dw, new Float32Array([1, 0, 0, 0, 0, 1]), x, 3, 2, 2);
 * assert.deepEqual([...dw], [1, 2, 0, 0, 3, 4]);
 * ```
 *
 * @module
 */

/**
 * `C(M,N) = op(A) B` for a product without bias (`matmulAB`, `matmulAtB`); with `accumulate`,
 * `C += op(A) B`.
 */
export type MatmulFn = (
  c: Float32Array,
  a: Float32Array,
  b: Float32Array,
  M: number,
  K: number,
  N: number,
  accumulate?: boolean,
) => void;

/** The three matmul kernels, implemented by the reference below and by the wasm module. */
export interface MatmulKernels {
  /** C(M,N) = A(M,K) B(K,N); `accumulate` adds into C instead. */
  matmulAB: MatmulFn;
  /** C(M,N) = A(M,K) B(N,K)^T + bias(N) (bias may be null); `accumulate` adds into C instead. */
  matmulABt: typeof matmulABt;
  /** C(M,N) = A(K,M)^T B(K,N); `accumulate` adds into C instead. */
  matmulAtB: MatmulFn;
}

function checkDims(M: number, K: number, N: number): void {
  for (const [name, v] of [["M", M], ["K", K], ["N", N]] as const) {
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`Matmul dimension ${name}: expected an integer >= 0, got ${v}`);
    }
  }
}

function checkLength(name: string, arr: Float32Array | null, need: number, what: string): void {
  if (arr !== null && arr.length < need) {
    throw new RangeError(
      `Matmul buffer ${name} too short: expected at least ${need} floats (${what}), got ${arr.length}`,
    );
  }
}

/**
 * Validates the shapes of one matmul call, once, at the entry point.
 *
 * @param kind which product: "AB", "ABt" or "AtB"
 * @param c output (M,N)
 * @param a left operand, (M,K) or (K,M) for "AtB"
 * @param b right operand, (K,N) or (N,K) for "ABt"
 * @param bias (N) or null
 * @param M rows of C
 * @param K summed dimension
 * @param N columns of C
 * @throws RangeError when a dimension is not a non-negative integer or a buffer is too short
 */
export function checkMatmulArgs(
  kind: "AB" | "ABt" | "AtB",
  c: Float32Array,
  a: Float32Array,
  b: Float32Array,
  bias: Float32Array | null,
  M: number,
  K: number,
  N: number,
): void {
  // the common case without building a message: whole dimensions, long enough buffers
  if (
    (M >>> 0) === M && (K >>> 0) === K && (N >>> 0) === N && c.length >= M * N &&
    a.length >= M * K && b.length >= K * N && (bias === null || bias.length >= N)
  ) return;
  checkDims(M, K, N);
  checkLength("c", c, M * N, `C is (${M},${N})`);
  checkLength("a", a, M * K, kind === "AtB" ? `A is (${K},${M})` : `A is (${M},${K})`);
  checkLength("b", b, K * N, kind === "ABt" ? `B is (${N},${K})` : `B is (${K},${N})`);
  checkLength("bias", bias, N, `bias is (${N})`);
}

/**
 * `C += A B` or `C += A^T B` (after zeroing C unless `accumulate`): i-k-j loops, each C row
 * accumulated in k order. `A(i,k)` is `a[i*K + k]` for "AB" and `a[k*M + i]` for "AtB".
 */
function productAB(
  kind: "AB" | "AtB",
  c: Float32Array, // (M,N)
  a: Float32Array, // (M,K) or (K,M)
  b: Float32Array, // (K,N)
  M: number,
  K: number,
  N: number,
  accumulate: boolean,
): void {
  checkMatmulArgs(kind, c, a, b, null, M, K, N);
  if (!accumulate) c.fill(0, 0, M * N);
  const si = kind === "AB" ? K : 1, sk = kind === "AB" ? 1 : M; // strides of A(i,k)
  for (let i = 0; i < M; i++) {
    const ci = i * N;
    for (let k = 0; k < K; k++) {
      const aik = a[i * si + k * sk];
      const bk = k * N;
      for (let j = 0; j < N; j++) c[ci + j] += aik * b[bk + j];
    }
  }
}

/**
 * C(M,N) = A(M,K) B(K,N), i-k-j loops; with `accumulate`, C += A B.
 *
 * @param c output (M,N), overwritten or added into
 * @param a (M,K)
 * @param b (K,N)
 * @param M rows of C
 * @param K summed dimension
 * @param N columns of C
 * @param accumulate add into C instead of overwriting it (default false)
 *
 * @example A 2x2 product
 * ```ts
 * import assert from "node:assert/strict";
 * import { matmulAB } from "./matmul_ref.ts";
 * const c = new Float32Array(4);
 * matmulAB(c, new Float32Array([1, 2, 3, 4]), new Float32Array([1, 1, 0, 1]), 2, 2, 2);
 * assert.deepEqual([...c], [1, 3, 3, 7]);
 * ```
 */
export const matmulAB: MatmulFn = (c, a, b, M, K, N, accumulate = false) =>
  productAB("AB", c, a, b, M, K, N, accumulate);

/**
 * C(M,N) = A(M,K) B(N,K)^T + bias: the linear forward `y = x W^T + b` with W (out,in) = (N,K).
 * Each C element is one dot product of two contiguous rows (a float64 sum, rounded once).
 * With `accumulate`, C += A B^T + bias.
 *
 * @param c output (M,N), overwritten or added into
 * @param a (M,K)
 * @param b (N,K)
 * @param bias (N) or null
 * @param M rows of C
 * @param K summed dimension
 * @param N columns of C
 * @param accumulate add into C instead of overwriting it (default false)
 *
 * @example x W^T + b
 * ```ts
 * import assert from "node:assert/strict";
 * import { matmulABt } from "./matmul_ref.ts";
 * const y = new Float32Array(2);
 * matmulABt(y, new Float32Array([1, 2]), new Float32Array([3, 4, 5, 6]), new Float32Array([1, -1]), 1, 2, 2);
 * assert.deepEqual([...y], [12, 16]);
 * ```
 */
export function matmulABt(
  c: Float32Array, // (M,N)
  a: Float32Array, // (M,K)
  b: Float32Array, // (N,K)
  bias: Float32Array | null, // (N)
  M: number,
  K: number,
  N: number,
  accumulate = false,
): void {
  checkMatmulArgs("ABt", c, a, b, bias, M, K, N);
  for (let i = 0; i < M; i++) {
    const ai = i * K;
    for (let j = 0; j < N; j++) {
      const bj = j * K;
      let s = bias === null ? 0 : bias[j];
      for (let k = 0; k < K; k++) s += a[ai + k] * b[bj + k];
      c[i * N + j] = accumulate ? c[i * N + j] + s : s;
    }
  }
}

/**
 * C(M,N) = A(K,M)^T B(K,N): the weight gradient `dW = dy^T x` with dy (K,M) and x (K,N).
 * With `accumulate`, C += A^T B (the backward pass ADDS into gradient buffers).
 *
 * @param c output (M,N), overwritten or added into
 * @param a (K,M)
 * @param b (K,N)
 * @param M rows of C (columns of A)
 * @param K summed dimension (rows of A and B)
 * @param N columns of C
 * @param accumulate add into C instead of overwriting it (default false)
 *
 * @example An outer product (K = 1)
 * ```ts
 * import assert from "node:assert/strict";
 * import { matmulAtB } from "./matmul_ref.ts";
 * const c = new Float32Array([1, 1, 1, 1]);
 * matmulAtB(c, new Float32Array([1, 2]), new Float32Array([3, 4]), 2, 1, 2, true);
 * assert.deepEqual([...c], [4, 5, 7, 9]);
 * ```
 */
export const matmulAtB: MatmulFn = (c, a, b, M, K, N, accumulate = false) =>
  productAB("AtB", c, a, b, M, K, N, accumulate);

/** The reference kernels as one object, interchangeable with the wasm kernels. */
export const refKernels: MatmulKernels = { matmulAB, matmulABt, matmulAtB };
