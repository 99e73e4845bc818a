import assert from "node:assert/strict";
import {
  gatedResidualBackward,
  gatedResidualForward,
  modulateBackward,
  modulateForward,
  timestepEmbedding,
} from "../../src/nn/adaln.ts";
import { siluBackward, siluForward } from "../../src/nn/activations.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn } from "../gradcheck.ts";

const B = 2, T = 3, C = 4, K = 6;

Deno.test("modulateBackward() matches finite differences (shift chunk 3, scale chunk 4 of 6)", () => {
  const rng = new Rng(41);
  const inputs = { inp: randn(rng, B * T * C), mod: randn(rng, B * K * C) };
  const out = new Float64Array(B * T * C);
  gradcheck({
    inputs,
    forward: () => {
      modulateForward(f32(out), f32(inputs.inp), f32(inputs.mod), 3, 4, { K, B, T, C });
      return out;
    },
    backward: (dout) => {
      const g = { inp: new Float64Array(B * T * C), mod: new Float64Array(B * K * C) };
      modulateBackward(
        f32(g.inp),
        f32(g.mod),
        f32(dout),
        f32(inputs.inp),
        f32(inputs.mod),
        3,
        4,
        { K, B, T, C },
      );
      // the other chunks get no gradient
      for (let b = 0; b < B; b++) {
        for (const j of [0, 1, 2, 5]) {
          for (let c = 0; c < C; c++) assert.equal(g.mod[b * K * C + j * C + c], 0);
        }
      }
      return g;
    },
  });
});

Deno.test("gatedResidualBackward() matches finite differences (gate chunk 2 of 6)", () => {
  const rng = new Rng(42);
  const inputs = {
    x: randn(rng, B * T * C),
    y: randn(rng, B * T * C),
    mod: randn(rng, B * K * C),
  };
  const out = new Float64Array(B * T * C);
  gradcheck({
    inputs,
    forward: () => {
      gatedResidualForward(f32(out), f32(inputs.x), f32(inputs.y), f32(inputs.mod), 2, {
        K,
        B,
        T,
        C,
      });
      return out;
    },
    backward: (dout) => {
      const g = {
        x: new Float64Array(B * T * C),
        y: new Float64Array(B * T * C),
        mod: new Float64Array(B * K * C),
      };
      gatedResidualBackward(
        f32(g.x),
        f32(g.y),
        f32(g.mod),
        f32(dout),
        f32(inputs.y),
        f32(inputs.mod),
        2,
        { K, B, T, C },
      );
      return g;
    },
  });
});

Deno.test("siluBackward() matches finite differences", () => {
  const rng = new Rng(43);
  const N = 20;
  const inputs = { inp: randn(rng, N, 3) };
  const out = new Float64Array(N);
  gradcheck({
    inputs,
    forward: () => {
      siluForward(f32(out), f32(inputs.inp), N);
      return out;
    },
    backward: (dout) => {
      const g = { inp: new Float64Array(N) };
      siluBackward(f32(g.inp), f32(dout), f32(inputs.inp), N);
      return g;
    },
  });
});

Deno.test("timestepEmbedding() is [cos(sigma f), sin(sigma f)] with f_i = 10000^(-i/half)", () => {
  const D = 256;
  const sigma = new Float64Array([0.5, 7.25]);
  const out = new Float64Array(2 * D);
  timestepEmbedding(f32(out), sigma, 2, D);
  for (const [b, i] of [[0, 0], [1, 0], [1, 1], [0, 64], [1, 127]]) {
    const f = Math.pow(10000, -i / 128);
    assert.ok(Math.abs(out[b * D + i] - Math.cos(sigma[b] * f)) < 1e-12);
    assert.ok(Math.abs(out[b * D + 128 + i] - Math.sin(sigma[b] * f)) < 1e-12);
  }
  // each (cos, sin) pair lies on the unit circle
  for (let i = 0; i < 128; i++) {
    assert.ok(Math.abs(out[D + i] ** 2 + out[D + 128 + i] ** 2 - 1) < 1e-12);
  }
});
