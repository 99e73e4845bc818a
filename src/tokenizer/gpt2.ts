/**
 * GPT-2's byte-level BPE (`kind: "gpt2"`): its pre-tokenizer, its byte-to-unicode table, and
 * encoding by merge rank with the vocabulary's own ids.
 *
 * A vocabulary in this family (GPT-2's `vocab.json` + `merges.txt`, or a Hugging Face
 * `tokenizer.json` with a `BPE` model and the `ByteLevel` pre-tokenizer) spells every token as
 * text over a 256-character alphabet: each byte stands for one character, the printable
 * Latin-1 bytes for themselves and the rest for code points from U+0100 up
 * ({@linkcode byteToUnicode}), so `"Ġthe"` is the bytes of `" the"`. Encoding cuts the text with
 * {@linkcode GPT2_PRETOKEN_PATTERN}, writes each piece's UTF-8 bytes as those characters' ids,
 * then applies the merges lowest rank first (every occurrence, left to right) until none applies.
 *
 * @module
 */

import { mergeByRank, PairRanks, PieceCache } from "./bpe.ts";
import { EOT_TOKEN, MASK_TOKEN, MAX_VOCAB, type Tokenizer } from "./types.ts";

/**
 * GPT-2's pre-tokenizer pattern: English contractions, a word (letters) or a number or a
 * punctuation run each optionally led by one space, whitespace not followed by text (so the
 * last space goes with the next word), and other whitespace.
 *
 * Whitespace is the Unicode `White_Space` property, as in the regular-expression engines GPT-2's
 * ids come from (Python's `regex`, and the Rust engines of `tiktoken` and `tokenizers`).
 * JavaScript's `\s` differs on two characters: it takes U+FEFF (not `White_Space`) and leaves
 * out U+0085 (which is), so the pattern spells `\p{White_Space}` instead.
 */
export const GPT2_PRETOKEN_PATTERN =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

/**
 * Splits text into GPT-2's pre-tokens, the pieces its merges stay within.
 *
 * @param text any string
 * @returns the pieces, in order; they join back to `text`
 *
 * @example
 * ```ts
 * import { gpt2Pretokenize } from "./gpt2.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(gpt2Pretokenize("I'll pay $1851  now"), [
 *   "I", "'ll", " pay", " $", "1851", " ", " now",
 * ]);
 * ```
 */
export function gpt2Pretokenize(text: string): string[] {
  return text.match(new RegExp(GPT2_PRETOKEN_PATTERN)) ?? [];
}

/**
 * GPT-2's byte-to-unicode table: the character that spells each byte in the vocabulary. Bytes
 * `!`..`~`, `¡`..`¬` and `®`..`ÿ` stand for themselves; the other 68 bytes, in increasing order,
 * for U+0100, U+0101, ... (so the space 0x20 is `"Ġ"`, U+0120, and the newline `"Ċ"`).
 *
 * @returns 256 one-character strings, indexed by byte
 *
 * @example
 * ```ts
 * import { byteToUnicode } from "./gpt2.ts";
 * import assert from "node:assert/strict";
 *
 * const table = byteToUnicode();
 * assert.equal(table[0x20], "Ġ");
 * assert.equal(table[0x0a], "Ċ");
 * assert.equal(table[0x41], "A");
 * ```
 */
export function byteToUnicode(): string[] {
  const table: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    table[b] = String.fromCharCode(printable ? b : next++);
  }
  return table;
}

/**
 * Builds a `"gpt2"` tokenizer from a vocabulary and its merges, both in the byte-to-unicode
 * spelling. The vocabulary must hold every byte's character, `<|endoftext|>`, and the result of
 * every merge; `<|mask|>` is appended as the last id.
 *
 * @param vocab id -> token text (ids 0..N-1, all distinct)
 * @param merges the merges in rank order, as the two token texts joined
 * @returns the frozen tokenizer, `vocabSize` N + 1
 * @throws {TypeError} naming the first token or merge that breaks a rule
 */
