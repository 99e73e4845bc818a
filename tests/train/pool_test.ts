import assert from "node:assert/strict";
import { presets } from "../../src/model/config.ts";
import { createModel, type Model } from "../../src/model/model.ts";
import type { FaultInjection } from "../../src/train/shard.ts";
import { fillBatch, type LossName } from "../../src/train/batch.ts";
import { createPool, WorkerError } from "../../src/train/pool.ts";
import { forwardParts } from "../../src/model/layout.ts";
import { clipGradNorm, train } from "../../src/train/train.ts";
import { tinyRun } from "./fixture.ts";

const V = 12;
const tokens = Int32Array.from({ length: 400 }, (_, i) => (i * 7 + (i >> 3)) % (V - 1));

async function firstGradient(
  workers: number,
  loss: LossName = "seed",
  timeConditioning = false,
  microBatch?: number,
): Promise<{ loss: number; grads: Float32Array }> {
  const model = createModel({ ...presets.tiny, timeConditioning }, { vocabSize: V, seed: 3 });
  const pool = await createPool({
    config: model.config,
    params: model.params,
    batch: 4,
    context: 16,
    workers,
    seed: 5,
    loss,
    microBatch,
  });
  try {
    fillBatch(pool.batch, tokens, { seed: 5, step: 0, loss, vocabSize: V });
    const value = await pool.gradient(0);
    return { loss: value, grads: pool.grads.slice() };
  } finally {
    pool.terminate();
  }
}

Deno.test("createPool() gives the same first gradient with 0, 1, 2 and 4 workers", async () => {
  const ref = await firstGradient(0);
  let max = 0;
  for (const g of ref.grads) max = Math.max(max, Math.abs(g));
  assert.ok(max > 0, "gradient is all zeros");
  const one = await firstGradient(1);
  assert.deepEqual(one.grads, ref.grads); // in-process both: bitwise
  for (const W of [2, 4]) {
    const got = await firstGradient(W);
    assert.ok(Math.abs(got.loss - ref.loss) <= 1e-6 * Math.abs(ref.loss), `loss with ${W} workers`);
    let worst = 0;
    for (let i = 0; i < ref.grads.length; i++) {
      assert.ok(Number.isFinite(got.grads[i]));
      worst = Math.max(worst, Math.abs(got.grads[i] - ref.grads[i]));
    }
    assert.ok(worst <= 1e-6 * max, `${W} workers: max difference ${worst}, max magnitude ${max}`);
  }
});

for (const [loss, cond] of [["elbo", false], ["score-entropy", false], ["elbo", true]] as const) {
  const what = `${loss} gradient${cond ? " of a time-conditioned model" : ""}`;
  Deno.test(`createPool() shards the ${what} without changing it`, async () => {
    const ref = await firstGradient(0, loss, cond);
    const got = await firstGradient(2, loss, cond);
    let max = 0, worst = 0;
    for (let i = 0; i < ref.grads.length; i++) {
      max = Math.max(max, Math.abs(ref.grads[i]));
      worst = Math.max(worst, Math.abs(got.grads[i] - ref.grads[i]));
    }
    assert.ok(max > 0 && Number.isFinite(ref.loss) && ref.loss > 0);
    assert.ok(worst <= 1e-6 * max, `max difference ${worst}, max magnitude ${max}`);
    assert.ok(Math.abs(got.loss - ref.loss) <= 1e-6 * ref.loss);
  });
}

/** Two workers over `model` with 4 x 16 tokens and the seed loss (and `fault`, if any). */
function tinyPool(model: Model, fault?: FaultInjection) {
  return createPool({
    config: model.config,
    params: model.params,
    batch: 4,
    context: 16,
    workers: 2,
    seed: 5,
    loss: "seed",
    fault,
  });
}

for (const mode of ["throw", "crash"] as const) {
  Deno.test(`createPool() rejects naming the worker and step when a worker ${mode === "throw" ? "throws" : "dies"}`, async () => {
    const model = createModel("tiny", { vocabSize: V, seed: 3 });
    const pool = await tinyPool(model, { worker: 1, step: 2, mode });
    fillBatch(pool.batch, tokens, { seed: 5, step: 0, loss: "seed", vocabSize: V });
    await pool.gradient(0);
    await pool.gradient(1);
    await assert.rejects(pool.gradient(2), (e: unknown) => {
      assert.ok(e instanceof WorkerError);
      assert.equal(e.worker, 1);
      assert.equal(e.step, 2);
      assert.match(e.message, /worker 1 failed at step 2/);
      return true;
    });
    await assert.rejects(pool.gradient(3), /terminated/);
  });
}

