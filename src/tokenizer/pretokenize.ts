/**
 * The pre-tokenizer of the byte-level BPE: it cuts text into pieces, and merges never cross a
 * cut. The pattern follows the GPT-4 (`cl100k`) family, without possessive quantifiers (which
 * JavaScript lacks) and without English contractions:
 *
 * | alternative | what it matches | example pieces |
 * | --- | --- | --- |
 * | `[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+` | a word (letters and combining marks), optionally led by one space or punctuation mark | `"Call"`, `" me"`, `"'s"`, `"—never"` |
 * | `\p{N}{1,3}` | a number, in groups of at most three digits | `"184"`, `"1"` |
 * | ` ?[^\s\p{L}\p{N}]+[\r\n]*` | a punctuation run, optionally led by one space, with the newlines after it | `"."`, `" (“"`, `".\n\n"` |
 * | `\s*[\r\n]` | whitespace up to a newline | `"\n\n"` |
 * | `\s+(?!\S)` | whitespace not followed by text, so the last space goes with the next word | `"   "` |
 * | `\s+` | other whitespace | `" "` |
 *
 * Every character matches some alternative, so the pieces always join back to the input.
 * Lone surrogates match as punctuation.
 *
 * @example Pieces of an English sentence
 * ```ts
 * import { pretokenize } from "./pretokenize.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(pretokenize("Call me Ishmael, in 1851!  Yes."), [
 *   "Call", " me", " Ishmael", ",", " in", " ", "185", "1", "!", " ", " Yes", ".",
 * ]);
 * ```
 *
 * @module
 */

/** The pre-tokenizer pattern (Unicode-aware); see the module doc for each alternative. */
export const PRETOKEN_PATTERN =
  /[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+/gu;

/**
 * Splits text into the pre-tokens BPE merges stay within.
 *
 * @param text any string
 * @returns the pieces, in order; they join back to `text`
 */
export function pretokenize(text: string): string[] {
  return text.match(new RegExp(PRETOKEN_PATTERN)) ?? [];
}
