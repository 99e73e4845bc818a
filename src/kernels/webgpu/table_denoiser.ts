/**
 * A denoiser made of lookup tables, computed bit for bit alike on the CPU and on the GPU: the
 * samplers' test and benchmark stand-in for a model, so that {@linkcode sampleIdsGpu} can be
 * checked against `sampleIds` token for token, and timed on its own.
 *
 * The output at `(b, t, v)` is `(E[left, v] + F[right, v]) + G[t, v]`, plus `sigma[b]` when
 * time-conditioned, with `left` and `right` the ids beside position t (row V past either end) and
 * E, F `(V+1, V)`, G `(T, V)` uniform in `[-scale, scale]` from `new Rng(seed, ...)`. Each sum is
 * one correctly rounded float32 addition on both sides, in the same order.
 *
 * @module
 */

import { Rng } from "../../rng.ts";
import type { Denoiser } from "../../sampler/sample_ids.ts";
import { checkDims, type GpuContext, type GpuTensor, grid } from "./context.ts";
import type { GpuDenoiser } from "./sampler.ts";
import { entry } from "./wgsl.ts";

/** Options of {@linkcode createTableDenoiser}. */
export interface TableDenoiserOptions {
  /** B: sequences per call. */
  batch: number;
  /** T: tokens per sequence. */
  length: number;
  /** V: vocabulary size including MASK. */
  V: number;
  /** Seed of the tables. */
  seed: number;
  /** Whether the output adds sigma (time conditioning). Default false. */
  timeConditioned?: boolean;
  /** Half-width of the tables' values. Default 2. */
  scale?: number;
}

/** The same denoiser on both sides, and a way to free the GPU side. */
export interface TableDenoiser {
  /** The CPU denoiser, for `sampleIds`. */
  cpu: Denoiser;
  /** The GPU denoiser, for `sampleIdsGpu`: one dispatch into a reused output buffer. */
  gpu: GpuDenoiser;
  /** Frees the tables and the output buffer. */
  destroy(): void;
}

function table(n: number, seed: number, key: number, scale: number): Float32Array {
  const r = new Rng(seed, key);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (2 * r.uniform() - 1) * scale;
  return x;
}

/**
 * Creates a table denoiser on `ctx` (see the module doc).
 *
 * @param ctx The context of the GPU side.
 * @param options Shape, seed and time conditioning.
 * @returns The CPU and GPU denoisers.
 *
 * @example The two sides agree
 * ```ts
 * import assert from "node:assert/strict";
 * import { acquireGpu, GpuContext, GpuTensor } from "./mod.ts";
 * import { createTableDenoiser } from "./table_denoiser.ts";
 *
 * const gpu = await acquireGpu();
 * if (gpu.ok) {
 *   const ctx = new GpuContext(gpu.device);
 *   const d = createTableDenoiser(ctx, { batch: 1, length: 3, V: 5, seed: 1 });
 *   const ids = new Int32Array([4, 0, 4]), sigma = new Float32Array([1]);
 *   const out = d.gpu(ctx.upload(ids), sigma, 1);
 *   assert.deepEqual([...await ctx.read(out)], [...d.cpu(ids, sigma)]);
 *   await ctx.destroy();
 * }
 * ```
 */
export function createTableDenoiser(ctx: GpuContext, options: TableDenoiserOptions): TableDenoiser {
  const { batch: B, length: T, V, seed } = options;
  checkDims("createTableDenoiser", { B, T, V, seed });
  if (V < 1 || T < 1 || B < 1) {
    throw new RangeError(
      `createTableDenoiser: expected batch, length, V >= 1, got ${B}, ${T}, ${V}`,
    );
  }
  const useSigma = options.timeConditioned ?? false;
  const scale = options.scale ?? 2;
  const E = table((V + 1) * V, seed, 1, scale);
  const F = table((V + 1) * V, seed, 2, scale);
  const G = table(T * V, seed, 3, scale);
  const f = Math.fround;
  const cpu: Denoiser = (ids, sigma) => {
    const out = new Float32Array(B * T * V);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const left = t > 0 ? ids[b * T + t - 1] : V;
        const right = t < T - 1 ? ids[b * T + t + 1] : V;
        for (let v = 0; v < V; v++) {
          let x = f(f(E[left * V + v] + F[right * V + v]) + G[t * V + v]);
          if (useSigma) x = f(x + sigma[b]);
          out[(b * T + t) * V + v] = x;
        }
      }
    }
    return out;
  };
  const tensors: GpuTensor[] = [ctx.upload(E), ctx.upload(F), ctx.upload(G)];
  const sig = ctx.zeros(B), out = ctx.zeros(B * T * V);
  tensors.push(sig, out);
  const pipeline = ctx.pipeline(
    "tableDenoiser",
    () =>
      `struct Params { B: u32, T: u32, V: u32, useSigma: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> E: array<f32>;
@group(0) @binding(3) var<storage, read> F: array<f32>;
@group(0) @binding(4) var<storage, read> G: array<f32>;
@group(0) @binding(5) var<storage, read> sigma: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
${entry(64)}
  let j = group * 64u + l;
  if (j >= p.B * p.T * p.V) { return; }
  let v = j % p.V;
  let i = j / p.V;
  let t = i % p.T;
  var left = p.V;
  if (t > 0u) { left = u32(ids[i - 1u]); }
  var right = p.V;
  if (t + 1u < p.T) { right = u32(ids[i + 1u]); }
  var x = (E[left * p.V + v] + F[right * p.V + v]) + G[t * p.V + v];
  if (p.useSigma != 0u) { x = x + sigma[i / p.T]; }
  out[j] = x;
}`,
  );
  const gpu: GpuDenoiser = (ids, sigma, batch) => {
    if (batch !== B || sigma.length !== B) {
      throw new RangeError(
        `table denoiser: expected batch ${B}, got ${batch} (sigma ${sigma.length})`,
      );
    }
    if (useSigma) ctx.write(sig, sigma);
    ctx.dispatch(
      pipeline,
      [out, ids, tensors[0], tensors[1], tensors[2], sig],
      [B, T, V, useSigma ? 1 : 0],
      grid(Math.ceil((B * T * V) / 64)),
    );
    return out;
  };
  return { cpu, gpu, destroy: () => tensors.forEach((t) => t.destroy()) };
}
