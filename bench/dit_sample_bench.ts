/**
 * Sampling speed of a DiT (SEDD's and MDLM's denoiser) with random weights, through the float32
 * forward pass of `src/model/dit_fast.ts`; and the memory of loading a half-float checkpoint.
 *
 * ```sh
 * deno task bench:dit              # SEDD small's shape: 1024 tokens, 128 steps, wasm, 2 workers
 * deno task bench:dit --shape tiny --length 64 --steps 4        # a smoke run
 * deno task bench:dit --workers 1                               # one thread, no pool
 * deno task bench:dit --batch 2 --split positions               # batch 2, sequences cut
 * deno task bench:dit --shape 50258,768,12,12,128 --backend blas --batch 2
 * deno task bench:dit --load            # peak RSS of loading a SEDD-small-shaped F16 file
 * deno bench --allow-read bench/dit_sample_bench.ts   # one small forward pass per iteration
 * ```
 *
 * `--sample` (what `deno task bench:dit` passes) samples `--batch` sequences of `--length`
 * tokens (default 1 x 1024) in `--steps` steps (default 128) with SEDD's Euler sampler on the
 * absorbing graph, after one warm-up forward pass, and prints one JSON line: the shape, backend,
 * evaluations, seconds, tokens/s and seconds per forward pass, and the process's RSS.
 * `--workers` (default 2) runs the forward passes on a `createDitPool` of that many workers,
 * `--split auto|positions|sequences` (default `auto`: whole sequences when the workers divide
 * the batch, else positions) cut the rows; `--workers 1` runs one `DitRunner` on the main thread;
 * `--weights stage` has the matmuls read the weights staged from the shared parameters instead of
 * a copy in each worker's kernels' memory.
 * The RSS is the main process's, which holds the workers' memory too (each worker's kernels'
 * memory has its own copy of the parameters). The `blas` backend's library may use threads of its
 * own inside each matmul.
 * `--shape` is `small` (SEDD small: V 50258, d 768, 12 blocks, 12 heads, cond 128), `tiny`
 * (V 512, d 64, 2, 4, 32) or `V,d,L,NH,cond`.
 *
 * `--load` writes a state dict of `--shape` in F16 (or `--dtype BF16` or `F32`) with random
 * values to a temporary file, then reads it in a fresh process and loads it with `modelFromSafetensors` (each tensor decoded from the file's
 * bytes into the model's float32 buffer), printing one JSON line with the file's size, the model's
 * float32 bytes and the RSS before reading, after reading and after loading.
 *
 * `--sample --backend webgpu` runs the same sampling with the DiT and the sampler on the GPU
 * (`createGpuDitDenoiser` and `sampleIdsGpu` of `src/kernels/webgpu/`), after one warm-up forward
 * pass that compiles the shaders, and prints the same JSON line plus `adapter` and
 * `sameTokensAsCpu` (`deno task bench:dit --backend webgpu`). `--check` then samples up to 64
 * tokens in 4 steps on both the GPU and one wasm runner and says whether the tokens agree (null
 * without it).
 *
 * @module
 */

import { createDit, type DitConfig, type DitModel, ditParamTable } from "../src/model/dit.ts";
import { createDitRunner, type DitWeights } from "../src/model/dit_fast.ts";
import { createDitPool, type DitSplit } from "../src/model/dit_pool.ts";
import { sampleIds, sampleIdsAsync } from "../src/sampler/sample_ids.ts";
import { serializeSafetensors, type TensorInput } from "../src/checkpoint/safetensors.ts";
import { modelFromSafetensors } from "../src/checkpoint/model_io.ts";
import type { BackendName } from "../src/nn/backend.ts";
import { acquireGpu } from "../src/kernels/webgpu/device.ts";
import { GpuContext } from "../src/kernels/webgpu/context.ts";
import { createGpuDitDenoiser } from "../src/kernels/webgpu/dit.ts";
import { sampleIdsGpu } from "../src/kernels/webgpu/sampler.ts";

type Shape = Pick<DitConfig, "vocabSize" | "dModel" | "nLayers" | "nHeads" | "condDim">;

