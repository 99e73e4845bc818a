// The WGSL kernels of src/kernels/webgpu/ against the TypeScript reference kernels, on odd
// shapes (non-multiples of the 64 x 64 x 16 matmul tile and of the 64- and 256-wide workgroups).
//
// Tolerances. Matmuls: the summation-order bound of matmul_check.ts, 2 (K + 2) u times
// (|C0| + |bias| + sum_k |a b|), u = 2^-24 (both sides are float32 sums of the same K + 2 terms
// in different orders). Row reductions (LayerNorm, log-sum-exp, sums) are float32 sums of C or V
// terms, so their bounds are the same gamma-style 2 (n + 2) u times the terms' magnitudes, with
// a small factor for the division, square root, exp and log that follow (WGSL allows a few ulp
// for each). Gathers, scatter-adds and ReLU are single correctly rounded float32 operations in
// the reference's order: compared bit for bit. A wrong index, a dropped tile or a missed edge
// costs a whole term, orders of magnitude above these bounds.
//
// Where no WebGPU adapter can be had these tests are ignored, except in CI (CI=true), where a
// missing adapter fails them: .ci/run installs Mesa's software adapter.

import assert from "node:assert/strict";
import { refKernels } from "../../src/kernels/matmul_ref.ts";
import {
  type GpuContext,
  GpuTensor,
  grid,
  MAX_GROUPS_X,
} from "../../src/kernels/webgpu/context.ts";
import {
  gpuLinearBackward,
  gpuLinearForward,
  gpuResidualForward,
} from "../../src/kernels/webgpu/linear.ts";
import { linearBackward, linearForward } from "../../src/nn/linear.ts";
import { residualForward } from "../../src/nn/residual.ts";
import {
  gpuMatmul,
  gpuMatmulAB,
  gpuMatmulABt,
  gpuMatmulAtB,
  MATMUL_TILE,
  MATMUL_TK,
} from "../../src/kernels/webgpu/matmul.ts";
import { gpuLayernormBackward, gpuLayernormForward } from "../../src/kernels/webgpu/layernorm.ts";
import {
  gpuGeluForwardKeepGrad,
  gpuReluBackward,
  gpuReluForward,
  gpuScaleBackward,
} from "../../src/kernels/webgpu/activations.ts";
import {
  gpuCrossEntropyBackward,
  gpuCrossEntropyForward,
  gpuSum,
  maskedRowWeights,
} from "../../src/kernels/webgpu/cross_entropy.ts";
import { gpuEmbeddingBackward, gpuEmbeddingForward } from "../../src/kernels/webgpu/embedding.ts";
import { createGpuAdamW, gpuAdamwStep } from "../../src/kernels/webgpu/adamw.ts";
import {
  gpuScoreEntropyAbsorbBackward,
  gpuScoreEntropyAbsorbForward,
  gpuScoreEntropyUniformBackward,
  gpuScoreEntropyUniformForward,
  scoreEntropyAbsorbConstants,
  scoreEntropyUniformConstants,
} from "../../src/kernels/webgpu/score_entropy.ts";
import * as diffusion from "../../src/diffusion/mod.ts";
import {
  gpuAttentionBackward,
  gpuAttentionForward,
  gpuRopeForward,
} from "../../src/kernels/webgpu/attention.ts";
import { describeAdapter } from "../../src/kernels/webgpu/device.ts";
import { layernormBackward, layernormForward } from "../../src/nn/layernorm.ts";
import {
  attentionBackward,
  attentionForward,
  ropeForward,
  ropeTables,
} from "../../src/nn/attention.ts";
import {
  geluForwardKeepGrad,
  reluBackward,
  reluForward,
  scaleBackward,
} from "../../src/nn/activations.ts";
import { crossEntropyBackward, crossEntropyForward } from "../../src/nn/cross_entropy.ts";
import { embeddingBackward, embeddingForward } from "../../src/nn/embedding.ts";
import { adamwStep, createAdamW } from "../../src/optim/adamw.ts";
import { maxRelErr } from "../rel_err.ts";
import { assertClose, type Call, magnitudes, randomArray, seeded, U } from "./matmul_check.ts";
import { gpu, gpuContext, gpuRequired, ignoreGpu } from "./webgpu_available.ts";

/** Deno.test for a test that needs the device (ignored without one, except in CI). */
function gpuTest(name: string, fn: (ctx: GpuContext) => Promise<void>): void {
  Deno.test({ name, ignore: ignoreGpu, fn: () => fn(gpuContext()) });
}

/** Logs one kernel's largest error relative to the largest reference value. */
function report(kernel: string, got: ArrayLike<number>, want: ArrayLike<number>): number {
  const e = maxRelErr(got, want, kernel);
  console.log(`webgpu ${kernel}: max relative error ${e.toExponential(2)}`);
  return e;
}

/** Asserts |got - want| <= bound[i] element by element, naming the first miss. */
function assertWithin(
  label: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  bound: (i: number) => number,
): void {
  assert.equal(got.length, want.length, `${label}: length`);
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]), b = bound(i);
    if (!(d <= b)) {
      throw new Error(
        `${label}: element ${i} got ${got[i]}, expected ${want[i]} (|diff| ${d} > ${b})`,
      );
    }
  }
}

/** Asserts bit-for-bit equality (as float32 values), naming the first miss. */
function assertExact(label: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  assertWithin(label, got, want, () => 0);
}

Deno.test({
  name: "acquireGpu(): an adapter and a device (required in CI)",
  ignore: !gpu.ok && !gpuRequired,
  fn() {
    assert.ok(gpu.ok, gpu.ok ? "" : gpu.reason);
    assert.equal(describeAdapter(gpu.adapter), gpu.adapterName);
    assert.ok(gpu.adapterName.length > 0);
  },
});

// ---- matmuls

type Kind = "AB" | "ABt" | "AtB";

function gpuRun(
  ctx: GpuContext,
  call: Call,
  c: GpuTensor,
): void {
  const { kind, bias, M, K, N, accumulate } = call;
  gpuMatmul(
    ctx,
    kind,
    c,
    ctx.upload(call.a),
    ctx.upload(call.b),
    bias ? ctx.upload(bias) : null,
    M,
    K,
    N,
    accumulate,
  );
}

function refRun(call: Call, c: Float32Array): void {
  const { kind, a, b, bias, M, K, N, accumulate } = call;
  if (kind === "AB") refKernels.matmulAB(c, a, b, M, K, N, accumulate);
  else if (kind === "AtB") refKernels.matmulAtB(c, a, b, M, K, N, accumulate);
  else refKernels.matmulABt(c, a, b, bias, M, K, N, accumulate);
}

/**
 * Runs `call` on the GPU into a C that holds `c0` followed by `guard` sentinel floats, checks
 * the result against the reference within the summation-order bound and the sentinels unchanged
 * (no write past C). Returns the max relative error.
 */
async function checkMatmul(ctx: GpuContext, call: Call, rand: () => number, label: string) {
  const { M, N } = call;
  const guard = 67;
  const c0 = randomArray(M * N, rand);
  const init = new Float32Array(M * N + guard);
  init.set(c0);
  init.fill(12345, M * N);
  const c = ctx.upload(init);
  gpuRun(ctx, call, c);
  const all = await ctx.readF32(c);
  const got = all.subarray(0, M * N);
  const want = c0.slice();
  refRun(call, want);
  assertClose(got, want, magnitudes(call, c0), call.K, label);
  for (let i = M * N; i < all.length; i++) {
    assert.equal(all[i], 12345, `${label}: wrote past C at element ${i}`);
  }
  return maxRelErr(got, want, label);
}

const MATMUL_SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [7, 5, 3],
  [33, 17, 29],
  [64, 128, 384],
  [65, 63, 130], // one past, one short of the tile
  [3, 200, 1],
  [129, 16, 70],
];

