import assert from "node:assert/strict";
import {
  erf,
  erfc,
  geluBackward,
  geluCdf,
  geluForward,
  geluForwardKeepGrad,
  reluBackward,
  reluForward,
  scaleBackward,
} from "../../src/nn/activations.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn } from "../gradcheck.ts";

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

Deno.test("geluBackward() matches finite differences", () => {
  const rng = new Rng(21);
  const N = 24;
  const inputs = { inp: randn(rng, N, 2.5) };
  const out = new Float64Array(N);
  gradcheck({
    inputs,
    forward: () => {
      geluForward(f32(out), f32(inputs.inp), N);
      return out;
    },
    backward: (dout) => {
      const g = { inp: new Float64Array(N) };
      geluBackward(f32(g.inp), f32(dout), f32(inputs.inp), N);
      return g;
    },
  });
});

Deno.test("geluForward() is x * Phi(x) with the exact erf (not the tanh form)", () => {
  const x = new Float64Array([-3, -1, 0.5, 2]);
  const out = new Float64Array(4);
  geluForward(f32(out), f32(x), 4);
  // 0.5 * x * (1 + math.erf(x / math.sqrt(2))) in Python (C library erf), float64
  const expected = [
    -0.00404969409489031,
    -0.15865525393145707,
    0.34573123063700656,
    1.9544997361036416,
  ];
  // GELU uses the interpolated erf (absolute error below 1e-9, times |x|)
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

Deno.test("geluCdf() is within 1e-9 of (1 + erf(x / sqrt(2))) / 2 on a dense grid", () => {
  let worst = 0;
  for (let x = -12; x <= 12; x += 0.00137) {
    const exact = 0.5 * erfc(-x / Math.SQRT2);
    worst = Math.max(worst, Math.abs(geluCdf(x) - exact));
  }
  assert.ok(worst < 1e-9, `worst absolute error ${worst}`);
  assert.ok(worst > 0, "the fast path is an interpolation, not the exact function");
});

Deno.test("reluBackward() passes dout exactly where x > 0, including the smallest float32", () => {
  const x = new Float32Array([1e-45, -1e-45, 3.4e38, -3.4e38, 0, -0, 0.5]);
  const dout = new Float32Array([3, 3, 5, 5, 7, 7, 0.1]);
  const dinp = new Float32Array(7).fill(1);
  reluBackward(dinp, dout, x, 7);
  assert.deepEqual([...dinp], [4, 1, 6, 1, 1, 1, Math.fround(1 + Math.fround(0.1))]);
});

Deno.test("geluForward() and geluBackward() are within 1e-9 of the exact x Phi(x) and its derivative", () => {
  const xs: number[] = [];
  for (let x = -12; x <= 12; x += 0.00137) xs.push(x);
  xs.push(-8, 8, -7.999999, 7.999999, 0);
  const x = Float64Array.from(xs);
  const out = new Float64Array(x.length), d = new Float64Array(x.length);
  const ones = new Float64Array(x.length).fill(1);
  geluForward(f32(out), f32(x), x.length);
  geluBackward(f32(d), f32(ones), f32(x), x.length);
  let worstF = 0, worstB = 0;
  for (let i = 0; i < x.length; i++) {
    const cdf = 0.5 * erfc(-x[i] / Math.SQRT2);
    const pdf = Math.exp(-0.5 * x[i] * x[i]) / Math.sqrt(2 * Math.PI);
    worstF = Math.max(worstF, Math.abs(out[i] - x[i] * cdf));
    worstB = Math.max(worstB, Math.abs(d[i] - (cdf + x[i] * pdf)));
  }
  assert.ok(worstF < 1e-9, `forward: worst absolute error ${worstF}`);
  assert.ok(worstB < 1e-9, `backward: worst absolute error ${worstB}`);
  const nan = new Float64Array(1);
  geluForward(f32(nan), f32(new Float64Array([NaN])), 1);
  assert.ok(Number.isNaN(nan[0]));
});

Deno.test("geluForwardKeepGrad() equals geluForward() and leaves geluBackward()'s derivative for scaleBackward()", () => {
  const N = 257;
  const rng = new Rng(3);
  const x = Float32Array.from({ length: N }, () => 12 * (rng.uniform() - 0.5));
  const mask = Float32Array.from({ length: N }, () => (rng.uniform() < 0.2 ? 0 : 1.25));
  const dout = Float32Array.from({ length: N }, () => rng.uniform() - 0.5);
  for (const m of [null, mask]) {
    const want = new Float32Array(N), got = new Float32Array(N);
    geluForward(want, x, N, m);
    const saved = x.slice();
    geluForwardKeepGrad(got, saved, N, m);
    assert.deepEqual(got, want);
    const dWant = new Float32Array(N).fill(0.5), dGot = dWant.slice();
    geluBackward(dWant, dout, x, N, m);
    scaleBackward(dGot, dout, saved, N, m);
    for (let i = 0; i < N; i++) {
      assert.ok(Math.abs(dGot[i] - dWant[i]) <= 1e-6 * Math.abs(dWant[i]) + 1e-7, `element ${i}`);
    }
  }
});
