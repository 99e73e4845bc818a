import assert from "node:assert/strict";
import { modelFromSafetensors } from "../../src/checkpoint/mod.ts";
import { sample } from "../../src/sampler/mod.ts";
import { encode, trainTokenizer } from "../../src/tokenizer/mod.ts";

// The notebook's corpus: its tokenizer (kind "seed", 5 merges) is the one the PyTorch state dict
// in tests/fixtures/model/notebook_state_dict.safetensors was trained with (make_fixtures.py).
const EXAMPLE_1 =
  "Linear algebra is central to almost all areas of mathematics. For instance, linear algebra is fundamental in modern presentations of geometry, including for defining basic objects such as lines, planes and rotations. Also, functional analysis, a branch of mathematical analysis, may be viewed as the application of linear algebra to function spaces.";
const EXAMPLE_2 =
  "In numerical analysis and linear algebra, lower–upper (LU) decomposition or factorization factors a matrix as the product of a lower triangular matrix and an upper triangular matrix (see matrix multiplication and matrix decomposition).";

Deno.test("a PyTorch-trained notebook state dict loads here and samples with the notebook's tokenizer", () => {
  const bytes = Deno.readFileSync(
    new URL("../fixtures/model/notebook_state_dict.safetensors", import.meta.url),
  );
  const { model } = modelFromSafetensors(bytes, { config: { nHeads: 2, activation: "relu" } });
  const tokenizer = trainTokenizer([EXAMPLE_1, EXAMPLE_2], { kind: "seed", numMerges: 5 });
  assert.equal(tokenizer.vocabSize, model.config.vocabSize);
  // As the notebook's generation cell: "line" ("l", "in", "e") fixed, the rest filled in 4 steps.
  assert.deepEqual([...encode(tokenizer, "line", { eot: false })], [15, 32, 9]);
  const reveals: Int32Array[] = [];
  for (const method of ["confidence", "ancestral"] as const) {
    const out = sample(model, tokenizer, {
      prompt: "line",
      length: 8,
      steps: 4,
      seed: 3,
      method,
      onStep: (ids: Int32Array) => reveals.push(ids),
    });
    assert.equal(out.ids.length, 8);
    assert.ok(!out.ids.includes(tokenizer.maskId), `${method} left a mask: ${out.ids}`);
    assert.ok(out.text.startsWith("line"), `${method} lost the prompt: ${out.text}`);
  }
  assert.ok(reveals.length >= 4, "onStep was not called for each step");
});
