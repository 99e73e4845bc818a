/**
 * A character n-gram language model with add-k smoothing: a judge of sample quality that needs
 * no external model.
 *
 * Characters are Unicode code points. The vocabulary is every character of the training text
 * plus one unknown symbol, so |V| = distinct characters + 1, and
 *
 *     P(c | h) = (count(h c) + k) / (count(h) + k |V|)
 *
 * where h is the n - 1 characters before c. The start of a text is padded with a start symbol
 * (not in the vocabulary: it is never predicted), so the first characters are scored after the
 * histories "^^^^", "^^^a", ... and the training counts include those padded histories. A
 * character never seen in training is scored as the unknown symbol; a history never seen gives
 * the uniform 1/|V|. There is no backoff to shorter histories (Kneser-Ney would score unseen
 * text better; add-k keeps the judge simple and exactly reproducible).
 *
 * Lower bits/char is better. Trained on real text and applied to generated samples, it measures
 * how much the samples look like that text at the scale of a few characters.
 *
 * @example A 2-gram on "abab"
 * ```ts
 * import { charProb, trainCharNgram } from "./ngram.ts";
 * import assert from "node:assert/strict";
 *
 * const lm = trainCharNgram("abab", { order: 2, k: 1 });
 * // |V| = 3 (a, b, unknown); "b" follows "a" twice out of two.
 * assert.equal(charProb(lm, "a", "b"), (2 + 1) / (2 + 3));
 * assert.equal(charProb(lm, "b", "z"), (0 + 1) / (1 + 3)); // "b" seen once, never before "z"
 * ```
 *
 * @module
 */

/** A trained character n-gram model. */
export interface CharNgram {
  /** n: a character is predicted from the n - 1 before it. */
  readonly order: number;
  /** Add-k smoothing constant. */
  readonly k: number;
  /** Characters seen in training, id = index; the unknown symbol is id `chars.length`. */
  readonly chars: readonly string[];
  /** |V| = chars.length + 1. */
  readonly vocabSize: number;
  /** History key -> count of the history and of each next character id. */
  readonly counts: ReadonlyMap<string, { total: number; next: Map<number, number> }>;
}

/** Options of {@linkcode trainCharNgram}. */
export interface CharNgramOptions {
  /** n. Default 5: enough context for English words, few enough to learn from ~20k characters. */
  order?: number;
  /** Add-k constant. Default 0.1: add-one over-smooths a large character vocabulary. */
  k?: number;
}

/** Id of the start symbol in history keys (never predicted). */
const START = -1;

function ids(lm: { chars: readonly string[] }, index: Map<string, number>, text: string): number[] {
  return Array.from(text, (c) => index.get(c) ?? lm.chars.length);
}

function key(hist: number[], end: number, n: number): string {
  let s = "";
  for (let i = end - n; i < end; i++) s += (i < 0 ? START : hist[i]) + ",";
  return s;
}

const indexCache = new WeakMap<CharNgram, Map<string, number>>();

function indexOf(lm: CharNgram): Map<string, number> {
  let m = indexCache.get(lm);
  if (!m) {
    m = new Map(lm.chars.map((c, i) => [c, i]));
    indexCache.set(lm, m);
  }
  return m;
}

/**
 * Trains a character n-gram model on `text` (one or several documents, each padded at its start).
 *
 * @param text Training text, or several texts.
 * @param options `order` (n, default 5) and `k` (default 0.1).
 * @returns The model.
 */
export function trainCharNgram(text: string | string[], options: CharNgramOptions = {}): CharNgram {
  const order = options.order ?? 5;
  const k = options.k ?? 0.1;
  if (!Number.isInteger(order) || order < 1) {
    throw new RangeError(`Invalid order: expected an integer n >= 1, got ${order}`);
  }
  if (!(k > 0 && k < Infinity)) {
    throw new RangeError(`Invalid k: expected a finite k > 0, got ${k}`);
  }
  const texts = typeof text === "string" ? [text] : text;
  if (!Array.isArray(texts) || texts.some((t) => typeof t !== "string")) {
    throw new TypeError("Invalid text: expected a string or an array of strings");
  }
  const seen = new Set<string>();
  for (const t of texts) for (const c of t) seen.add(c);
  const chars = [...seen].sort();
  const index = new Map(chars.map((c, i) => [c, i]));
  const counts = new Map<string, { total: number; next: Map<number, number> }>();
  for (const t of texts) {
    const x = ids({ chars }, index, t);
    for (let i = 0; i < x.length; i++) {
      const h = key(x, i, order - 1);
      let e = counts.get(h);
      if (!e) counts.set(h, e = { total: 0, next: new Map() });
      e.total++;
      e.next.set(x[i], (e.next.get(x[i]) ?? 0) + 1);
    }
  }
  const lm: CharNgram = { order, k, chars, vocabSize: chars.length + 1, counts };
  indexCache.set(lm, index);
  return lm;
}

/**
 * P(c | history) under the model: add-k over the vocabulary.
 *
 * @param lm The model.
 * @param history The characters before `c` (only the last n - 1 are used; fewer are padded with
 *   the start symbol, as at the start of a text).
 * @param c One character; unseen characters are the unknown symbol.
 * @returns The probability.
 */
export function charProb(lm: CharNgram, history: string, c: string): number {
  const index = indexOf(lm);
  const x = ids(lm, index, history + c);
  if (x.length !== Array.from(history).length + 1) {
    throw new RangeError(`Invalid character: expected one code point, got ${JSON.stringify(c)}`);
  }
  const e = lm.counts.get(key(x, x.length - 1, lm.order - 1));
  const n = e?.next.get(x[x.length - 1]) ?? 0;
  return (n + lm.k) / ((e?.total ?? 0) + lm.k * lm.vocabSize);
}

/**
 * Total bits of `text` under the model, each text scored from its own start.
 *
 * @param lm The model.
 * @param text One text or several.
 * @returns Total bits (-log2 P) and the number of characters scored.
 */
export function ngramBits(lm: CharNgram, text: string | string[]): { bits: number; chars: number } {
  const index = indexOf(lm);
  let bits = 0, chars = 0;
  for (const t of typeof text === "string" ? [text] : text) {
    const x = ids(lm, index, t);
    for (let i = 0; i < x.length; i++) {
      const e = lm.counts.get(key(x, i, lm.order - 1));
      const n = e?.next.get(x[i]) ?? 0;
      bits -= Math.log2((n + lm.k) / ((e?.total ?? 0) + lm.k * lm.vocabSize));
    }
    chars += x.length;
  }
  return { bits, chars };
}

/**
 * Bits per character of `text` under the model (total bits / characters).
 *
 * @param lm The model.
 * @param text One text or several (each scored from its own start).
 * @returns Bits per character; NaN for empty text.
 *
 * @example Text like the training text costs fewer bits than a shuffle of it
 * ```ts
 * import { ngramBitsPerChar, trainCharNgram } from "./ngram.ts";
 * import assert from "node:assert/strict";
 *
 * const lm = trainCharNgram("the cat sat on the mat. ".repeat(20));
 * assert.ok(ngramBitsPerChar(lm, "the mat sat on the cat. ") < ngramBitsPerChar(lm, "tca eht .ta no stm eht "));
 * ```
 */
export function ngramBitsPerChar(lm: CharNgram, text: string | string[]): number {
  const { bits, chars } = ngramBits(lm, text);
  return chars === 0 ? NaN : bits / chars;
}
