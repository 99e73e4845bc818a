import assert from "node:assert/strict";
import { decode, encode, trainTokenizer } from "../../src/tokenizer/mod.ts";

const RAW_1 =
  "Linear algebra is central to almost all areas of mathematics. For instance, linear algebra is fundamental in modern presentations of geometry, including for defining basic objects such as lines, planes and rotations. Also, functional analysis, a branch of mathematical analysis, may be viewed as the application of linear algebra to function spaces.";
const RAW_2 =
  "In numerical analysis and linear algebra, lower–upper (LU) decomposition or factorization factors a matrix as the product of a lower triangular matrix and an upper triangular matrix (see matrix multiplication and matrix decomposition).";

// The notebook's cell 5 output (tok.vocab), id order.
// deno-fmt-ignore
const NOTEBOOK_VOCAB = [
  " ", "(", ")", ",", ".", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "l", "m", "n", "o",
  "p", "r", "s", "t", "u", "v", "w", "x", "y", "z", "–", " a", "at", "in", " m", "io",
  "<|endoftext|>", "<|mask|>",
];

// The notebook's cell 7 output, as printed there (the print stops after these values).
const NOTEBOOK_CELL_7: number[] = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/tokenizer/notebook_cell7.json", import.meta.url)),
).notebookCell7Printed;

interface GoldenCase {
  name: string;
  corpus: string[];
  numMerges: number;
  merges: [string, string][];
  tokens: string[];
  eotId: number;
  maskId: number;
  encoded: { text: string; ids: number[]; idsNoEot: number[]; decoded: string }[];
}
const golden: { notebookCell7: number[]; cases: GoldenCase[] } = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/tokenizer/seed_golden.json", import.meta.url)),
);

function notebookTokenizer() {
  return trainTokenizer([RAW_1, RAW_2], { kind: "seed", numMerges: 5 });
}

Deno.test("trainTokenizer(seed) learns the notebook's 5 merges", () => {
  assert.deepEqual(notebookTokenizer().merges, [
    [" ", "a"],
    ["a", "t"],
    ["i", "n"],
    [" ", "m"],
    ["i", "o"],
  ]);
});

Deno.test("trainTokenizer(seed) gives the notebook's 37-token vocabulary and ids", () => {
  const tok = notebookTokenizer();
  assert.equal(tok.vocabSize, 37);
  assert.deepEqual(tok.tokens, NOTEBOOK_VOCAB);
  assert.equal(tok.eotId, 35);
  assert.equal(tok.maskId, 36);
});

Deno.test("encode(seed) reproduces the token tensor the notebook prints in cell 7", () => {
  const tok = notebookTokenizer();
  const tokens: number[] = [];
  for (const example of [RAW_1, RAW_2]) {
    tokens.push(tok.eotId);
    tokens.push(...encode(tok, example.toLowerCase()));
  }
  assert.deepEqual(tokens.slice(0, NOTEBOOK_CELL_7.length), NOTEBOOK_CELL_7);
  // The whole tensor, from the notebook's class run by make_seed_golden.py.
  assert.deepEqual(tokens, golden.notebookCell7);
});

for (const c of golden.cases) {
  Deno.test(`trainTokenizer(seed)/encode/decode match the notebook's class: ${c.name}`, () => {
    const tok = trainTokenizer(c.corpus, { kind: "seed", numMerges: c.numMerges });
    assert.deepEqual(tok.merges, c.merges);
    assert.deepEqual(tok.tokens, c.tokens);
    assert.equal(tok.eotId, c.eotId);
    assert.equal(tok.maskId, c.maskId);
    assert.equal(tok.vocabSize, c.tokens.length);
    for (const e of c.encoded) {
      assert.deepEqual([...encode(tok, e.text)], e.ids, `encode(${JSON.stringify(e.text)})`);
      assert.deepEqual([...encode(tok, e.text, { eot: false })], e.idsNoEot);
      assert.equal(decode(tok, e.ids), e.decoded);
    }
  });
}

Deno.test("encode(seed) throws a RangeError naming an unseen character and its index", () => {
  const tok = notebookTokenizer();
  assert.throws(() => encode(tok, "linear Q"), {
    name: "RangeError",
    message: /Unknown character "Q" \(U\+0051\) at index 7/,
  });
  assert.throws(() => encode(tok, "ab😀"), /Unknown character "😀" \(U\+1F600\) at index 2/);
});

Deno.test("decode(seed) drops exactly one trailing EOT and rejects out-of-range ids", () => {
  const tok = notebookTokenizer();
  const ids = [...encode(tok, "a matrix")];
  assert.equal(decode(tok, ids), "a matrix");
  assert.equal(decode(tok, [...ids, 35]), "a matrix<|endoftext|>");
  assert.equal(decode(tok, [36]), "<|mask|>");
  assert.equal(decode(tok, []), "");
  assert.throws(() => decode(tok, [0, 37]), {
    name: "RangeError",
    message: "Token id out of range: expected 0 <= id < 37, got 37 at index 1",
  });
  assert.throws(() => decode(tok, [-1]), RangeError);
  assert.throws(() => decode(tok, [1.5]), RangeError);
});

Deno.test("encode(seed) removes literal <|endoftext|> and appends one EOT by default", () => {
  const tok = notebookTokenizer();
  assert.deepEqual([...encode(tok, "<|endoftext|>")], [35]);
  assert.deepEqual([...encode(tok, "")], [35]);
  assert.deepEqual([...encode(tok, "", { eot: false })], []);
  assert.deepEqual([...encode(tok, "a<|endoftext|>t", { eot: false })], [31]);
});

Deno.test("trainTokenizer(seed) accepts vocabSize instead of numMerges, and checks agreement", () => {
  const byVocab = trainTokenizer([RAW_1, RAW_2], { kind: "seed", vocabSize: 37 });
  assert.deepEqual(byVocab.tokens, NOTEBOOK_VOCAB);
  assert.throws(
    () => trainTokenizer([RAW_1], { kind: "seed", numMerges: 5, vocabSize: 10 }),
    RangeError,
  );
  assert.throws(() => trainTokenizer([RAW_1], { kind: "seed", numMerges: -1 }), RangeError);
  assert.deepEqual(trainTokenizer([RAW_1, RAW_2], { kind: "seed" }).merges.length, 5);
});
