import assert from "node:assert/strict";
import {
  decode,
  encode,
  type Tokenizer,
  TOKENIZER_JSON_VERSION,
  tokenizerFromJSON,
  tokenizerHash,
  tokenizerToJSON,
  trainTokenizer,
} from "../../src/tokenizer/mod.ts";
import { sha256Hex } from "../../src/tokenizer/sha256.ts";

const CORPUS = [
  "It was the best of times, it was the worst of times; 1775. Über-café 中文 😀.",
  "It was the age of wisdom, it was the age of foolishness.",
];
const bpe = trainTokenizer(CORPUS, { vocabSize: 300 });
const seed = trainTokenizer(CORPUS, { kind: "seed", numMerges: 12 });

for (const [name, tok] of [["bpe", bpe], ["seed", seed]] as const) {
  Deno.test(`tokenizerFromJSON(tokenizerToJSON(t)) equals t and encodes alike: ${name}`, () => {
    const json = tokenizerToJSON(tok);
    const loaded = tokenizerFromJSON(json);
    assert.deepEqual(loaded, tok);
    assert.equal(tokenizerToJSON(loaded), json);
    const text = "it was the age of times, 1775.";
    assert.deepEqual(encode(loaded, text), encode(tok, text));
    assert.equal(decode(loaded, encode(tok, text)), text);
  });
}

Deno.test("tokenizerToJSON() file round trip through a temp dir", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sedd_tokenizer_" });
  try {
    const path = `${dir}/tokenizer.json`;
    await Deno.writeTextFile(path, tokenizerToJSON(bpe));
    const loaded = tokenizerFromJSON(await Deno.readTextFile(path));
    assert.deepEqual(loaded, bpe);
    assert.equal(tokenizerHash(loaded), tokenizerHash(bpe));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenizerToJSON() writes format, version and kind first", () => {
  const v = JSON.parse(tokenizerToJSON(seed));
  assert.deepEqual(Object.keys(v).slice(0, 3), ["format", "version", "kind"]);
  assert.equal(v.format, "sedd-tokenizer");
  assert.equal(v.version, TOKENIZER_JSON_VERSION);
  assert.equal(v.kind, "seed");
});

function tampered(tok: Tokenizer, edit: (v: Record<string, unknown>) => void): string {
  const v = JSON.parse(tokenizerToJSON(tok));
  edit(v);
  return JSON.stringify(v);
}

Deno.test("tokenizerFromJSON() refuses malformed or wrong-version JSON with clear errors", () => {
  assert.throws(() => tokenizerFromJSON("{not json"), {
    name: "SyntaxError",
    message: /^Invalid tokenizer JSON: /,
  });
  assert.throws(() => tokenizerFromJSON("[1,2]"), /expected the JSON to be an object, got \[1,2\]/);
  assert.throws(
    () => tokenizerFromJSON(tampered(bpe, (v) => (v.format = "tiktoken"))),
    /expected format to be "sedd-tokenizer", got "tiktoken"/,
  );
  assert.throws(() => tokenizerFromJSON(tampered(bpe, (v) => (v.version = 2))), {
    name: "RangeError",
    message: "Unsupported tokenizer JSON version: expected 1, got 2",
  });
  assert.throws(() => tokenizerFromJSON(tampered(bpe, (v) => delete v.version)), RangeError);
  assert.throws(
    () => tokenizerFromJSON(tampered(bpe, (v) => (v.kind = "wordpiece"))),
    /expected kind to be "seed", "bpe" or "gpt2", got "wordpiece"/,
  );
  assert.throws(
    () => tokenizerFromJSON(tampered(bpe, (v) => delete v.tokens)),
    /expected tokens to be an array of strings, got undefined/,
  );
  assert.throws(
    () => tokenizerFromJSON(tampered(bpe, (v) => ((v.tokens as string[])[260] = "zz"))),
    /expected tokens\[260\] to be /,
  );
  assert.throws(
    () => tokenizerFromJSON(tampered(bpe, (v) => ((v.mergeIds as number[][])[3] = [0, 9999]))),
    /Invalid bpe merge 3: expected ids 0 <= id < 259, got \[0,9999\]/,
  );
  assert.throws(
    () => tokenizerFromJSON(tampered(bpe, (v) => (v.maskId = 0))),
    /expected maskId to be 299, got 0/,
  );
  assert.throws(
    () => tokenizerFromJSON(tampered(seed, (v) => ((v.merges as string[][])[0] = ["q", "q"]))),
    /Invalid seed merge/,
  );
  assert.throws(
    () => tokenizerFromJSON(tampered(seed, (v) => (v.vocabSize = 3))),
    /expected vocabSize to be \d+, got 3/,
  );
  assert.throws(() => tokenizerFromJSON(42 as unknown as string), TypeError);
});

Deno.test("encode() checks a tokenizer object it did not build before using it", () => {
  const broken = { ...structuredClone(bpe), eotId: 7 };
  assert.throws(() => encode(broken, "abc"), /expected eotId to be 298, got 7/);
});

Deno.test("tokenizerHash() is the SHA-256 of the JSON and tells tokenizers apart", async () => {
  const json = new TextEncoder().encode(tokenizerToJSON(bpe));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", json));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(tokenizerHash(bpe), hex);
  assert.equal(tokenizerHash(structuredClone(bpe)), hex);
  assert.notEqual(tokenizerHash(seed), hex);
  assert.notEqual(tokenizerHash(trainTokenizer(CORPUS, { vocabSize: 299 })), hex);
});

Deno.test("sha256Hex() matches Web Crypto on lengths around the padding boundaries", async () => {
  for (const n of [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 1000, 70_000]) {
    const data = new Uint8Array(n);
    for (let i = 0; i < n; i++) data[i] = (i * 131 + 7) & 255;
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
    const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
    assert.equal(sha256Hex(data), hex, `length ${n}`);
  }
});
