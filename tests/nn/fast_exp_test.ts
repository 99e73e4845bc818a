import assert from "node:assert/strict";
import { addScaledExp, expFast, expScaledInPlace, expSum } from "../../src/nn/fast_exp.ts";

Deno.test("expFast() is within 1e-8 relative of Math.exp over the whole range", () => {
  let worst = 0;
  for (let x = -707.9; x < 708.9; x += 0.0137) {
    worst = Math.max(worst, Math.abs(expFast(x) / Math.exp(x) - 1));
  }
  for (let x = -40; x <= 1; x += 0.000731) {
    worst = Math.max(worst, Math.abs(expFast(x) / Math.exp(x) - 1));
  }
  assert.ok(worst < 1e-8, `worst relative error ${worst}`);
  assert.ok(worst > 0, "an approximation, not Math.exp itself");
});

Deno.test("expFast() edges: 0 -> 1, underflow to 0, overflow to Infinity, NaN stays NaN", () => {
  assert.equal(expFast(0), 1);
  assert.equal(expFast(-Infinity), 0);
  assert.equal(expFast(-800), 0);
  assert.equal(expFast(800), Infinity);
  assert.equal(expFast(Infinity), Infinity);
  assert.ok(Number.isNaN(expFast(NaN)));
});

Deno.test("expScaledInPlace() is within 1e-8 relative of Math.exp and returns the row sum", () => {
  const xs: number[] = [];
  for (let x = -80; x <= 0; x += 0.00391) xs.push(x);
  const a = Float64Array.from(xs);
  const sum = expScaledInPlace(a as unknown as Float32Array, 0, a.length, 2, 1);
  let worst = 0, want = 0;
  for (let i = 0; i < xs.length; i++) {
    const e = Math.exp(xs[i] * 2 - 1);
    want += e;
    worst = Math.max(worst, Math.abs(a[i] / e - 1));
  }
  assert.ok(worst < 1e-8, `worst relative error ${worst}`);
  assert.ok(Math.abs(sum / want - 1) < 1e-8);
  const edge = new Float32Array([-1e30, NaN, 0]);
  expScaledInPlace(edge, 0, 3, 1, 0);
  assert.equal(edge[0], 0);
  assert.ok(Number.isNaN(edge[1]));
  assert.equal(edge[2], 1);
});

Deno.test("expSum() and addScaledExp() agree with Math.exp to 1e-8 relative", () => {
  const n = 4000;
  const a = Float64Array.from({ length: n }, (_, i) => -60 + 61 * i / n) as unknown as Float32Array;
  let want = 0;
  for (let i = 0; i < n; i++) want += Math.exp(a[i] - 0.5);
  assert.ok(Math.abs(expSum(a, 0, n, 0.5) / want - 1) < 1e-8);
  const d = new Float64Array(n).fill(2) as unknown as Float32Array;
  addScaledExp(d, a, 100, n - 200, 0.5, -3);
  for (let i = 0; i < n; i++) {
    const e = i >= 100 && i < n - 100 ? 2 - 3 * Math.exp(a[i] - 0.5) : 2;
    assert.ok(
      Math.abs(d[i] - e) <= 1e-8 * Math.max(1, Math.abs(e)),
      `element ${i}: ${d[i]} vs ${e}`,
    );
  }
});
