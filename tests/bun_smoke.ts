/**
 * Bun smoke test: the library's own files, unchanged, train and sample under Bun.
 *
 * Run: `bun run tests/bun_smoke.ts` (CI runs it after the Deno suite). Not a Deno test file: it
 * exits non-zero on failure and prints one closing line.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  createModel,
  decode,
  encode,
  forward,
  sample,
  sampleAsync,
  train,
  trainTokenizer,
} from "../mod.ts";
import { loadBlas } from "../src/kernels/blas.ts";

const text = "the whale swam in the deep sea and the sea was calm. ".repeat(30);
const tokenizer = trainTokenizer([text], { vocabSize: 270 });
assert.equal(decode(tokenizer, encode(tokenizer, "the whale")), "the whale");

const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 1 });
const logits = forward(model, new Int32Array(8).fill(tokenizer.maskId), { batch: 1 });
assert.equal(logits.length, 8 * tokenizer.vocabSize);
assert.ok(logits.every(Number.isFinite));

// The system's BLAS through bun:ffi (CI installs it; elsewhere its runs are skipped).
const blas = loadBlas();
const ci = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env
  .CI === "true";
assert.ok(blas.ok || !ci, `CI needs the BLAS library under Bun: ${blas.ok ? "" : blas.reason}`);
const runs = [{ workers: 0, backend: "wasm" }, { workers: 2, backend: "wasm" }] as const;
const blasRuns = [{ workers: 0, backend: "blas" }, { workers: 2, backend: "blas" }] as const;

// In-process and with two Web Workers, on wasm and on the BLAS: a finite, falling loss, and the
// same parameters every way up to summation order.
const finals: Float32Array[] = [];
for (const { workers, backend } of blas.ok ? [...runs, ...blasRuns] : runs) {
  const losses: number[] = [];
  const result = await train({
    backend,
    text,
    tokenizer,
    model: "tiny",
    steps: 40,
    batch: 4,
    context: 16,
    workers,
    loss: "elbo",
    evalEvery: 0,
    onStep: ({ loss }) => losses.push(loss),
  });
  assert.equal(result.workers, workers, `expected ${workers} workers, got ${result.workers}`);
  assert.equal(result.backend.backend, backend);
  assert.equal(losses.length, 40);
  assert.ok(losses.every(Number.isFinite), `non-finite loss with ${workers} workers`);
  const head = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
  const tail = losses.slice(-5).reduce((a, b) => a + b) / 5;
  assert.ok(tail < head, `loss did not fall with ${workers} workers: ${head} -> ${tail}`);
  const out = sample(result.model, tokenizer, {
    prompt: "the whale",
    length: 16,
    steps: 8,
    seed: 2,
  });
  assert.ok(out.text.startsWith("the whale"), `sample lost its prompt: ${out.text}`);
  finals.push(result.model.params);
}
for (let r = 1; r < finals.length; r++) {
  let maxDiff = 0;
  for (let i = 0; i < finals[0].length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(finals[0][i] - finals[r][i]));
  }
  assert.ok(maxDiff < 1e-3, `run ${r} drifted from run 0: max |diff| ${maxDiff}`);
}
// A DiT sampled with its forward passes on two Web Workers: the one-thread tokens.
const dit = createModel({
  kind: "dit",
  vocabSize: tokenizer.vocabSize,
  context: 16,
  dModel: 32,
  nHeads: 2,
  nLayers: 2,
  condDim: 16,
}, { seed: 4 });
for (let i = 0; i < dit.params.length; i++) dit.params[i] += 0.05 * Math.sin(7 * i);
const ditOptions = { method: "euler", length: 12, steps: 6, seed: 5 } as const;
const oneThread = sample(dit, tokenizer, ditOptions);
const twoWorkers = await sampleAsync(dit, tokenizer, { ...ditOptions, workers: 2 });
assert.deepEqual(twoWorkers.ids, oneThread.ids, "DiT tokens on 2 workers");

console.log(`${finals.length} training runs${blas.ok ? ", BLAS through bun:ffi" : ", no BLAS"}`);
console.log("bun smoke: 1 passed, 0 failed");
