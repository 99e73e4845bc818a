// The whole model on the WebGPU backend (src/kernels/webgpu/model.ts, train_step.ts) against
// the PyTorch fixtures of tests/fixtures/model, with the loaders and tolerances of the CPU
// backends' fixture test (tests/model/pytorch_fixtures.ts): logits, loss, every gradient, and
// the parameters after 3 AdamW steps, each within 1e-4 of the tensor's largest magnitude (the
// loss within 1e-5).
//
// Ignored without an adapter, except in CI (CI=true), where a missing adapter fails the tests.

import type { ModelConfig } from "../../src/model/config.ts";
import type { GpuContext } from "../../src/kernels/webgpu/context.ts";
import {
  clearGpuParamSet,
  createGpuModel,
  createGpuParamSet,
  createGpuWorkspace,
  gpuModelBackward,
  gpuModelForward,
  readGpuParamSet,
} from "../../src/kernels/webgpu/model.ts";
import {
  createGpuTrainer,
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
  i32,
  LR,
  load,
  modelOf,
  tensorOf,
} from "../model/pytorch_fixtures.ts";

function gpuTest(name: string, fn: (ctx: GpuContext) => Promise<void>): void {
  Deno.test({ name, ignore: ignoreGpu, fn: () => fn(gpuContext()) });
}

for (const c of CASES) {
  gpuTest(
    `model (webgpu backend) matches PyTorch on fixture "${c}": logits, loss, every gradient, 3 AdamW steps`,
    async (ctx) => {
      const { tensors, metadata } = load(`${c}.safetensors`);
      const config = JSON.parse(metadata.config) as ModelConfig;
      const B = Number(metadata.batch);
      const model = modelOf(tensors, config);
      const input = i32(tensors.input, "input");
      const target = i32(tensors.target, "target");
      const weight = f32(tensors.weight, "weight");
      const T = input.length / B;
      const N = B * T, V = config.vocabSize;
      const sigma = config.timeConditioning === true
        ? Float64Array.from(f32(tensors.sigma, "sigma"))
        : new Float64Array(B);
      const batch = {
        B,
        T,
        input,
        target,
        weight,
        sigma,
        dsigma: new Float64Array(B),
        scale: new Float64Array([1]),
      };
      const gm = createGpuModel(ctx, model);
      const ws = createGpuWorkspace(gm, B, T);
      uploadBatch(ctx, ws, batch, { loss: "seed" }, V);
      const logits = gpuModelForward(gm, ws, ws.tokens, B, T, { sigma });
      const gotLogits = (await ctx.readF32(logits)).subarray(0, N * V);
      expectClose(`${c} logits`, gotLogits, f32(tensors.logits, "logits"), 1e-4);

      const grads = createGpuParamSet(ctx, model.layout, config, null);
      clearGpuParamSet(ctx, grads);
      gpuModelForward(gm, ws, ws.tokens, B, T, { sigma });
      gpuLoss(ctx, ws, { loss: "seed" }, true);
      gpuModelBackward(gm, ws, grads);
      const loss = (await ctx.readF32(ws.stats))[0];
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
