/**
 * Bun smoke test: the library's own files, unchanged, train and sample under Bun.
 *
 * Run: `bun run tests/bun_smoke.ts` (CI runs it after the Deno suite). Not a Deno test file: it
 * exits non-zero on failure and prints one closing line.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createModel, decode, encode, forward, sample, train, trainTokenizer } from "../mod.ts";

const text = "the whale swam in the deep sea and the sea was calm. ".repeat(30);
const tokenizer = trainTokenizer([text], { vocabSize: 270 });
assert.equal(decode(tokenizer, encode(tokenizer, "the whale")), "the whale");

const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 1 });
const logits = forward(model, new Int32Array(8).fill(tokenizer.maskId), { batch: 1 });
assert.equal(logits.length, 8 * tokenizer.vocabSize);
assert.ok(logits.every(Number.isFinite));

// In-process and with two Web Workers: a finite, falling loss, and the same parameters both ways
// up to summation order.
const finals: Float32Array[] = [];
for (const workers of [0, 2]) {
  const losses: number[] = [];
  const result = await train({
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
let maxDiff = 0;
for (let i = 0; i < finals[0].length; i++) {
  maxDiff = Math.max(maxDiff, Math.abs(finals[0][i] - finals[1][i]));
}
assert.ok(maxDiff < 1e-3, `0 and 2 workers drifted apart: max |diff| ${maxDiff}`);
console.log("bun smoke: 1 passed, 0 failed");