for (const kind of ["AB", "ABt", "AtB"] as Kind[]) {
  gpuTest(
    `gpuMatmul${kind}() matches the reference on odd shapes, overwrite and accumulate${
      kind === "ABt" ? ", with and without bias" : ""
    }`,
    async (ctx) => {
      const rand = seeded(17 + kind.length);
      let worst = 0;
      for (const [M, K, N] of MATMUL_SHAPES) {
        for (const accumulate of [false, true]) {
          for (const withBias of kind === "ABt" ? [false, true] : [false]) {
            const call: Call = {
              kind,
              a: randomArray(M * K, rand),
              b: randomArray(K * N, rand),
              bias: withBias ? randomArray(N, rand) : null,
              M,
              K,
              N,
              accumulate,
            };
            const label = `${kind} ${M}x${K}x${N} acc ${accumulate} bias ${withBias}`;
            worst = Math.max(worst, await checkMatmul(ctx, call, rand, label));
          }
        }
      }
      console.log(`webgpu matmul${kind}: max relative error ${worst.toExponential(2)}`);
    },
  );
}

gpuTest(
  "gpuMatmul*(): the tile edges count (K one past a K step, the last k's terms large; M, N one past a tile)",
  async (ctx) => {
    // The terms at k = K - 1 (alone in the last K step) and at row/column 64 (alone in the last
    // tile) are 1000 times the others: a kernel that drops the last partial step, loads its
    // zero padding from the wrong place, or skips the edge tile misses by ~1000, far outside the
    // bound (~1e-3 here).
    const M = MATMUL_TILE + 1, N = MATMUL_TILE + 1, K = MATMUL_TK + 1;
    const rand = seeded(99);
    for (const kind of ["AB", "ABt", "AtB"] as Kind[]) {
      const a = randomArray(M * K, rand), b = randomArray(K * N, rand);
      for (let i = 0; i < M; i++) {
        const at = kind === "AtB" ? (K - 1) * M + i : i * K + K - 1;
        a[at] = 1000;
      }
      const call: Call = { kind, a, b, bias: null, M, K, N, accumulate: false };
      await checkMatmul(ctx, call, rand, `edge ${kind}`);
    }
  },
);

gpuTest(
  "gpuMatmul*(): several dispatches in one command buffer, chained on the GPU",
  async (ctx) => {
    // y = x W^T + b (ABt), z = y V (AB), dW = y^T z (AtB): three dispatches, one read at the end.
    const rand = seeded(5);
    const R = 19, I = 23, O = 37, P = 11;
    const x = randomArray(R * I, rand), w = randomArray(O * I, rand), bias = randomArray(O, rand);
    const v = randomArray(O * P, rand);
    const gx = ctx.upload(x), gw = ctx.upload(w), gb = ctx.upload(bias), gv = ctx.upload(v);
    const gy = ctx.zeros(R * O), gz = ctx.zeros(R * P), gd = ctx.zeros(O * P);
    const before = ctx.dispatches;
    gpuMatmulABt(ctx, gy, gx, gw, gb, R, I, O);
    gpuMatmulAB(ctx, gz, gy, gv, R, O, P);
    gpuMatmulAtB(ctx, gd, gy, gz, O, R, P);
    assert.equal(ctx.dispatches - before, 3);
    const d = await ctx.readF32(gd);
    const y = new Float32Array(R * O), z = new Float32Array(R * P), want = new Float32Array(O * P);
    refKernels.matmulABt(y, x, w, bias, R, I, O);
    refKernels.matmulAB(z, y, v, R, O, P);
    refKernels.matmulAtB(want, y, z, O, R, P);
    // three products in a row: each rounding compounds; a loose multiple of the one-product bound
    const e = report("matmul chain (ABt, AB, AtB)", d, want);
    assert.ok(e < 2 * (I + O + R + 6) * U * 64, `chain: max relative error ${e}`);
  },
);

gpuTest(
  "gpuMatmul*(): bad shapes and aliasing are refused with the sizes in the message",
  (ctx) => {
    const a = ctx.zeros(6), b = ctx.zeros(6), c = ctx.zeros(3);
    assert.throws(
      () => gpuMatmulAB(ctx, c, a, b, 2, 3, 2),
      /c .*expected at least 4 elements, got 3/,
    );
    assert.throws(() => gpuMatmulAB(ctx, a, a, b, 2, 3, 2), /distinct/);
    assert.throws(() => gpuMatmulAtB(ctx, c, a, b, 1.5, 3, 2), /dimension M: expected an integer/);
    assert.throws(
      () => gpuMatmul(ctx, "AB", c, a, b, ctx.zeros(2), 1, 3, 2),
      /only "ABt" takes a bias/,
    );
    assert.throws(
      () => gpuMatmul(ctx, "BA" as "AB", c, a, b, null, 1, 3, 2),
      /kind: expected "AB", "ABt" or "AtB", got BA/,
    );
    return Promise.resolve();
  },
);

gpuTest(
  "GpuContext: a WebGPU validation error surfaces at the next read, and the context goes on",
  async (ctx) => {
    const p = ctx.pipeline("testCopy", () =>
      `struct P { n: u32 }
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < p.n) { y[g.x] = x[g.x]; }
}`);
    const x = ctx.upload(new Float32Array([1, 2, 3])), y = ctx.zeros(3);
    ctx.dispatch(p, [y], [3], [1, 1]); // binding 1 missing: an invalid bind group
    await assert.rejects(ctx.read(y), /WebGPU validation error/);
    ctx.dispatch(p, [y, x], [3], [1, 1]);
    assert.deepEqual([...await ctx.read(y)], [1, 2, 3]);
  },
);

// ---- LayerNorm

const LN_SHAPES: [number, number][] = [[1, 1], [7, 5], [33, 129], [5, 384], [70, 3]];

function lnInputs(N: number, C: number, rand: () => number) {
  const inp = randomArray(N * C, rand).map((x) => 3 * x + 0.5);
  const weight = randomArray(C, rand).map((x) => 1 + x);
  const bias = randomArray(C, rand);
  return { inp, weight, bias };
}

/**
 * Runs gpuLayernormForward on random (N,C) rows against layernormForward, element by element.
 * The bounds follow the computation: the mean is a float32 sum of C terms (error
 * dm = 2 (C + 2) u max|x|); the deviations inherit dm, so xhat = (x - mean) rstd is off by up to
 * rstd dm absolutely (large where a row's values nearly coincide: rstd reaches 1/sqrt(eps));
 * rstd is relatively off by the variance's sum and the deviations' error, 4 (C + 2) u +
 * sqrt(C) rstd dm. Returns the largest relative error.
 */
async function checkLayernormForward(ctx: GpuContext, N: number, C: number, rand: () => number) {
  const { inp, weight, bias } = lnInputs(N, C, rand);
  const out = ctx.zeros(N * C), mean = ctx.zeros(N), rstd = ctx.zeros(N);
  gpuLayernormForward(
    ctx,
    out,
    mean,
    rstd,
    ctx.upload(inp),
    ctx.upload(weight),
    ctx.upload(bias),
    N,
    C,
  );
  const wOut = new Float32Array(N * C), wMean = new Float32Array(N), wRstd = new Float32Array(N);
  layernormForward(wOut, wMean, wRstd, inp, weight, bias, N, C);
  const gOut = await ctx.readF32(out), gMean = await ctx.readF32(mean);
  const gRstd = await ctx.readF32(rstd);
  const dm = new Float64Array(N), relR = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let mx = 0;
    for (let c = 0; c < C; c++) mx = Math.max(mx, Math.abs(inp[n * C + c]));
    dm[n] = 2 * (C + 2) * U * mx;
    relR[n] = 4 * (C + 2) * U + Math.sqrt(C) * wRstd[n] * dm[n];
  }
  const label = `layernorm ${N}x${C}`;
  assertWithin(`${label} mean`, gMean, wMean, (n) => dm[n]);
  assertWithin(`${label} rstd`, gRstd, wRstd, (n) => relR[n] * wRstd[n]);
  assertWithin(`${label} out`, gOut, wOut, (i) => {
    const n = Math.floor(i / C), c = i % C;
    const xhat = (inp[i] - wMean[n]) * wRstd[n];
    const dxhat = 2 * wRstd[n] * dm[n] + Math.abs(xhat) * (relR[n] + 4 * U);
    return Math.abs(weight[c]) * dxhat + 4 * U * (Math.abs(xhat * weight[c]) + Math.abs(bias[c]));
  });
  return Math.max(maxRelErr(gOut, wOut), maxRelErr(gMean, wMean), maxRelErr(gRstd, wRstd));
}

