import assert from "node:assert/strict";
import { checkWorkspaceSize, WORKSPACE_BYTES_LIMIT } from "../../src/train/setup.ts";
import { train, type TrainOptions } from "../../src/train/train.ts";
import { createModel } from "../../src/model/model.ts";
import { workspaceBytes } from "../../src/model/workspace.ts";
import { createWasmKernels } from "../../src/kernels/wasm.ts";
import { resolveConfig } from "../../src/model/config.ts";

import { tinyRun } from "./fixture.ts";

const base: TrainOptions = { ...tinyRun, steps: 1 };

Deno.test("train() with the tiny preset at context 100000 fails up front naming --context", async () => {
  // Enough tokens that the data check passes and only the memory estimate can refuse it; a model
  // object, so the check is the one made just before the pool starts.
  const tokens = new Int32Array(300_000).map((_, i) => i % 20);
  const config = resolveConfig("tiny", {
    vocabSize: tinyRun.tokenizer!.vocabSize,
    context: 100_000,
  });
  const started = performance.now();
  await assert.rejects(
    train({
      ...base,
      text: undefined,
      tokens,
      model: createModel(config),
      context: 100_000,
      workers: 2,
    }),
    (e: unknown) => {
      assert.ok(e instanceof RangeError, String(e));
      assert.match(
        e.message,
        /^Invalid --context: expected a context whose workspace fits in 4\.00 GiB/,
      );
      assert.match(e.message, /got 100000 \(about \d+ GiB per workspace\)$/);
      assert.doesNotMatch(e.message, /arena full|\n/);
      return true;
    },
  );
  // No worker started: two workers would take far longer to spin up than the check does.
  assert.ok(performance.now() - started < 5000);
});

Deno.test("train() refuses tiny at context 100000 before reading or tokenizing the data", async () => {
  // A missing data path and no tokenizer: the memory check must come before both.
  await assert.rejects(
    train({ model: "tiny", data: "/nonexistent/corpus.txt", context: 100_000 }),
    /^RangeError: Invalid --context: expected a context whose workspace fits in 4\.00 GiB/,
  );
  // Its estimate is a lower bound: a context that fits with any vocabulary is left to later.
  await assert.rejects(
    train({ model: "tiny", data: "/nonexistent/corpus.txt", context: 64 }),
    /^RangeError: Data not found/,
  );
});

Deno.test("train() refuses a context longer than the training split, naming --context", async () => {
  // The text is under 1,200 tokens: a 600-token window and a 600-token held-out one cannot fit.
  await assert.rejects(
    train({
      ...base,
      context: 600,
    }),
    /^RangeError: Invalid --context: expected at most \d+ tokens \(the data holds \d+, \d+ held out, .*\), got 600$/,
  );
});

Deno.test("train() refuses a --vocab the text cannot fill", async () => {
  await assert.rejects(
    train({ ...base, tokenizer: undefined, tokenizerVocabSize: 4000 }),
    /^RangeError: Invalid --vocab: expected at most \d+ \(all the merges this text supports\), got 4000$/,
  );
});

Deno.test("checkWorkspaceSize() names --context when one row does not fit, else --batch", () => {
  const bytes = (rows: number, T: number) => rows * T * T * 1024; // attention-like growth
  const GiB = 2 ** 30;
  checkWorkspaceSize({ rows: 4, context: 512, batch: 16 }, bytes, GiB); // exactly 1 GiB: fits
  assert.throws(
    () => checkWorkspaceSize({ rows: 4, context: 2000, batch: 16 }, bytes, GiB),
    /^RangeError: Invalid --context: expected .* fits in 1\.00 GiB .*, at most 512, got 2000 \(about 15 GiB per workspace\)$/,
  );
  assert.throws(
    () => checkWorkspaceSize({ rows: 4, context: 600, batch: 16 }, bytes, GiB),
    /^RangeError: Invalid --batch: .* got --batch 16 at --context 600 \(4 per pass/,
  );
});

Deno.test("the size check's limit leaves the kernels their own memory: the largest batch under it fits the real arena", () => {
  // The largest batch at context 512 of tiny whose workspace is within WORKSPACE_BYTES_LIMIT is
  // accepted by checkWorkspaceSize and by createWorkspace (which checks the real arena room).
  const cfg = resolveConfig("tiny", { vocabSize: 300, context: 512 });
  const bytes = (rows: number, T: number) => workspaceBytes(cfg, rows, T, { backend: "wasm" });
  let B = 1;
  while (bytes(2 * B, 512) <= WORKSPACE_BYTES_LIMIT) B *= 2;
  checkWorkspaceSize({ rows: B, context: 512, batch: B }, bytes);
  assert.throws(
    () => checkWorkspaceSize({ rows: 2 * B, context: 512, batch: 2 * B }, bytes),
    /Invalid --batch/,
  );
  assert.ok(bytes(B, 512) <= 2 ** 32 - createWasmKernels().mark());
});
