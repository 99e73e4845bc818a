// The backend's choice (src/kernels/webgpu/select.ts): an adapter that passed the self-check is
// not checked again in the process, though every call still acquires a device of its own. The
// self-check is seen through the one readback it makes (GPUBuffer.mapAsync, counted).
//
// Ignored without an adapter, except in CI (CI=true), where a missing adapter fails the tests.

import assert from "node:assert/strict";
import {
  type AnyResolvedBackend,
  gpuSelfCheck,
  resolveAnyBackend,
} from "../../src/kernels/webgpu/select.ts";
import type { GpuContext } from "../../src/kernels/webgpu/context.ts";
import { countGpuUse, gpu, ignoreGpu } from "./webgpu_available.ts";

Deno.test({
  name:
    "resolveAnyBackend(webgpu) self-checks an adapter once per process, and acquires a device per call",
  ignore: ignoreGpu,
  async fn() {
    const contexts: (GpuContext | undefined)[] = [];
    try {
      // recheck runs the self-check whatever came before: its readback is seen
      let r: AnyResolvedBackend | undefined;
      const first = await countGpuUse(async () => {
        r = await resolveAnyBackend("webgpu", { recheck: true });
      });
      contexts.push(r!.gpu);
      assert.equal(r!.backend, "webgpu");
      assert.deepEqual(first, { devices: 1, maps: 1 }, "a device and the self-check's readback");
      // the same adapter again: a device of its own, no self-check
      const again = await countGpuUse(async () => {
        r = await resolveAnyBackend("webgpu");
      });
      contexts.push(r!.gpu);
      assert.equal(r!.backend, "webgpu");
      assert.ok(r!.note.startsWith(`webgpu: ${gpu.ok ? gpu.adapterName : "?"}`), r!.note);
      assert.deepEqual(again, { devices: 1, maps: 0 }, "a device, and no self-check");
      assert.notEqual(contexts[1], contexts[0]);
      // the unchecked context is the caller's and works: the self-check passes on it
      assert.equal(await gpuSelfCheck(contexts[1]!), null);
    } finally {
      for (const ctx of contexts) await ctx?.destroy().catch(() => {});
    }
  },
});