gpuTest("gpuLayernormForward() matches layernormForward() on odd shapes", async (ctx) => {
  const rand = seeded(3);
  let worst = 0;
  for (const [N, C] of LN_SHAPES) {
    worst = Math.max(worst, await checkLayernormForward(ctx, N, C, rand));
  }
  console.log(`webgpu layernormForward: max relative error ${worst.toExponential(2)}`);
});

gpuTest(
  "gpuLayernormBackward() matches layernormBackward() on odd shapes, adding into the gradients",
  async (ctx) => {
    const rand = seeded(4);
    let worst = 0;
    for (const [N, C] of LN_SHAPES) {
      const { inp, weight, bias } = lnInputs(N, C, rand);
      const out = new Float32Array(N * C), mean = new Float32Array(N), rstd = new Float32Array(N);
      layernormForward(out, mean, rstd, inp, weight, bias, N, C);
      const dout = randomArray(N * C, rand);
      const dinp0 = randomArray(N * C, rand),
        dw0 = randomArray(C, rand),
        db0 = randomArray(C, rand);
      const gDinp = ctx.upload(dinp0), gDw = ctx.upload(dw0), gDb = ctx.upload(db0);
      gpuLayernormBackward(
        ctx,
        gDinp,
        gDw,
        gDb,
        ctx.upload(dout),
        ctx.upload(inp),
        ctx.upload(weight),
        ctx.upload(mean),
        ctx.upload(rstd),
        N,
        C,
      );
      const wDinp = dinp0.slice(), wDw = dw0.slice(), wDb = db0.slice();
      layernormBackward(wDinp, wDw, wDb, dout, inp, weight, mean, rstd, N, C);
      // dinp: float32 sums over C channels; dweight, dbias: float32 sums over N rows
      const tolRow = 8 * (C + 2) * U, tolCol = 8 * (N + 2) * U;
      for (
        const [what, g, w, tol] of [
          ["dinp", gDinp, wDinp, tolRow],
          ["dweight", gDw, wDw, tolCol],
          ["dbias", gDb, wDb, tolCol],
        ] as const
      ) {
        const e = maxRelErr(await ctx.readF32(g), w, `layernorm ${what} ${N}x${C}`);
        assert.ok(e <= tol, `layernorm ${what} ${N}x${C}: max relative error ${e} > ${tol}`);
        worst = Math.max(worst, e);
      }
    }
    console.log(`webgpu layernormBackward: max relative error ${worst.toExponential(2)}`);
  },
);

// ---- activations

function activationInputs(n: number, rand: () => number): Float32Array {
  const x = randomArray(n, rand).map((v) => 10 * v);
  x[0] = 0;
  x[1] = -0;
  x[2] = 1e-8;
  x[3] = -7.5;
  x[4] = 9.5;
  return x;
}

gpuTest(
  "gpuGeluForwardKeepGrad() and gpuScaleBackward() match the reference, with and without mask",
  async (ctx) => {
    const rand = seeded(6);
    const N = 1000 + 13; // not a multiple of the 256-wide workgroup
    const x = activationInputs(N, rand);
    const mask = randomArray(N, rand).map((v) => (v > 0 ? 1.25 : 0));
    let worstOut = 0, worstDer = 0, worstBack = 0;
    for (const m of [null, mask]) {
      const gx = ctx.upload(x), out = ctx.zeros(N);
      gpuGeluForwardKeepGrad(ctx, out, gx, N, m ? ctx.upload(m) : null);
      const wOut = new Float32Array(N), wDer = x.slice();
      geluForwardKeepGrad(wOut, wDer, N, m);
      const gOut = await ctx.readF32(out), gDer = await ctx.readF32(gx);
      // the erfc fit's 1.2e-7 relative error and a few ulp from exp: within 1e-6 (1 + |x|)
      assertWithin("gelu out", gOut, wOut, (i) => 1e-6 * (1 + Math.abs(x[i])) * (m ? 1.25 : 1));
      assertWithin("gelu derivative", gDer, wDer, (i) => 1e-6 * (1 + Math.abs(x[i])));
      worstOut = Math.max(worstOut, maxRelErr(gOut, wOut));
      worstDer = Math.max(worstDer, maxRelErr(gDer, wDer));
      // backward from a non-zero gradient, with the reference's saved derivative on both sides
      const dout = randomArray(N, rand), dinp0 = randomArray(N, rand);
      const gDinp = ctx.upload(dinp0);
      gpuScaleBackward(ctx, gDinp, ctx.upload(dout), ctx.upload(wDer), N, m ? ctx.upload(m) : null);
      const wDinp = dinp0.slice();
      scaleBackward(wDinp, dout, wDer, N, m);
      const gD = await ctx.readF32(gDinp);
      // two roundings (product, sum) against the reference's one
      assertWithin(
        "scaleBackward",
        gD,
        wDinp,
        (i) => 2 * U * (Math.abs(dinp0[i]) + Math.abs(dout[i] * (m ? m[i] : 1) * wDer[i])) + 1e-30,
      );
      worstBack = Math.max(worstBack, maxRelErr(gD, wDinp));
    }
    console.log(
      `webgpu gelu: max relative error out ${worstOut.toExponential(2)}, derivative ${
        worstDer.toExponential(2)
      }, scaleBackward ${worstBack.toExponential(2)}`,
    );
  },
);

gpuTest(
  "gpuReluForward() and gpuReluBackward() equal the reference bit for bit, with mask and in place",
  async (ctx) => {
    const rand = seeded(7);
    const N = 517;
    const x = activationInputs(N, rand);
    const mask = randomArray(N, rand).map((v) => (v > -0.2 ? 1.1 : 0));
    for (const m of [null, mask]) {
      const gm = m ? ctx.upload(m) : null;
      const out = ctx.zeros(N);
      gpuReluForward(ctx, out, ctx.upload(x), N, gm);
      const want = new Float32Array(N);
      reluForward(want, x, N, m);
      assertExact("relu forward", await ctx.readF32(out), want);
      const inPlace = ctx.upload(x);
      gpuReluForward(ctx, inPlace, inPlace, N, gm);
      assertExact("relu forward in place", await ctx.readF32(inPlace), want);
      const dout = randomArray(N, rand), dinp0 = randomArray(N, rand);
      const gDinp = ctx.upload(dinp0);
      gpuReluBackward(ctx, gDinp, ctx.upload(dout), ctx.upload(x), N, gm);
      const wDinp = dinp0.slice();
      reluBackward(wDinp, dout, x, N, m);
      assertExact("relu backward", await ctx.readF32(gDinp), wDinp);
    }
    console.log("webgpu relu: forward and backward bit for bit");
  },
);

// ---- cross-entropy

