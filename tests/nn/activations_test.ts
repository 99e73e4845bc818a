import assert from "node:assert/strict";
import {
  erf,
  erfc,
  geluForwardKeepGrad,
  reluBackward,
  reluForward,
  scaleBackward,
} from "../../src/nn/activations.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn } from "../gradcheck.ts";

/** GELU of `x` into `out`, leaving `x` alone; returns gelu'(x), as the model keeps it. */
function gelu(out: Float32Array, x: Float32Array, N: number, mask: Float32Array | null = null) {
  const saved = x.slice();
  geluForwardKeepGrad(out, saved, N, mask);
  return saved;
}

Deno.test("erf() matches tabulated values to 1e-15", () => {
  // Python's math.erf / math.erfc (C library), float64
  const table: [number, number][] = [
    [0.1, 0.1124629160182849],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [3, 0.9999779095030014],
  ];
  for (const [x, v] of table) {
    assert.ok(Math.abs(erf(x) - v) < 1e-15, `erf(${x}) = ${erf(x)}, expected ${v}`);
    assert.equal(erf(-x), -erf(x));
  }
  assert.equal(erf(10), 1);
});

Deno.test("erfc() keeps relative accuracy in the tail", () => {
  const table: [number, number][] = [
    [3, 2.2090496998585438e-5],
    [4, 1.541725790028002e-8],
    [5, 1.5374597944280351e-12],
  ];
  for (const [x, v] of table) assert.ok(Math.abs(erfc(x) / v - 1) < 1e-12, `erfc(${x})`);
  assert.ok(Math.abs(erfc(-1) - (1 + 0.8427007929497149)) < 1e-15);
});

Deno.test("erf() is continuous across its series/fraction switch and has derivative 2/sqrt(pi) e^-x^2", () => {
  assert.ok(Math.abs(erf(3 - 1e-12) - erf(3 + 1e-12)) < 1e-14);
  for (const x of [0.3, 1.7, 2.9, 3.1, 4.5]) {
    const h = 1e-5;
    const num = (erf(x + h) - erf(x - h)) / (2 * h);
    const ana = (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x);
    assert.ok(Math.abs(num - ana) < 1e-9 * Math.max(1, ana) + 1e-11, `x=${x}: ${num} vs ${ana}`);
  }
});

Deno.test("geluForwardKeepGrad() and scaleBackward() match finite differences", () => {
  const rng = new Rng(21);
  const N = 24;
  const inputs = { inp: randn(rng, N, 2.5) };
  const out = new Float64Array(N);
  gradcheck({
    inputs,
    forward: () => {
      gelu(f32(out), f32(inputs.inp), N);
      return out;
    },
    backward: (dout) => {
      const g = { inp: new Float64Array(N) };
      const saved = gelu(f32(new Float64Array(N)), f32(inputs.inp), N);
      scaleBackward(f32(g.inp), f32(dout), saved, N);
      return g;
    },
  });
});

Deno.test("geluForwardKeepGrad() is x * Phi(x) with the exact erf (not the tanh form)", () => {
  const x = new Float64Array([-3, -1, 0.5, 2]);
  const out = new Float64Array(4);
  gelu(f32(out), f32(x), 4);
  // 0.5 * x * (1 + math.erf(x / math.sqrt(2))) in Python (C library erf), float64
  const expected = [
    -0.00404969409489031,
    -0.15865525393145707,
    0.34573123063700656,
    1.9544997361036416,
  ];
  // GELU interpolates a table (absolute error below 1e-9)
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(out[i] - expected[i]) < 1e-8, `${out[i]}`);
  const tanhForm = 0.5 * -1 * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (-1 - 0.044715)));
  assert.ok(Math.abs(out[1] - tanhForm) > 1e-5);
});

Deno.test("reluBackward() matches finite differences away from 0 and passes 0 at 0", () => {
  const rng = new Rng(22);
  const N = 16;
  const inputs = { inp: randn(rng, N) };
  const out = new Float64Array(N);
  gradcheck({
    inputs,
    forward: () => {
      reluForward(f32(out), f32(inputs.inp), N);
      return out;
    },
    backward: (dout) => {
      const g = { inp: new Float64Array(N) };
      reluBackward(f32(g.inp), f32(dout), f32(inputs.inp), N);
      return g;
    },
  });
  const d = new Float32Array(1);
  reluBackward(d, new Float32Array([1]), new Float32Array([0]), 1);
  assert.equal(d[0], 0);
});

