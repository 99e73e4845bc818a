/**
 * The worker DiT forward pass (src/model/dit_pool.ts) against one runner on the same backend:
 * every output float equal, for batch 1 cut by positions, sequences cut between workers, whole
 * sequences per worker, SEDD and MDLM outputs, and the fixtures' DiT; and a failing worker.
 */

import assert from "node:assert/strict";
import { parseSafetensors, serializeSafetensors } from "../../src/checkpoint/safetensors.ts";
import { ditFromSafetensors } from "../../src/checkpoint/model_io.ts";
import type { DitModel } from "../../src/model/dit.ts";
import { createDitRunner, type DitWeights } from "../../src/model/dit_fast.ts";
import { createDitPool, type DitSplit, DitWorkerError } from "../../src/model/dit_pool.ts";
import type { BackendName } from "../../src/nn/backend.ts";
import { randomDit, randomTokens } from "./dit_cases.ts";
import { ignoreBlas } from "../kernels/blas_available.ts";
import { maxRelErr } from "../rel_err.ts";

/** The index and values of the first float where `got` and `want` differ, or null. */
function firstDifference(got: Float32Array, want: Float32Array): string | null {
  assert.equal(got.length, want.length, "lengths");
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i])) return `at ${i}: ${got[i]} vs ${want[i]}`;
  }
  return null;
}

/** Runs `calls` through a pool and through one runner; requires equal floats. */
async function samePool(
  model: DitModel,
  pool: {
    workers: number;
    split: DitSplit;
    batch: number;
    length: number;
    backend: BackendName;
    weights?: DitWeights;
  },
  calls: { batch: number; length: number; sigma: number[]; raw?: boolean }[],
): Promise<void> {
  const p = await createDitPool(model, pool);
  try {
    assert.equal(p.workers, pool.workers > 1 ? pool.workers : 0);
    const runner = createDitRunner(model, {
      batch: pool.batch,
      length: pool.length,
      backend: pool.backend,
    });
    for (const [i, c] of calls.entries()) {
      const tokens = randomTokens(c.batch * c.length, model.config.vocabSize, 5 + i);
      const opts = { batch: c.batch, sigma: new Float32Array(c.sigma), raw: c.raw };
      const got = (await p.forward(tokens, opts)).slice();
      const want = runner.forward(tokens, opts);
      const diff = firstDifference(got, want);
      assert.equal(diff, null, `${JSON.stringify(pool)} call ${i}: ${diff}`);
    }
  } finally {
    p.terminate();
  }
}

for (const backend of ["wasm", "ts"] as const) {
  Deno.test(`dit_pool: ${backend}: batch 1 cut by positions over 2 workers equals one runner`, async () => {
    const model = randomDit({ vocabSize: 37, context: 16, dModel: 32, nHeads: 2, condDim: 16 }, 2);
    await samePool(model, { workers: 2, split: "auto", batch: 1, length: 13, backend }, [
      { batch: 1, length: 13, sigma: [0.3] },
      { batch: 1, length: 13, sigma: [2.5] }, // a second call, the barrier's later generations
      { batch: 1, length: 5, sigma: [0.9], raw: true }, // shorter than the pool's length
    ]);
  });
}

Deno.test("dit_pool: across the kernels' blocks (rows > 128, K > 256, V > 2048) the rows agree", async () => {
  // one runner multiplies 150 rows as 128 + 22, each worker 75: the same floats per row
  const model = randomDit({
    vocabSize: 2100,
    context: 160,
    dModel: 80,
    nHeads: 2,
    nLayers: 1,
    condDim: 16,
  }, 7);
  await samePool(
    model,
    { workers: 2, split: "positions", batch: 1, length: 150, backend: "wasm" },
    [
      { batch: 1, length: 150, sigma: [1.1] },
    ],
  );
});

Deno.test({
  name: "dit_pool: blas: the system library's products of fewer rows agree to 1e-5, not exactly",
  ignore: ignoreBlas,
  async fn() {
    const model = randomDit(
      { vocabSize: 2100, context: 160, dModel: 80, nHeads: 2, condDim: 16 },
      7,
    );
    const pool = await createDitPool(model, {
      workers: 2,
      length: 150,
      backend: "blas",
      split: "positions",
    });
    try {
      const runner = createDitRunner(model, { length: 150, backend: "blas" });
      const tokens = randomTokens(150, 2100, 3);
      const opts = { batch: 1, sigma: new Float32Array([1.1]) };
      const got = (await pool.forward(tokens, opts)).slice();
      const e = maxRelErr(got, runner.forward(tokens, opts), "blas pool");
      assert.ok(e <= 1e-5, `rel err ${e}`);
    } finally {
      pool.terminate();
    }
  },
});

