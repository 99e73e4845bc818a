/**
 * The system's BLAS as matmul kernels: `cblas_sgemm` of OpenBLAS, Apple's Accelerate, or any
 * library that exports the standard CBLAS symbol, called through {@link "../ffi.ts"} on the very
 * buffers the wasm kernels use (a `Float32Array` view of the wasm memory is passed by address: no
 * copy in either direction).
 *
 * Dimension names as in `matmul_ref.ts`: `M` rows of C, `N` columns of C, `K` the summed
 * dimension; row-major, PyTorch layout.
 *
 * - `matmulAB`:  `sgemm(NoTrans, NoTrans)`, C(M,N) = A(M,K) B(K,N)
 * - `matmulABt`: `sgemm(NoTrans, Trans)`,   C(M,N) = A(M,K) B(N,K)^T + bias(N), the bias written
 *   (or added) into C first, then the product added with beta = 1
 * - `matmulAtB`: `sgemm(Trans, NoTrans)`,   C(M,N) = A(K,M)^T B(K,N)
 *
 * Where the library is found: `options.path`, else the `SEDD_BLAS` environment variable (read
 * only where it is granted), else by platform: `libopenblas.so.0` then `libopenblas.so` on Linux
 * (Debian's `libopenblas0-pthread` or `libopenblas0`), the Accelerate framework then Homebrew's
 * OpenBLAS on macOS, `libopenblas.dll` on Windows.
 *
 * Threads: the gradient workers are the parallelism, so each BLAS call runs on its caller's thread.
 * OpenBLAS: `openblas_set_num_threads(1)` right after loading. BLIS: `bli_thread_set_num_threads(1)`.
 * MKL: `MKL_Set_Num_Threads(1)`. Accelerate has no call for it before macOS 15: start the process
 * with `VECLIB_MAXIMUM_THREADS=1`.
 *
 * Every library passes a self-check before use: products of odd shapes in the three orders, with
 * and without accumulation and bias, against the TypeScript reference. A library that is missing,
 * lacks `cblas_sgemm`, or computes something else gives `{ ok: false, reason }`, never a throw.
 *
 * @module
 */

import { envVar, openNative, osName } from "../ffi.ts";
import { checkMatmulArgs, type MatmulKernels, refKernels } from "./matmul_ref.ts";
import type { WasmKernels } from "./wasm.ts";
import { Rng } from "../rng.ts";

const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

/**
 * `cblas_sgemm` in row-major order: C(M,N) = alpha op(A) op(B) + beta C, `op` transposing where
 * `transA`/`transB` say; `lda`, `ldb`, `ldc` are the row strides of the stored matrices.
 */
export type Sgemm = (
  transA: boolean,
  transB: boolean,
  M: number,
  N: number,
  K: number,
  alpha: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  beta: number,
  c: Float32Array,
  ldc: number,
) => void;

/** A loaded, self-checked BLAS library. */
export interface BlasLibrary {
  /** The name or path it was opened by. */
  readonly path: string;
  /** What the library says it is (OpenBLAS's config string and core), or its path. */
  readonly description: string;
  /** How its thread count was set. */
  readonly threads: string;
  /** Row-major `cblas_sgemm`. */
  readonly sgemm: Sgemm;
}

/** Options of {@linkcode loadBlas}. */
export interface BlasOptions {
  /** The library to open (a name the loader finds, or a path). Default: see the module doc. */
  path?: string;
}

/** A library, or one line saying why there is none. */
export type BlasLoad = { ok: true; blas: BlasLibrary } | { ok: false; reason: string };

/**
 * Where this platform keeps a CBLAS library, in the order tried.
 *
 * @param os `"linux"`, `"darwin"`, `"windows"`, ...
 * @returns Library names or paths.
 */
export function blasCandidates(os: string | undefined): string[] {
  if (os === "darwin") {
    return [
      "/System/Library/Frameworks/Accelerate.framework/Accelerate",
      "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
      "/usr/local/opt/openblas/lib/libopenblas.dylib",
    ];
  }
  if (os === "windows") return ["libopenblas.dll", "openblas.dll"];
  return ["libopenblas.so.0", "libopenblas.so"];
}

const SYMBOLS = {
  cblas_sgemm: {
    args: [
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "f32",
      "buffer",
      "i32",
    ],
    result: "void",
  },
  openblas_set_num_threads: { args: ["i32"], result: "void", optional: true },
  openblas_get_num_threads: { args: [], result: "i32", optional: true },
  openblas_get_config: { args: [], result: "cstring", optional: true },
  openblas_get_corename: { args: [], result: "cstring", optional: true },
  bli_thread_set_num_threads: { args: ["i32"], result: "void", optional: true },
  MKL_Set_Num_Threads: { args: ["i32"], result: "void", optional: true },
} as const;

