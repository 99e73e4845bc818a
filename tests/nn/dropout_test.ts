import assert from "node:assert/strict";
import {
  dropoutBackward,
  dropoutForward,
  dropoutMask,
  jumpState,
  xoshiroJump,
} from "../../src/nn/dropout.ts";
import { Rng } from "../../src/rng.ts";
import { f32, gradcheck, randn } from "../gradcheck.ts";

Deno.test("dropoutBackward() matches finite differences with a fixed mask", () => {
  const rng = new Rng(7);
  const N = 12;
  const mask = new Float32Array(N);
  dropoutMask(mask, new Rng(3), 0.4, N);
  assert.ok(mask.some((m) => m === 0) && mask.some((m) => m > 1), "mask mixes drops and keeps");
  const inputs = { inp: randn(rng, N) };
  const out = new Float64Array(N);
  gradcheck({
    inputs,
    forward: () => {
      dropoutForward(f32(out), f32(inputs.inp), mask, N);
      return out;
    },
    backward: (dout) => {
      const g = { inp: new Float64Array(N) };
      dropoutBackward(f32(g.inp), f32(dout), mask, N);
      return g;
    },
  });
});

Deno.test("dropoutMask() keeps about 1-p of the elements scaled by 1/(1-p), reproducibly", () => {
  const n = 20000, p = 0.1;
  const a = new Float32Array(n), b = new Float32Array(n);
  dropoutMask(a, new Rng(9, 1), p, n);
  dropoutMask(b, new Rng(9, 1), p, n);
  assert.deepEqual(a, b);
  const kept = a.filter((m) => m !== 0);
  assert.ok(kept.every((m) => m === Math.fround(1 / (1 - p))));
  const frac = kept.length / n;
  // 5 standard deviations of a Binomial(20000, 0.9) fraction is about 0.0106
  assert.ok(Math.abs(frac - 0.9) < 0.0106, `kept fraction ${frac}`);
  // the mean of inp * mask is preserved in expectation
  const mean = a.reduce((s, m) => s + m, 0) / n;
  assert.ok(Math.abs(mean - 1) < 0.012, `mean scale ${mean}`);
});

Deno.test("dropoutMask() writes only [offset, offset + N)", () => {
  const mask = new Float32Array(6).fill(-1);
  dropoutMask(mask, new Rng(1), 0.5, 2, 3);
  assert.deepEqual([...mask.slice(0, 3)], [-1, -1, -1]);
  assert.equal(mask[5], -1);
  assert.ok(mask[3] === 0 || mask[3] === 2);
});

Deno.test("dropoutMask() draws exactly rng.uniform() < p per element and leaves rng where it would", () => {
  for (const p of [0, 0.1, 0.5, 0.999]) {
    const n = 5000;
    const rng = new Rng(4, 2), ref = new Rng(4, 2);
    const mask = new Float32Array(n);
    dropoutMask(mask, rng, p, n);
    const scale = Math.fround(1 / (1 - p));
    for (let i = 0; i < n; i++) {
      const want = ref.uniform() < p ? 0 : scale;
      assert.equal(mask[i], want, `p ${p}, element ${i}`);
    }
    assert.deepEqual(rng.getState(), ref.getState());
  }
});

Deno.test("xoshiroJump(n) takes a generator's state to where n draws leave it, for every n tried", () => {
  for (const n of [0, 1, 2, 31, 64, 4096, 100_003]) {
    const rng = new Rng(11, n);
    const jumped = jumpState(xoshiroJump(n), rng.s);
    for (let i = 0; i < n; i++) rng.nextU32();
    assert.deepEqual(jumped, rng.s, `n ${n}`);
  }
  assert.throws(() => xoshiroJump(-1), /expected an integer number of draws >= 0, got -1/);
  assert.throws(() => xoshiroJump(1.5), /got 1.5/);
});
