import assert from "node:assert/strict";
import { crossEntropyBackward, crossEntropyForward } from "../../src/nn/cross_entropy.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn } from "../gradcheck.ts";

Deno.test("crossEntropyBackward() matches finite differences with per-position weights", () => {
  const rng = new Rng(31);
  const N = 6, V = 5;
  const inputs = { logits: randn(rng, N * V, 2) };
  const targets = new Int32Array([0, 4, 2, 2, 1, 3]);
  const weights = new Float32Array([1, 0, 0.5, 2, 0.25, 1]);
  const losses = new Float64Array(N), lse = new Float64Array(N);
  const total = new Float64Array(1);
  gradcheck({
    inputs,
    forward: () => {
      total[0] = crossEntropyForward(
        f32(losses),
        f32(lse),
        f32(inputs.logits),
        targets,
        weights,
        N,
        V,
      );
      return total;
    },
    backward: (dout) => {
      const g = { logits: new Float64Array(N * V) };
      crossEntropyBackward(
        f32(g.logits),
        dout[0],
        f32(inputs.logits),
        f32(lse),
        targets,
        weights,
        N,
        V,
      );
      return g;
    },
  });
});

Deno.test("crossEntropyForward() returns sum of weight * (logsumexp - logit of target)", () => {
  const logits = new Float32Array([1, 2, 3, 0, 0, 0]);
  const targets = new Int32Array([2, 1]);
  const weights = new Float32Array([2, 0.5]);
  const losses = new Float32Array(2);
  const loss = crossEntropyForward(losses, new Float32Array(2), logits, targets, weights, 2, 3);
  const l0 = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)) - 3;
  const l1 = Math.log(3);
  assert.ok(Math.abs(losses[0] - 2 * l0) < 1e-6);
  assert.ok(Math.abs(losses[1] - 0.5 * l1) < 1e-6);
  assert.ok(Math.abs(loss - (2 * l0 + 0.5 * l1)) < 1e-6);
});

Deno.test("crossEntropyForward() is finite for huge logits and ignores weight-0 rows", () => {
  const logits = new Float32Array([1000, -1000, NaN, NaN]);
  const loss = crossEntropyForward(
    new Float32Array(2),
    new Float32Array(2),
    logits,
    new Int32Array([0, 1]),
    new Float32Array([1, 0]),
    2,
    2,
  );
  assert.equal(loss, 0);
  const d = new Float32Array(4);
  crossEntropyBackward(
    d,
    1,
    logits,
    new Float32Array([1000, 0]),
    new Int32Array([0, 1]),
    new Float32Array([1, 0]),
    2,
    2,
  );
  assert.deepEqual([...d], [0, 0, 0, 0]);
});
