// Sampling throughput on the GPU: tokens/s of sampleIdsGpu (ids, outputs and every update on the
// GPU) on the adapter Deno finds, with the table denoiser of src/kernels/webgpu/table_denoiser.ts
// standing in for the model, so the figure is the sampler's own cost (the model's forward pass
// is not in it).
//
//   deno run --allow-read bench/webgpu_sample_bench.ts [--method M] [--batch B] [--length T]
//     [--vocab V] [--steps S] [--runs N] [--check]
//
// Defaults: tweedie, B 16, T 128, V 1024, 128 steps, 3 runs. --check also runs the CPU sampleIds
// on the same denoiser and seed and reports whether the tokens are the same. The last line is one
// JSON object: {"adapter", "method", "batch", "length", "vocab", "steps", "secondsPerRun",
// "tokensPerSecond", "sameTokensAsCpu"}. On the software adapter (llvmpipe) the figures say
// nothing about a real GPU.

import { acquireGpu } from "../src/kernels/webgpu/device.ts";
import { GpuContext } from "../src/kernels/webgpu/context.ts";
import { measureSampleThroughput, sampleIdsGpu } from "../src/kernels/webgpu/sampler.ts";
import { createTableDenoiser } from "../src/kernels/webgpu/table_denoiser.ts";
import { sampleIds, type SampleMethod, type SampleOptions } from "../src/sampler/sample_ids.ts";

function flag(name: string, dflt: number): number {
  const at = Deno.args.indexOf(`--${name}`);
  if (at < 0) return dflt;
  const v = Number(Deno.args[at + 1]);
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(`--${name}: expected an integer >= 1, got ${Deno.args[at + 1]}`);
  }
  return v;
}
const methodAt = Deno.args.indexOf("--method");
const method = (methodAt >= 0 ? Deno.args[methodAt + 1] : "tweedie") as SampleMethod;
const B = flag("batch", 16), T = flag("length", 128), V = flag("vocab", 1024);
const steps = flag("steps", 128), runs = flag("runs", 3);

const gpu = await acquireGpu({ powerPreference: "high-performance" });
if (!gpu.ok) {
  console.error(`no WebGPU device: ${gpu.reason}`);
  Deno.exit(1);
}
const ctx = new GpuContext(gpu.device);
console.log(`adapter: ${gpu.adapterName}`);
const den = createTableDenoiser(ctx, { batch: B, length: T, V, seed: 1 });
const options: SampleOptions = { method, steps, length: T, batch: B, seed: 7 };
const m = await measureSampleThroughput(ctx, den.gpu, V, V - 1, options, runs);
console.log(
  `${method} B ${B} T ${T} V ${V} steps ${steps}: ${(m.seconds * 1000).toFixed(1)} ms/run, ` +
    `${m.tokensPerSecond.toFixed(0)} tokens/s (${m.evaluations} denoiser calls per run)`,
);
let same: boolean | null = null;
if (Deno.args.includes("--check")) {
  const got = await sampleIdsGpu(ctx, den.gpu, V, V - 1, options);
  const want = sampleIds(den.cpu, V, V - 1, options);
  same = got.ids.every((v, i) => v === want.ids[i]);
  console.log(`same tokens as the CPU sampleIds: ${same}`);
}
den.destroy();
await ctx.destroy();
console.log(JSON.stringify({
  adapter: gpu.adapterName,
  method,
  batch: B,
  length: T,
  vocab: V,
  steps,
  secondsPerRun: m.seconds,
  tokensPerSecond: m.tokensPerSecond,
  sameTokensAsCpu: same,
}));
