// The BLAS backend's matmuls (src/kernels/blas.ts) against the TypeScript reference, on every
// product shape the model's presets use and on random odd shapes, with the summation-order bound
// of matmul_check.ts; plus the fallbacks: a missing library, a library without the symbol, a
// library that computes something else.
//
// Where no CBLAS library is installed these tests are ignored, except in CI (CI=true), where
// .ci/run installs Debian's libopenblas0-pthread and a missing library fails the suite.

import assert from "node:assert/strict";
import {
  type BlasLibrary,
  checkBlas,
  loadBlas,
  matmulsOf,
  withBlas,
} from "../../src/kernels/blas.ts";
import { createWasmKernels } from "../../src/kernels/wasm.ts";
import { resolveConfig } from "../../src/model/config.ts";
import { resolveBackend } from "../../src/nn/backend.ts";
import { assertMatchesRef, type Kind, randomArray, seeded } from "./matmul_check.ts";
import { blasLoad, blasRequired, ignoreBlas } from "./blas_available.ts";

Deno.test({
  name: "loadBlas(): the system's CBLAS loads and passes its self-check (required in CI)",
  ignore: !blasLoad.ok && !blasRequired,
  fn() {
    assert.ok(blasLoad.ok, blasLoad.ok ? "" : blasLoad.reason);
    assert.match(blasLoad.blas.threads, /1/);
  },
});

/** Every (M, K, N) and order the model runs for a preset, its batch rows and context. */
function modelShapes(
  preset: "tiny" | "seed" | "small",
  V: number,
  rows: number,
  T: number,
): [Kind, number, number, number][] {
  const c = resolveConfig(preset, { vocabSize: V });
  const C = c.dModel, F = c.dFF, HS = C / c.nHeads;
  const N = rows * T;
  const out: [Kind, number, number, number][] = [];
  // linear (N,IC) -> (N,OC): forward ABt, backward dX = dY W (AB), dW = dY^T X (AtB)
  for (const [IC, OC] of [[C, 3 * C], [C, C], [C, F], [F, C], [C, V]]) {
    out.push(["ABt", N, IC, OC], ["AB", N, OC, IC], ["AtB", OC, N, IC]);
  }
  // attention per (batch, head): S = q k^T, y = P v, dv = P^T dy, dP = dy v^T, dq = dS k, dk = dS^T q
  out.push(["ABt", T, HS, T], ["AB", T, T, HS], ["AtB", T, T, HS]);
  return out;
}

const SHAPES: [string, [Kind, number, number, number][]][] = [
  ["tiny", modelShapes("tiny", 9, 2, 5)],
  ["seed", modelShapes("seed", 37, 2, 8)],
  ["small, micro-batch 4 x 64", modelShapes("small", 258, 4, 64)],
  ["small, 16 x 128", modelShapes("small", 512, 16, 128)],
];

for (const [label, shapes] of SHAPES) {
  Deno.test({
    name: `BLAS matmuls match the reference on every product of the ${label} model, in wasm memory`,
    ignore: ignoreBlas,
    fn() {
      assert.ok(blasLoad.ok);
      const wk = createWasmKernels();
      const k = withBlas(wk, blasLoad.blas);
      const rand = seeded(3);
      for (const [kind, M, K, N] of shapes) {
        for (const accumulate of [false, true]) {
          const mark = k.mark();
          const aLen = M * K, bLen = K * N;
          k.reserve(aLen + bLen + M * N + 48); // no growth between the views (wasm.ts's rule)
          const a = k.alloc(aLen), b = k.alloc(bLen), c = k.alloc(M * N);
          a.set(randomArray(aLen, rand));
          b.set(randomArray(bLen, rand));
          const bias = kind === "ABt" ? randomArray(N, rand) : null;
          c.set(randomArray(M * N, rand));
          const call = { kind, a, b, bias, M, K, N, accumulate };
          assertMatchesRef(k, call, c, `${kind} ${M}x${K}x${N}${accumulate ? " acc" : ""}`);
          k.release(mark);
        }
      }
    },
  });
}

