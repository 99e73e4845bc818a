// A whole training step on the WebGPU backend (src/kernels/webgpu/train_step.ts: forward,
// loss, backward, clipping, AdamW, one command encoder, two floats read back) at the `small`
// run's shape (d 128, L 4, T 128, B 16, V 512) and a bigger one (d 512, L 8, T 256, B 16),
// timed over whole steps, readback included, after one warm-up step; then sampling with the
// same model's GPU denoiser (src/sampler/sample_gpu.ts: the forward pass and every update on
// the GPU, sampleIdsGpu) at 4 sequences of the shape's T in 64 steps (MDLM's ancestral sampler
// with its cache), timed over whole runs after one untimed run, in tokens per second.
//
//   deno task bench:webgpu [--steps N] [--smoke]
//
// Each shape is checked against the ts backend first: the loss and every gradient of the
// first two sequences of the batch (a worker's shard on the CPU, `src/train/shard.ts`), the
// largest relative error (max |gpu - ts| / max |ts| over each tensor) printed and reported.
// Before sampling is timed, a short run (2 sequences, 4 steps) is checked against the CPU path
// (sampleIds over the model's forward pass on the default CPU backend) from the same seed: the
// same ids, or the script stops.
// --smoke runs both at toy sizes (d 32 and 64, 2 layers, T 16 and 32, B 2, sampling 2 x T in 4
// steps), 2 steps: a check that the script runs, no figure. The last line is one JSON object:
// {"adapter", "msPerStep": {shape: ms}, "tokensPerSecond": {shape: tokens/s}, "maxRelErrorVsTs"}.
// On the software adapter (llvmpipe) the timings say nothing about a real GPU.

import { acquireGpu } from "../src/kernels/webgpu/device.ts";
import { GpuContext } from "../src/kernels/webgpu/context.ts";
import {
  createGpuModel,
  createGpuParamSet,
  createGpuWorkspace,
  readGpuParamSet,
} from "../src/kernels/webgpu/model.ts";
import { createGpuTrainer, gpuGradient, gpuTrainStep } from "../src/kernels/webgpu/train_step.ts";
import { type ModelConfig, resolveConfig } from "../src/model/config.ts";
import { createModel, forward, type Model } from "../src/model/model.ts";
import { type BatchBuffers, createBatch, fillBatch } from "../src/train/batch.ts";
import { Shard } from "../src/train/shard.ts";
import { TRAIN_DEFAULTS } from "../src/train/defaults.ts";
import { Rng } from "../src/rng.ts";
import { sampleIds, type SampleOptions } from "../src/sampler/sample_ids.ts";
import { gpuDenoiserFor, sampleIdsOnGpu } from "../src/sampler/sample_gpu.ts";
import { measureSampleThroughput } from "../src/kernels/webgpu/sampler.ts";

const smoke = Deno.args.includes("--smoke");
const stepsAt = Deno.args.indexOf("--steps");
const STEPS = stepsAt >= 0 ? Number(Deno.args[stepsAt + 1]) : smoke ? 2 : 10;
if (!Number.isInteger(STEPS) || STEPS < 1) {
  throw new RangeError(`--steps: expected an integer >= 1, got ${Deno.args[stepsAt + 1]}`);
}

const V = 512;
const small = resolveConfig("small", { vocabSize: V });
const SHAPES: { label: string; config: ModelConfig; B: number; T: number }[] = smoke
  ? [
    {
      label: "smoke-small",
      config: { ...small, context: 16, dModel: 32, nLayers: 2, dFF: 64 },
      B: 2,
      T: 16,
    },
    {
      label: "smoke-big",
      config: { ...small, context: 32, dModel: 64, nHeads: 8, nLayers: 2, dFF: 128 },
      B: 2,
      T: 32,
    },
  ]
  : [
    { label: "small", config: small, B: 16, T: 128 },
    {
      label: "d512-L8-T256",
      config: { ...small, context: 256, dModel: 512, nHeads: 8, nLayers: 8, dFF: 2048 },
      B: 16,
      T: 256,
    },
  ];
const LOSS = TRAIN_DEFAULTS.loss;
const SEED = 1;
/** Sampling: sequences and steps of a timed run. */
const SAMPLE_B = smoke ? 2 : 4;
const SAMPLE_STEPS = smoke ? 4 : 64;

const gpu = await acquireGpu({ powerPreference: "high-performance" });
if (!gpu.ok) {
  console.error(`no WebGPU device: ${gpu.reason}`);
  Deno.exit(1);
}
const ctx = new GpuContext(gpu.device);
console.log(`adapter: ${gpu.adapterName}${smoke ? " (smoke run: toy sizes, no figures)" : ""}`);

function batchFor(B: number, T: number, step: number): BatchBuffers {
  const rng = new Rng(SEED);
  const tokens = Int32Array.from({ length: 64 * T }, () => Math.floor(rng.uniform() * (V - 1)));
  const batch = createBatch(B, T);
  fillBatch(batch, tokens, { seed: SEED, step, loss: LOSS, vocabSize: V });
  return batch;
}

