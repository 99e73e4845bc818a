/**
 * Training (the `"seed"` and `"bpe"` kinds), encoding and decoding (all kinds).
 *
 * @module
 */

import { PRETOKEN_PATTERN } from "./pretokenize.ts";
import {
  bpeTables,
  buildBpeTokenizer,
  decodeBpe,
  encodeBpePiece,
  encodePieces,
  trainBpeMerges,
} from "./bpe.ts";
import type { BpeTables } from "./bpe.ts";
import { encodeGpt2Piece, GPT2_PRETOKEN_PATTERN, gpt2Tables } from "./gpt2.ts";
import type { Gpt2Tables } from "./gpt2.ts";
import { ensureTokenizer, trust } from "./json.ts";
import { buildSeedTokenizer, encodeSeed, seedTables, trainSeedMerges } from "./seed.ts";
import type { SeedTables } from "./seed.ts";
import {
  type EncodeOptions,
  MAX_VOCAB,
  type Tokenizer,
  type TrainTokenizerOptions,
} from "./types.ts";

/** The default vocabulary size of the `"bpe"` kind. */
export const DEFAULT_BPE_VOCAB_SIZE = 512;
/** The default number of merges of the `"seed"` kind (the notebook's `num_merges=5`). */
export const DEFAULT_SEED_MERGES = 5;

function checkCount(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`Invalid ${name}: expected an integer ${min} <= x <= ${max}, got ${v}`);
  }
  return v;
}

/**
 * Trains a tokenizer on a corpus.
 *
 * - `kind: "bpe"` (default): byte-level BPE with a pre-tokenizer; `vocabSize` (default 512)
 *   counts the 256 bytes, the merges and the 2 special tokens. Each text is pre-tokenized on its
 *   own.
 * - `kind: "seed"`: the notebook's `SimpleBPETokenizer` (texts joined and lowercased; default 5
 *   merges); `vocabSize` counts the distinct characters, the merges and the 2 special tokens.
 *
 * Training stops early (a smaller vocabulary) when no adjacent pair is left to merge.
 *
 * @param texts the corpus
 * @param options kind, and numMerges or vocabSize
 * @returns the tokenizer (frozen plain data)
 * @throws {TypeError} when `texts` is not an array of strings or `kind` is unknown
 * @throws {RangeError} when `numMerges`/`vocabSize` are out of range or disagree
 *
 * @example The notebook's tokenizer
 * ```ts
 * import { trainTokenizer } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = trainTokenizer(["aaab"], { kind: "seed", numMerges: 1 });
 * assert.deepEqual(tokenizer.merges, [["a", "a"]]);
 * assert.deepEqual(tokenizer.tokens, ["a", "b", "aa", "<|endoftext|>", "<|mask|>"]);
 * assert.equal(tokenizer.maskId, tokenizer.vocabSize - 1);
 * ```
 *
 * @example Byte-level BPE
 * ```ts
 * import { trainTokenizer } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * // Pieces "hello" x1 and " hello" x2: "el", "ll", "lo" occur 3 times; the smallest ids win ties.
 * const tokenizer = trainTokenizer(["hello hello hello"], { vocabSize: 260 });
 * assert.equal(tokenizer.vocabSize, 260);
 * assert.deepEqual(tokenizer.merges, [["e", "l"], ["h", "el"]]);
 * assert.equal(tokenizer.eotId, 258);
 * assert.equal(tokenizer.maskId, 259);
 * ```
 */
export function trainTokenizer(texts: string[], options: TrainTokenizerOptions = {}): Tokenizer {
  if (!Array.isArray(texts)) {
    throw new TypeError(`Invalid texts: expected an array of strings, got ${typeof texts}`);
  }
  texts.forEach((t, i) => {
    if (typeof t !== "string") {
      throw new TypeError(`Invalid texts[${i}]: expected a string, got ${typeof t}`);
    }
  });
  const kind = options.kind ?? "bpe";
  if (kind !== "seed" && kind !== "bpe") {
    throw new TypeError(`Invalid kind: expected "seed" or "bpe", got ${JSON.stringify(kind)}`);
  }
  const base = kind === "bpe"
    ? 256 + 2
    : new Set(Array.from(texts.join("").toLowerCase())).size + 2;
  let numMerges: number;
  if (options.numMerges !== undefined) {
    numMerges = checkCount("numMerges", options.numMerges, 0, MAX_VOCAB - base);
    if (options.vocabSize !== undefined && options.vocabSize !== base + numMerges) {
      throw new RangeError(
        `Invalid vocabSize: expected ${base} + numMerges = ${
          base + numMerges
        } when both are given, got ${options.vocabSize}`,
      );
    }
  } else if (options.vocabSize !== undefined) {
    numMerges = checkCount("vocabSize", options.vocabSize, base, MAX_VOCAB) - base;
  } else {
    numMerges = kind === "bpe" ? DEFAULT_BPE_VOCAB_SIZE - base : DEFAULT_SEED_MERGES;
  }
  if (kind === "seed") {
    const { alphabet, merges } = trainSeedMerges(texts, numMerges);
    return trust(buildSeedTokenizer(alphabet, merges));
  }
  return trust(buildBpeTokenizer(trainBpeMerges(texts, numMerges)));
}

interface Tables {
  tokenizer: Tokenizer;
  seed?: SeedTables;
  bpe?: BpeTables;
  gpt2?: Gpt2Tables;
}

const tablesByTokenizer = new WeakMap<object, Tables>();

