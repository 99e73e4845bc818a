/**
 * A PyTorch state dict of the notebook's model, sampled here and in PyTorch: the fixture
 * tests/fixtures/model/notebook_samples.safetensors (written by
 * tests/fixtures/make_notebook_samples.py; see its header) holds, for the `confidence` and
 * `ancestral` samplers with prompt "line", length 8, 4 steps, batch 2 and seed 3, the ids of
 * every network call with PyTorch's logits for them, and the ids after every step. PyTorch's
 * sampler draws from a port of our Rng, so both sides use the same uniforms in the same order and
 * every decision in the fixture wins by a margin that rounding cannot close (the script checks).
 *
 * Logits: max |ours - torch| / max |torch| <= 1e-4 per call, as tests/model/pytorch_fixtures_test.ts.
 * Samples: equal ids after every step, and the same number of network calls.
 */

import assert from "node:assert/strict";
import { modelFromSafetensors } from "../../src/checkpoint/mod.ts";
import { parseSafetensors, type Tensor } from "../../src/checkpoint/safetensors.ts";
import { forward } from "../../src/model/model.ts";
import { sample } from "../../src/sampler/mod.ts";
import { encode, trainTokenizer } from "../../src/tokenizer/mod.ts";
import { maxRelErr } from "../rel_err.ts";

// The notebook's corpus: its tokenizer (kind "seed", 5 merges) is the one the PyTorch state dict
// in tests/fixtures/model/notebook_state_dict.safetensors was trained with (make_fixtures.py).
const EXAMPLE_1 =
  "Linear algebra is central to almost all areas of mathematics. For instance, linear algebra is fundamental in modern presentations of geometry, including for defining basic objects such as lines, planes and rotations. Also, functional analysis, a branch of mathematical analysis, may be viewed as the application of linear algebra to function spaces.";
const EXAMPLE_2 =
  "In numerical analysis and linear algebra, lower–upper (LU) decomposition or factorization factors a matrix as the product of a lower triangular matrix and an upper triangular matrix (see matrix multiplication and matrix decomposition).";

const DIR = new URL("../fixtures/model/", import.meta.url);
const { model } = modelFromSafetensors(
  Deno.readFileSync(new URL("notebook_state_dict.safetensors", DIR)),
  { config: { nHeads: 2, activation: "relu" } },
);
const fixture = parseSafetensors(Deno.readFileSync(new URL("notebook_samples.safetensors", DIR)));
const meta = fixture.metadata;
const B = Number(meta.batch);
const T = Number(meta.length);
const V = model.config.vocabSize;

function tensor(name: string, dtype: "I32" | "F32", rank: number): Tensor {
  const t = fixture.tensors[name];
  assert.ok(t, `fixture tensor "${name}" is missing`);
  assert.equal(t.dtype, dtype, `fixture tensor "${name}" should be ${dtype}`);
  assert.equal(t.shape.length, rank, `fixture tensor "${name}" should have rank ${rank}`);
  return t;
}

/** Splits a tensor of shape (n, ...) into its n rows. */
function rows<A extends Int32Array | Float32Array>(t: Tensor, data: A): A[] {
  const n = t.shape[0];
  const size = data.length / n;
  return Array.from({ length: n }, (_, i) => data.subarray(i * size, (i + 1) * size) as A);
}

Deno.test("the notebook's tokenizer gives the fixture's vocabulary and prompt ids", () => {
  const tokenizer = trainTokenizer([EXAMPLE_1, EXAMPLE_2], { kind: "seed", numMerges: 5 });
  assert.equal(tokenizer.vocabSize, V);
  assert.equal(tokenizer.maskId, V - 1);
  // As the notebook's generation cell: "line" ("l", "in", "e") fixed, the rest filled in.
  assert.deepEqual([...encode(tokenizer, "line", { eot: false })], JSON.parse(meta.prompt));
});

for (const method of ["confidence", "ancestral"] as const) {
  Deno.test(`notebook state dict, ${method}: logits of every sampler call match PyTorch's`, () => {
    const inputT = tensor(`${method}.input`, "I32", 3);
    const logitsT = tensor(`${method}.logits`, "F32", 4);
    assert.deepEqual(inputT.shape.slice(1), [B, T]);
    assert.deepEqual(logitsT.shape, [...inputT.shape, V]);
    const inputs = rows(inputT, inputT.data as Int32Array);
    const wants = rows(logitsT, logitsT.data as Float32Array);
    for (let i = 0; i < inputs.length; i++) {
      const err = maxRelErr(forward(model, inputs[i], { batch: B }), wants[i], `call ${i + 1}`);
      assert.ok(err <= 1e-4, `call ${i + 1}: logits max relative error ${err} > 1e-4`);
    }
  });

  Deno.test(`notebook state dict, ${method}: sample() takes PyTorch's samples step by step`, () => {
    const tokenizer = trainTokenizer([EXAMPLE_1, EXAMPLE_2], { kind: "seed", numMerges: 5 });
    const stepsT = tensor(`${method}.steps`, "I32", 3);
    const want = rows(stepsT, stepsT.data as Int32Array);
    const got: Int32Array[] = [];
    const out = sample(model, tokenizer, {
      prompt: "line",
      length: T,
      steps: Number(meta.steps),
      seed: Number(meta.seed),
      batch: B,
      method,
      onStep: (ids: Int32Array) => got.push(ids),
    });
    assert.equal(got.length, want.length, `${method}: steps reported`);
    for (let s = 0; s < want.length; s++) {
      assert.deepEqual([...got[s]], [...want[s]], `${method}: ids after step ${s + 1}`);
    }
    assert.deepEqual([...out.ids], [...want[want.length - 1]]);
    assert.equal(out.evaluations, Number(meta[`${method}.evaluations`]));
    assert.equal(out.savedEvaluations, Number(meta[`${method}.savedEvaluations`]));
    assert.ok(out.texts.every((text) => text.startsWith("line")), `prompt lost: ${out.texts}`);
  });
}
