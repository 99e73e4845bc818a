// The whole model on the WebGPU backend (src/kernels/webgpu/model.ts, train_step.ts) against
// the PyTorch fixtures of tests/fixtures/model, with the loaders and tolerances of the CPU
// backends' fixture test (tests/model/pytorch_fixtures.ts): logits, loss, every gradient, and
// the parameters after 3 AdamW steps, each within 1e-4 of the tensor's largest magnitude (the
// loss within 1e-5).
//
// Ignored without an adapter, except in CI (CI=true), where a missing adapter fails the tests.

import assert from "node:assert/strict";
import type { ModelConfig } from "../../src/model/config.ts";
import {
  createModel,
  createWorkspace,
  forward,
  lossAndGrad,
  type Model,
} from "../../src/model/model.ts";
import { Rng } from "../../src/rng.ts";
import { adamwStep, createAdamW } from "../../src/optim/adamw.ts";
import { clipGradNorm } from "../../src/train/step.ts";
import { gpuAdamwStep } from "../../src/kernels/webgpu/adamw.ts";
import type { GpuContext } from "../../src/kernels/webgpu/context.ts";
import {
  createGpuDenoiser,
  createGpuModel,
  createGpuParamSet,
  createGpuWorkspace,
  gpuModelForward,
  readGpuParamSet,
} from "../../src/kernels/webgpu/model.ts";
import {
  createGpuTrainer,
  gpuGradient,
  gpuLoss,
  gpuTrainStep,
  readGpuTrainer,
  uploadBatch,
} from "../../src/kernels/webgpu/train_step.ts";
import { gpuContext, ignoreGpu } from "./webgpu_available.ts";
import {
  CASES,
  expectAdamw3,
  expectClose,
  f32,
  loadCase,
  LR,
  tensorOf,
} from "../model/pytorch_fixtures.ts";

function gpuTest(name: string, fn: (ctx: GpuContext) => Promise<void>): void {
  Deno.test({ name, ignore: ignoreGpu, fn: () => fn(gpuContext()) });
}

for (const c of CASES) {
  gpuTest(
    `model (webgpu backend) matches PyTorch on fixture "${c}": logits, loss, every gradient, 3 AdamW steps`,
    async (ctx) => {
      const { tensors, config, B, T, model, input, target, weight, sigma } = loadCase(c);
      const N = B * T, V = config.vocabSize;
      const batch = batchOf(B, T, input, target, weight, Float64Array.from(sigma ?? []));
      const gm = createGpuModel(ctx, model);
      const ws = createGpuWorkspace(gm, B, T);
      uploadBatch(ctx, ws, batch, { loss: "seed" }, V);
      const logits = gpuModelForward(gm, ws, ws.tokens, B, T, { sigma: batch.sigma });
      const gotLogits = (await ctx.readF32(logits)).subarray(0, N * V);
      expectClose(`${c} logits`, gotLogits, f32(tensors.logits, "logits"), 1e-4);

      const grads = createGpuParamSet(ctx, model.layout, config, null);
      const loss = await gpuGradient(gm, ws, grads, batch, { loss: "seed" });
      expectClose(`${c} loss`, [loss], f32(tensors.loss, "loss"), 1e-5);
      const g = await readGpuParamSet(ctx, grads, model.layout);
      for (const name of Object.keys(model.layout)) {
        const want = f32(tensors[`grad.${name}`], `grad.${name}`);
        expectClose(`${c} grad.${name}`, tensorOf(model, g, name), want, 1e-4);
      }

      const tr = createGpuTrainer(ctx, model, { batch: B, context: T });
      for (let step = 0; step < 3; step++) {
        const opts = { step, seed: 0, lr: LR, weightDecay: 0.01, clip: 0, loss: "seed" as const };
        await gpuTrainStep(tr, batch, opts);
      }
      const P = model.params.length;
      const out = { params: new Float32Array(P), m: new Float32Array(P), v: new Float32Array(P) };
      await readGpuTrainer(tr, out);
      expectAdamw3(c, model, out.params, tensors);
    },
  );
}

/** A random batch for `model`: ids with about a third masked, weights on the masked ones. */
function randomBatch(model: Model, B: number, T: number, seed: number) {
  const V = model.config.vocabSize, N = B * T;
  const rng = new Rng(seed);
  const target = Int32Array.from({ length: N }, () => Math.floor(rng.uniform() * (V - 1)));
  const input = target.map((t) => (rng.uniform() < 0.35 ? V - 1 : t));
  const weight = Float32Array.from(input, (t) => (t === V - 1 ? 1 / N : 0));
  const sigma = Float64Array.from({ length: B }, () => 0.1 + 2 * rng.uniform());
  return batchOf(B, T, input, target, weight, sigma);
}

/** A batch of the `seed` loss (normaliser 1; `sigma` zeros where absent). */
function batchOf(
  B: number,
  T: number,
  input: Int32Array,
  target: Int32Array,
  weight: Float32Array,
  sigma: Float64Array,
) {
  return {
    B,
    T,
    input,
    target,
    weight,
    sigma: sigma.length === B ? sigma : new Float64Array(B),
    dsigma: new Float64Array(B),
    scale: new Float64Array([1]),
  };
}

const DROPOUT_CASES: [string, Partial<ModelConfig>][] = [
  ["the notebook's post-norm ReLU, dropout 0.1", { ...{ nLayers: 2 }, dFF: 24 }],
  ["pre-norm GELU, rotary, time-conditioned, dropout 0.2", {
    dropout: 0.2,
    timeConditioning: true,
  }],
];

