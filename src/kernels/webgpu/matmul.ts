/**
 * Tiled WGSL matmuls with the signatures of `../matmul_ref.ts`, on {@linkcode GpuTensor}s:
 *
 * - {@linkcode gpuMatmulAB}:  C(M,N) = A(M,K) B(K,N)
 * - {@linkcode gpuMatmulABt}: C(M,N) = A(M,K) B(N,K)^T + bias(N)
 * - {@linkcode gpuMatmulAtB}: C(M,N) = A(K,M)^T B(K,N)
 *
 * With `accumulate` each ADDS into C. C must not be the same tensor as A, B or bias.
 *
 * Each workgroup of 16 x 16 invocations computes a 64 x 64 tile of C, 4 x 4 outputs per
 * invocation (rows `ly + 16 r`, columns `lx + 16 c`). The K axis goes in steps of 16: the
 * workgroup loads a 64 x 16 slice of op(A) and a 16 x 64 slice of op(B) into workgroup memory
 * (zeros past the matrix edges), then every invocation updates its 16 accumulators from there.
 * Each output is a float32 sum in k order, then `+ bias`, then `+ C` when accumulating.
 *
 * @module
 */

import { checkDims, checkTensor, type GpuContext, type GpuTensor } from "./context.ts";

/** Which product: `A B`, `A B^T` or `A^T B`. */
export type MatmulKind = "AB" | "ABt" | "AtB";
type Kind = MatmulKind;

/** Rows and columns of C per workgroup, and the K step. */
export const MATMUL_TILE = 64;
/** The K step of the tiled matmuls (the width of the shared slices). */
export const MATMUL_TK = 16;

/**
 * WGSL: invocation element `idx` (of 1024) of the workgroup's 64 x 16 slice of an operand, read
 * into `av` (A) or `bv` (B), zero past the matrix edges. The slice's outer index is a row of
 * op(A) (`ii`, from `row0`, bound M) or a column of op(B) (`jj`, from `col0`, bound N). Where k is
 * the operand's contiguous axis in memory (`kFast`), the 16 k values are the fastest-varying
 * part of `idx`, else the 64 outer ones: neighbouring invocations read neighbouring addresses.
 */
function tileLoad(op: "a" | "b", kFast: boolean): string {
  const [o, k, go, gk, v, base, dim] = op === "a"
    ? ["ii", "kk", "gi", "gk", "av", "row0", "p.M"]
    : ["jj", "kb", "gj", "gkb", "bv", "col0", "p.N"];
  const split = kFast
    ? `let ${o} = idx / 16u; let ${k} = idx % 16u;`
    : `let ${k} = idx / 64u; let ${o} = idx % 64u;`;
  const at = kFast ? `${go} * p.K + ${gk}` : `${gk} * ${dim} + ${go}`;
  return `${split}
      let ${go} = ${base} + ${o}; let ${gk} = k0 + ${k};
      var ${v} = 0.0;
      if (${go} < ${dim} && ${gk} < p.K) { ${v} = ${op}[${at}]; }`;
}

function matmulWgsl(kind: Kind): string {
  // A(i,k) is a[i*K + k] (k contiguous) except for AtB, a[k*M + i]; B(k,j) is b[k*N + j]
  // except for ABt, b[j*K + k] (k contiguous)
  const aLoad = tileLoad("a", kind !== "AtB");
  const bLoad = tileLoad("b", kind === "ABt");
  return `
struct Params { M: u32, K: u32, N: u32, flags: u32 } // flags: 1 accumulate, 2 bias
@group(0) @binding(0) var<storage, read_write> c: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
var<workgroup> As: array<f32, 1024>; // [16][64]: As[kk * 64 + ii]
var<workgroup> Bs: array<f32, 1024>; // [16][64]: Bs[kk * 64 + jj]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let row0 = wg.y * 64u;
  let col0 = wg.x * 64u;
  let t = l.y * 16u + l.x;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < p.K; k0 += 16u) {
    for (var e = 0u; e < 4u; e++) {
      let idx = t + e * 256u;
      ${aLoad}
      As[kk * 64u + ii] = av;
      ${bLoad}
      Bs[kb * 64u + jj] = bv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) {
      var ar: array<f32, 4>;
      var bc: array<f32, 4>;
      for (var r = 0u; r < 4u; r++) { ar[r] = As[kk * 64u + l.y + 16u * r]; }
      for (var q = 0u; q < 4u; q++) { bc[q] = Bs[kk * 64u + l.x + 16u * q]; }
      for (var r = 0u; r < 4u; r++) {
        for (var q = 0u; q < 4u; q++) { acc[r * 4u + q] += ar[r] * bc[q]; }
      }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    let i = row0 + l.y + 16u * r;
    for (var q = 0u; q < 4u; q++) {
      let j = col0 + l.x + 16u * q;
      if (i < p.M && j < p.N) {
        var v = acc[r * 4u + q];
        if ((p.flags & 2u) != 0u) { v += bias[j]; }
        if ((p.flags & 1u) != 0u) { v += c[i * p.N + j]; }
        c[i * p.N + j] = v;
      }
    }
  }
}
`;
}