/** Max relative error of the GPU's loss and gradient of rows 0-1 against the ts backend's. */
async function errorVsTs(model: Model, batch: BatchBuffers): Promise<number> {
  const rows = Math.min(2, batch.B), T = batch.T;
  const grads = new Float32Array(model.params.length);
  const shard = new Shard(model, grads, batch, {
    maxRows: rows,
    seed: SEED,
    loss: LOSS,
    graph: "absorb",
    backend: "ts",
  });
  const wantLoss = shard.gradient(0, 0, rows);
  const gm = createGpuModel(ctx, model);
  const ws = createGpuWorkspace(gm, rows, T);
  const part = {
    B: rows,
    T,
    input: batch.input.subarray(0, rows * T),
    target: batch.target.subarray(0, rows * T),
    weight: batch.weight.subarray(0, rows * T),
    sigma: batch.sigma.subarray(0, rows),
    dsigma: batch.dsigma.subarray(0, rows),
    scale: batch.scale,
  };
  const g = createGpuParamSet(ctx, model.layout, model.config, null);
  const loss = await gpuGradient(gm, ws, g, part, { loss: LOSS }, {
    seed: SEED,
    step: 0,
    firstRow: 0,
  });
  const got = await readGpuParamSet(ctx, g, model.layout);
  let worst = Math.abs(loss - wantLoss) / Math.abs(wantLoss);
  for (const { offset, shape } of Object.values(model.layout)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let diff = 0, scale = 0;
    for (let i = offset; i < offset + n; i++) {
      diff = Math.max(diff, Math.abs(got[i] - grads[i]));
      scale = Math.max(scale, Math.abs(grads[i]));
    }
    if (scale > 0) worst = Math.max(worst, diff / scale);
  }
  return worst;
}

/**
 * The GPU sampler on the model's GPU denoiser: a short run checked against the CPU path (the
 * same ids from the same seed), then tokens per second of `SAMPLE_B` x `T` tokens in
 * `SAMPLE_STEPS` steps.
 */
async function sampleTokensPerSecond(model: Model, T: number): Promise<number> {
  const V = model.config.vocabSize, maskId = V - 1;
  const check: SampleOptions = { method: "ancestral", steps: 4, length: T, batch: 2, seed: SEED };
  const want = sampleIds(
    (ids, sigma) => forward(model, ids, { batch: 2, sigma }),
    V,
    maskId,
    check,
  );
  const got = await sampleIdsOnGpu(model, V, maskId, check, { gpu: ctx });
  const differ = got.ids.filter((id, i) => id !== want.ids[i]).length;
  if (differ > 0) {
    throw new Error(
      `GPU sampling check: expected the CPU path's ids, got ${differ} of ${got.ids.length} ` +
        "different (a float32 near-tie can do this, see src/kernels/webgpu/sampler.ts)",
    );
  }
  const net = gpuDenoiserFor(ctx, model, SAMPLE_B, T);
  try {
    const r = await measureSampleThroughput(ctx, net.denoise, V, maskId, {
      method: "ancestral",
      steps: SAMPLE_STEPS,
      length: T,
      batch: SAMPLE_B,
      seed: SEED,
    });
    return r.tokensPerSecond;
  } finally {
    await ctx.sync();
    net.dispose();
  }
}

const msPerStep: Record<string, number> = {};
const tokensPerSecond: Record<string, number> = {};
let maxRelErrorVsTs = 0;
for (const { label, config, B, T } of SHAPES) {
  const model = createModel(config, { seed: SEED });
  const err = await errorVsTs(model, batchFor(B, T, 0));
  maxRelErrorVsTs = Math.max(maxRelErrorVsTs, err);
  const tr = createGpuTrainer(ctx, model, { batch: B, context: T });
  const batches = Array.from({ length: STEPS + 1 }, (_, s) => batchFor(B, T, s));
  const step = (s: number) =>
    gpuTrainStep(tr, batches[s], {
      loss: LOSS,
      step: s,
      seed: SEED,
      lr: 1e-3,
      weightDecay: 0.01,
      clip: 1,
    });
  await step(0); // warm-up: compiles every pipeline
  const t0 = performance.now();
  let loss = 0;
  for (let s = 1; s <= STEPS; s++) loss = (await step(s)).loss;
  const ms = (performance.now() - t0) / STEPS;
  msPerStep[label] = Number(ms.toFixed(2));
  console.log(
    `${label}: B ${B} T ${T} d ${config.dModel} L ${config.nLayers}: ${ms.toFixed(1)} ms/step, ` +
      `${Math.round(B * T / ms * 1000)} training tokens/s, loss ${loss.toFixed(4)}; ` +
      `max rel error vs ts ${err.toExponential(2)}`,
  );
  const tps = await sampleTokensPerSecond(model, T);
  tokensPerSecond[label] = Math.round(tps);
  console.log(
    `${label}: sampling ${SAMPLE_B} x ${T} tokens in ${SAMPLE_STEPS} steps (ancestral): ` +
      `${Math.round(tps)} tokens/s (the same ids as the CPU path on a 2 x ${T}, 4-step check)`,
  );
}
console.log(JSON.stringify({
  adapter: gpu.adapterName,
  msPerStep,
  tokensPerSecond,
  maxRelErrorVsTs: Number(maxRelErrorVsTs.toExponential(3)),
}));
await ctx.destroy();
