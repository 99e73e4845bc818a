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

/** A method to count calls of: its owner and its name. */
type Spy = [owner: object, method: string];

/**
 * Runs `fn` with the calls of each spied method counted (in the order given); every method is
 * restored afterwards, also when `fn` throws.
 */
async function countCalls(spies: Spy[], fn: () => Promise<unknown>): Promise<number[]> {
  const counts = spies.map(() => 0);
  const owners = spies.map(([owner]) => owner as Record<string, (...a: unknown[]) => unknown>);
  const saved = spies.map(([_, method], i) => owners[i][method]);
  spies.forEach(([_, method], i) => {
    owners[i][method] = function (this: unknown, ...args: unknown[]) {
      counts[i]++;
      return saved[i].apply(this, args);
    };
  });
  try {
    await fn();
  } finally {
    spies.forEach(([_, method], i) => owners[i][method] = saved[i]);
  }
  return counts;
}

/**
 * Runs `fn`, counting the submits to `ctx`'s queue and the buffers mapped (the readbacks) while it
 * runs; the queue and `GPUBuffer` are restored afterwards, also when `fn` throws.
 */
export async function countSubmits(
  ctx: GpuContext,
  fn: () => Promise<unknown>,
): Promise<{ submits: number; maps: number }> {
  const [submits, maps] = await countCalls(
    [[ctx.device.queue, "submit"], [GPUBuffer.prototype, "mapAsync"]],
    fn,
  );
  return { submits, maps };
}

/**
 * Runs `fn`, counting the devices requested from any adapter while it runs (each acquisition of
 * the GPU, `acquireGpu` included) and the buffers mapped on any device (the readbacks);
 * `requestDevice` and `mapAsync` are restored afterwards, also when `fn` throws.
 */
export async function countGpuUse(
  fn: () => Promise<unknown>,
): Promise<{ devices: number; maps: number }> {
  const [devices, maps] = await countCalls(
    [[GPUAdapter.prototype, "requestDevice"], [GPUBuffer.prototype, "mapAsync"]],
    fn,
  );
  return { devices, maps };
}
