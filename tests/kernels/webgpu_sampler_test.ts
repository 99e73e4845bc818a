// The WGSL sampling kernels of src/kernels/webgpu/ (rng.ts, sample_update.ts, sampler.ts) against
// the CPU samplers of src/sampler/: the generator bit for bit, each per-position update rule on
// odd shapes (same ids and the same stream state afterwards), and sampleIdsGpu against sampleIds
// for every method and graph (the same tokens and the same final Rng state for the same seed).
//
// Random logits here are spread over a few units, so the float32-vs-float64 ties the GPU path can
// differ on (a near-tie of two Gumbel keys, a leftover weight within rounding of 0) have
// probability around 1e-6 per position: the comparisons are exact.
//
// Where no WebGPU adapter can be had these tests are ignored, except in CI (CI=true), where a
// missing adapter fails them.

import assert from "node:assert/strict";
import { Rng } from "../../src/rng.ts";
import type { GpuContext, GpuTensor } from "../../src/kernels/webgpu/context.ts";
import { createTableDenoiser } from "../../src/kernels/webgpu/table_denoiser.ts";
import { measureSampleThroughput, sampleIdsGpu } from "../../src/kernels/webgpu/sampler.ts";
import { sampleIds, type SampleOptions } from "../../src/sampler/sample_ids.ts";
import { gpuRngDraws, rngJumpTable } from "../../src/kernels/webgpu/rng.ts";
import {
  createGpuSampleWorkspace,
  destroyGpuSampleWorkspace,
  gpuAncestralUpdate,
  gpuArgmaxUpdate,
  gpuConfidenceStep,
  gpuSeddUpdate,
  readChanged,
  readRngState,
} from "../../src/kernels/webgpu/sample_update.ts";
import {
  ancestralUpdate,
  argmaxUpdate,
  createScratch,
  type SeddRule,
  seddUpdate,
  type UpdateContext,
} from "../../src/sampler/updates.ts";
import { confidenceStep } from "../../src/sampler/confidence.ts";
import { countSubmits, gpuContext, ignoreGpu } from "./webgpu_available.ts";

function gpuTest(name: string, fn: (ctx: GpuContext) => Promise<void>): void {
  Deno.test({ name, ignore: ignoreGpu, fn: () => fn(gpuContext()) });
}

/** Logits uniform in [-scale, scale], from a seeded stream. */
function randomLogits(n: number, seed: number, scale = 3): Float32Array {
  const r = new Rng(seed, 99);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (2 * r.uniform() - 1) * scale;
  return x;
}

async function readIds(ctx: GpuContext, t: GpuTensor): Promise<Int32Array> {
  return await ctx.read(t) as Int32Array;
}

gpuTest(
  "GPU xoshiro128**: jumped draws equal Rng.nextU32 bit for bit, -log(u) to 2e-7",
  async (ctx) => {
    const rng = new Rng(20261203, 5, 7);
    const state = rng.getState();
    const M = 70000;
    const seq = new Uint32Array(M);
    for (let i = 0; i < M; i++) seq[i] = rng.nextU32();
    // every low offset, powers of two and their neighbours, and a spread of others
    const offs: number[] = [];
    for (let i = 0; i < 40; i++) offs.push(i);
    for (let k = 5; k < 17; k++) offs.push(2 ** k - 1, 2 ** k, 2 ** k + 1);
    for (let i = 0; i < 60; i++) offs.push(Math.floor((i * 104729) % M));
    const n = offs.length;
    const words = ctx.zeros(n, "i32"), exps = ctx.zeros(n);
    const tbl = ctx.upload(new Int32Array(rngJumpTable().buffer));
    const st = ctx.upload(new Int32Array(state.buffer));
    const off = ctx.upload(new Int32Array(offs));
    gpuRngDraws(ctx, words, exps, st, off, tbl, n);
    const got = new Uint32Array((await ctx.read(words)).buffer);
    const e = await ctx.readF32(exps);
    let worst = 0;
    for (let i = 0; i < n; i++) {
      assert.equal(got[i], seq[offs[i]], `draw at offset ${offs[i]}`);
      const want = -Math.log((seq[offs[i]] + 0.5) / 4294967296);
      worst = Math.max(worst, Math.abs(e[i] - want) / want);
    }
    console.log(`webgpu rng: -log(u) max relative error ${worst.toExponential(2)}`);
    assert.ok(worst < 2e-7, `-log(u) relative error ${worst}`);
    // the extremes of u: x = 0 (u = 2^-33), and x near 2^32, where a float32 u would round to 1.
    // The output of xoshiro128** depends on state word 1 only: invert it to start at a chosen x.
    const zero = ctx.upload(new Int32Array(1));
    for (const x of [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 129, 2 ** 32 - 2, 2 ** 32 - 1]) {
      const s = new Uint32Array([1, stateWord1For(x), 0, 0]);
      const check = new Rng(0);
      check.setState(s);
      assert.equal(check.nextU32(), x);
      ctx.write(st, new Int32Array(s.buffer));
      gpuRngDraws(ctx, words, exps, st, zero, tbl, 1);
      assert.equal(new Uint32Array((await ctx.read(words)).buffer)[0], x);
      const want = -Math.log((x + 0.5) / 4294967296);
      const gotE = (await ctx.readF32(exps))[0];
      assert.ok(
        Math.abs(gotE - want) <= 2e-7 * want,
        `-log(u) at x = ${x}: got ${gotE}, expected ${want}`,
      );
    }
    for (const t of [words, exps, st, off, tbl, zero]) t.destroy();
  },
);

