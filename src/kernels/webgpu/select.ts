/**
 * Choosing the WebGPU backend: `"webgpu"` asked for by name, or found by `"auto"`.
 *
 * `"auto"` picks WebGPU only for a real GPU: an adapter that is not a software one (the
 * adapter's `isFallbackAdapter`, or a name naming Mesa's llvmpipe or lavapipe, or SwiftShader)
 * and that passes a self-check (one matrix product on the GPU against the TypeScript reference).
 * Otherwise it is `resolveBackend("auto")` of `src/nn/backend.ts`, as before, with the reason
 * WebGPU was passed over in the note. `"webgpu"` by name takes any adapter that passes the
 * self-check, software ones included (slow, but correct: the tests run on llvmpipe), and is an
 * error where there is none.
 *
 * Verdicts are remembered per process (per page or worker in a browser), by the adapter's
 * description: `"auto"` looks no further after rejecting an adapter, and an adapter that passed
 * the self-check once is not checked again. A later call still acquires a device of its own
 * (the caller owns and destroys its context); only the self-check is skipped, when the adapter
 * found has the same description as the one that passed.
 *
 * @module
 */

import { type BackendChoice, type BackendName, resolveBackend } from "../../nn/backend.ts";
import type { BlasOptions } from "../blas.ts";
import { matmulABt } from "../matmul_ref.ts";
import { GpuContext } from "./context.ts";
import { acquireGpu } from "./device.ts";
import { gpuMatmulABt } from "./matmul.ts";

/** What {@linkcode resolveAnyBackend} chose: a CPU backend, or WebGPU with its context. */
export type AnyResolvedBackend =
  | { backend: BackendName; note: string; gpu?: undefined }
  | { backend: "webgpu"; note: string; gpu: GpuContext };

/**
 * Whether an adapter is a software one: its `isFallbackAdapter`, or a description naming
 * llvmpipe, lavapipe or SwiftShader.
 *
 * @param name The adapter's description (as `describeAdapter` gives it).
 * @param fallback Its `isFallbackAdapter`, where known.
 * @returns True for a software adapter.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isSoftwareAdapter } from "./select.ts";
 *
 * assert.equal(isSoftwareAdapter("llvmpipe (LLVM 15.0.6, 256 bits); vendor 65541"), true);
 * assert.equal(isSoftwareAdapter("NVIDIA H200; vendor 4318", false), false);
 * ```
 */
export function isSoftwareAdapter(name: string, fallback?: boolean): boolean {
  return fallback === true || /llvmpipe|lavapipe|swiftshader/i.test(name);
}

/**
 * The self-check: a 33 x 17 by 17 x 29 product with bias on the GPU against the TypeScript
 * reference, within the summation-order bound `2 (K + 2) u` of the terms' magnitudes.
 *
 * @param ctx The context to check.
 * @returns `null` when it passes, else what went wrong (one line).
 */
export async function gpuSelfCheck(ctx: GpuContext): Promise<string | null> {
  const M = 33, K = 17, N = 29;
  let seed = 12345;
  const next = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const a = Float32Array.from({ length: M * K }, next);
  const b = Float32Array.from({ length: N * K }, next);
  const bias = Float32Array.from({ length: N }, next);
  const want = new Float32Array(M * N);
  matmulABt(want, a, b, bias, M, K, N);
  const ta = ctx.upload(a), tb = ctx.upload(b), tbias = ctx.upload(bias), tc = ctx.zeros(M * N);
  try {
    gpuMatmulABt(ctx, tc, ta, tb, tbias, M, K, N);
    const got = await ctx.readF32(tc);
    const bound = 2 * (K + 2) * 2 ** -24 * (K + 1);
    for (let i = 0; i < M * N; i++) {
      if (!(Math.abs(got[i] - want[i]) <= bound)) {
        return `the self-check's matrix product differs from the reference at ${i}: ${got[i]} vs ${
          want[i]
        }`;
      }
    }
    return null;
  } catch (e) {
    return `the self-check failed: ${String((e as Error)?.message ?? e).split("\n")[0]}`;
  } finally {
    for (const t of [ta, tb, tbias, tc]) t.destroy();
  }
}

/** The verdict of the first `"auto"` look at the GPU in this process (a rejected adapter). */
let autoRejected: string | undefined;

/** The adapters (by description) that passed the self-check in this process. */
const selfChecked = new Set<string>();

/** Options of {@linkcode resolveAnyBackend}. */
export interface ResolveAnyOptions extends BlasOptions {
  /** A reason for `"auto"` not to look at the GPU at all (the caller asked for the CPU pool). */
  cpuOnly?: string;
  /** Run the self-check even where this adapter passed it earlier in the process. */
  recheck?: boolean;
}

/**
 * Resolves a backend choice, WebGPU included (see the module's notes). The CPU choices are
 * `resolveBackend`'s.
 *
 * Each call that resolves to WebGPU acquires a device of its own; the self-check runs on the
 * first acquisition of an adapter in the process (or with `recheck`), and is skipped on later
 * ones of an adapter with the same description that passed it.
 *
 * @param choice `"auto"`, `"webgpu"`, `"blas"`, `"wasm"` or `"ts"`.
 * @param options Where the BLAS library is (`path`); `cpuOnly`, a reason for `"auto"` not to
 *   look at the GPU at all (the caller asked for something only the CPU pool does); `recheck`,
 *   to run the self-check however the adapter fared before.
 * @returns The backend, a one-line note on the choice, and for WebGPU the context (owned by
 *   the caller: destroy it when done).
 * @throws Error for `"webgpu"` without an adapter or one that fails the self-check.
 */
export async function resolveAnyBackend(
  choice: BackendChoice,
  options: ResolveAnyOptions = {},
): Promise<AnyResolvedBackend> {
  if (choice !== "auto" && choice !== "webgpu") return resolveBackend(choice, options);
  const cpu = (why: string): AnyResolvedBackend => {
    const r = resolveBackend("auto", options);
    return { backend: r.backend, note: `${r.note} (no webgpu: ${why})` };
  };
  if (choice === "auto" && options.cpuOnly !== undefined) return cpu(options.cpuOnly);
  if (choice === "auto" && autoRejected !== undefined) return cpu(autoRejected);
  const found = await acquireGpu({ powerPreference: "high-performance" });
  if (!found.ok) {
    if (choice === "webgpu") {
      throw new Error(`WebGPU backend unavailable: expected an adapter, got ${found.reason}`);
    }
    return cpu(autoRejected = found.reason);
  }
  const info = found.adapter.info as { isFallbackAdapter?: boolean } | undefined;
  const fallback = info?.isFallbackAdapter ??
    (found.adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  const software = isSoftwareAdapter(found.adapterName, fallback);
  if (choice === "auto" && software) {
    found.device.destroy();
    return cpu(autoRejected = `${found.adapterName} is a software adapter`);
  }
  const ctx = new GpuContext(found.device);
  const known = options.recheck !== true && selfChecked.has(found.adapterName);
  const failed = known ? null : await gpuSelfCheck(ctx);
  if (failed === null) selfChecked.add(found.adapterName);
  else {
    selfChecked.delete(found.adapterName);
    await ctx.destroy().catch(() => {});
    if (choice === "webgpu") {
      throw new Error(`WebGPU backend unavailable: ${found.adapterName}: ${failed}`);
    }
    return cpu(autoRejected = `${found.adapterName}: ${failed}`);
  }
  const note = `webgpu: ${found.adapterName}${software ? " (a software adapter: slow)" : ""}`;
  return { backend: "webgpu", note, gpu: ctx };
}