gpuTest(
  "gpuCrossEntropyForward(), gpuSum() and gpuCrossEntropyBackward() match the reference, zero weights included",
  async (ctx) => {
    const rand = seeded(8);
    let worstLse = 0, worstLoss = 0, worstD = 0;
    for (const [N, V] of [[1, 1], [7, 5], [33, 129], [3, 1000]] as const) {
      const logits = randomArray(N * V, rand).map((v) => 4 * v);
      const targets = new Int32Array(N).map(() => Math.floor(rand() * V));
      const weights = new Float32Array(N).map((_, n) => (n % 3 === 1 ? 0 : 0.5 + rand()));
      const gLogits = ctx.upload(logits), gT = ctx.upload(targets), gW = ctx.upload(weights);
      const losses = ctx.zeros(N), lse = ctx.zeros(N), total = ctx.zeros(1);
      gpuCrossEntropyForward(ctx, losses, lse, gLogits, gT, gW, N, V);
      gpuSum(ctx, total, losses, N);
      const wLosses = new Float32Array(N), wLse = new Float32Array(N);
      const wTotal = crossEntropyForward(wLosses, wLse, logits, targets, weights, N, V);
      const gLse = await ctx.readF32(lse), gLosses = await ctx.readF32(losses);
      const gTotal = (await ctx.readF32(total))[0];
      // the max is exact; the sum of V exponentials (each within a few ulp of its argument's
      // magnitude) is a float32 sum, relative error 2 (V + 2) u; the log adds 3 ulp or 2^-21
      const bound = (n: number) => {
        let mx = 0;
        for (let v = 0; v < V; v++) mx = Math.max(mx, Math.abs(logits[n * V + v]));
        return 2 * (V + 2) * U + 8 * U * (Math.abs(wLse[n]) + mx) + 2 ** -21;
      };
      assertWithin(`lse ${N}x${V}`, gLse, wLse, bound);
      assertWithin(
        `losses ${N}x${V}`,
        gLosses,
        wLosses,
        (n) => weights[n] * bound(n) + 2 * U * Math.abs(wLosses[n]),
      );
      for (let n = 0; n < N; n++) if (weights[n] === 0) assert.equal(gLosses[n], 0);
      let sumBound = 2 * (N + 2) * U * wLosses.reduce((s, v) => s + Math.abs(v), 0);
      for (let n = 0; n < N; n++) sumBound += weights[n] * bound(n);
      assert.ok(Math.abs(gTotal - wTotal) <= sumBound, `total ${gTotal} vs ${wTotal}`);
      worstLse = Math.max(worstLse, maxRelErr(gLse, wLse));
      worstLoss = Math.max(worstLoss, maxRelErr(gLosses, wLosses));

      const dloss = 1 / N;
      const d0 = randomArray(N * V, rand), gD = ctx.upload(d0);
      gpuCrossEntropyBackward(ctx, gD, dloss, gLogits, ctx.upload(wLse), gT, gW, N, V);
      const wD = d0.slice();
      crossEntropyBackward(wD, dloss, logits, wLse, targets, weights, N, V);
      const got = await ctx.readF32(gD);
      // exp(logit - lse): a few ulp of the argument's magnitude; then two float32 additions
      assertWithin(`dlogits ${N}x${V}`, got, wD, (i) => {
        const n = Math.floor(i / V), g = Math.abs(dloss * weights[n]);
        const p = Math.exp(logits[i] - wLse[n]);
        return 4 * U * (Math.abs(d0[i]) + g) +
          g * p * 8 * U * (Math.abs(logits[i]) + Math.abs(wLse[n]) + 2);
      });
      worstD = Math.max(worstD, maxRelErr(got, wD));
    }
    console.log(
      `webgpu crossEntropy: max relative error lse ${worstLse.toExponential(2)}, losses ${
        worstLoss.toExponential(2)
      }, dlogits ${worstD.toExponential(2)}`,
    );
  },
);

gpuTest("gpuSum(): a long sum, overwrite and accumulate", async (ctx) => {
  const rand = seeded(9);
  const n = 5000 + 3;
  const x = randomArray(n, rand);
  const out = ctx.upload(new Float32Array([2.5]));
  const gx = ctx.upload(x);
  gpuSum(ctx, out, gx, n, true);
  let want = 2.5, mag = 2.5;
  for (const v of x) {
    want += v;
    mag += Math.abs(v);
  }
  const got = (await ctx.readF32(out))[0];
  assert.ok(Math.abs(got - want) <= 2 * (n + 2) * U * mag, `sum ${got} vs ${want}`);
  gpuSum(ctx, out, gx, n);
  assert.ok(Math.abs((await ctx.readF32(out))[0] - (want - 2.5)) <= 2 * (n + 2) * U * mag);
});

// ---- embedding

gpuTest(
  "gpuEmbeddingForward() and gpuEmbeddingBackward() equal the reference bit for bit, repeated tokens included",
  async (ctx) => {
    const rand = seeded(10);
    for (const [B, T, C, V] of [[1, 1, 1, 1], [2, 7, 5, 3], [3, 33, 65, 11]] as const) {
      const inp = new Int32Array(B * T).map(() => Math.floor(rand() * V));
      const wte = randomArray(V * C, rand), wpe = randomArray((T + 2) * C, rand);
      const gInp = ctx.upload(inp), gWte = ctx.upload(wte), gWpe = ctx.upload(wpe);
      for (const withPos of [false, true]) {
        const out = ctx.zeros(B * T * C);
        gpuEmbeddingForward(ctx, out, gInp, gWte, withPos ? gWpe : null, B, T, C);
        const want = new Float32Array(B * T * C);
        embeddingForward(want, inp, wte, withPos ? wpe : null, B, T, C);
        assertExact(`embedding forward ${B}x${T}x${C}`, await ctx.readF32(out), want);

        const dout = randomArray(B * T * C, rand);
        const dwte0 = randomArray(V * C, rand), dwpe0 = randomArray((T + 2) * C, rand);
        const gDwte = ctx.upload(dwte0), gDwpe = ctx.upload(dwpe0);
        gpuEmbeddingBackward(ctx, gDwte, withPos ? gDwpe : null, ctx.upload(dout), gInp, B, T, C);
        const wDwte = dwte0.slice(), wDwpe = dwpe0.slice();
        embeddingBackward(wDwte, withPos ? wDwpe : null, dout, inp, B, T, C);
        assertExact(`embedding dwte ${B}x${T}x${C}`, await ctx.readF32(gDwte), wDwte);
        assertExact(`embedding dwpe ${B}x${T}x${C}`, await ctx.readF32(gDwpe), wDwpe);
      }
    }
    console.log("webgpu embedding: gather and scatter-add bit for bit");
  },
);

// ---- AdamW

gpuTest("gpuAdamwStep(): three steps match adamwStep(), state kept on the GPU", async (ctx) => {
  const rand = seeded(11);
  const n = 1000 + 7;
  const p0 = randomArray(n, rand);
  const params = ctx.upload(p0), state = createGpuAdamW(ctx, n);
  const want = p0.slice(), ref = createAdamW(n);
  const options = { lr: 0.01, weightDecay: 0.1 };
  let worst = 0;
  for (let s = 0; s < 3; s++) {
    const g = randomArray(n, rand).map((v) => v * (s + 1));
    gpuAdamwStep(ctx, params, ctx.upload(g), state, options);
    adamwStep(want, g, ref, options);
  }
  assert.equal(state.step, 3);
  // float32 arithmetic against the reference's float64 with float32 storage: a few ulp per
  // operation, on values of magnitude 1 (params) and the moments' own scale
  const gotP = await ctx.readF32(params), gotM = await ctx.readF32(state.m);
  const gotV = await ctx.readF32(state.v);
  for (
    const [what, g, w] of [["params", gotP, want], ["m", gotM, ref.m], ["v", gotV, ref.v]] as const
  ) {
    const e = maxRelErr(g, w, `adamw ${what}`);
    assert.ok(e <= 32 * U, `adamw ${what}: max relative error ${e} > ${32 * U}`);
    worst = Math.max(worst, e);
  }
  // a kernel that skipped the update would leave the parameters where they were
  assert.ok(maxRelErr(gotP, p0) > 1e-3);
  console.log(`webgpu adamw: max relative error ${worst.toExponential(2)}`);
});

// ---- rotary embedding and attention

const ATT_SHAPES: [number, number, number, number][] = [
  [1, 1, 2, 1],
  [2, 7, 12, 3],
  [1, 33, 32, 2],
  [2, 70, 16, 1], // T past the 64-wide workgroup
];