/** The inverse of an odd number modulo 2^32 (Newton's iteration). */
function inverseOdd(a: number): number {
  let inv = a;
  for (let i = 0; i < 5; i++) inv = Math.imul(inv, 2 - Math.imul(a, inv));
  return inv >>> 0;
}

/** State word 1 whose xoshiro128** output, rotl(s1 * 5, 7) * 9, is x. */
function stateWord1For(x: number): number {
  const r = Math.imul(x, inverseOdd(9)) >>> 0; // rotl(s1 * 5, 7)
  const m = ((r >>> 7) | (r << 25)) >>> 0; // s1 * 5
  return Math.imul(m, inverseOdd(5)) >>> 0;
}

interface Shape {
  B: number;
  T: number;
  V: number;
}
const SHAPES: Shape[] = [
  { B: 1, T: 1, V: 3 },
  { B: 3, T: 7, V: 5 },
  { B: 2, T: 13, V: 67 },
  { B: 2, T: 5, V: 130 },
  { B: 1, T: 3, V: 8300 }, // 64 chunks of 130 per row, the last 110 wide
];

/** Ids with a random subset masked (absorb) or random real tokens (uniform), and a fixed mask. */
function setup(shape: Shape, seed: number, uniform: boolean) {
  const { B, T, V } = shape;
  const maskId = V - 1;
  const r = new Rng(seed, 1);
  const ids = new Int32Array(B * T);
  for (let i = 0; i < ids.length; i++) {
    // uniform: real tokens, and now and then a MASK (not a state of that graph, but the rule
    // must treat it as the CPU does)
    ids[i] = uniform
      ? (r.uniform() < 0.1 ? maskId : r.int(V - 1))
      : (r.uniform() < 0.7 ? maskId : r.int(V - 1));
  }
  const fixed = new Uint8Array(T);
  for (let t = 0; t < T; t++) fixed[t] = T > 2 && r.uniform() < 0.25 ? 1 : 0;
  return { maskId, ids, fixed, out: randomLogits(B * T * V, seed) };
}

type Runner = {
  /** Whether the GPU rule sets the workspace's changed flag (SEDD and ancestral updates). */
  setsChanged?: boolean;
  cpu: (ids: Int32Array, out: Float32Array, fixed: Uint8Array, rng: Rng) => void;
  gpu: (
    ctx: GpuContext,
    ws: ReturnType<typeof createGpuSampleWorkspace>,
    ids: GpuTensor,
    out: GpuTensor,
    fixed: GpuTensor,
  ) => void;
};

