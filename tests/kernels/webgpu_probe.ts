// Prints the WebGPU adapter Deno finds here, or why there is none (exit status 1). Used by
// .ci/run to decide whether Mesa's software adapter must be installed.
//
//   deno run tests/kernels/webgpu_probe.ts

import { acquireGpu } from "../../src/kernels/webgpu/device.ts";

const gpu = await acquireGpu();
if (gpu.ok) {
  console.log(`WebGPU adapter: ${gpu.adapterName}`);
  gpu.device.destroy();
} else {
  console.error(`no WebGPU adapter: ${gpu.reason}`);
  Deno.exit(1);
}