Deno.test("reluForward() is exactly max(x, 0), including -0, huge values and NaN", () => {
  const x = new Float32Array([-0, 0, 3.4e38, -3.4e38, 1e-45, -1e-45, 0.1, NaN]);
  const out = new Float32Array(x.length);
  reluForward(out, x, x.length);
  assert.deepEqual([...out.slice(0, 7)], [0, 0, x[2], 0, x[4], 0, x[6]]);
  assert.ok(Object.is(out[0], 0), "relu(-0) is +0");
  assert.ok(Number.isNaN(out[7]));
});

Deno.test("reluBackward() passes dout exactly where x > 0, including the smallest float32", () => {
  const x = new Float32Array([1e-45, -1e-45, 3.4e38, -3.4e38, 0, -0, 0.5]);
  const dout = new Float32Array([3, 3, 5, 5, 7, 7, 0.1]);
  const dinp = new Float32Array(7).fill(1);
  reluBackward(dinp, dout, x, 7);
  assert.deepEqual([...dinp], [4, 1, 6, 1, 1, 1, Math.fround(1 + Math.fround(0.1))]);
});

Deno.test("geluForwardKeepGrad() is within 1e-9 of the exact x Phi(x) and keeps its derivative", () => {
  const xs: number[] = [];
  for (let x = -12; x <= 12; x += 0.00137) xs.push(x);
  xs.push(-8, 8, -7.999999, 7.999999, 0);
  const x = Float64Array.from(xs);
  const out = new Float64Array(x.length);
  const d = gelu(f32(out), f32(x), x.length);
  let worstF = 0, worstB = 0;
  for (let i = 0; i < x.length; i++) {
    const cdf = 0.5 * erfc(-x[i] / Math.SQRT2);
    const pdf = Math.exp(-0.5 * x[i] * x[i]) / Math.sqrt(2 * Math.PI);
    worstF = Math.max(worstF, Math.abs(out[i] - x[i] * cdf));
    worstB = Math.max(worstB, Math.abs(d[i] - (cdf + x[i] * pdf)));
  }
  assert.ok(worstF < 1e-9, `forward: worst absolute error ${worstF}`);
  assert.ok(worstB < 1e-9, `derivative: worst absolute error ${worstB}`);
  assert.ok(worstF > 0, "the fast path is an interpolation, not the exact function");
  const nan = new Float64Array(1);
  const dnan = gelu(f32(nan), f32(new Float64Array([NaN])), 1);
  assert.ok(Number.isNaN(nan[0]) && Number.isNaN(dnan[0]));
});

Deno.test("geluForwardKeepGrad() and scaleBackward() with a dropout mask: the float32 GELU times the mask", () => {
  const N = 257;
  const rng = new Rng(3);
  const x = Float32Array.from({ length: N }, () => 12 * (rng.uniform() - 0.5));
  const mask = Float32Array.from({ length: N }, () => (rng.uniform() < 0.2 ? 0 : 1.25));
  const dout = Float32Array.from({ length: N }, () => rng.uniform() - 0.5);
  const plain = new Float32Array(N), masked = new Float32Array(N);
  const saved = gelu(plain, x, N);
  assert.deepEqual(gelu(masked, x, N, mask), saved, "the mask does not change the derivative");
  for (let i = 0; i < N; i++) {
    assert.equal(masked[i], Math.fround(plain[i] * mask[i]), `element ${i}`);
  }
  const dGot = new Float32Array(N).fill(0.5), dPlain = dGot.slice();
  scaleBackward(dGot, dout, saved, N, mask);
  scaleBackward(dPlain, Float32Array.from(dout, (d, i) => d * mask[i]), saved, N);
  assert.deepEqual(dGot, dPlain);
  assert.ok(dGot.some((d, i) => d !== 0.5 && mask[i] !== 0));
});
