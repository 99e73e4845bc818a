import assert from "node:assert/strict";
import { charProb, ngramBits, ngramBitsPerChar, trainCharNgram } from "../../src/eval/ngram.ts";
import { Rng } from "../../src/rng.ts";

Deno.test("charProb() matches hand-computed add-k probabilities of a 3-gram on a tiny corpus", () => {
  // "abcab": padded histories ^^->a, ^a->b, ab->c, bc->a, ca->b. |V| = a, b, c + unknown = 4.
  const lm = trainCharNgram("abcab", { order: 3, k: 0.5 });
  assert.equal(lm.vocabSize, 4);
  assert.deepEqual(lm.chars, ["a", "b", "c"]);
  assert.equal(charProb(lm, "", "a"), (1 + 0.5) / (1 + 2)); // history ^^
  assert.equal(charProb(lm, "", "b"), (0 + 0.5) / (1 + 2));
  assert.equal(charProb(lm, "a", "b"), (1 + 0.5) / (1 + 2)); // history ^a
  assert.equal(charProb(lm, "xab", "c"), (1 + 0.5) / (1 + 2)); // only "ab" is used
  assert.equal(charProb(lm, "ab", "a"), (0 + 0.5) / (1 + 2));
  assert.equal(charProb(lm, "bb", "a"), 1 / 4); // unseen history: uniform
  assert.equal(charProb(lm, "ca", "z"), (0 + 0.5) / (1 + 2)); // unknown character
  // Probabilities over the vocabulary (unknown included) sum to 1.
  const sum = ["a", "b", "c", "?"].reduce((s, c) => s + charProb(lm, "ab", c), 0);
  assert.ok(Math.abs(sum - 1) < 1e-12);
});

Deno.test("ngramBits() sums -log2 charProb() over the text, each document from its own start", () => {
  const lm = trainCharNgram(["hello world", "help"], { order: 5 });
  const text = "hello";
  let bits = 0;
  for (let i = 0; i < text.length; i++) bits -= Math.log2(charProb(lm, text.slice(0, i), text[i]));
  const got = ngramBits(lm, text);
  assert.equal(got.chars, 5);
  assert.ok(Math.abs(got.bits - bits) < 1e-12);
  const two = ngramBits(lm, ["hello", "hello"]);
  assert.ok(Math.abs(two.bits - 2 * bits) < 1e-12);
  assert.equal(two.chars, 10);
  // Code points, not UTF-16 units.
  assert.equal(ngramBits(lm, "🐋é").chars, 2);
  assert.ok(Number.isNaN(ngramBitsPerChar(lm, "")));
});

Deno.test("ngramBitsPerChar(): real text costs fewer bits than the same characters shuffled", () => {
  const text = "Call me Ishmael. Some years ago, never mind how long precisely, having little or " +
    "no money in my purse, and nothing particular to interest me on shore, I thought I would " +
    "sail about a little and see the watery part of the world.";
  const lm = trainCharNgram(text);
  const chars = [...text];
  const rng = new Rng(1);
  for (let i = chars.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [chars[i], chars[j]] = [chars[j], chars[i]];
  }
  const shuffled = chars.join("");
  const real = ngramBitsPerChar(lm, text);
  const fake = ngramBitsPerChar(lm, shuffled);
  assert.ok(real < 2.5, `${real}`);
  assert.ok(fake > 2 * real, `${real} vs ${fake}`);
});

Deno.test("trainCharNgram() rejects bad options", () => {
  assert.throws(() => trainCharNgram("abc", { order: 0 }), {
    name: "RangeError",
    message: "Invalid order: expected an integer n >= 1, got 0",
  });
  assert.throws(() => trainCharNgram("abc", { k: 0 }), {
    name: "RangeError",
    message: "Invalid k: expected a finite k > 0, got 0",
  });
  assert.throws(() => trainCharNgram(3 as unknown as string), { name: "TypeError" });
  assert.throws(() => charProb(trainCharNgram("ab"), "a", "bc"), { name: "RangeError" });
});