const cache = new Map<string, BlasLoad>();

/**
 * Opens the system's BLAS, sets it to one thread, and self-checks it. Cached per path, so each
 * worker opens its library once.
 *
 * @param options `path`: the library; default `SEDD_BLAS`, else the platform's usual names.
 * @returns `{ ok: true, blas }`, or `{ ok: false, reason }`: one line, never a throw.
 *
 * @example A library that does not exist is a reason, not an error
 * ```ts
 * import { loadBlas } from "./blas.ts";
 * import assert from "node:assert/strict";
 *
 * const r = loadBlas({ path: "/nonexistent/libopenblas.so.0" });
 * assert.equal(r.ok, false);
 * ```
 */
export function loadBlas(options: BlasOptions = {}): BlasLoad {
  const explicit = options.path ?? envVar("SEDD_BLAS");
  const key = explicit ?? "";
  const hit = cache.get(key);
  if (hit) return hit;
  const tried = explicit !== undefined ? [explicit] : blasCandidates(osName());
  const reasons: string[] = [];
  let result: BlasLoad | undefined;
  for (const path of tried) {
    const r = openOne(path);
    if (r.ok) {
      result = r;
      break;
    }
    reasons.push(r.reason);
    // No FFI at all: the other names would fail for the same reason.
    if (r.reason.startsWith("FFI") || r.reason.startsWith("this runtime")) break;
  }
  result ??= { ok: false, reason: [...new Set(reasons)].join("; ") };
  cache.set(key, result);
  return result;
}

function openOne(path: string): BlasLoad {
  const lib = openNative(path, SYMBOLS);
  if (!lib.ok) return lib;
  const f = lib.fns;
  const raw = f.cblas_sgemm;
  if (raw === undefined) return { ok: false, reason: `${path}: no cblas_sgemm` };
  let threads = "the library's own default (no thread-count call found)";
  try {
    if (f.openblas_set_num_threads) {
      f.openblas_set_num_threads(1);
      const n = f.openblas_get_num_threads?.();
      threads = `${n ?? 1} thread per worker (openblas_set_num_threads)`;
    } else if (f.bli_thread_set_num_threads) {
      f.bli_thread_set_num_threads(1);
      threads = "1 thread per worker (bli_thread_set_num_threads)";
    } else if (f.MKL_Set_Num_Threads) {
      f.MKL_Set_Num_Threads(1);
      threads = "1 thread per worker (MKL_Set_Num_Threads)";
    } else if (path.includes("Accelerate")) {
      threads = `VECLIB_MAXIMUM_THREADS=${envVar("VECLIB_MAXIMUM_THREADS") ?? "unset"}`;
    }
  } catch (e) {
    threads = `setting the thread count failed: ${(e as Error).message}`;
  }
  let description = path;
  try {
    const config = f.openblas_get_config?.() as string | undefined;
    const core = f.openblas_get_corename?.() as string | undefined;
    // "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ... MAX_THREADS=64": name and version, then the core.
    const named = config?.trim().split(/\s+/).slice(0, 2).join(" ");
    if (named) description = `${named}${core ? `, core ${core.trim()}` : ""}`;
  } catch { /* keep the path */ }
  const sgemm: Sgemm = (tA, tB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc) => {
    raw(
      ROW_MAJOR,
      tA ? TRANS : NO_TRANS,
      tB ? TRANS : NO_TRANS,
      M,
      N,
      K,
      alpha,
      a,
      lda,
      b,
      ldb,
      beta,
      c,
      ldc,
    );
  };
  return checkBlas({ path, description, threads, sgemm });
}

/**
 * Self-checks a BLAS: every product order, with and without accumulation and bias, on odd
 * shapes, against the TypeScript reference within a summation-order bound.
 *
 * @param blas The library (any {@linkcode Sgemm}, e.g. a wrapper under test).
 * @returns `{ ok: true, blas }` when it agrees, else `{ ok: false, reason }` naming the first
 *   disagreement; a throwing library is a reason too.
 *
 * @example A "BLAS" that ignores its input fails the check
 * ```ts
 * import { checkBlas } from "./blas.ts";
 * import assert from "node:assert/strict";
 *
 * const r = checkBlas({ path: "fake", description: "fake", threads: "1", sgemm: () => {} });
 * assert.equal(r.ok, false);
 * ```
 */
