import assert from "node:assert/strict";
import { residualForward } from "../../src/nn/residual.ts";

Deno.test("residualForward() may write into one of its inputs", () => {
  const a = new Float32Array([1, 2]);
  residualForward(a, a, new Float32Array([5, 5]), 2);
  assert.deepEqual([...a], [6, 7]);
});

Deno.test("residualForward() is the elementwise sum", () => {
  const out = new Float32Array(3);
  residualForward(out, new Float32Array([1, -2, 0.5]), new Float32Array([3, 2, 0.25]), 3);
  assert.deepEqual([...out], [4, 0, 0.75]);
});
