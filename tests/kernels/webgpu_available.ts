// Whether the WebGPU kernel tests run here: one device for the test file, acquired once. CI
// (CI=true) requires an adapter: .ci/run installs Mesa's software adapter (llvmpipe, Debian's
// mesa-vulkan-drivers) where none is found.

import { envVar } from "../../src/ffi.ts";
import { acquireGpu } from "../../src/kernels/webgpu/device.ts";
import { GpuContext } from "../../src/kernels/webgpu/context.ts";

/** The device, or why there is none. */
export const gpu = await acquireGpu();

/** True in CI, where a missing adapter must fail the suite instead of skipping it. */
export const gpuRequired = envVar("CI") === "true";

/**
 * `ignore` for a test that needs a device: ignored where there is none, except in CI, where the
 * test runs and fails on the missing adapter.
 */
export const ignoreGpu = !gpu.ok && !gpuRequired;

if (gpu.ok) console.error(`WebGPU tests on: ${gpu.adapterName}`);
else {
  console.error(
    `WebGPU tests ${gpuRequired ? "will FAIL (CI requires an adapter)" : "ignored"}: ${gpu.reason}`,
  );
}

let shared: GpuContext | null = null;

/** The test file's context on the one device; throws the missing adapter's reason. */
export function gpuContext(): GpuContext {
  if (!gpu.ok) throw new Error(`no WebGPU device: ${gpu.reason}`);
  shared ??= new GpuContext(gpu.device);
  return shared;
}

/**
 * Runs `fn`, counting the submits to `ctx`'s queue and the buffers mapped (the readbacks) while it
 * runs; the queue and `GPUBuffer` are restored afterwards, also when `fn` throws.
 */
export async function countSubmits(
  ctx: GpuContext,
  fn: () => Promise<unknown>,
): Promise<{ submits: number; maps: number }> {
  const queue = ctx.device.queue;
  const submit = queue.submit;
  const mapAsync = GPUBuffer.prototype.mapAsync;
  const counts = { submits: 0, maps: 0 };
  queue.submit = function (buffers: GPUCommandBuffer[]) {
    counts.submits++;
    return submit.call(this, buffers);
  };
  GPUBuffer.prototype.mapAsync = function (...args: Parameters<GPUBuffer["mapAsync"]>) {
    counts.maps++;
    return mapAsync.apply(this, args);
  };
  try {
    await fn();
  } finally {
    queue.submit = submit;
    GPUBuffer.prototype.mapAsync = mapAsync;
  }
  return counts;
}

/**
 * Runs `fn`, counting the devices requested from any adapter while it runs (each acquisition of
 * the GPU, `acquireGpu` included) and the buffers mapped on any device (the readbacks);
 * `requestDevice` and `mapAsync` are restored afterwards, also when `fn` throws.
 */
export async function countGpuUse(
  fn: () => Promise<unknown>,
): Promise<{ devices: number; maps: number }> {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  const mapAsync = GPUBuffer.prototype.mapAsync;
  const counts = { devices: 0, maps: 0 };
  GPUAdapter.prototype.requestDevice = function (...args: Parameters<GPUAdapter["requestDevice"]>) {
    counts.devices++;
    return requestDevice.apply(this, args);
  };
  GPUBuffer.prototype.mapAsync = function (...args: Parameters<GPUBuffer["mapAsync"]>) {
    counts.maps++;
    return mapAsync.apply(this, args);
  };
  try {
    await fn();
  } finally {
    GPUAdapter.prototype.requestDevice = requestDevice;
    GPUBuffer.prototype.mapAsync = mapAsync;
  }
  return counts;
}
