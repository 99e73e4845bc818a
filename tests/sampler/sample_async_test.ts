/**
 * The asynchronous sampling path: `sampleIdsAsync` takes every step `sampleIds` takes, and
 * `sampleAsync` with a DiT on worker threads gives the tokens `sample` gives on one thread.
 */

import assert from "node:assert/strict";
import {
  type Denoiser,
  sample,
  sampleAsync,
  sampleIds,
  sampleIdsAsync,
  type SampleOptions,
} from "../../src/sampler/mod.ts";
import { trainTokenizer } from "../../src/tokenizer/mod.ts";
import { randomDit } from "../model/dit_cases.ts";

/** A stub whose output depends on the ids and sigma, so every step's input matters. */
function stub(V: number): Denoiser {
  return (ids, sigma) => {
    const T = ids.length / sigma.length;
    const out = new Float32Array(ids.length * V);
    for (let i = 0; i < ids.length; i++) {
      const s = sigma[Math.floor(i / T)];
      for (let v = 0; v < V; v++) out[i * V + v] = Math.sin(1.7 * v + 0.3 * ids[i] + s + i);
    }
    return out;
  };
}

Deno.test("sampleIdsAsync() takes the same steps as sampleIds() for every method", async () => {
  const V = 7, maskId = 6;
  const cases: SampleOptions[] = [
    { method: "confidence", steps: 5, length: 9, batch: 2, seed: 1 },
    { method: "euler", steps: 6, length: 9, batch: 2, seed: 2, output: "logScore" },
    { method: "tweedie", steps: 6, length: 9, seed: 3, fixed: { positions: [0], ids: [2] } },
    { method: "euler", steps: 4, length: 5, seed: 4, graph: "uniform", output: "logScore" },
    { method: "ancestral", steps: 12, length: 9, batch: 3, seed: 5 },
  ];
  for (const options of cases) {
    const seen: number[][] = [], seenAsync: number[][] = [];
    const want = sampleIds(stub(V), V, maskId, {
      ...options,
      onStep: (ids) => seen.push([...ids]),
    });
    const denoise = stub(V);
    const got = await sampleIdsAsync(
      (ids, sigma) => new Promise((ok) => setTimeout(() => ok(denoise(ids, sigma)), 0)),
      V,
      maskId,
      { ...options, onStep: (ids) => seenAsync.push([...ids]) },
    );
    assert.deepEqual(got, want, options.method);
    assert.deepEqual(seenAsync, seen, `${options.method}: every step`);
    assert.ok(want.evaluations > 0);
  }
  // the same checks: bad input rejects with the sync path's message
  await assert.rejects(
    sampleIdsAsync(() => Promise.resolve(new Float32Array(3)), V, maskId, {
      method: "euler",
      steps: 2,
      length: 4,
      seed: 1,
    }),
    /Invalid denoiser output: expected a Float32Array of length B\*T\*V = 28, got length 3/,
  );
  await assert.rejects(sampleIdsAsync(null as never, V, maskId, cases[0]), /Invalid denoiser/);
});

const TEXT = "the whale swam in the sea and the ship sailed on";
const tokenizer = trainTokenizer([TEXT], { kind: "seed", numMerges: 4 });

Deno.test("sampleAsync() with a DiT on 2 workers gives the tokens sample() gives", async () => {
  const shape = { vocabSize: tokenizer.vocabSize, context: 24, dModel: 32, nHeads: 2, condDim: 16 };
  const sedd = randomDit(shape, 8);
  const mdlm = randomDit({ ...shape, output: "logits" }, 9);
  const cases = [
    [sedd, { method: "euler", steps: 6, length: 19, seed: 3 }],
    [sedd, { method: "tweedie", steps: 5, infill: "the [MASK:6] sea", seed: 4, batch: 2 }],
    [mdlm, { method: "ancestral", steps: 8, length: 16, seed: 5, timeConditioned: false }],
  ] as const;
  for (const [model, options] of cases) {
    const want = sample(model, tokenizer, options);
    const got = await sampleAsync(model, tokenizer, { ...options, workers: 2 });
    assert.deepEqual(got, want, options.method);
    // in-process with workers 0 too
    assert.deepEqual(await sampleAsync(model, tokenizer, options), want);
  }
  await assert.rejects(
    sampleAsync(sedd, tokenizer, { workers: -2, length: 4 }),
    /Invalid workers: expected an integer >= 0, got -2/,
  );
});