/** Runs one rule on the CPU and the GPU from the same state; asserts same ids and stream. */
async function compareRule(
  ctx: GpuContext,
  label: string,
  shape: Shape,
  uniform: boolean,
  make: (shape: Shape, maskId: number) => Runner,
  quantise = false,
): Promise<void> {
  for (let seed = 1; seed <= 2; seed++) {
    const { maskId, ids, fixed, out } = setup(shape, seed, uniform);
    // quantised logits: many exact ties, which must go to the first maximum
    if (quantise) { for (let i = 0; i < out.length; i++) out[i] = Math.round(out[i]); }
    const run = make(shape, maskId);
    const rngCpu = new Rng(seed, 2);
    const ws = createGpuSampleWorkspace(ctx, shape.B * shape.T, rngCpu);
    const gIds = ctx.upload(ids), gOut = ctx.upload(out);
    const gFixed = ctx.upload(Int32Array.from(fixed));
    const want = ids.slice();
    run.cpu(want, out, fixed, rngCpu);
    run.gpu(ctx, ws, gIds, gOut, gFixed);
    const got = await readIds(ctx, gIds);
    const where = `${label} B${shape.B} T${shape.T} V${shape.V} seed ${seed}`;
    assert.deepEqual([...got], [...want], `${where}: ids`);
    assert.deepEqual([...await readRngState(ctx, ws)], [...rngCpu.getState()], `${where}: stream`);
    if (run.setsChanged && !want.every((v, i) => v === ids[i])) {
      assert.equal(await readChanged(ctx, ws), true, `${where}: changed flag`);
    }
    for (const t of [gIds, gOut, gFixed]) t.destroy();
    destroyGpuSampleWorkspace(ws);
  }
}

function seddRunner(rule: SeddRule, sigma: number, part: Omit<UpdateContext, "V" | "maskId">) {
  return ({ B, T, V }: Shape, maskId: number): Runner => {
    const uctx = { V, maskId, ...part };
    return {
      setsChanged: true,
      cpu: (ids, out, fixed, rng) =>
        seddUpdate(ids, out, fixed, B, T, sigma, rule, uctx, rng, createScratch(V)),
      gpu: (ctx, ws, ids, out, fixed) =>
        gpuSeddUpdate(ctx, ws, ids, out, fixed, B, T, sigma, rule, uctx),
    };
  };
}

const RULES: [string, SeddRule, number][] = [
  ["euler", { kind: "euler", rate: 0.07 }, 1.3],
  ["euler (big step)", { kind: "euler", rate: 3 }, 0.4],
  ["tweedie", { kind: "tweedie", dsig: 0.2 }, 1.1],
  ["denoise", { kind: "denoise", sigma: 1e-4 }, 1e-4],
];

for (const [name, rule, sigma] of RULES) {
  for (
    const [graph, output, scaleBySigma] of [
      ["absorb", "logits", true],
      ["absorb", "logScore", true],
      ["absorb", "logScore", false],
      ["uniform", "logScore", true],
    ] as const
  ) {
    const label = `gpuSeddUpdate ${name} ${graph} ${output}${scaleBySigma ? "" : " unscaled"}`;
    gpuTest(`${label} = seddUpdate on odd shapes`, async (ctx) => {
      for (const shape of SHAPES) {
        await compareRule(
          ctx,
          label,
          shape,
          graph === "uniform",
          seddRunner(rule, sigma, { graph, output, scaleBySigma }),
        );
      }
    });
  }
}

// B*T past the scan's 256 invocations (several positions each) and T past the workgroup width
const BIG: Shape = { B: 2, T: 151, V: 9 };

gpuTest(
  "gpuSeddUpdate and gpuConfidenceStep over 302 positions (the scan in chunks)",
  async (ctx) => {
    const part = { graph: "absorb", output: "logScore", scaleBySigma: true } as const;
    await compareRule(ctx, "euler big", BIG, false, seddRunner(RULES[0][1], RULES[0][2], part));
    await compareRule(
      ctx,
      "tweedie uniform big",
      BIG,
      true,
      seddRunner(RULES[2][1], RULES[2][2], {
        ...part,
        graph: "uniform",
      }),
    );
    await compareRule(ctx, "confidence big", BIG, false, ({ B, T, V }, maskId) => ({
      cpu: (ids, out, fixed, rng) =>
        confidenceStep(ids, out, fixed, B, T, V, maskId, 40, false, rng),
      gpu: (ctx, ws, ids, out, fixed) =>
        gpuConfidenceStep(ctx, ws, ids, out, fixed, B, T, V, maskId, 40, false),
    }));
  },
);