const SHAPES: Record<string, Shape> = {
  small: { vocabSize: 50258, dModel: 768, nLayers: 12, nHeads: 12, condDim: 128 },
  tiny: { vocabSize: 512, dModel: 64, nLayers: 2, nHeads: 4, condDim: 32 },
};

function parseShape(s: string): Shape {
  if (SHAPES[s]) return SHAPES[s];
  const v = s.split(",").map(Number);
  if (v.length !== 5 || v.some((x) => !Number.isInteger(x) || x < 1)) {
    throw new RangeError(
      `Invalid --shape: expected small, tiny or V,d,L,NH,cond (positive integers), got ${s}`,
    );
  }
  const [vocabSize, dModel, nLayers, nHeads, condDim] = v;
  return { vocabSize, dModel, nLayers, nHeads, condDim };
}

/** A DiT of `shape` with every weight random (cheap: no initialisation drawn). */
function randomDit(shape: Shape, context: number, seed = 1): DitModel {
  const size = ditParamTable({ ...shape, context, kind: "dit", scaleBySigma: true, output: "sedd" })
    .reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  const model = createDit({ ...shape, context }, { params: new Float32Array(size) });
  let s = seed >>> 0 || 1;
  const p = model.params;
  for (let i = 0; i < p.length; i++) {
    s ^= s << 13, s ^= s >>> 17, s ^= s << 5;
    p[i] = ((s >>> 0) / 4294967296 - 0.5) * 0.04;
  }
  for (const [name, { offset, shape: sh }] of Object.entries(model.layout)) {
    if (/norm(1|2|_final)\.weight$/.test(name)) p.fill(1, offset, offset + sh[0]);
  }
  return model;
}

function flag(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

function intFlag(name: string, fallback: number): number {
  const s = flag(name);
  if (s === undefined) return fallback;
  const v = Number(s);
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(`Invalid ${name}: expected a positive integer, got ${s}`);
  }
  return v;
}

const mib = (b: number) => Math.round(b / 2 ** 20);

async function sampleRun(): Promise<void> {
  const shapeName = flag("--shape") ?? "small";
  const shape = parseShape(shapeName);
  const T = intFlag("--length", 1024), steps = intFlag("--steps", 128);
  const B = intFlag("--batch", 1), workers = intFlag("--workers", 2);
  const backend = (flag("--backend") ?? "wasm") as BackendName;
  const split = (flag("--split") ?? "auto") as DitSplit;
  const weights = (flag("--weights") ?? "copy") as DitWeights;
  const t0 = performance.now();
  const model = randomDit(shape, T);
  const single = workers === 1
    ? createDitRunner(model, { batch: B, length: T, backend, weights })
    : null;
  const pool = single === null
    ? await createDitPool(model, { workers, batch: B, length: T, backend, split, weights })
    : null;
  try {
    const forward = (ids: Int32Array, sigma: Float32Array) =>
      single ? single.forward(ids, { batch: B, sigma }) : pool!.forward(ids, { batch: B, sigma });
    const setupS = (performance.now() - t0) / 1000;
    const V = shape.vocabSize;
    const warm = new Int32Array(B * T).fill(V - 1);
    const w0 = performance.now();
    await forward(warm, new Float32Array(B).fill(1));
    const warmS = (performance.now() - w0) / 1000;
    const s0 = performance.now();
    const r = await sampleIdsAsync(forward, V, V - 1, eulerOptions(steps, T, B));
    const seconds = (performance.now() - s0) / 1000;
    console.log(resultLine(
      { shapeName, shape, model, B, T, steps, evaluations: r.evaluations, setupS, warmS, seconds },
      { backend, workers, split: single ? "none" : split, weights },
      { arenaMiB: single ? mib(single.arenaBytes) : undefined },
    ));
  } finally {
    pool?.terminate();
  }
}

/** SEDD's Euler sampler on the absorbing graph over a DiT's own log-scores, as both runs take it. */
function eulerOptions(steps: number, T: number, B: number) {
  return {
    method: "euler",
    steps,
    length: T,
    batch: B,
    seed: 1,
    output: "logScore",
    scaleBySigma: false, // the DiT's SEDD output is already scaled by sigma
    timeConditioned: true,
  } as const;
}

