import assert from "node:assert/strict";
import { adamwStep, createAdamW } from "../../src/optim/adamw.ts";

/** AdamW written out in float64 from the PyTorch documentation's pseudo-code, for comparison. */
function adamwByHand(
  p: number,
  grads: number[],
  lr: number,
  b1: number,
  b2: number,
  eps: number,
  wd: number,
): number {
  let m = 0, v = 0;
  for (let t = 1; t <= grads.length; t++) {
    const g = grads[t - 1];
    p = p - lr * wd * p;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const mHat = m / (1 - b1 ** t);
    const vHat = v / (1 - b2 ** t);
    p = p - lr * mHat / (Math.sqrt(vHat) + eps);
  }
  return p;
}

Deno.test("adamwStep() follows PyTorch's AdamW update over several steps", () => {
  const grads = [[0.3, -1.2], [0.1, 0.4], [-0.5, 2.0], [0.05, -0.01]];
  const p = new Float32Array([0.7, -1.5]);
  const state = createAdamW(2);
  const opts = { lr: 0.01, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1 };
  for (const g of grads) adamwStep(p, new Float32Array(g), state, opts);
  assert.equal(state.step, 4);
  for (let i = 0; i < 2; i++) {
    const want = adamwByHand(
      i === 0 ? 0.7 : -1.5,
      grads.map((g) => g[i]),
      0.01,
      0.8,
      0.95,
      1e-6,
      0.1,
    );
    assert.ok(Math.abs(p[i] - want) < 1e-6, `param ${i}: got ${p[i]}, want ${want}`);
  }
});

Deno.test("adamwStep() decays weights even where the gradient is zero", () => {
  const p = new Float32Array([2]);
  adamwStep(p, new Float32Array([0]), createAdamW(1), { lr: 0.1, weightDecay: 0.5 });
  // Decoupled decay: p * (1 - lr * wd) = 2 * 0.95; the Adam term is 0 / (0 + eps) = 0.
  assert.ok(Math.abs(p[0] - 1.9) < 1e-6, `got ${p[0]}`);
});

Deno.test("adamwStep() rejects buffers of different lengths", () => {
  assert.throws(
    () => adamwStep(new Float32Array(3), new Float32Array(2), createAdamW(3)),
    /expected 3 values each, got grads 2/,
  );
});
