// WebGPU matmul kernels: GFLOP/s of the tiled WGSL matmuls on the adapter Deno finds, at the
// `small` model's linear-layer shapes (B*T = 2048 rows, d 128, 3d 384, dFF 512), plus square
// 512^3 (and 1024^3 with --big). Kernel timings only: not a training step.
//
//   deno run --allow-read bench/webgpu_bench.ts [--big] [--reps N]
//
// Each shape: one warm-up, then N (default 5) dispatches in one command buffer, timed from
// submit to the GPU going idle; the wall time per dispatch gives the GFLOP/s. Each result is
// checked against the TypeScript reference (max relative error printed). The last line is one
// JSON object: {"adapter", "shapes": [{label, ms, gflops, maxRelErrorVsTs}]}. On the software
// adapter (llvmpipe) the figures say nothing about a real GPU.

import { refKernels } from "../src/kernels/matmul_ref.ts";
import { acquireGpu } from "../src/kernels/webgpu/device.ts";
import { GpuContext } from "../src/kernels/webgpu/context.ts";
import { gpuMatmul, type MatmulKind } from "../src/kernels/webgpu/matmul.ts";
import { Rng } from "../src/rng.ts";

const SHAPES: { label: string; kind: MatmulKind; M: number; K: number; N: number }[] = [
  { label: "qkv forward x W^T", kind: "ABt", M: 2048, K: 128, N: 384 },
  { label: "ffn up forward x W^T", kind: "ABt", M: 2048, K: 128, N: 512 },
  { label: "ffn down input grad dy W", kind: "AB", M: 2048, K: 512, N: 128 },
  { label: "ffn up weight grad dy^T x", kind: "AtB", M: 512, K: 2048, N: 128 },
  { label: "square 512", kind: "AB", M: 512, K: 512, N: 512 },
];
if (Deno.args.includes("--big")) {
  SHAPES.push({ label: "square 1024", kind: "AB", M: 1024, K: 1024, N: 1024 });
}
const repsAt = Deno.args.indexOf("--reps");
const REPS = repsAt >= 0 ? Number(Deno.args[repsAt + 1]) : 5;
if (!Number.isInteger(REPS) || REPS < 1) {
  throw new RangeError(`--reps: expected an integer >= 1, got ${Deno.args[repsAt + 1]}`);
}

const gpu = await acquireGpu({ powerPreference: "high-performance" });
if (!gpu.ok) {
  console.error(`no WebGPU device: ${gpu.reason}`);
  Deno.exit(1);
}
const ctx = new GpuContext(gpu.device);
console.log(`adapter: ${gpu.adapterName}`);

const rng = new Rng(1);
const rand = (n: number) => Float32Array.from({ length: n }, () => rng.uniform() * 2 - 1);

const results = [];
for (const { label, kind, M, K, N } of SHAPES) {
  const a = rand(M * K), b = rand(K * N);
  const ga = ctx.upload(a), gb = ctx.upload(b), gc = ctx.zeros(M * N);
  gpuMatmul(ctx, kind, gc, ga, gb, null, M, K, N);
  const got = await ctx.readF32(gc); // warm-up: compiles the pipeline, checks the result
  const want = new Float32Array(M * N);
  if (kind === "AB") refKernels.matmulAB(want, a, b, M, K, N);
  else if (kind === "ABt") refKernels.matmulABt(want, a, b, null, M, K, N);
  else refKernels.matmulAtB(want, a, b, M, K, N);
  let diff = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  const t0 = performance.now();
  for (let r = 0; r < REPS; r++) gpuMatmul(ctx, kind, gc, ga, gb, null, M, K, N);
  await ctx.sync();
  const ms = (performance.now() - t0) / REPS;
  const gflops = (2 * M * K * N) / (ms * 1e6);
  const maxRelErrorVsTs = scale > 0 ? diff / scale : diff;
  console.log(
    `${label.padEnd(28)} ${kind.padEnd(4)} ${M}x${K}x${N}  ${ms.toFixed(2)} ms  ` +
      `${gflops.toFixed(1)} GFLOP/s  max rel err ${maxRelErrorVsTs.toExponential(1)}`,
  );
  results.push({ label, ms, gflops, maxRelErrorVsTs });
  for (const t of [ga, gb, gc]) t.destroy();
}
console.log(JSON.stringify({ adapter: gpu.adapterName, shapes: results }));
await ctx.destroy();