/** What a sampling run measured, for {@linkcode resultLine}. */
interface RunFigures {
  shapeName: string;
  shape: Shape;
  model: DitModel;
  B: number;
  T: number;
  steps: number;
  evaluations: number;
  setupS: number;
  warmS: number;
  seconds: number;
}

/**
 * The JSON line of a sampling run: the shape, then the backend's own fields, then the timings,
 * then `tail` (the arena, and the GPU run's token check) before the RSS.
 */
function resultLine(
  f: RunFigures,
  backend: Record<string, unknown>,
  tail: Record<string, unknown>,
) {
  const { arenaMiB, ...rest } = tail;
  return JSON.stringify({
    bench: "dit_sample",
    shape: f.shapeName,
    ...f.shape,
    params: f.model.params.length,
    ...backend,
    batch: f.B,
    length: f.T,
    steps: f.steps,
    evaluations: f.evaluations,
    setupSeconds: +f.setupS.toFixed(3),
    warmupForwardSeconds: +f.warmS.toFixed(3),
    seconds: +f.seconds.toFixed(3),
    secondsPerForward: +(f.seconds / f.evaluations).toFixed(4),
    tokensPerSecond: +((f.B * f.T) / f.seconds).toFixed(2),
    arenaMiB,
    rssMiB: mib(Deno.memoryUsage().rss),
    ...rest,
  });
}

/** `--sample --backend webgpu`: the DiT's forward pass and the sampler on the GPU. */
async function gpuSampleRun(): Promise<void> {
  const gpu = await acquireGpu({ powerPreference: "high-performance" });
  if (!gpu.ok) throw new Error(`--backend webgpu: no WebGPU device: ${gpu.reason}`);
  const ctx = new GpuContext(gpu.device);
  const shapeName = flag("--shape") ?? "small";
  const shape = parseShape(shapeName);
  const T = intFlag("--length", 1024), steps = intFlag("--steps", 128);
  const B = intFlag("--batch", 1);
  const t0 = performance.now();
  const model = randomDit(shape, T);
  const denoise = createGpuDitDenoiser(ctx, model, { batch: B, context: T });
  await ctx.sync();
  const setupS = (performance.now() - t0) / 1000;
  const V = shape.vocabSize;
  const w0 = performance.now();
  const warm = ctx.upload(new Int32Array(B * T).fill(V - 1));
  denoise(warm, new Float32Array(B).fill(1), B);
  await ctx.sync();
  warm.destroy();
  const warmS = (performance.now() - w0) / 1000;
  const euler = eulerOptions(steps, T, B);
  const s0 = performance.now();
  const r = await sampleIdsGpu(ctx, denoise, V, V - 1, euler);
  const seconds = (performance.now() - s0) / 1000;
  let sameTokensAsCpu: boolean | null = null;
  if (Deno.args.includes("--check")) {
    // a short run on both sides: up to 64 tokens in 4 steps, the CPU on one wasm runner
    const check = { ...euler, steps: 4, length: Math.min(T, 64) };
    const runner = createDitRunner(model, { batch: B, length: check.length, backend: "wasm" });
    const cpu = (ids: Int32Array, sigma: Float32Array) => runner.forward(ids, { batch: B, sigma });
    const want = sampleIds(cpu, V, V - 1, check);
    const got = await sampleIdsGpu(ctx, denoise, V, V - 1, check);
    sameTokensAsCpu = got.ids.every((v, i) => v === want.ids[i]);
  }
  console.log(resultLine(
    { shapeName, shape, model, B, T, steps, evaluations: r.evaluations, setupS, warmS, seconds },
    { backend: "webgpu", adapter: gpu.adapterName, threads: 1 },
    // no wasm arena: the weights and activations are GPU buffers
    { arenaMiB: 0, sameTokensAsCpu },
  ));
  await ctx.destroy();
}

