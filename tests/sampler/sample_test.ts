import assert from "node:assert/strict";
import { conditioning, parseTemplate, sample } from "../../src/sampler/mod.ts";
import { createModel } from "../../src/model/model.ts";
import { decode, encode, trainTokenizer } from "../../src/tokenizer/mod.ts";

const TEXT = "the whale swam in the sea and the ship sailed on";
const tokenizer = trainTokenizer([TEXT], { kind: "seed", numMerges: 4 });

Deno.test("parseTemplate() splits text and [MASK]/[MASK:n] holes and rejects [MASK:0]", () => {
  assert.deepEqual(parseTemplate("[MASK:2]a[MASK]"), [{ masks: 2 }, { text: "a" }, { masks: 1 }]);
  assert.deepEqual(parseTemplate("no holes"), [{ text: "no holes" }]);
  assert.throws(() => parseTemplate("a [MASK:0] b"), {
    name: "RangeError",
    message: /expected \[MASK:n\] with n >= 1, got n = 0/,
  });
});

Deno.test("conditioning() puts the template's tokens around its holes", () => {
  const pre = [...encode(tokenizer, "the whale ", { eot: false })];
  const post = [...encode(tokenizer, " the sea", { eot: false })];
  const { length, fixed } = conditioning(tokenizer, { infill: "the whale [MASK:5] the sea" });
  assert.equal(length, pre.length + 5 + post.length);
  const want = [...pre.keys(), ...post.map((_, j) => pre.length + 5 + j)];
  assert.deepEqual(fixed.positions, want);
  assert.deepEqual(fixed.ids, [...pre, ...post]);
  assert.throws(() => conditioning(tokenizer, { infill: "[MASK]", prompt: "a" }), TypeError);
  assert.throws(() => conditioning(tokenizer, { prompt: "the whale", length: 2 }), {
    name: "RangeError",
    message: /at most 2 tokens together, got \d+ \+ 0/,
  });
});

Deno.test("sample() keeps prompt, suffix and infill text and fills every hole", () => {
  const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, context: 24, seed: 3 });
  for (const method of ["confidence", "euler", "tweedie", "ancestral"] as const) {
    const a = sample(model, tokenizer, {
      prompt: "the whale",
      suffix: " sea",
      length: 20,
      steps: 6,
      method,
      seed: 1,
    });
    assert.ok(a.text.startsWith("the whale"), a.text);
    assert.ok(a.text.endsWith(" sea"), a.text);
    assert.equal(a.ids.length, 20);
    assert.ok(!a.ids.includes(tokenizer.maskId));
    const infill = { infill: "the [MASK:6] and the [MASK:3]", steps: 5, method, seed: 2 };
    const b = sample(model, tokenizer, infill);
    assert.ok(b.text.startsWith("the "), b.text);
    const head = encode(tokenizer, "the ", { eot: false }).length;
    assert.ok(decode(tokenizer, b.ids.subarray(head + 6)).startsWith(" and the "), b.text);
    assert.ok(!b.ids.includes(tokenizer.maskId));
    assert.equal(sample(model, tokenizer, infill).text, b.text, "same seed, same infill");
  }
  assert.throws(() => sample(model, tokenizer, { length: 25 }), {
    name: "RangeError",
    message: /at most 24 tokens \(the model's context\), got 25/,
  });
});
