/**
 * Training data: a corpus of documents becomes one token stream, split into a training part and a
 * held-out tail, from which batches are random windows of `context` tokens.
 *
 * Dimensions: `B` batch (sequences), `T` context (tokens per sequence), `N` stream length.
 *
 * The window for sequence `j` of step `s` comes from `new Rng(seed, s, j)`, never from a shared
 * stream, so any worker can draw any row and resuming at step `s` needs no saved data state.
 *
 * @module
 */

import type { Rng } from "../rng.ts";

/** The token stream cut into a training part and a held-out tail. */
export interface TokenSplit {
  /** Tokens the trainer draws windows from, `(N_train)`. */
  train: Int32Array;
  /** The last part of the stream, for the held-out loss, `(N_heldOut)`. */
  heldOut: Int32Array;
}

/**
 * Joins tokenized documents into one stream, each document followed by the end-of-text token.
 *
 * @param docs Token ids of each document.
 * @param eotId The end-of-text id.
 * @returns The stream.
 *
 * @example Two documents
 * ```ts
 * import { joinDocuments } from "./data.ts";
 * import assert from "node:assert/strict";
 *
 * const ids = joinDocuments([new Int32Array([1, 2]), new Int32Array([3])], 0);
 * assert.deepEqual([...ids], [1, 2, 0, 3, 0]);
 * ```
 */
export function joinDocuments(docs: ArrayLike<number>[], eotId: number): Int32Array {
  let n = 0;
  for (const d of docs) n += d.length + 1;
  const out = new Int32Array(n);
  let o = 0;
  for (const d of docs) {
    for (let i = 0; i < d.length; i++) out[o++] = d[i];
    out[o++] = eotId;
  }
  return out;
}

/** `i`, or `i - 1` when `i` would split a surrogate pair of `s` (a cut never makes a lone half). */
function cutBefore(s: string, i: number): number {
  const c = s.charCodeAt(i);
  return i > 0 && c >= 0xdc00 && c <= 0xdfff && (s.charCodeAt(i - 1) & 0xfc00) === 0xd800
    ? i - 1
    : i;
}

/**
 * The documents without their held-out region, for training a tokenizer that never sees
 * held-out text: the first `1 - 2 * heldOutFraction` of their characters (later documents
 * dropped, the one the cut falls in truncated, never between the halves of a surrogate pair). The
 * held-out tail of the token stream is a fraction of tokens, not characters, so the cut keeps a
 * margin of as much again. Works on any length of document (one 50 MB line is one slice).
 *
 * @param docs The documents, in stream order.
 * @param heldOutFraction The trainer's held-out fraction (0: every document, whole).
 * @returns The documents a tokenizer may learn from.
 *
 * @example The last 4% of the characters are left out for a 2% held-out tail
 * ```ts
 * import { tokenizerDocuments } from "./data.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(tokenizerDocuments(["a".repeat(60), "b".repeat(40)], 0.02), [
 *   "a".repeat(60),
 *   "b".repeat(36),
 * ]);
 * ```
 */
export function tokenizerDocuments(docs: string[], heldOutFraction: number): string[] {
  if (!(heldOutFraction > 0)) return docs;
  let total = 0;
  for (const d of docs) total += d.length;
  let left = Math.floor(total * Math.max(0, 1 - 2 * heldOutFraction));
  const out: string[] = [];
  for (const d of docs) {
    if (left <= 0) break;
    out.push(d.length <= left ? d : d.slice(0, cutBefore(d, left)));
    left -= d.length;
  }
  return out;
}

/**
 * Splits a stream into training tokens and a held-out tail of `heldOutFraction` of it (at least
 * `context` tokens when the fraction is positive, so one held-out window fits).
 *
 * @param tokens The whole stream, `(N)`.
 * @param options `context` (T) and `heldOutFraction` (default 0.02: the last 2%).
 * @returns Views of the two parts (no copy).
 *
 * @example The last 2% is held out
 * ```ts
 * import { splitTokens } from "./data.ts";
 * import assert from "node:assert/strict";
 *
 * const { train, heldOut } = splitTokens(new Int32Array(1000), { context: 8 });
 * assert.equal(train.length, 980);
 * assert.equal(heldOut.length, 20);
 * ```
 */
export function splitTokens(
  tokens: Int32Array,
  options: { context: number; heldOutFraction?: number },
): TokenSplit {
  const { context: T, heldOutFraction = 0.02 } = options;
  if (!(heldOutFraction >= 0 && heldOutFraction < 1)) {
    throw new RangeError(`Invalid heldOutFraction: expected 0 <= f < 1, got ${heldOutFraction}`);
  }
  const N = tokens.length;
  const nHeld = heldOutFraction > 0 ? Math.max(Math.ceil(N * heldOutFraction), T) : 0;
  if (N - nHeld < T) {
    throw new RangeError(
      `Not enough data: expected at least ${T + nHeld} tokens for context ${T} ` +
        `and ${nHeld} held out, got ${N}`,
    );
  }
  return { train: tokens.subarray(0, N - nHeld), heldOut: tokens.subarray(N - nHeld) };
}

/**
 * Copies a random window of `T` tokens into row `j` of `out`, drawing its start from `rng`.
 *
 * @param out Windows, `(B,T)`; row `j` is written.
 * @param tokens The stream, `(N)`, with `N >= T`.
 * @param j The row.
 * @param T Context.
 * @param rng The row's generator (advanced by one draw).
 */
export function drawWindow(
  out: Int32Array, // (B,T)
  tokens: Int32Array, // (N)
  j: number,
  T: number,
  rng: Rng,
): void {
  const start = rng.int(tokens.length - T + 1);
  out.set(tokens.subarray(start, start + T), j * T);
}

/**
 * A 32-bit FNV-1a hash of strings, as 8 hex digits: names the token cache of a corpus.
 *
 * @param parts The strings, hashed in order with a separator.
 * @returns Hex digits.
 *
 * @example Different text, different hash
 * ```ts
 * import { hashText } from "./data.ts";
 * import assert from "node:assert/strict";
 *
 * assert.notEqual(hashText(["a"]), hashText(["b"]));
 * assert.equal(hashText(["a"]), hashText(["a"]));
 * ```
 */
export function hashText(parts: string[]): string {
  let h = 0x811c9dc5;
  for (const s of parts) {
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    h ^= 0x1f;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, "0");
}
