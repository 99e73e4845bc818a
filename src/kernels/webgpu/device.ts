/**
 * WebGPU device acquisition: an adapter and a device wherever `navigator.gpu` exists (Deno 2,
 * Chromium, other browsers with WebGPU), or a one-line reason where it does not.
 *
 * No runtime-specific API is used here: only the standard `navigator.gpu` entry point, so the
 * same module runs in Deno, in a browser page and in a worker. On a machine without a GPU, Deno
 * finds Mesa's software adapter ("llvmpipe") where Debian's `mesa-vulkan-drivers` (or the EGL
 * pair `libegl1` + `libgl1-mesa-dri`) is installed; it is slow but runs compute shaders
 * correctly, which is what the kernel tests need. The one runtime-aware step, keeping Mesa's
 * driver quiet on a headless Linux machine, goes through `src/ffi.ts` (`quietHeadlessDisplay`).
 *
 * @example Acquire a device, or say why not
 * ```ts
 * import { acquireGpu } from "./device.ts";
 *
 * const gpu = await acquireGpu();
 * if (gpu.ok) {
 *   console.log(`WebGPU adapter: ${gpu.adapterName}`);
 *   gpu.device.destroy();
 * } else {
 *   console.log(`no WebGPU: ${gpu.reason}`);
 * }
 * ```
 *
 * @module
 */

import { quietHeadlessDisplay } from "../../ffi.ts";

/** Options of {@linkcode acquireGpu}. */
export interface AcquireGpuOptions {
  /** Passed to `requestAdapter`. Default: none (the runtime's choice). */
  powerPreference?: GPUPowerPreference;
}

/** What {@linkcode acquireGpu} gives back: a device, or why there is none. */
export type GpuAcquire =
  | {
    ok: true;
    /** The adapter the device came from. */
    adapter: GPUAdapter;
    /** The device, with the adapter's limits for storage buffers and workgroup memory. */
    device: GPUDevice;
    /** The adapter in words, from {@linkcode describeAdapter}. */
    adapterName: string;
  }
  | {
    ok: false;
    /** One line: why no device could be had. */
    reason: string;
  };

/**
 * The adapter in words: its description (for Mesa's software adapter, "llvmpipe (LLVM ...)"),
 * then vendor and architecture where the runtime reports them, and "(fallback)" for a fallback
 * adapter.
 *
 * @param adapter The adapter (or anything with an `info` of `GPUAdapterInfo`'s fields).
 * @returns For example `llvmpipe (LLVM 15.0.6, 256 bits); vendor 65541`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { describeAdapter } from "./device.ts";
 *
 * const info = { vendor: "mesa", architecture: "", description: "llvmpipe", device: "" };
 * assert.equal(describeAdapter({ info } as unknown as GPUAdapter), "llvmpipe; vendor mesa");
 * ```
 */
export function describeAdapter(adapter: GPUAdapter): string {
  const info = adapter.info;
  const parts: string[] = [];
  if (info?.description) parts.push(info.description);
  if (info?.vendor) parts.push(`vendor ${info.vendor}`);
  if (info?.architecture) parts.push(`architecture ${info.architecture}`);
  if (info?.device && info.device !== "0") parts.push(`device ${info.device}`);
  let s = parts.length > 0 ? parts.join("; ") : "an adapter that reports no info";
  // isFallbackAdapter moved from the adapter to its info; read either
  const fallback = (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter ??
    (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  if (fallback === true) s += " (fallback)";
  return s;
}

/** The limits the kernels want raised to the adapter's maximum where it allows more. */
const WANTED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
] as const;

/**
 * Requests a WebGPU adapter and a device from `navigator.gpu`. Never throws: where the runtime
 * has no WebGPU, no adapter, or refuses the device, the result says which, in one line.
 *
 * @param options Adapter options.
 * @returns `{ ok: true, adapter, device, adapterName }` or `{ ok: false, reason }`.
 */
export async function acquireGpu(options: AcquireGpuOptions = {}): Promise<GpuAcquire> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  const gpu = nav?.gpu;
  if (!gpu) {
    return {
      ok: false,
      reason: "navigator.gpu is missing: this runtime has no WebGPU (expected Deno 2 or a " +
        "browser with WebGPU)",
    };
  }
  quietHeadlessDisplay();
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter(
      options.powerPreference ? { powerPreference: options.powerPreference } : undefined,
    );
  } catch (e) {
    return { ok: false, reason: `navigator.gpu.requestAdapter() threw: ${oneLine(e)}` };
  }
  if (!adapter) {
    return {
      ok: false,
      reason: "navigator.gpu.requestAdapter() found no adapter (no GPU driver; on Debian, " +
        "mesa-vulkan-drivers gives the software adapter llvmpipe)",
    };
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of WANTED_LIMITS) {
    const v = adapter.limits[name];
    if (typeof v === "number") requiredLimits[name] = v;
  }
  try {
    const device = await adapter.requestDevice({ requiredLimits });
    return { ok: true, adapter, device, adapterName: describeAdapter(adapter) };
  } catch (e) {
    return {
      ok: false,
      reason: `adapter ${describeAdapter(adapter)} refused a device: ${oneLine(e)}`,
    };
  }
}

function oneLine(e: unknown): string {
  return String(e instanceof Error ? e.message : e).split("\n")[0];
}
