import assert from "node:assert/strict";
import { layernormBackward, layernormForward } from "../../src/nn/layernorm.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn, zerosLike } from "../gradcheck.ts";

Deno.test("layernormBackward() matches finite differences", () => {
  const rng = new Rng(3);
  const N = 6, C = 4;
  const inputs = { inp: randn(rng, N * C, 2), weight: randn(rng, C), bias: randn(rng, C) };
  const out = new Float64Array(N * C);
  const mean = new Float64Array(N), rstd = new Float64Array(N);
  gradcheck({
    inputs,
    forward: () => {
      layernormForward(
        f32(out),
        f32(mean),
        f32(rstd),
        f32(inputs.inp),
        f32(inputs.weight),
        f32(inputs.bias),
        N,
        C,
      );
      return out;
    },
    backward: (dout) => {
      const g = zerosLike(inputs);
      layernormBackward(
        f32(g.inp),
        f32(g.weight),
        f32(g.bias),
        f32(dout),
        f32(inputs.inp),
        f32(inputs.weight),
        f32(mean),
        f32(rstd),
        N,
        C,
      );
      return g;
    },
  });
});

Deno.test("layernormForward() gives zero mean and unit biased variance before the affine", () => {
  const rng = new Rng(4);
  const C = 8;
  const x = Float32Array.from(randn(rng, C, 3));
  const out = new Float32Array(C);
  layernormForward(
    out,
    new Float32Array(1),
    new Float32Array(1),
    x,
    new Float32Array(C).fill(1),
    new Float32Array(C),
    1,
    C,
  );
  const m = out.reduce((a, b) => a + b, 0) / C;
  const v = out.reduce((a, b) => a + (b - m) ** 2, 0) / C;
  assert.ok(Math.abs(m) < 1e-6);
  // var / (var + 1e-5) is just below 1
  assert.ok(v < 1 && v > 0.999, `variance ${v}`);
});