export function buildGpt2Tokenizer(
  vocab: readonly string[],
  merges: readonly (readonly [string, string])[],
): Tokenizer {
  if (vocab.length + 1 > MAX_VOCAB) {
    throw new TypeError(`expected at most ${MAX_VOCAB - 1} tokens, got ${vocab.length}`);
  }
  const idOf = new Map<string, number>();
  vocab.forEach((token, id) => {
    if (typeof token !== "string") {
      throw new TypeError(`expected token ${id} to be a string, got ${typeof token}`);
    }
    const other = idOf.get(token);
    if (other !== undefined) {
      throw new TypeError(
        `expected distinct tokens, got ${JSON.stringify(token)} at ids ${other} and ${id}`,
      );
    }
    idOf.set(token, id);
  });
  if (idOf.has(MASK_TOKEN)) {
    throw new TypeError(
      `expected no ${MASK_TOKEN} token (it is appended as the last id), got it at id ${
        idOf.get(MASK_TOKEN)
      }`,
    );
  }
  const eotId = idOf.get(EOT_TOKEN);
  if (eotId === undefined) throw new TypeError(`expected an ${EOT_TOKEN} token, found none`);
  byteToUnicode().forEach((ch, b) => {
    if (!idOf.has(ch)) {
      throw new TypeError(
        `expected a token for every byte, got none for byte 0x${b.toString(16).padStart(2, "0")} (${
          JSON.stringify(ch)
        })`,
      );
    }
  });
  const seen = new Map<number, number>(); // packed (left, right) -> rank
  const mergeIds = merges.map((pair, r) => {
    if (
      !Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" ||
      typeof pair[1] !== "string" || pair[0] === "" || pair[1] === ""
    ) {
      throw new TypeError(
        `expected merge ${r} to be two non-empty token texts, got ${JSON.stringify(pair)}`,
      );
    }
    const [a, b] = pair;
    for (const part of [a, b, a + b]) {
      if (!idOf.has(part)) {
        throw new TypeError(
          `expected merge ${r} (${JSON.stringify(a)} ${
            JSON.stringify(b)
          }) to join tokens of the vocabulary into one, got ${JSON.stringify(part)}, not in it`,
        );
      }
    }
    const key = idOf.get(a)! * MAX_VOCAB + idOf.get(b)!;
    const first = seen.get(key);
    if (first !== undefined) {
      throw new TypeError(`expected distinct merges, got merge ${r} repeating merge ${first}`);
    }
    seen.set(key, r);
    return Object.freeze([idOf.get(a)!, idOf.get(b)!]) as [number, number];
  });
  const tokens = [...vocab, MASK_TOKEN];
  return Object.freeze({
    kind: "gpt2" as const,
    tokens: Object.freeze(tokens) as string[],
    merges: Object.freeze(merges.map(([a, b]) => Object.freeze([a, b]))) as [string, string][],
    mergeIds: Object.freeze(mergeIds) as [number, number][],
    eotId,
    maskId: vocab.length,
    vocabSize: vocab.length + 1,
  });
}

/** Lookup tables and the pre-token cache for encoding with a `"gpt2"` tokenizer. */
export interface Gpt2Tables {
  /** id -> the token's bytes (a token spelled outside the byte alphabet: its UTF-8). */
  bytes: Uint8Array[];
  /** byte -> the id of its one-character token. */
  byteIds: Int32Array;
  /** (left, right) -> rank. */
  ranks: PairRanks;
  /** rank -> the id of the merged token. */
  resultOf: (rank: number) => number;
  /** Pre-token text -> its ids. */
  cache: PieceCache;
}

const utf8 = new TextEncoder();

/** Builds the tables {@linkcode encodeGpt2Piece} needs, from a checked tokenizer. */
export function gpt2Tables(tokenizer: Tokenizer): Gpt2Tables {
  const toByte = new Map<string, number>();
  byteToUnicode().forEach((ch, b) => toByte.set(ch, b));
  const idOf = new Map<string, number>();
  const bytes = tokenizer.tokens.map((token, id) => {
    idOf.set(token, id);
    const out = new Uint8Array(token.length);
    for (let i = 0; i < token.length; i++) {
      const b = toByte.get(token[i]);
      if (b === undefined) return utf8.encode(token);
      out[i] = b;
    }
    return out;
  });
  const byteIds = new Int32Array(256);
  byteToUnicode().forEach((ch, b) => (byteIds[b] = idOf.get(ch)!));
  const mergeResult = new Int32Array(tokenizer.merges.length);
  tokenizer.merges.forEach(([a, b], r) => (mergeResult[r] = idOf.get(a + b)!));
  return {
    bytes,
    byteIds,
    ranks: new PairRanks(tokenizer.mergeIds),
    resultOf: (rank) => mergeResult[rank],
    cache: new PieceCache(),
  };
}

let byteScratch = new Uint8Array(256);
let idScratch = new Int32Array(256);

/**
 * Encodes one pre-token: its UTF-8 bytes (lone surrogates as U+FFFD, as `TextEncoder` does) as
 * the bytes' ids, then merges lowest rank first, every occurrence left to right, until none
 * applies.
 *
 * @param tables the tokenizer's tables
 * @param mergeIds the merges as id pairs, in rank order
 * @param piece one pre-token
 * @returns its ids (a fresh array)
 */
export function encodeGpt2Piece(
  tables: Gpt2Tables,
  mergeIds: readonly (readonly [number, number])[],
  piece: string,
): Int32Array {
  if (byteScratch.length < piece.length * 3) {
    byteScratch = new Uint8Array(piece.length * 3);
    idScratch = new Int32Array(piece.length * 3);
  }
  const bytes = utf8.encodeInto(piece, byteScratch).written;
  const seq = idScratch; // (bytes)
  for (let i = 0; i < bytes; i++) seq[i] = tables.byteIds[byteScratch[i]];
  const n = mergeByRank(seq, bytes, tables.ranks, mergeIds, tables.resultOf);
  return seq.slice(0, n);
}