/** The bits of 1 and a random value of about +-1/64 in each dtype the loader reads. */
const FILE_DTYPES = {
  F16: { one: 0x3c00, random: (s: number) => (s & 0x8000) | 0x2000 | (s & 0x7ff) },
  BF16: { one: 0x3f80, random: (s: number) => (s & 0x8000) | 0x3c00 | (s & 0xff) },
  F32: { one: 1, random: (s: number) => ((s >>> 0) / 4294967296 - 0.5) * 0.04 },
} as const;

/** Writes a random state dict of `shape` in `dtype` to `path` (small values, the norms 1). */
function writeStateDict(shape: Shape, dtype: keyof typeof FILE_DTYPES, path: string): void {
  const table = ditParamTable({
    ...shape,
    context: 1024,
    kind: "dit",
    scaleBySigma: true,
    output: "sedd",
  });
  const { one, random } = FILE_DTYPES[dtype];
  const tensors: Record<string, TensorInput> = {};
  let s = 7;
  for (const { name, shape: sh } of table) {
    const n = sh.reduce((a, b) => a * b, 1);
    const data = dtype === "F32" ? new Float32Array(n) : new Uint16Array(n);
    if (/norm(1|2|_final)\.weight$/.test(name)) data.fill(one);
    else {
      for (let i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >>> 17, s ^= s << 5;
        data[i] = random(s);
      }
    }
    tensors[name] = { dtype, shape: sh, data };
  }
  Deno.writeFileSync(path, serializeSafetensors(tensors));
}

function loadRun(path: string, nHeads: number): void {
  const rss0 = Deno.memoryUsage().rss;
  const bytes = Deno.readFileSync(path);
  const rss1 = Deno.memoryUsage().rss;
  const t0 = performance.now();
  const { model } = modelFromSafetensors(bytes, { config: { kind: "dit", nHeads } });
  const seconds = (performance.now() - t0) / 1000;
  const rss2 = Deno.memoryUsage().rss;
  console.log(JSON.stringify({
    bench: "dit_load",
    dtype: flag("--dtype") ?? "F16",
    params: model.params.length,
    fileMiB: mib(bytes.length),
    modelMiB: mib(model.params.byteLength),
    rssBeforeMiB: mib(rss0),
    rssAfterReadMiB: mib(rss1),
    rssAfterLoadMiB: mib(rss2),
    loadSeconds: +seconds.toFixed(3),
  }));
}

async function loadFileRun(): Promise<void> {
  const shapeName = flag("--shape") ?? "small";
  const shape = parseShape(shapeName);
  const dtype = flag("--dtype") ?? "F16";
  if (!Object.hasOwn(FILE_DTYPES, dtype)) {
    throw new RangeError(`Invalid --dtype: expected F16, BF16 or F32, got ${dtype}`);
  }
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  try {
    writeStateDict(shape, dtype as keyof typeof FILE_DTYPES, path);
    // a fresh process, so that the RSS is the loader's alone
    const self = new URL(import.meta.url).pathname;
    const args = ["run", "--allow-read", self, "--read-file", path, "--dtype", dtype];
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...args, "--heads", String(shape.nHeads)],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`the loading process failed with code ${out.code}`);
  } finally {
    await Deno.remove(path);
  }
}

if (import.meta.main && Deno.args.includes("--sample") && flag("--backend") === "webgpu") {
  await gpuSampleRun();
} else if (import.meta.main && Deno.args.includes("--load")) {
  await loadFileRun();
} else if (import.meta.main && Deno.args.includes("--read-file")) {
  loadRun(flag("--read-file")!, intFlag("--heads", 12));
} else if (import.meta.main && Deno.args.includes("--sample")) {
  await sampleRun();
} else {
  // deno bench: one forward pass of a tiny DiT per iteration, on each backend
  const T = 128;
  const model = randomDit(SHAPES.tiny, T);
  const tokens = new Int32Array(T).fill(SHAPES.tiny.vocabSize - 1);
  const sigma = new Float32Array([1]);
  for (const backend of ["wasm", "ts"] as const) {
    const runner = createDitRunner(model, { batch: 1, length: T, backend });
    Deno.bench(`dit forward: tiny shape, T=${T} (${backend})`, { group: "dit" }, () => {
      runner.forward(tokens, { batch: 1, sigma });
    });
  }
}
