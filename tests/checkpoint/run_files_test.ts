/** The trainer's checkpoint bytes through the public API: round trips and refusals. */
import assert from "node:assert/strict";
import {
  CHECKPOINT_FORMAT,
  createAdamW,
  createModel,
  modelCheckpointBytes,
  modelToSafetensors,
  optimizerBytes,
  parseModelCheckpoint,
  parseOptimizer,
  trainTokenizer,
} from "../../mod.ts";

const tokenizer = trainTokenizer(["the whale and the sea, the ship"], {
  kind: "seed",
  numMerges: 4,
});
const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 2 });

Deno.test("modelCheckpointBytes/parseModelCheckpoint round-trip weights, tokenizer, step and metadata", () => {
  const got = parseModelCheckpoint(modelCheckpointBytes(model, tokenizer, 7, { graph: "absorb" }));
  assert.deepEqual(got.model.config, model.config);
  assert.deepEqual(got.model.params, model.params);
  assert.deepEqual(got.tokenizer, tokenizer);
  assert.equal(got.step, 7);
  assert.equal(got.metadata.format, CHECKPOINT_FORMAT);
  assert.equal(got.metadata.graph, "absorb");
});

Deno.test("optimizerBytes/parseOptimizer round-trip parameters, moments, step and settings", () => {
  const opt = createAdamW(model.params.length);
  opt.m.fill(0.25);
  opt.v.fill(0.5);
  opt.step = 9;
  const run = parseOptimizer(optimizerBytes(model, tokenizer, opt, { batch: 4, loss: "elbo" }));
  assert.deepEqual(run.model.params, model.params);
  assert.deepEqual(run.optimizer, opt);
  assert.equal(run.step, 9);
  assert.deepEqual(run.settings, { batch: 4, loss: "elbo" });
  assert.equal(run.metadata.format, CHECKPOINT_FORMAT);
});

Deno.test("parseModelCheckpoint and parseOptimizer refuse each other's files and plain state dicts", () => {
  assert.throws(() => parseModelCheckpoint(modelToSafetensors(model)), {
    name: "RangeError",
    message:
      "Invalid model checkpoint: expected __metadata__.tokenizer (a file written by the trainer), got none",
  });
  assert.throws(
    () => parseOptimizer(modelCheckpointBytes(model, tokenizer, 1)),
    /^RangeError: Invalid optimizer checkpoint: expected F32 tensor "params" of \d+ values, got none$/,
  );
  const opt = createAdamW(model.params.length);
  assert.throws(
    () => parseModelCheckpoint(optimizerBytes(model, tokenizer, opt, {})),
    /Missing tensors: expected /,
  );
});
