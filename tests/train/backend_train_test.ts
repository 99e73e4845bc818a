// train() on the blas backend follows the wasm backend's run from the same seed: the same
// batches, noise and dropout, so the only difference is the matmuls' summation order.

import assert from "node:assert/strict";
import { resolveConfig } from "../../src/model/config.ts";
import { trainTokenizer } from "../../src/tokenizer/mod.ts";
import { train, type TrainOptions } from "../../src/train/train.ts";
import { blasLoad, ignoreBlas } from "../kernels/blas_available.ts";

const text = [
  "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money ",
  "in my purse, and nothing particular to interest me on shore, I thought I would sail about ",
  "a little and see the watery part of the world.",
].join("").repeat(6);
const tokenizer = trainTokenizer([text], { kind: "bpe", vocabSize: 300 });
// the small preset's kind (rotary, pre-norm, GELU) at a test's size
const model = {
  ...resolveConfig("small", { vocabSize: tokenizer.vocabSize, context: 32 }),
  dModel: 64,
  nLayers: 2,
  dFF: 256,
};
const base: TrainOptions = {
  text,
  tokenizer,
  model,
  batch: 8,
  context: 32,
  steps: 20,
  seed: 3,
  lr: 3e-3,
  warmup: 4,
  evalEvery: 10,
  evalBatches: 1,
  loss: "elbo",
  antithetic: true,
  workers: 2,
};

/**
 * Trains `options` on backends `a` and `b`; asserts they ran and that every step's loss agrees
 * within 1e-4 relative; returns both results.
 */
async function trainBoth(options: TrainOptions, a: "blas" | "wasm", b: "wasm" | "ts") {
  const ra = await train({ ...options, backend: a });
  const rb = await train({ ...options, backend: b });
  assert.equal(ra.backend.backend, a);
  assert.equal(rb.backend.backend, b);
  assert.equal(ra.history.length, 20);
  for (let i = 0; i < 20; i++) {
    const x = ra.history[i].loss, y = rb.history[i].loss;
    assert.ok(Math.abs(x - y) <= 1e-4 * Math.abs(y), `step ${i + 1}: loss ${x} vs ${y}`);
  }
  return [ra, rb];
}

Deno.test({
  name: "train() on the blas backend tracks the wasm backend over 20 steps from the same seed",
  ignore: ignoreBlas,
  async fn() {
    assert.ok(blasLoad.ok);
    const [blas, wasm] = await trainBoth(base, "blas", "wasm");
    // The parameters moved (20 AdamW steps of ~3e-3) and ended within rounding of each other.
    let diff = 0, moved = 0;
    const start = (await train({ ...base, steps: 0, backend: "wasm" })).model.params;
    for (let i = 0; i < start.length; i++) {
      diff = Math.max(diff, Math.abs(blas.model.params[i] - wasm.model.params[i]));
      moved = Math.max(moved, Math.abs(wasm.model.params[i] - start[i]));
    }
    assert.ok(moved > 1e-2, `parameters moved by at most ${moved}`);
    // Measured: 2e-6 after 20 steps (the parameters moved up to 0.036); a wrong product misses
    // by the size of a step.
    assert.ok(diff < 1e-4, `blas vs wasm parameters differ by up to ${diff}`);
  },
});

Deno.test("train() says which backend it ran: explicit wasm, and auto without a library", async () => {
  const r = await train({ ...base, steps: 1, workers: 0, backend: "wasm" });
  assert.deepEqual(r.backend, { backend: "wasm", note: "wasm" });
  const auto = await train({
    ...base,
    steps: 1,
    workers: 0,
    backend: "auto",
    blasPath: "/nonexistent/libblas.so",
  });
  assert.equal(auto.backend.backend, "wasm");
  assert.match(auto.backend.note, /no BLAS: .*nonexistent/);
  await assert.rejects(
    () => train({ ...base, steps: 1, workers: 0, backend: "blas", blasPath: "/nonexistent/x.so" }),
    /BLAS backend unavailable/,
  );
});

Deno.test("train() on the wasm backend (every op in the module) tracks the ts backend over 20 steps, with dropout", async () => {
  // dropout on: the masks' ops (attention, residual branches, feed-forward) run in the module too
  const [wasm, ts] = await trainBoth({ ...base, model: { ...model, dropout: 0.1 } }, "wasm", "ts");
  let diff = 0;
  for (let i = 0; i < ts.model.params.length; i++) {
    diff = Math.max(diff, Math.abs(wasm.model.params[i] - ts.model.params[i]));
  }
  // as blas vs wasm above: rounding apart, where a wrong op misses by the size of a step
  assert.ok(diff < 1e-4, `wasm vs ts parameters differ by up to ${diff}`);
});