gpuTest(
  "gpuRopeForward() matches ropeForward() and its inverse (the backward pass)",
  async (ctx) => {
    const rand = seeded(12);
    let worst = 0;
    for (const [B, T, C, NH] of ATT_SHAPES) {
      const half = C / NH / 2;
      const cos = new Float64Array(T * half), sin = new Float64Array(T * half);
      ropeTables(cos, sin, T, C / NH);
      const gCos = ctx.upload(Float32Array.from(cos)), gSin = ctx.upload(Float32Array.from(sin));
      const qkv = randomArray(B * T * 3 * C, rand);
      for (const inverse of [false, true]) {
        const g = ctx.upload(qkv);
        gpuRopeForward(ctx, g, gCos, gSin, B, T, C, NH, inverse);
        const want = qkv.slice();
        ropeForward(want, cos, sin, B, T, C, NH, inverse);
        const got = await ctx.readF32(g);
        // two products and a sum, with float32 tables (half an ulp each): 4 u (|z1| + |z2|)
        const pairBound = (i: number) => {
          const rowC = i % (3 * C);
          if (rowC >= 2 * C) return 0; // v untouched: exact
          const o = i - (rowC % C) % (2 * half); // the head's first element
          const j = (i - o) % half;
          return 4 * U * (Math.abs(qkv[o + j]) + Math.abs(qkv[o + half + j]));
        };
        assertWithin(`rope ${B}x${T}x${C}/${NH} inverse ${inverse}`, got, want, pairBound);
        worst = Math.max(worst, maxRelErr(got, want));
      }
    }
    console.log(`webgpu rope: max relative error ${worst.toExponential(2)}`);
  },
);

gpuTest(
  "gpuAttentionForward() matches attentionForward() after rotary, with and without mask",
  async (ctx) => {
    const rand = seeded(13);
    let worstAtt = 0, worstOut = 0;
    for (const [B, T, C, NH] of ATT_SHAPES) {
      const HS = C / NH, half = HS / 2;
      const cos = new Float64Array(T * half), sin = new Float64Array(T * half);
      ropeTables(cos, sin, T, HS);
      const qkv = randomArray(B * T * 3 * C, rand).map((v) => 2 * v);
      const mask = randomArray(B * NH * T * T, rand).map((v) => (v > -0.6 ? 1.25 : 0));
      for (const m of [null, mask]) {
        // rotary on the GPU, then attention on its result; the reference does the same in order
        const gQkv = ctx.upload(qkv);
        gpuRopeForward(
          ctx,
          gQkv,
          ctx.upload(Float32Array.from(cos)),
          ctx.upload(Float32Array.from(sin)),
          B,
          T,
          C,
          NH,
        );
        const out = ctx.zeros(B * T * C), att = ctx.zeros(B * NH * T * T);
        gpuAttentionForward(ctx, out, att, gQkv, m ? ctx.upload(m) : null, B, T, C, NH);
        const rotated = qkv.slice();
        ropeForward(rotated, cos, sin, B, T, C, NH);
        const wOut = new Float32Array(B * T * C), wAtt = new Float32Array(B * NH * T * T);
        attentionForward(wOut, wAtt, rotated, m, B, T, C, NH);
        const gAtt = await ctx.readF32(att), gOut = await ctx.readF32(out);
        // scores: float32 dots of HS terms of magnitude up to 4 (|q|, |k| <= 2, rotated), so an
        // absolute error up to 2 (HS + 2) u 4 HS / sqrt(HS) in the exponent; softmax and the
        // T-term output sums add 2 (T + 2) u relative
        const sErr = 2 * (HS + 4) * U * 4 * Math.sqrt(HS);
        const tolAtt = 2 * sErr + 4 * (T + 4) * U;
        const eAtt = maxRelErr(gAtt, wAtt, "att");
        assert.ok(eAtt <= tolAtt, `att ${B}x${T}x${C}/${NH}: ${eAtt} > ${tolAtt}`);
        const tolOut = T * tolAtt * 1.25 + 4 * (T + 4) * U * 1.25;
        const eOut = maxRelErr(gOut, wOut, "out");
        assert.ok(eOut <= tolOut, `attention out ${B}x${T}x${C}/${NH}: ${eOut} > ${tolOut}`);
        worstAtt = Math.max(worstAtt, eAtt);
        worstOut = Math.max(worstOut, eOut);
      }
    }
    console.log(
      `webgpu attention: max relative error att ${worstAtt.toExponential(2)}, out ${
        worstOut.toExponential(2)
      }`,
    );
  },
);

gpuTest(
  "gpuAttentionBackward() matches attentionBackward(), with and without mask, adding into dqkv",
  async (ctx) => {
    const rand = seeded(14);
    let worst = 0;
    for (const [B, T, C, NH] of ATT_SHAPES) {
      const HS = C / NH;
      const qkv = randomArray(B * T * 3 * C, rand).map((v) => 2 * v);
      const mask = randomArray(B * NH * T * T, rand).map((v) => (v > -0.6 ? 1.25 : 0));
      for (const m of [null, mask]) {
        const out = new Float32Array(B * T * C), att = new Float32Array(B * NH * T * T);
        attentionForward(out, att, qkv, m, B, T, C, NH);
        const dout = randomArray(B * T * C, rand), d0 = randomArray(B * T * 3 * C, rand);
        const gD = ctx.upload(d0);
        gpuAttentionBackward(
          ctx,
          gD,
          ctx.upload(dout),
          ctx.upload(qkv),
          ctx.upload(att),
          m ? ctx.upload(m) : null,
          ctx.zeros(B * NH * T * T),
          B,
          T,
          C,
          NH,
        );
        const want = d0.slice();
        attentionBackward(want, dout, qkv, att, m, new Float32Array(T), B, T, C, NH);
        const got = await ctx.readF32(gD);
        // datt: float32 dots of HS terms; its row sum and the dq, dk, dv sums: T terms each
        const tol = 8 * (HS + T + 4) * U;
        const e = maxRelErr(got, want, "dqkv");
        assert.ok(e <= tol, `attention dqkv ${B}x${T}x${C}/${NH}: ${e} > ${tol}`);
        worst = Math.max(worst, e);
      }
    }
    console.log(`webgpu attention backward: max relative error dqkv ${worst.toExponential(2)}`);
  },
);

// ---- linear layer, residual, large grids

gpuTest(
  "gpuLinearForward() and gpuLinearBackward() match linearForward() and linearBackward()",
  async (ctx) => {
    const rand = seeded(15);
    let worst = 0;
    for (const [N, IC, OC] of [[1, 1, 1], [33, 17, 29], [70, 65, 3]] as const) {
      for (const withBias of [false, true]) {
        const x = randomArray(N * IC, rand), w = randomArray(OC * IC, rand);
        const bias = withBias ? randomArray(OC, rand) : null;
        const gx = ctx.upload(x), gw = ctx.upload(w), gy = ctx.zeros(N * OC);
        gpuLinearForward(ctx, gy, gx, gw, bias ? ctx.upload(bias) : null, N, IC, OC);
        const y = new Float32Array(N * OC);
        linearForward(y, x, w, bias, N, IC, OC);
        const callF: Call = {
          kind: "ABt",
          a: x,
          b: w,
          bias,
          M: N,
          K: IC,
          N: OC,
          accumulate: false,
        };
        const gotY = await ctx.readF32(gy);
        assertClose(gotY, y, magnitudes(callF, y), IC, `linear forward ${N}x${IC}x${OC}`);
        worst = Math.max(worst, maxRelErr(gotY, y));

        const dy = randomArray(N * OC, rand);
        const dx0 = randomArray(N * IC, rand), dw0 = randomArray(OC * IC, rand);
        const db0 = randomArray(OC, rand);
        const gdx = ctx.upload(dx0), gdw = ctx.upload(dw0), gdb = ctx.upload(db0);
        gpuLinearBackward(ctx, gdx, gdw, withBias ? gdb : null, ctx.upload(dy), gx, gw, N, IC, OC);
        const dx = dx0.slice(), dw = dw0.slice(), db = db0.slice();
        linearBackward(dx, dw, withBias ? db : null, dy, x, w, N, IC, OC);
        const callX: Call = {
          kind: "AB",
          a: dy,
          b: w,
          bias: null,
          M: N,
          K: OC,
          N: IC,
          accumulate: true,
        };
        const callW: Call = {
          kind: "AtB",
          a: dy,
          b: x,
          bias: null,
          M: OC,
          K: N,
          N: IC,
          accumulate: true,
        };
        const gotDx = await ctx.readF32(gdx), gotDw = await ctx.readF32(gdw);
        assertClose(gotDx, dx, magnitudes(callX, dx0), OC, `linear dinp ${N}x${IC}x${OC}`);
        assertClose(gotDw, dw, magnitudes(callW, dw0), N, `linear dweight ${N}x${IC}x${OC}`);
        const gotDb = await ctx.readF32(gdb);
        // a float32 sum of N rows against the reference's float64 one
        assertWithin(`linear dbias ${N}x${IC}x${OC}`, gotDb, withBias ? db : db0, (o) => {
          let mag = Math.abs(db0[o]);
          for (let n = 0; n < N; n++) mag += Math.abs(dy[n * OC + o]);
          return withBias ? 2 * (N + 2) * U * mag : 0; // without bias: untouched
        });
        for (const [g, wnt] of [[gotDx, dx], [gotDw, dw], [gotDb, db]]) {
          worst = Math.max(worst, maxRelErr(g, wnt));
        }
      }
    }
    console.log(`webgpu linear: max relative error ${worst.toExponential(2)}`);
  },
);

