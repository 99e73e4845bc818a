// seddShift (src/diffusion/shift.ts): SEDD's scale-by-sigma shift log(expm1(sigma)) + log(V - 1),
// exact where expm1 is, accurate for small sigma (where exp(sigma) - 1 loses digits or is 0), and
// the same value the loss, the samplers and the DiT's logits used to compute inline.

import assert from "node:assert/strict";
import { seddShift } from "../../src/diffusion/mod.ts";
import { absorbLogScore } from "../../src/diffusion/losses.ts";
import { addSigmaShift } from "../../src/diffusion/dit_logits.ts";

Deno.test("seddShift is log(expm1(sigma)) + log(V - 1), exactly, at moderate sigma", () => {
  assert.equal(seddShift(Math.LN2, 2), 0); // expm1(ln 2) = 1, log 1 = 0
  assert.equal(seddShift(Math.LN2, 9), Math.log(8));
  for (const sigma of [1e-3, 0.05, 0.5, 1, 3.7, 20]) {
    for (const V of [2, 13, 50258]) {
      assert.equal(seddShift(sigma, V), Math.log(Math.expm1(sigma)) + Math.log(V - 1));
    }
  }
  // exp(shift) is (V - 1) expm1(sigma): at sigma = 3 to float64 rounding
  const want = 12 * (Math.exp(3) - 1);
  assert.ok(Math.abs(Math.exp(seddShift(3, 13)) - want) <= 4e-16 * want);
});

Deno.test("seddShift keeps its digits at small sigma, where exp(sigma) - 1 does not", () => {
  const V = 13;
  for (const sigma of [1e-6, 1e-10, 1e-14, 1e-20, 1e-300]) {
    // log(expm1(s)) = log(s) + log(expm1(s) / s) = log(s) + s/2 + s^2/24 - s^4/2880 + ...,
    // the terms past s^2 far below float64's rounding at these s
    const want = Math.log(sigma) + sigma / 2 + sigma * sigma / 24 + Math.log(V - 1);
    const got = seddShift(sigma, V);
    assert.ok(Math.abs(got - want) <= 4e-16 * Math.abs(want), `sigma ${sigma}: ${got} vs ${want}`);
    const naive = Math.log(Math.exp(sigma) - 1) + Math.log(V - 1);
    if (sigma >= 1e-14) {
      // the cancellation in exp(sigma) - 1 costs digits: the naive form is off by far more
      assert.ok(Math.abs(naive - want) > 1e-12, `sigma ${sigma}: naive ${naive} vs ${want}`);
    } else {
      assert.equal(naive, -Infinity, `sigma ${sigma}: exp(sigma) - 1 is 0`);
      assert.ok(Number.isFinite(got));
    }
  }
  assert.equal(seddShift(0, V), -Infinity);
});

Deno.test("absorbLogScore and addSigmaShift move the logits by seddShift, bit for bit", () => {
  const V = 5, T = 2, sigma = [1e-7, 0.7];
  const logits = Float32Array.from({ length: 2 * T * V }, (_, i) => Math.sin(i) * 3);
  const out = new Float32Array(logits.length);
  absorbLogScore(out, logits, new Int32Array([4, 1, 4, 0]), sigma, 2, T, V);
  const shifted = logits.slice();
  addSigmaShift(shifted, sigma, V);
  for (let b = 0; b < 2; b++) {
    const s = seddShift(sigma[b], V);
    for (let i = b * T * V; i < (b + 1) * T * V; i++) {
      assert.equal(shifted[i], Math.fround(logits[i] + s), `addSigmaShift ${i}`);
      const current = [4, 1, 4, 0][Math.floor(i / V)] === i % V;
      assert.equal(out[i], current ? 0 : Math.fround(logits[i] - s), `absorbLogScore ${i}`);
    }
  }
});