/** The lookup tables of a tokenizer, built (and the tokenizer checked) on first use. */
function tablesOf(value: Tokenizer): Tables {
  let tables = tablesByTokenizer.get(value);
  if (tables === undefined) {
    if (typeof value !== "object" || value === null) {
      throw new TypeError(`Invalid tokenizer: expected an object, got ${value}`);
    }
    const tokenizer = ensureTokenizer(value);
    tables = tokenizer.kind === "seed"
      ? { tokenizer, seed: seedTables(tokenizer) }
      : tokenizer.kind === "gpt2"
      ? { tokenizer, gpt2: gpt2Tables(tokenizer) }
      : { tokenizer, bpe: bpeTables(tokenizer) };
    tablesByTokenizer.set(value, tables);
  }
  return tables;
}

/**
 * Encodes text to token ids.
 *
 * - `"seed"`: the notebook's `encode` (literal `<|endoftext|>` removed, merges by rank, EOT
 *   appended by default). A character the tokenizer never saw is a `RangeError` (the notebook
 *   would grow its vocabulary past the model's embedding).
 * - `"bpe"`: pre-tokenize, then merges by rank within each piece (cached per piece). Any string
 *   encodes; lone surrogates become U+FFFD's bytes, as `TextEncoder` does, so
 *   `decode(encode(s))` is `s.toWellFormed()`. A literal `<|endoftext|>` is ordinary text. No
 *   EOT unless `eot: true`.
 * - `"gpt2"`: GPT-2's pre-tokenizer, the bytes as their vocabulary ids, then merges by rank
 *   (cached per piece), giving GPT-2's own ids. Lone surrogates and a literal `<|endoftext|>`
 *   as for `"bpe"` (GPT-2's original encoder also reads that literal as text). No EOT unless
 *   `eot: true`.
 *
 * @param tokenizer a tokenizer from {@linkcode trainTokenizer}, `tokenizerFromJSON`,
 *   `tokenizerFromHuggingFace` or `tokenizerFromVocabMerges`
 * @param text the text
 * @param options `eot`: append `<|endoftext|>` unless already last (default: true for seed, false
 *   for bpe and gpt2)
 * @returns the ids
 * @throws {TypeError} when `text` is not a string
 * @throws {RangeError} (seed) on an unknown character, naming it and its UTF-16 index
 *
 * @example Round trip
 * ```ts
 * import { decode, encode, trainTokenizer } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = trainTokenizer(["a cat, a hat"], { vocabSize: 300 });
 * const ids = encode(tokenizer, "a cat? 🐈");
 * assert.ok(ids instanceof Int32Array);
 * assert.equal(decode(tokenizer, ids), "a cat? 🐈");
 * ```
 */
export function encode(
  tokenizer: Tokenizer,
  text: string,
  options: EncodeOptions = {},
): Int32Array {
  if (typeof text !== "string") {
    throw new TypeError(`Invalid text: expected a string, got ${typeof text}`);
  }
  const tables = tablesOf(tokenizer);
  const t = tables.tokenizer;
  if (tables.seed) return encodeSeed(t, tables.seed, text, options.eot ?? true);
  const eotId = (options.eot ?? false) ? t.eotId : -1;
  const { gpt2, bpe } = tables;
  if (gpt2) {
    const piece = (p: string) => encodeGpt2Piece(gpt2, t.mergeIds, p);
    return encodePieces(text, GPT2_PRETOKEN_PATTERN, gpt2.cache, piece, eotId);
  }
  const piece = (p: string) => encodeBpePiece(bpe!, t.mergeIds, p);
  return encodePieces(text, PRETOKEN_PATTERN, bpe!.cache, piece, eotId);
}

/**
 * Decodes token ids to text. One trailing `<|endoftext|>` is dropped (the notebook's `decode`);
 * any other special id reads as its text (`<|endoftext|>`, `<|mask|>`). For `"bpe"` and `"gpt2"`,
 * bytes that do not form valid UTF-8 (say, a sampled sequence that cuts a character) read as
 * U+FFFD.
 *
 * @param tokenizer the tokenizer
 * @param ids token ids, integers `0 <= id < vocabSize`
 * @returns the text
 * @throws {RangeError} on an id out of range, naming it and its index
 *
 * @example Dropping the trailing EOT
 * ```ts
 * import { decode, trainTokenizer } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = trainTokenizer(["ab"], { kind: "seed", numMerges: 0 });
 * // tokens: "a" 0, "b" 1, "<|endoftext|>" 2, "<|mask|>" 3
 * assert.equal(decode(tokenizer, [0, 2, 1, 3, 2]), "a<|endoftext|>b<|mask|>");
 * ```
 */
export function decode(tokenizer: Tokenizer, ids: ArrayLike<number>): string {
  const tables = tablesOf(tokenizer);
  const t = tables.tokenizer;
  if (ids === null || typeof ids !== "object" || typeof ids.length !== "number") {
    throw new TypeError(`Invalid ids: expected an array of token ids, got ${ids}`);
  }
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= t.vocabSize) {
      throw new RangeError(
        `Token id out of range: expected 0 <= id < ${t.vocabSize}, got ${id} at index ${i}`,
      );
    }
  }
  let n = ids.length;
  if (n > 0 && ids[n - 1] === t.eotId) n--;
  const kept = n === ids.length ? ids : Array.prototype.slice.call(ids, 0, n) as number[];
  if (tables.bpe) return decodeBpe(tables.bpe, kept);
  if (tables.gpt2) return decodeBpe(tables.gpt2, kept);
  let out = "";
  for (let i = 0; i < n; i++) out += t.tokens[ids[i]];
  return out;
}