gpuTest("gpuResidualForward(): a + b bit for bit, in place too", async (ctx) => {
  const rand = seeded(16);
  const N = 300;
  const a = randomArray(N, rand), b = randomArray(N, rand);
  const want = new Float32Array(N);
  residualForward(want, a, b, N);
  const out = ctx.zeros(N), ga = ctx.upload(a), gb = ctx.upload(b);
  gpuResidualForward(ctx, out, ga, gb, N);
  assertExact("residual", await ctx.readF32(out), want);
  gpuResidualForward(ctx, ga, ga, gb, N);
  assertExact("residual in place", await ctx.readF32(ga), want);
});

Deno.test("grid(): 1-D grids fold into y past the per-dimension limit and cover every group", () => {
  assert.deepEqual(grid(0), [0, 1]);
  assert.deepEqual(grid(MAX_GROUPS_X), [MAX_GROUPS_X, 1]);
  for (const n of [MAX_GROUPS_X + 1, 70000, 3 * MAX_GROUPS_X + 7]) {
    const [x, y] = grid(n);
    assert.ok(x <= MAX_GROUPS_X && x * y >= n && x * (y - 1) < n, `grid(${n}) = ${x}, ${y}`);
  }
});

gpuTest(
  "row kernels past 65535 workgroups: LayerNorm and cross-entropy on 70000 rows",
  async (ctx) => {
    const rand = seeded(17);
    const N = 70000, C = 2;
    await checkLayernormForward(ctx, N, C, rand);
    // cross-entropy with V = 1: every loss is 0 and lse the logit itself
    const logits = randomArray(N, rand);
    const losses = ctx.upload(new Float32Array(N).fill(7)), lse = ctx.zeros(N);
    gpuCrossEntropyForward(
      ctx,
      losses,
      lse,
      ctx.upload(logits),
      ctx.zeros(N, "i32"),
      ctx.upload(new Float32Array(N).fill(1)),
      N,
      1,
    );
    assertExact("cross-entropy 70000 rows, lse", await ctx.readF32(lse), logits);
    assertExact("cross-entropy 70000 rows, losses", await ctx.readF32(losses), new Float32Array(N));
  },
);

gpuTest(
  "GpuContext.dispatch(): a grid past the device's per-dimension limit is refused with a clear error",
  (ctx) => {
    const limit = ctx.device.limits.maxComputeWorkgroupsPerDimension;
    // a 1 x 0 x N product with N = 64 (limit + 1) needs limit + 1 workgroups along x; the wrapper
    // checks lengths only, so a tensor that claims N elements over a 4-byte buffer stands in for C
    const N = 64 * (limit + 1);
    const c = new GpuTensor(ctx.zeros(1).buffer, N, "f32");
    assert.throws(
      () => gpuMatmulAB(ctx, c, ctx.zeros(0), ctx.zeros(0), 1, 0, N),
      /at most \d+ workgroups per dimension, got \d+ x 1/,
    );
    return Promise.resolve();
  },
);

// ---- several kernels as one training step

gpuTest(
  "a small network's training step on the GPU (embedding, LayerNorm, linear, GELU, linear, cross-entropy, backward, AdamW) tracks the TypeScript one for 3 steps",
  async (ctx) => {
    // Everything stays on the GPU: parameters, moments, activations, gradients; each step is one
    // run of dispatches (gradients zeroed by clearBuffer), and only the loss comes back.
    const rand = seeded(18);
    const B = 2, T = 5, V = 11, C = 16, F = 24, N = B * T;
    const init = {
      wte: randomArray(V * C, rand),
      lnw: randomArray(C, rand).map((x) => 1 + 0.1 * x),
      lnb: randomArray(C, rand).map((x) => 0.1 * x),
      w1: randomArray(F * C, rand).map((x) => 0.3 * x),
      b1: randomArray(F, rand).map((x) => 0.1 * x),
      w2: randomArray(V * F, rand).map((x) => 0.3 * x),
      b2: randomArray(V, rand).map((x) => 0.1 * x),
    };
    type Name = keyof typeof init;
    const names = Object.keys(init) as Name[];
    const options = { lr: 0.01, weightDecay: 0.1 };
    const tokens = new Int32Array(N).map(() => Math.floor(rand() * V));
    const targets = new Int32Array(N).map(() => Math.floor(rand() * V));
    const weights = new Float32Array(N).map((_, n) => (n % 4 === 3 ? 0 : 1));

    // the reference, in float32 buffers
    const p = Object.fromEntries(names.map((k) => [k, init[k].slice()])) as Record<
      Name,
      Float32Array
    >;
    const g = Object.fromEntries(names.map((k) => [k, new Float32Array(init[k].length)])) as Record<
      Name,
      Float32Array
    >;
    const st = Object.fromEntries(names.map((k) => [k, createAdamW(init[k].length)])) as Record<
      Name,
      ReturnType<typeof createAdamW>
    >;
    const x = new Float32Array(N * C), h = new Float32Array(N * C);
    const mean = new Float32Array(N), rstd = new Float32Array(N);
    const u = new Float32Array(N * F), a = new Float32Array(N * F);
    const logits = new Float32Array(N * V), losses = new Float32Array(N), lse = new Float32Array(N);
    const dlogits = new Float32Array(N * V), da = new Float32Array(N * F);
    const du = new Float32Array(N * F), dh = new Float32Array(N * C), dx = new Float32Array(N * C);
    const refStep = (): number => {
      embeddingForward(x, tokens, p.wte, null, B, T, C);
      layernormForward(h, mean, rstd, x, p.lnw, p.lnb, N, C);
      linearForward(u, h, p.w1, p.b1, N, C, F);
      geluForwardKeepGrad(a, u, N * F); // u becomes gelu'(u)
      linearForward(logits, a, p.w2, p.b2, N, F, V);
      const loss = crossEntropyForward(losses, lse, logits, targets, weights, N, V);
      for (const k of names) g[k].fill(0);
      for (const buf of [dlogits, da, du, dh, dx]) buf.fill(0);
      crossEntropyBackward(dlogits, 1 / N, logits, lse, targets, weights, N, V);
      linearBackward(da, g.w2, g.b2, dlogits, a, p.w2, N, F, V);
      scaleBackward(du, da, u, N * F);
      linearBackward(dh, g.w1, g.b1, du, h, p.w1, N, C, F);
      layernormBackward(dx, g.lnw, g.lnb, dh, x, p.lnw, mean, rstd, N, C);
      embeddingBackward(g.wte, null, dx, tokens, B, T, C);
      for (const k of names) adamwStep(p[k], g[k], st[k], options);
      return loss;
    };

    // the same on the GPU
    const gp = Object.fromEntries(names.map((k) => [k, ctx.upload(init[k])])) as Record<
      Name,
      GpuTensor
    >;
    const gg = Object.fromEntries(names.map((k) => [k, ctx.zeros(init[k].length)])) as Record<
      Name,
      GpuTensor
    >;
    const gst = Object.fromEntries(names.map((k) => [k, createGpuAdamW(ctx, init[k].length)]));
    const gTokens = ctx.upload(tokens), gTargets = ctx.upload(targets), gW = ctx.upload(weights);
    const gx = ctx.zeros(N * C), gh = ctx.zeros(N * C), gMean = ctx.zeros(N), gRstd = ctx.zeros(N);
    const gu = ctx.zeros(N * F), ga = ctx.zeros(N * F), gLogits = ctx.zeros(N * V);
    const gLosses = ctx.zeros(N), gLse = ctx.zeros(N), gTotal = ctx.zeros(1);
    const gdlogits = ctx.zeros(N * V), gda = ctx.zeros(N * F), gdu = ctx.zeros(N * F);
    const gdh = ctx.zeros(N * C), gdx = ctx.zeros(N * C);
    const gpuStep = async (): Promise<number> => {
      gpuEmbeddingForward(ctx, gx, gTokens, gp.wte, null, B, T, C);
      gpuLayernormForward(ctx, gh, gMean, gRstd, gx, gp.lnw, gp.lnb, N, C);
      gpuLinearForward(ctx, gu, gh, gp.w1, gp.b1, N, C, F);
      gpuGeluForwardKeepGrad(ctx, ga, gu, N * F);
      gpuLinearForward(ctx, gLogits, ga, gp.w2, gp.b2, N, F, V);
      gpuCrossEntropyForward(ctx, gLosses, gLse, gLogits, gTargets, gW, N, V);
      gpuSum(ctx, gTotal, gLosses, N);
      for (const k of names) ctx.clear(gg[k]);
      for (const t of [gdlogits, gda, gdu, gdh, gdx]) ctx.clear(t);
      gpuCrossEntropyBackward(ctx, gdlogits, 1 / N, gLogits, gLse, gTargets, gW, N, V);
      gpuLinearBackward(ctx, gda, gg.w2, gg.b2, gdlogits, ga, gp.w2, N, F, V);
      gpuScaleBackward(ctx, gdu, gda, gu, N * F);
      gpuLinearBackward(ctx, gdh, gg.w1, gg.b1, gdu, gh, gp.w1, N, C, F);
      gpuLayernormBackward(ctx, gdx, gg.lnw, gg.lnb, gdh, gx, gp.lnw, gMean, gRstd, N, C);
      gpuEmbeddingBackward(ctx, gg.wte, null, gdx, gTokens, B, T, C);
      for (const k of names) gpuAdamwStep(ctx, gp[k], gg[k], gst[k], options);
      return (await ctx.readF32(gTotal))[0]; // the step's one readback
    };

    for (let s = 0; s < 3; s++) {
      const want = refStep();
      const before = ctx.dispatches;
      const got = await gpuStep();
      assert.ok(ctx.dispatches - before >= 20, "the step's kernels were dispatched");
      const rel = Math.abs(got - want) / Math.abs(want);
      assert.ok(rel <= 1e-5, `step ${s}: loss ${got} vs ${want} (relative ${rel})`);
      console.log(
        `webgpu training step ${s}: loss ${got} vs ${want}, relative error ${rel.toExponential(2)}`,
      );
    }
    let worst = 0;
    for (const k of names) {
      const e = maxRelErr(await ctx.readF32(gp[k]), p[k], k);
      assert.ok(e <= 1e-4, `${k} after 3 steps: max relative error ${e}`);
      worst = Math.max(worst, e);
      // the parameters moved: a step that did nothing would fail here
      assert.ok(maxRelErr(p[k], init[k]) > 1e-4, `${k} did not move`);
    }
    console.log(
      `webgpu training: parameters after 3 steps, max relative error ${worst.toExponential(2)}`,
    );
  },
);