Deno.test({
  name:
    "BLAS matmuls match the reference on random odd shapes, outside wasm memory, K = 0 and empty",
  ignore: ignoreBlas,
  fn() {
    assert.ok(blasLoad.ok);
    const k = matmulsOf(blasLoad.blas);
    const rand = seeded(8);
    const sizes = [0, 1, 2, 3, 5, 8, 17, 33, 65, 129];
    const pick = () => sizes[Math.floor(rand() * sizes.length)];
    for (let i = 0; i < 60; i++) {
      const M = pick(), K = pick(), N = pick();
      for (const kind of ["AB", "ABt", "AtB"] as const) {
        for (const accumulate of [false, true]) {
          const a = randomArray(M * K, rand), b = randomArray(K * N, rand);
          const bias = kind === "ABt" && rand() < 0.5 ? randomArray(N, rand) : null;
          const call = { kind, a, b, bias, M, K, N, accumulate };
          const label = `${kind} ${M}x${K}x${N}${accumulate ? " acc" : ""}${bias ? " bias" : ""}`;
          assertMatchesRef(k, call, randomArray(M * N, rand), label);
        }
      }
    }
  },
});

Deno.test("loadBlas(): a missing library is a one-line reason naming it, and auto falls back to wasm", () => {
  const r = loadBlas({ path: "/nonexistent/libopenblas.so.0" });
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.match(r.reason, /nonexistent\/libopenblas\.so\.0|FFI/);
    assert.ok(!r.reason.includes("\n"));
  }
  const auto = resolveBackend("auto", { path: "/nonexistent/libopenblas.so.0" });
  assert.equal(auto.backend, "wasm");
  assert.match(auto.note, /^wasm \(no BLAS: /);
  assert.throws(
    () => resolveBackend("blas", { path: "/nonexistent/libopenblas.so.0" }),
    /BLAS backend unavailable: expected a working CBLAS library, got /,
  );
});

Deno.test({
  name: "loadBlas(): a library without cblas_sgemm (libc) is a reason, not a crash",
  ignore: ignoreBlas,
  fn() {
    const r = loadBlas({ path: "libc.so.6" });
    assert.equal(r.ok, false);
    if (!r.ok) assert.match(r.reason, /libc\.so\.6/);
  },
});

/**
 * A plain sgemm over the stored matrices: row-major as cblas_sgemm(RowMajor) reads them, or
 * column-major (transposed products, a classic binding bug).
 */
function naiveSgemm(rowMajor: boolean): BlasLibrary["sgemm"] {
  return (tA, tB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc) => {
    // element (i, p) of op(A) and (p, j) of op(B) under each layout
    const at = (i: number, p: number) => rowMajor === tA ? a[p * lda + i] : a[i * lda + p];
    const bt = (p: number, j: number) => rowMajor === tB ? b[j * ldb + p] : b[p * ldb + j];
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let p = 0; p < K; p++) s += at(i, p) * bt(p, j);
        c[i * ldc + j] = alpha * s + (beta === 0 ? 0 : beta * c[i * ldc + j]);
      }
    }
  };
}

Deno.test("checkBlas(): a library that computes the wrong product fails the self-check", () => {
  const colMajor: BlasLibrary = {
    path: "fake-column-major",
    description: "fake",
    threads: "1",
    sgemm: naiveSgemm(false),
  };
  const r = checkBlas(colMajor);
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.reason, /^fake-column-major failed the self-check: AB 5x7x3/);
  const throwing = {
    ...colMajor,
    path: "fake-throwing",
    sgemm: () => {
      throw new Error("boom");
    },
  };
  const t = checkBlas(throwing);
  assert.equal(t.ok, false);
  if (!t.ok) assert.equal(t.reason, "fake-throwing failed the self-check: boom");
  // The same check passes a correct row-major product, so it is not failing everything.
  assert.equal(
    checkBlas({ ...colMajor, path: "fake-row-major", sgemm: naiveSgemm(true) }).ok,
    true,
  );
});
