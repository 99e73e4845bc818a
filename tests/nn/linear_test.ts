import assert from "node:assert/strict";
import { linearBackward, linearForward } from "../../src/nn/linear.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn, zerosLike } from "../gradcheck.ts";

Deno.test("linearBackward() matches finite differences (OC not a multiple of 4)", () => {
  const rng = new Rng(1);
  const N = 6, IC = 5, OC = 7;
  const inputs = { inp: randn(rng, N * IC), weight: randn(rng, OC * IC), bias: randn(rng, OC) };
  const out = new Float64Array(N * OC);
  gradcheck({
    inputs,
    forward: () => {
      linearForward(f32(out), f32(inputs.inp), f32(inputs.weight), f32(inputs.bias), N, IC, OC);
      return out;
    },
    backward: (dout) => {
      const g = zerosLike(inputs);
      linearBackward(
        f32(g.inp),
        f32(g.weight),
        f32(g.bias),
        f32(dout),
        f32(inputs.inp),
        f32(inputs.weight),
        N,
        IC,
        OC,
      );
      return g;
    },
  });
});

Deno.test("linearForward() equals a naive x W^T + b, with and without bias", () => {
  const rng = new Rng(2);
  const N = 3, IC = 5, OC = 9;
  const x = Float32Array.from(randn(rng, N * IC));
  const w = Float32Array.from(randn(rng, OC * IC));
  const b = Float32Array.from(randn(rng, OC));
  const out = new Float32Array(N * OC);
  const outNoBias = new Float32Array(N * OC);
  linearForward(out, x, w, b, N, IC, OC);
  linearForward(outNoBias, x, w, null, N, IC, OC);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < OC; o++) {
      let s = 0;
      for (let i = 0; i < IC; i++) s += x[n * IC + i] * w[o * IC + i];
      assert.ok(Math.abs(outNoBias[n * OC + o] - s) < 1e-5);
      assert.ok(Math.abs(out[n * OC + o] - (s + b[o])) < 1e-5);
    }
  }
});

Deno.test("linearBackward() adds into existing gradients", () => {
  const x = new Float32Array([1, 2]);
  const w = new Float32Array([3, 4]);
  const dinp = new Float32Array([10, 10]);
  const dw = new Float32Array([1, 1]);
  const db = new Float32Array([5]);
  linearBackward(dinp, dw, db, new Float32Array([2]), x, w, 1, 2, 1);
  assert.deepEqual([...dinp], [16, 18]);
  assert.deepEqual([...dw], [3, 5]);
  assert.deepEqual([...db], [7]);
});