for (const [what, overrides] of DROPOUT_CASES) {
  gpuTest(
    `webgpu training pass with dropout (${what}): the masks, logits' loss and every gradient match the ts backend`,
    async (ctx) => {
      const preset = overrides.timeConditioning ? "tiny" : "seed";
      const model = createModel(
        { ...createModel(preset, { vocabSize: 13 }).config, ...overrides },
        {
          seed: 3,
        },
      );
      // adaLN-Zero starts with zero gates, which would hide the branches (and their masks)
      const jitter = new Rng(11);
      for (let i = 0; i < model.params.length; i++) {
        model.params[i] += 0.1 * (jitter.uniform() - 0.5);
      }
      const B = 3, T = model.config.context;
      const batch = randomBatch(model, B, T, 5);
      const dropout = { seed: 7, step: 4, firstRow: 0 };
      const sigma = model.config.timeConditioning ? batch.sigma : undefined;
      const ws = createWorkspace(model.config, B, T, { backend: "ts" });
      const want = lossAndGrad(model, batch, { batch: B, workspace: ws, dropout, sigma });

      const gm = createGpuModel(ctx, model);
      const gws = createGpuWorkspace(gm, B, T);
      const grads = createGpuParamSet(ctx, model.layout, model.config, null);
      const loss = await gpuGradient(gm, gws, grads, batch, { loss: "seed" }, dropout);
      expectClose(`${what} loss`, [loss], [want.loss], 1e-5);
      const got = await readGpuParamSet(ctx, grads, model.layout);
      for (const name of Object.keys(model.layout)) {
        const w = tensorOf(model, want.grads, name);
        expectClose(`${what} grad.${name}`, tensorOf(model, got, name), w, 1e-4);
      }
      // a different dropout step draws different masks: the loss moves
      gpuModelForward(gm, gws, gws.tokens, B, T, {
        sigma: batch.sigma,
        dropout: { ...dropout, step: 5 },
      });
      gpuLoss(ctx, gws, { loss: "seed" }, false);
      const other = (await ctx.readF32(gws.stats))[0];
      assert.notEqual(other, loss);
    },
  );
}

gpuTest(
  "createGpuDenoiser() returns the CPU denoiser's logits (forward), B*T*V of them, for a plain and a time-conditioned model",
  async (ctx) => {
    for (const tc of [false, true]) {
      const model = createModel({
        ...createModel("tiny", { vocabSize: 11 }).config,
        timeConditioning: tc,
      }, {
        seed: 9,
      });
      const denoise = createGpuDenoiser(ctx, model);
      for (const [B, T] of [[2, 16], [3, 5]]) {
        const { input, sigma } = randomBatch(model, B, T, B * T);
        const s32 = Float32Array.from(sigma);
        const want = forward(model, input, { batch: B, sigma: s32, backend: "ts" });
        const ids = ctx.upload(input);
        const logits = denoise(ids, s32, B);
        assert.equal(logits.length, B * T * 11);
        expectClose(`denoiser tc=${tc} B=${B} T=${T}`, await ctx.readF32(logits), want, 1e-5);
        ids.destroy();
      }
      assert.throws(
        () => denoise(ctx.upload(new Int32Array(5)), new Float32Array(2), 2),
        /multiple of batch 2/,
      );
    }
  },
);

gpuTest(
  "gpuAdamwStep with clipping: two steps as clipGradNorm + adamwStep, and no update at all on a non-finite loss or norm",
  async (ctx) => {
    const n = 37;
    const rng = new Rng(8);
    const p0 = Float32Array.from({ length: n }, () => rng.uniform() - 0.5);
    // two steps of different norms (about 7 and 0.3): clipped by different factors, which Adam's
    // scale invariance does not hide
    const gs = [4, 0.2].map((a) =>
      Float32Array.from({ length: n }, () => a * (rng.uniform() - 0.5))
    );
    const norm2 = (g: Float32Array) => g.reduce((t, x) => t + x * x, 0);
    for (const [loss, bad, maxNorm] of [[1, 1, 1], [1, 1, 0], [NaN, 1, 1], [1, Infinity, 1]]) {
      const params = ctx.upload(p0);
      const state = { m: ctx.zeros(n), v: ctx.zeros(n), step: 0 };
      const want = p0.slice(), cpu = createAdamW(n);
      for (const g0 of gs) {
        const grads = ctx.upload(g0);
        const stats = ctx.upload(new Float32Array([loss, norm2(g0) * bad]));
        gpuAdamwStep(ctx, params, grads, state, { lr: 0.01 }, { stats, maxNorm });
        const g = g0.slice();
        clipGradNorm(g, maxNorm);
        if (Number.isFinite(loss) && Number.isFinite(bad)) adamwStep(want, g, cpu, { lr: 0.01 });
        await ctx.sync();
        grads.destroy();
        stats.destroy();
      }
      const got = await ctx.readF32(params);
      expectClose(`adamw clip ${maxNorm}, loss ${loss}, norm x ${bad}`, got, want, 1e-6);
      if (!Number.isFinite(loss) || !Number.isFinite(bad)) {
        assert.deepEqual(await ctx.readF32(state.m), new Float32Array(n));
      }
      for (const t of [params, state.m, state.v]) t.destroy();
    }
  },
);
