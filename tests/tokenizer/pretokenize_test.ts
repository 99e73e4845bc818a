import assert from "node:assert/strict";
import { Rng } from "../../src/rng.ts";
import { pretokenize } from "../../src/tokenizer/mod.ts";

Deno.test("pretokenize() splits words with a leading space, numbers, punctuation, whitespace", () => {
  assert.deepEqual(pretokenize("Call me Ishmael. Some years ago—never mind"), [
    "Call",
    " me",
    " Ishmael",
    ".",
    " Some",
    " years",
    " ago",
    "—never",
    " mind",
  ]);
  assert.deepEqual(pretokenize("in 1851, 42 whales!!"), [
    "in",
    " ",
    "185",
    "1",
    ",",
    " ",
    "42",
    " whales",
    "!!",
  ]);
  assert.deepEqual(pretokenize("end.\n\nNew   line"), ["end", ".\n\n", "New", "  ", " line"]);
  assert.deepEqual(pretokenize('whale\'s "sea"'), ["whale", "'s", ' "', "sea", '"']);
  assert.deepEqual(pretokenize("नमस्ते दुनिया"), ["नमस्ते", " दुनिया"]); // combining marks stay
  assert.deepEqual(pretokenize(""), []);
});

Deno.test("pretokenize() pieces always join back to the input, lone surrogates included", () => {
  const alphabet = [..."aZé中😀 \t\n\r.,!—1٣"].concat(["\ud800", "\udc00", "\u0301", "\u00a0"]);
  const rng = new Rng(7);
  for (let trial = 0; trial < 300; trial++) {
    let s = "";
    const n = rng.int(40);
    for (let i = 0; i < n; i++) s += alphabet[rng.int(alphabet.length)];
    const pieces = pretokenize(s);
    assert.equal(pieces.join(""), s, JSON.stringify(s));
    assert.ok(pieces.every((p) => p.length > 0));
  }
});