export function checkBlas(blas: BlasLibrary): BlasLoad {
  const k = matmulsOf(blas);
  const rng = new Rng(12345);
  const rand = (n: number) => Float32Array.from({ length: n }, () => 2 * rng.uniform() - 1);
  const cases: [number, number, number][] = [[5, 7, 3], [1, 9, 17], [13, 1, 6], [33, 20, 9]];
  try {
    for (const [M, K, N] of cases) {
      for (const acc of [false, true]) {
        for (const op of ["AB", "ABt", "AtB"] as const) {
          const a = rand(M * K), b = rand(K * N), bias = op === "ABt" ? rand(N) : null;
          const start = rand(M * N);
          const got = start.slice(), want = start.slice();
          if (op === "AB") {
            k.matmulAB(got, a, b, M, K, N, acc);
            refKernels.matmulAB(want, a, b, M, K, N, acc);
          } else if (op === "ABt") {
            k.matmulABt(got, a, b, bias, M, K, N, acc);
            refKernels.matmulABt(want, a, b, bias, M, K, N, acc);
          } else {
            k.matmulAtB(got, a, b, M, K, N, acc);
            refKernels.matmulAtB(want, a, b, M, K, N, acc);
          }
          for (let i = 0; i < M * N; i++) {
            // |values| <= 1, so K + 2 bounds the sum of magnitudes of each entry.
            if (!(Math.abs(got[i] - want[i]) <= 1e-5 * (K + 2))) {
              return {
                ok: false,
                reason: `${blas.path} failed the self-check: ${op} ${M}x${K}x${N}` +
                  `${acc ? " accumulate" : ""} gave ${got[i]} at ${i}, expected ${want[i]}`,
              };
            }
          }
        }
      }
    }
  } catch (e) {
    return {
      ok: false,
      reason: `${blas.path} failed the self-check: ${(e as Error).message.split("\n")[0]}`,
    };
  }
  return { ok: true, blas };
}

/**
 * The three matmul kernels on a BLAS, with the reference's semantics and argument checks.
 *
 * @param blas The library.
 * @returns Kernels over any `Float32Array`s (wasm-memory views are passed in place).
 */
export function matmulsOf(blas: BlasLibrary): MatmulKernels {
  const { sgemm } = blas;
  return {
    matmulAB(c, a, b, M, K, N, accumulate = false) {
      checkMatmulArgs("AB", c, a, b, null, M, K, N);
      if (M === 0 || N === 0) return;
      if (K === 0) {
        if (!accumulate) c.fill(0, 0, M * N);
        return;
      }
      sgemm(false, false, M, N, K, 1, a, K, b, N, accumulate ? 1 : 0, c, N);
    },
    matmulABt(c, a, b, bias, M, K, N, accumulate = false) {
      checkMatmulArgs("ABt", c, a, b, bias, M, K, N);
      if (M === 0 || N === 0) return;
      let beta = accumulate ? 1 : 0;
      if (bias !== null) {
        const b0 = bias.length === N ? bias : bias.subarray(0, N);
        for (let m = 0, o = 0; m < M; m++, o += N) {
          if (accumulate) { for (let j = 0; j < N; j++) c[o + j] += bias[j]; }
          else c.set(b0, o); // a row copy: the linear layers' forward pass
        }
        beta = 1;
      }
      if (K === 0) {
        if (beta === 0) c.fill(0, 0, M * N);
        return;
      }
      sgemm(false, true, M, N, K, 1, a, K, b, K, beta, c, N);
    },
    matmulAtB(c, a, b, M, K, N, accumulate = false) {
      checkMatmulArgs("AtB", c, a, b, null, M, K, N);
      if (M === 0 || N === 0) return;
      if (K === 0) {
        if (!accumulate) c.fill(0, 0, M * N);
        return;
      }
      sgemm(true, false, M, N, K, 1, a, M, b, N, accumulate ? 1 : 0, c, N);
    },
  };
}

/**
 * The wasm kernels with their matmuls on a BLAS: the same memory and arena (the model's
 * workspace lives there, and the element-wise work stays on it), the products through `sgemm`.
 *
 * @param k The wasm kernels.
 * @param blas The library.
 * @returns Kernels that share `k`'s memory and arena.
 */
export function withBlas(k: WasmKernels, blas: BlasLibrary): WasmKernels {
  return { ...k, ...matmulsOf(blas) };
}