Deno.test("createPool() with a micro-batch gives the same gradient up to summation order", async () => {
  const ref = await firstGradient(0);
  const a = await firstGradient(0, "seed", false, 1);
  const b = await firstGradient(2, "seed", false, 1);
  let max = 0, worst = 0;
  for (let i = 0; i < ref.grads.length; i++) {
    max = Math.max(max, Math.abs(ref.grads[i]));
    worst = Math.max(worst, Math.abs(a.grads[i] - ref.grads[i]));
  }
  assert.ok(worst <= 1e-6 * max, `max difference ${worst}, max magnitude ${max}`);
  // Chunks align to global rows: sharding changes only the order of the final sum.
  for (let i = 0; i < a.grads.length; i++) {
    assert.ok(Math.abs(b.grads[i] - a.grads[i]) <= 1e-6 * max);
  }
  await assert.rejects(
    createPool({ ...poolArgs(), microBatch: 0 }),
    /Invalid microBatch: expected an integer >= 1, got 0/,
  );
});

function poolArgs() {
  const model = createModel("tiny", { vocabSize: V, seed: 3 });
  const { config, params } = model;
  return { config, params, batch: 4, context: 16, workers: 0, seed: 5, loss: "seed" as const };
}

Deno.test("createPool() sums the workers' gradients in worker order as they arrive: the in-process bits with one row per chunk", async () => {
  // micro-batch 1: in-process, the shard adds row 0, 1, 2, 3 into one buffer in that order; with
  // 4 workers, worker k computes row k and the pool adds them in worker order: the same sums
  const ref = await firstGradient(0, "seed", false, 1);
  const got = await firstGradient(4, "seed", false, 1);
  assert.equal(got.loss, ref.loss);
  assert.deepEqual(got.grads, ref.grads);
});

Deno.test("createPool() with workers sums the squares of the summed gradient as clipGradNorm does (the same bits); in-process it leaves that to clipGradNorm", async () => {
  for (const W of [0, 2, 3]) {
    const model = createModel("tiny", { vocabSize: V, seed: 3 });
    const pool = await createPool({ ...poolArgs(), params: model.params, workers: W });
    try {
      for (const step of [0, 1]) {
        fillBatch(pool.batch, tokens, { seed: 5, step, loss: "seed", vocabSize: V });
        await pool.gradient(step);
        let want = 0;
        for (const g of pool.grads) want += g * g;
        if (W === 0) assert.equal(pool.sumSquares, undefined);
        else assert.equal(pool.sumSquares, want, `${W} workers, step ${step}`);
        const g = pool.grads.slice();
        assert.equal(clipGradNorm(g, 1e-3, pool.sumSquares), Math.sqrt(want));
        const h = pool.grads.slice();
        clipGradNorm(h, 1e-3);
        assert.deepEqual(g, h);
      }
    } finally {
      pool.terminate();
    }
  }
});

Deno.test("createPool() with after: the workers wait for each part of the parameters until it is published", async () => {
  const model = createModel({ ...presets.tiny }, { vocabSize: V, seed: 3 });
  const updated = model.params.map((p, i) => p + 0.01 * Math.sin(i)); // the parameters to be
  const pool = await tinyPool(model);
  try {
    fillBatch(pool.batch, tokens, { seed: 5, step: 0, loss: "seed", vocabSize: V });
    pool.model.params.set(updated);
    const want = await pool.gradient(0);
    const wantGrads = pool.grads.slice();
    // the old parameters back; the workers start, then the new ones arrive part by part, late
    pool.model.params.set(model.params);
    const base = pool.gateValue!;
    const got = pool.gradient(0, base);
    const parts = forwardParts(pool.model.layout, pool.model.config.nLayers);
    for (const [j, part] of parts.entries()) {
      await new Promise((r) => setTimeout(r, 30));
      for (const [a, b] of part) pool.model.params.set(updated.subarray(a, b), a);
      pool.publish!(base + j + 1);
    }
    assert.equal(await got, want);
    assert.deepEqual(pool.grads, wantGrads);
  } finally {
    pool.terminate();
  }
});

Deno.test("train() with the next step overlapping AdamW gives the bits of a run without overlap", async () => {
  // evalEvery 1 evaluates after every step, so no step overlaps the next; evalEvery 0 overlaps all
  const options = { ...tinyRun, batch: 4, workers: 2, steps: 6, lr: 1e-2 };
  const overlapped = await train({ ...options, evalEvery: 0 });
  const serial = await train({ ...options, evalEvery: 1 });
  assert.deepEqual(overlapped.model.params, serial.model.params);
  assert.deepEqual(overlapped.history.map((h) => h.loss), serial.history.map((h) => h.loss));
});