gpuTest("gpuAncestralUpdate = ancestralUpdate on odd shapes", async (ctx) => {
  for (const [mT, mS] of [[0.9, 0.6], [0.3, 1e-5]]) {
    for (const shape of SHAPES) {
      await compareRule(ctx, `ancestral ${mT}->${mS}`, shape, false, ({ B, T, V }, maskId) => {
        const uctx: UpdateContext = {
          V,
          maskId,
          graph: "absorb",
          output: "logits",
          scaleBySigma: true,
        };
        return {
          setsChanged: true,
          cpu: (ids, out, fixed, rng) =>
            ancestralUpdate(ids, out, fixed, B, T, mT, mS, uctx, rng, createScratch(V)),
          gpu: (ctx, ws, ids, out, fixed) =>
            gpuAncestralUpdate(ctx, ws, ids, out, fixed, B, T, mT, mS, uctx),
        };
      });
    }
  }
});

gpuTest("gpuArgmaxUpdate = argmaxUpdate on odd shapes (ties to the first maximum)", async (ctx) => {
  for (const shape of SHAPES) {
    await compareRule(ctx, "argmax", shape, false, ({ B, T, V }, maskId) => ({
      cpu: (ids, out, fixed) => argmaxUpdate(ids, out, fixed, B, T, V, maskId),
      gpu: (ctx, _ws, ids, out, fixed) => gpuArgmaxUpdate(ctx, ids, out, fixed, B, T, V, maskId),
    }), true);
  }
});

gpuTest(
  "gpuConfidenceStep = confidenceStep on odd shapes (k, allowMask, last step)",
  async (ctx) => {
    for (const allowMask of [false, true]) {
      for (const k of [1, 3, 1000]) {
        for (const shape of SHAPES) {
          await compareRule(
            ctx,
            `confidence k${k}${allowMask ? " allowMask" : ""}`,
            shape,
            false,
            ({ B, T, V }, maskId) => ({
              cpu: (ids, out, fixed, rng) =>
                confidenceStep(ids, out, fixed, B, T, V, maskId, k, allowMask, rng),
              gpu: (ctx, ws, ids, out, fixed) =>
                gpuConfidenceStep(ctx, ws, ids, out, fixed, B, T, V, maskId, k, allowMask),
            }),
          );
        }
      }
    }
  },
);

// ---- sampleIdsGpu against sampleIds

const CASES: [string, Partial<SampleOptions>][] = [
  ["confidence", { method: "confidence", steps: 4 }],
  ["confidence allowMask, fixed", {
    method: "confidence",
    steps: 10,
    allowMask: true,
    fixed: { positions: [0, 5], ids: [2, 7] },
  }],
  ["euler absorb logits", { method: "euler", steps: 6 }],
  ["tweedie absorb logScore, fixed", {
    method: "tweedie",
    steps: 6,
    output: "logScore",
    fixed: { positions: [3], ids: [1] },
  }],
  ["euler uniform logScore", { method: "euler", steps: 5, graph: "uniform", output: "logScore" }],
  ["tweedie uniform logScore geometric", {
    method: "tweedie",
    steps: 5,
    graph: "uniform",
    output: "logScore",
    schedule: "geometric",
  }],
  ["ancestral cached", { method: "ancestral", steps: 24 }],
  ["ancestral logScore timeConditioned", {
    method: "ancestral",
    steps: 6,
    output: "logScore",
    timeConditioned: true,
  }],
];