// ---- score entropy (absorbing graph)

gpuTest(
  "gpuScoreEntropyAbsorbForward() and gpuScoreEntropyAbsorbBackward() match the reference, small and large sigma",
  async (ctx) => {
    const rand = seeded(19);
    let worstLoss = 0, worstD = 0;
    for (const [B, T, V] of [[1, 1, 2], [3, 7, 13], [2, 5, 200]] as const) {
      const M = V - 1, N = B * T;
      const sigma = Float64Array.from({ length: B }, (_, b) => [0.05, 3, 0.7][b % 3]);
      const dsigma = Float64Array.from({ length: B }, () => 0.5 + rand());
      const scale = 1 / N;
      const x0 = new Int32Array(N).map(() => Math.floor(rand() * M));
      const xt = x0.map((x, i) => (i === 0 || rand() < 0.5 ? M : x)); // position 0 masked
      const logits = randomArray(N * V, rand).map((v) => 3 * v);
      const consts = scoreEntropyAbsorbConstants(sigma, dsigma, B, V, scale);
      const gLogits = ctx.upload(logits), gX0 = ctx.upload(x0), gXt = ctx.upload(xt);
      const gC = ctx.upload(consts);
      const losses = ctx.zeros(N), total = ctx.zeros(1);
      gpuScoreEntropyAbsorbForward(ctx, losses, gLogits, gX0, gXt, gC, B, T, V);
      gpuSum(ctx, total, losses, N);
      const want = diffusion.scoreEntropyAbsorbForward(
        logits,
        x0,
        xt,
        sigma,
        dsigma,
        B,
        T,
        V,
        scale,
      );
      const got = (await ctx.readF32(total))[0];
      // per masked position: a float32 sum of M exponentials (each a few ulp of its argument's
      // magnitude), then three terms of magnitude up to r |l - shift| and |konst| (cancelling)
      let bound = 0, absSum = 0;
      for (let n = 0; n < N; n++) {
        if (xt[n] !== M) continue;
        const b = Math.floor(n / T), [shift, r, konst, g] = consts.subarray(4 * b, 4 * b + 4);
        let pos = 0, mx = 0;
        for (let y = 0; y < M; y++) {
          pos += Math.exp(logits[n * V + y] - shift);
          mx = Math.max(mx, Math.abs(logits[n * V + y]));
        }
        const lin = Math.abs(r * (logits[n * V + x0[n]] - shift));
        const mag = pos + lin + Math.abs(konst);
        bound += g * (2 * (M + 4) * U * mag + 8 * U * (pos * (mx + shift) + lin));
        absSum += g * mag;
      }
      bound += 2 * (N + 2) * U * absSum;
      assert.ok(
        Math.abs(got - want) <= bound,
        `score entropy ${B}x${T}x${V}: ${got} vs ${want} (bound ${bound})`,
      );
      worstLoss = Math.max(worstLoss, Math.abs(got - want) / Math.abs(want));

      const d0 = randomArray(N * V, rand), gD = ctx.upload(d0);
      gpuScoreEntropyAbsorbBackward(ctx, gD, gLogits, gX0, gXt, gC, B, T, V);
      const wD = d0.slice();
      diffusion.scoreEntropyAbsorbBackward(wD, logits, x0, xt, sigma, dsigma, B, T, V, scale);
      const gotD = await ctx.readF32(gD);
      assertWithin(`score entropy dlogits ${B}x${T}x${V}`, gotD, wD, (i) => {
        const n = Math.floor(i / V), b = Math.floor(n / T);
        if (xt[n] !== M || i % V === M) return 0; // untouched: exact
        const [shift, r, , g] = consts.subarray(4 * b, 4 * b + 4);
        const pe = g * Math.exp(logits[i] - shift);
        return 4 * U * (Math.abs(d0[i]) + pe + g * r) + pe * 8 * U * (Math.abs(logits[i]) + shift);
      });
      worstD = Math.max(worstD, maxRelErr(gotD, wD));
    }
    console.log(
      `webgpu score entropy (absorb): relative error loss ${worstLoss.toExponential(2)}, dlogits ${
        worstD.toExponential(2)
      }`,
    );
  },
);