Deno.test("dit_pool: sequences cut between 3 workers (weights copied or staged), whole sequences, MDLM logits", async () => {
  const sedd = randomDit({ vocabSize: 29, context: 8, dModel: 16, nHeads: 2, condDim: 8 }, 4);
  // 2 sequences of 7 over 3 workers: rows 0-4, 4-9, 9-14 cut both sequences
  const cut = { workers: 3, split: "positions", batch: 2, length: 7, backend: "wasm" } as const;
  // each worker's weights staged per matmul from the shared parameters, not copied
  await samePool(sedd, { ...cut, weights: "stage" }, [
    { batch: 2, length: 7, sigma: [0.2, 1.7] },
  ]);
  await samePool(sedd, cut, [
    { batch: 2, length: 7, sigma: [0.2, 1.7] },
    { batch: 1, length: 7, sigma: [0.6] },
    { batch: 1, length: 2, sigma: [0.6] }, // fewer rows than workers: worker 0 computes none
  ]);
  const mdlm = randomDit({
    vocabSize: 29,
    context: 8,
    dModel: 16,
    nHeads: 2,
    condDim: 8,
    output: "logits",
  }, 6);
  await samePool(mdlm, { workers: 2, split: "sequences", batch: 3, length: 8, backend: "wasm" }, [
    { batch: 3, length: 8, sigma: [0.2, 1.7, 0.01] }, // 1 and 2 sequences
    { batch: 2, length: 6, sigma: [0.5, 0.5] },
  ]);
});

Deno.test("dit_pool: the SEDD fixture's DiT over workers equals one runner", async () => {
  const { tensors } = parseSafetensors(
    Deno.readFileSync(new URL("../fixtures/dit/sedd.safetensors", import.meta.url)),
  );
  const weights = Object.fromEntries(
    Object.entries(tensors).filter(([n]) => !/^(in|out|grad)\./.test(n)),
  );
  const { model } = ditFromSafetensors(serializeSafetensors(weights), { config: { nHeads: 2 } });
  const T = tensors["in.tokens"].data.length / 2;
  // 3 workers by positions cut both sequences; 2 by sequences take one each
  for (const [workers, split] of [[3, "positions"], [2, "sequences"]] as const) {
    await samePool(model, { workers, split, batch: 2, length: T, backend: "wasm" }, [
      { batch: 2, length: T, sigma: [...tensors["in.sigma"].data as Float32Array] },
    ]);
  }
});

for (const mode of ["throw", "crash"] as const) {
  Deno.test(`dit_pool: a worker that fails (${mode}) rejects with one line and stops the pool`, async () => {
    const model = randomDit({ vocabSize: 19, context: 8, dModel: 16, nHeads: 2, condDim: 8 }, 1);
    const pool = await createDitPool(model, {
      workers: 2,
      length: 8,
      backend: "wasm",
      fault: { worker: 1, call: 2, mode },
    });
    const tokens = randomTokens(8, 19, 1);
    const opts = { batch: 1, sigma: new Float32Array([0.5]) };
    await pool.forward(tokens, opts); // call 1 works; worker 0 then waits at the barrier in call 2
    const e = await pool.forward(tokens, opts).then(() => null, (e) => e);
    assert.ok(e instanceof DitWorkerError, String(e));
    assert.match(e.message, /^DiT worker 1 failed at forward call 2: .*injected fault/);
    assert.ok(!e.message.includes("\n"), e.message);
    await assert.rejects(pool.forward(tokens, opts), /DiT pool terminated: expected a live pool/);
    pool.terminate(); // a second time is harmless
  });
}

Deno.test("dit_pool: a worker that cannot start fails createDitPool with one line", async () => {
  const model = randomDit({ vocabSize: 19, context: 8, dModel: 16, nHeads: 2, condDim: 8 }, 1);
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, 'throw new Error("no kernels here");\n');
    const e = await createDitPool(model, { workers: 2, length: 8, workerUrl: `file://${file}` })
      .then(() => null, (e) => e);
    assert.ok(e instanceof DitWorkerError, String(e));
    assert.match(
      e.message,
      /^DiT worker [01] failed while starting: worker died \(.*no kernels here/,
    );
    assert.ok(!e.message.includes("\n"), e.message);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("dit_pool: bad options get a clear error", async () => {
  const model = randomDit({ vocabSize: 19, context: 8, dModel: 16, nHeads: 2, condDim: 8 }, 1);
  await assert.rejects(createDitPool(model, { workers: -1 }), /workers/);
  await assert.rejects(createDitPool(model, { workers: 2, length: 9 }), /at most context 8, got 9/);
  await assert.rejects(
    createDitPool(model, { workers: 2, split: "heads" as never }),
    /Invalid split: expected one of auto, positions, sequences, got "heads"/,
  );
  const two = await createDitPool(model, { workers: 2, length: 8 });
  try {
    const opts = { batch: 1, sigma: new Float32Array([1]) };
    const first = two.forward(new Int32Array(8), opts);
    await assert.rejects(two.forward(new Int32Array(8), opts), /DiT pool busy: expected one/);
    await first; // the first call still completes
  } finally {
    two.terminate();
  }
  const pool = await createDitPool(model, { workers: 0, length: 8 });
  await assert.rejects(
    pool.forward(new Int32Array(16), { batch: 2, sigma: new Float32Array([1, 1]) }),
    /Batch too large/,
  );
  pool.terminate();
});