/**
 * Any of the three products by name: {@linkcode gpuMatmulAB}, {@linkcode gpuMatmulABt} (the only
 * one that takes a bias; pass `null` for the others) or {@linkcode gpuMatmulAtB}.
 *
 * @param ctx The context of every tensor.
 * @param kind `"AB"`, `"ABt"` or `"AtB"`.
 * @param c Output `(M,N)`.
 * @param a `(M,K)`, or `(K,M)` for `"AtB"`.
 * @param b `(K,N)`, or `(N,K)` for `"ABt"`.
 * @param bias `(N)` or null (`"ABt"` only).
 * @param M Rows of C.
 * @param K Summed dimension.
 * @param N Columns of C.
 * @param accumulate Add into C instead of overwriting it (default false).
 */
export function gpuMatmul(
  ctx: GpuContext,
  kind: MatmulKind,
  c: GpuTensor,
  a: GpuTensor,
  b: GpuTensor,
  bias: GpuTensor | null,
  M: number,
  K: number,
  N: number,
  accumulate = false,
): void {
  if (kind !== "AB" && kind !== "ABt" && kind !== "AtB") {
    throw new RangeError(`gpuMatmul kind: expected "AB", "ABt" or "AtB", got ${kind}`);
  }
  if (bias !== null && kind !== "ABt") {
    throw new RangeError(`gpuMatmul: only "ABt" takes a bias, got one for "${kind}"`);
  }
  runMatmul(ctx, kind, c, a, b, bias, M, K, N, accumulate);
}

function runMatmul(
  ctx: GpuContext,
  kind: Kind,
  c: GpuTensor,
  a: GpuTensor,
  b: GpuTensor,
  bias: GpuTensor | null,
  M: number,
  K: number,
  N: number,
  accumulate: boolean,
): void {
  checkDims(`gpuMatmul${kind}`, { M, K, N });
  checkTensor(`gpuMatmul${kind} c (C is (${M},${N}))`, c, M * N);
  checkTensor(
    `gpuMatmul${kind} a (A is ${kind === "AtB" ? `(${K},${M})` : `(${M},${K})`})`,
    a,
    M * K,
  );
  checkTensor(
    `gpuMatmul${kind} b (B is ${kind === "ABt" ? `(${N},${K})` : `(${K},${N})`})`,
    b,
    K * N,
  );
  if (bias !== null) checkTensor(`gpuMatmul${kind} bias (bias is (${N}))`, bias, N);
  if (c === a || c === b || c === bias) {
    throw new RangeError(`gpuMatmul${kind}: expected C distinct from A, B and bias, got the same`);
  }
  if (M === 0 || N === 0) return;
  const pipeline = ctx.pipeline(`matmul${kind}`, () => matmulWgsl(kind));
  const flags = (accumulate ? 1 : 0) | (bias !== null ? 2 : 0);
  ctx.dispatch(pipeline, [c, a, b, bias ?? ctx.dummy], [M, K, N, flags], [
    Math.ceil(N / MATMUL_TILE),
    Math.ceil(M / MATMUL_TILE),
  ]);
}

/**
 * `C(M,N) = op(A) B` on the GPU for a product without bias ({@linkcode gpuMatmulAB},
 * {@linkcode gpuMatmulAtB}); with `accumulate`, `C += op(A) B`. Recorded into `ctx`'s pending
 * encoder.
 *
 * @param ctx The context of every tensor.
 * @param c Output `(M,N)`.
 * @param a `(M,K)`, or `(K,M)` for `A^T B`.
 * @param b `(K,N)`.
 * @param M Rows of C.
 * @param K Summed dimension.
 * @param N Columns of C.
 * @param accumulate Add into C instead of overwriting it (default false).
 */
export type GpuMatmulFn = (
  ctx: GpuContext,
  c: GpuTensor,
  a: GpuTensor,
  b: GpuTensor,
  M: number,
  K: number,
  N: number,
  accumulate?: boolean,
) => void;

/** C(M,N) = A(M,K) B(K,N); with `accumulate`, C += A B. See {@linkcode GpuMatmulFn}. */
export const gpuMatmulAB: GpuMatmulFn = (ctx, c, a, b, M, K, N, accumulate = false): void =>
  runMatmul(ctx, "AB", c, a, b, null, M, K, N, accumulate);

/**
 * C(M,N) = A(M,K) B(N,K)^T + bias (the linear forward `y = x W^T + b`); with `accumulate`,
 * C += A B^T + bias.
 *
 * @param ctx The context of every tensor.
 * @param c Output `(M,N)`.
 * @param a `(M,K)`.
 * @param b `(N,K)`.
 * @param bias `(N)` or null.
 * @param M Rows of C.
 * @param K Summed dimension.
 * @param N Columns of C.
 * @param accumulate Add into C instead of overwriting it (default false).
 */
export function gpuMatmulABt(
  ctx: GpuContext,
  c: GpuTensor,
  a: GpuTensor,
  b: GpuTensor,
  bias: GpuTensor | null,
  M: number,
  K: number,
  N: number,
  accumulate = false,
): void {
  runMatmul(ctx, "ABt", c, a, b, bias, M, K, N, accumulate);
}

/**
 * C(M,N) = A(K,M)^T B(K,N) (the weight gradient `dW = dy^T x`, M the columns of A and K the rows
 * of A and B); with `accumulate`, C += A^T B. See {@linkcode GpuMatmulFn}.
 */
export const gpuMatmulAtB: GpuMatmulFn = (ctx, c, a, b, M, K, N, accumulate = false): void =>
  runMatmul(ctx, "AtB", c, a, b, null, M, K, N, accumulate);