gpuTest(
  "gpuScoreEntropyUniformForward() and gpuScoreEntropyUniformBackward() match the reference, xt = x0 and moved",
  async (ctx) => {
    const rand = seeded(20);
    let worstLoss = 0, worstD = 0;
    for (const [B, T, V] of [[1, 1, 3], [3, 7, 13], [2, 5, 200]] as const) {
      const R = V - 1, N = B * T;
      const sigma = Float64Array.from({ length: B }, (_, b) => [0.05, 3, 0.7][b % 3]);
      const dsigma = Float64Array.from({ length: B }, () => 0.5 + rand());
      const scale = 1 / N;
      const x0 = new Int32Array(N).map(() => Math.floor(rand() * R));
      const xt = x0.map((x, i) => (i % 2 === 1 ? (x + 1 + Math.floor(rand() * (R - 1))) % R : x));
      const logits = randomArray(N * V, rand).map((v) => 3 * v);
      const consts = scoreEntropyUniformConstants(sigma, dsigma, B, V, scale);
      const gLogits = ctx.upload(logits), gX0 = ctx.upload(x0), gXt = ctx.upload(xt);
      const gC = ctx.upload(consts);
      const losses = ctx.zeros(N), total = ctx.zeros(1);
      gpuScoreEntropyUniformForward(ctx, losses, gLogits, gX0, gXt, gC, B, T, V);
      gpuSum(ctx, total, losses, N);
      const want = diffusion.scoreEntropyUniformForward(
        logits,
        x0,
        xt,
        sigma,
        dsigma,
        B,
        T,
        V,
        scale,
      );
      const got = (await ctx.readF32(total))[0];
      // per position: float32 sums of R exponentials and R logits, then terms of magnitude up to
      // |s_x0| / e and |const| that cancel
      let bound = 0, absSum = 0;
      for (let n = 0; n < N; n++) {
        const b = Math.floor(n / T), [e, rho, cSame, cMoved, g] = consts.subarray(5 * b, 5 * b + 5);
        let se = 0, sa = 0, mx = 0;
        for (let y = 0; y < R; y++) {
          const s = logits[n * V + y];
          se += Math.exp(s);
          sa += Math.abs(s);
          mx = Math.max(mx, Math.abs(s));
        }
        const same = xt[n] === x0[n];
        const mag = se / R + (same ? rho : 1) * sa / R +
          (same ? Math.abs(cSame) : Math.abs(logits[n * V + x0[n]]) / e + Math.abs(cMoved));
        bound += g * (2 * (R + 4) * U * mag + 8 * U * (se / R) * mx);
        absSum += g * mag;
      }
      bound += 2 * (N + 2) * U * absSum;
      assert.ok(
        Math.abs(got - want) <= bound,
        `uniform score entropy ${B}x${T}x${V}: ${got} vs ${want} (bound ${bound})`,
      );
      worstLoss = Math.max(worstLoss, Math.abs(got - want) / Math.abs(want));

      const d0 = randomArray(N * V, rand), gD = ctx.upload(d0);
      gpuScoreEntropyUniformBackward(ctx, gD, gLogits, gX0, gXt, gC, B, T, V);
      const wD = d0.slice();
      diffusion.scoreEntropyUniformBackward(wD, logits, x0, xt, sigma, dsigma, B, T, V, scale);
      const gotD = await ctx.readF32(gD);
      assertWithin(`uniform score entropy dlogits ${B}x${T}x${V}`, gotD, wD, (i) => {
        const n = Math.floor(i / V), y = i % V, b = Math.floor(n / T);
        if (y === xt[n] || y === R) return 0; // untouched: exact
        const [e, , , , g] = consts.subarray(5 * b, 5 * b + 5);
        const pe = g * Math.exp(logits[i]) / R;
        return 4 * U * (Math.abs(d0[i]) + pe + g / R + g / e) + pe * 8 * U * Math.abs(logits[i]);
      });
      worstD = Math.max(worstD, maxRelErr(gotD, wD));
    }
    console.log(
      `webgpu score entropy (uniform): relative error loss ${worstLoss.toExponential(2)}, dlogits ${
        worstD.toExponential(2)
      }`,
    );
  },
);

gpuTest(
  "the seed and elbo losses as weighted cross-entropy rows (maskedRowWeights, width V - 1 for elbo) match seedForward/elboForward and their backward",
  async (ctx) => {
    const rand = seeded(21);
    let worstLoss = 0, worstD = 0;
    for (const [B, T, V] of [[1, 1, 2], [3, 7, 13], [2, 5, 200]] as const) {
      const M = V - 1, N = B * T;
      const sigma = Float64Array.from({ length: B }, (_, b) => [0.05, 3, 0.7][b % 3]);
      const dsigma = Float64Array.from({ length: B }, () => 0.5 + rand());
      const x0 = new Int32Array(N).map(() => Math.floor(rand() * M));
      const xt = x0.map((x, i) => (i === 0 || rand() < 0.5 ? M : x));
      const logits = randomArray(N * V, rand).map((v) => 3 * v);
      const gLogits = ctx.upload(logits), gX0 = ctx.upload(x0);
      for (const loss of ["seed", "elbo"] as const) {
        const scale = loss === "seed" ? 1 / 3 : 1 / N;
        const seqW = loss === "elbo" ? sigma.map((s, b) => dsigma[b] / Math.expm1(s)) : null;
        const width = loss === "elbo" ? V - 1 : V;
        const w = maskedRowWeights(xt, M, seqW, B, T, scale);
        const gW = ctx.upload(w);
        const losses = ctx.zeros(N), lse = ctx.zeros(N), total = ctx.zeros(1);
        gpuCrossEntropyForward(ctx, losses, lse, gLogits, gX0, gW, N, V, width);
        gpuSum(ctx, total, losses, N);
        const want = loss === "seed"
          ? diffusion.seedForward(logits, x0, xt, B, T, V, scale)
          : diffusion.elboForward(logits, x0, xt, sigma, dsigma, B, T, V, scale);
        const got = (await ctx.readF32(total))[0];
        // per masked row: log-sum-exp of `width` terms (as the cross-entropy test bounds it) and
        // the weight's float32 rounding; then the sum over rows
        let bound = 0, absSum = 0;
        for (let n = 0; n < N; n++) {
          if (w[n] === 0) continue;
          let mx = -Infinity, se = 0;
          for (let y = 0; y < width; y++) mx = Math.max(mx, logits[n * V + y]);
          for (let y = 0; y < width; y++) se += Math.exp(logits[n * V + y] - mx);
          const l = mx + Math.log(se), term = l - logits[n * V + x0[n]];
          const lseErr = 2 * (width + 2) * U + 8 * U * (Math.abs(l) + Math.abs(mx) + 3) + 2 ** -21;
          bound += w[n] * (lseErr + 4 * U * Math.abs(term));
          absSum += w[n] * Math.abs(term);
        }
        bound += 2 * (N + 2) * U * absSum;
        assert.ok(
          Math.abs(got - want) <= bound,
          `${loss} ${B}x${T}x${V}: ${got} vs ${want} (bound ${bound})`,
        );
        // (a one-token softmax, width 1, costs exactly 0)
        const relLoss = want === 0 ? Math.abs(got) : Math.abs(got - want) / Math.abs(want);
        worstLoss = Math.max(worstLoss, relLoss);

        const d0 = randomArray(N * V, rand), gD = ctx.upload(d0);
        gpuCrossEntropyBackward(ctx, gD, 1, gLogits, lse, gX0, gW, N, V, width);
        const wD = d0.slice();
        if (loss === "seed") diffusion.seedBackward(wD, logits, x0, xt, B, T, V, scale);
        else diffusion.elboBackward(wD, logits, x0, xt, sigma, dsigma, B, T, V, scale);
        const gotD = await ctx.readF32(gD);
        const gLse = await ctx.readF32(lse);
        assertWithin(`${loss} dlogits ${B}x${T}x${V}`, gotD, wD, (i) => {
          const n = Math.floor(i / V);
          if (w[n] === 0 || i % V >= width) return 0; // untouched: exact
          const p = Math.exp(logits[i] - gLse[n]);
          return 4 * U * (Math.abs(d0[i]) + w[n]) +
            w[n] * p * (8 * U * (Math.abs(logits[i]) + Math.abs(gLse[n]) + 2) + 4 * U) +
            w[n] * p * 4 * (width + 4) * U; // the saved lse's own error
        });
        worstD = Math.max(worstD, maxRelErr(gotD, wD));
      }
    }
    console.log(
      `webgpu seed/elbo losses: relative error loss ${worstLoss.toExponential(2)}, dlogits ${
        worstD.toExponential(2)
      }`,
    );
  },
);