for (const [name, opts] of CASES) {
  gpuTest(
    `sampleIdsGpu ${name} = sampleIds (same seed: same tokens, calls and stream)`,
    async (ctx) => {
      const B = 3, T = 11, V = 23, maskId = V - 1;
      // time-conditioned outputs, so a wrong sigma shows, except where that would turn the cache off
      const useSigma = opts.method !== "ancestral" || opts.timeConditioned === true;
      const den = createTableDenoiser(ctx, {
        batch: B,
        length: T,
        V,
        seed: opts.allowMask ? 7 : 5, // 7: tables whose MASK column wins some rows
        timeConditioned: useSigma,
      });
      const samples: string[] = [];
      let fewerThanK = 0;
      for (const seed of [1, 2]) {
        const cpuSteps: number[][] = [], gpuSteps: number[][] = [];
        const base = { length: T, batch: B, ...opts } as SampleOptions;
        const rc = new Rng(seed, 3), rg = new Rng(seed, 3);
        const want = sampleIds(den.cpu, V, maskId, {
          ...base,
          rng: rc,
          onStep: (ids, s) => cpuSteps.push([s, ...ids]),
        });
        const got = await sampleIdsGpu(ctx, den.gpu, V, maskId, {
          ...base,
          rng: rg,
          onStep: (ids, s) => gpuSteps.push([s, ...ids]),
        });
        assert.deepEqual([...got.ids], [...want.ids], `${name} seed ${seed}: ids`);
        assert.deepEqual(gpuSteps, cpuSteps, `${name} seed ${seed}: ids after each step`);
        assert.equal(got.evaluations, want.evaluations, "evaluations");
        assert.equal(got.savedEvaluations, want.savedEvaluations, "saved evaluations");
        assert.deepEqual(
          [...rg.getState()],
          [...rc.getState()],
          "the generator's state afterwards",
        );
        if (opts.method === "ancestral" && opts.timeConditioned !== true) {
          assert.ok(want.savedEvaluations > 0, "the cache was used");
        }
        // without onStep nothing but the end is read back; the same tokens again, from a seed
        const plain = await sampleIdsGpu(ctx, den.gpu, V, maskId, { ...base, seed });
        const ref = sampleIds(den.cpu, V, maskId, { ...base, seed });
        assert.deepEqual([...plain.ids], [...ref.ids], `${name} seed ${seed}: ids without onStep`);
        samples.push(want.ids.join());
        const k = Math.floor(T / base.steps);
        const masks = (ids: number[], b: number) =>
          ids.slice(1 + b * T, 1 + (b + 1) * T).filter((v) => v === maskId).length;
        for (let j = 1; j < cpuSteps.length; j++) {
          for (let b = 0; b < B; b++) {
            const before = masks(cpuSteps[j - 1], b), after = masks(cpuSteps[j], b);
            if (before - after < Math.min(k, before)) fewerThanK++;
          }
        }
      }
      assert.notEqual(samples[0], samples[1], "two seeds, two samples: the draws matter");
      if (opts.allowMask) {
        // some chosen position "unmasked" to MASK, so a step unmasked fewer than k: the masked
        // counts the host used came from the GPU
        assert.ok(fewerThanK > 0, "a MASK prediction");
      }
      den.destroy();
    },
  );
}

gpuTest(
  "sampleIdsGpu rejects bad input with the CPU's messages, and a short denoiser output",
  async (ctx) => {
    const out = ctx.zeros(5);
    await assert.rejects(
      sampleIdsGpu(ctx, () => out, 4, 3, { method: "confidence", steps: 2, length: 4, seed: 1 }),
      /Invalid denoiser output \(B\*T\*V\): expected at least 16 elements, got 5/,
    );
    await assert.rejects(
      sampleIdsGpu(ctx, () => out, 4, 3, {
        method: "ancestral",
        steps: 2,
        length: 4,
        seed: 1,
        graph: "uniform",
      }),
      /Unsupported combination/,
    );
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      sampleIdsGpu({} as any, () => out, 4, 3, { method: "euler", steps: 2, length: 4, seed: 1 }),
      /Invalid context: expected a GpuContext/,
    );
    out.destroy();
  },
);

gpuTest("measureSampleThroughput: counts B*T tokens per run", async (ctx) => {
  const den = createTableDenoiser(ctx, { batch: 2, length: 6, V: 7, seed: 1 });
  const m = await measureSampleThroughput(ctx, den.gpu, 7, 6, {
    method: "tweedie",
    steps: 3,
    length: 6,
    batch: 2,
    seed: 4,
  });
  assert.equal(m.tokens, 12);
  assert.equal(m.evaluations, 4);
  assert.ok(
    m.seconds > 0 && Math.abs(m.tokensPerSecond - 12 / m.seconds) < 1e-9 * m.tokensPerSecond,
  );
  den.destroy();
});

gpuTest(
  "sampleIdsGpu: one submit per step, and only the end read back (euler, tweedie, confidence)",
  async (ctx) => {
    const B = 2, T = 9, V = 11;
    const den = createTableDenoiser(ctx, { batch: B, length: T, V, seed: 3 });
    try {
      for (const method of ["euler", "tweedie", "confidence"] as const) {
        const steps = 4;
        const { submits, maps } = await countSubmits(
          ctx,
          () =>
            sampleIdsGpu(ctx, den.gpu, V, V - 1, { method, steps, length: T, batch: B, seed: 1 }),
        );
        // the score-based methods add the final denoising step to the last submit (the ids' read);
        // every method then reads the ids and the generator's state: two maps, two submits
        assert.equal(submits, steps + 2, `${method}: submits`);
        assert.equal(maps, 2, `${method}: readbacks`);
      }
    } finally {
      den.destroy();
    }
  },
);
