import assert from "node:assert/strict";
import { residualBackward, residualForward } from "../../src/nn/residual.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn } from "../gradcheck.ts";

Deno.test("residualBackward() matches finite differences", () => {
  const rng = new Rng(6);
  const N = 8;
  const inputs = { a: randn(rng, N), b: randn(rng, N) };
  const out = new Float64Array(N);
  gradcheck({
    inputs,
    forward: () => {
      residualForward(f32(out), f32(inputs.a), f32(inputs.b), N);
      return out;
    },
    backward: (dout) => {
      const g = { a: new Float64Array(N), b: new Float64Array(N) };
      residualBackward(f32(g.a), f32(g.b), f32(dout), N);
      return g;
    },
  });
});

Deno.test("residualForward() may write into one of its inputs", () => {
  const a = new Float32Array([1, 2]);
  residualForward(a, a, new Float32Array([5, 5]), 2);
  assert.deepEqual([...a], [6, 7]);
});
