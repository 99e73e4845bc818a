/**
 * The notebook's `SimpleBPETokenizer`, reproduced id for id.
 *
 * Training lowercases the joined corpus, splits it into characters (code points) and merges, a
 * fixed number of times, the most frequent adjacent pair over the whole text (no pre-tokenizer:
 * merges may cross spaces). Ties go to the pair seen first in the current sequence, as Python's
 * `Counter.most_common(1)` does. Each round recounts every pair, exactly like the notebook, so
 * training costs O(merges x length): use the `"bpe"` kind for real corpora.
 *
 * Tokens are identified by their text, as in the notebook: two merges that join to the same text
 * share one id, and a pair that is merged twice keeps the later rank.
 *
 * @module
 */

import { EOT_TOKEN, MASK_TOKEN, PAIR_BASE, type Tokenizer } from "./types.ts";

/** Code points sorted by code point value (not by UTF-16 unit, which differs above U+FFFF). */
function byCodePoint(a: string, b: string): number {
  return a.codePointAt(0)! - b.codePointAt(0)!;
}

/**
 * The notebook's `train`: the distinct characters of the lowercased corpus, sorted, and the
 * merges learned on it.
 *
 * @param texts the corpus; joined with no separator, then lowercased
 * @param numMerges how many merges to attempt; stops early when the text has fewer than 2 tokens
 * @returns the alphabet (sorted code points) and the merges in rank order
 */
export function trainSeedMerges(
  texts: readonly string[],
  numMerges: number,
): { alphabet: string[]; merges: [string, string][] } {
  const text = texts.join("").toLowerCase();
  const chars = Array.from(text);
  const alphabet = [...new Set(chars)].sort(byCodePoint);

  // Tokens by text, numbered as the vocabulary will number them (alphabet, then merges).
  const texts_: string[] = alphabet.slice();
  const idOf = new Map<string, number>(alphabet.map((c, i) => [c, i]));
  const seq = Int32Array.from(chars, (c) => idOf.get(c)!); // (N)
  let n = seq.length;
  const merges: [string, string][] = [];
  // Pack pairs as small integers when the ids allow it (V8 hashes those fastest).
  let base = 1;
  while (base < alphabet.length + numMerges) base *= 2;
  if (base * base > 2 ** 30) base = PAIR_BASE;

  for (let m = 0; m < numMerges; m++) {
    // Counter(bigrams): a Map keeps insertion order, i.e. first occurrence in the sequence.
    const counts = new Map<number, number>();
    for (let i = 0; i + 1 < n; i++) {
      const key = seq[i] * base + seq[i + 1];
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    if (counts.size === 0) break;
    // most_common(1): the first key (in insertion order) with the largest count.
    let bestKey = -1;
    let bestCount = 0;
    for (const [key, count] of counts) {
      if (count > bestCount) {
        bestCount = count;
        bestKey = key;
      }
    }
    const a = Math.floor(bestKey / base);
    const b = bestKey - a * base;
    const joined = texts_[a] + texts_[b];
    let x = idOf.get(joined);
    if (x === undefined) {
      x = texts_.length;
      texts_.push(joined);
      idOf.set(joined, x);
    }
    merges.push([texts_[a], texts_[b]]);
    n = mergePairInPlace(seq, n, a, b, x);
  }
  return { alphabet, merges };
}

/**
 * Replaces every occurrence of the pair (a, b), scanning left to right without overlap, by x:
 * the notebook's `_merge_once` on ids.
 *
 * @param seq token ids, rewritten in place // (n)
 * @returns the new length
 */
export function mergePairInPlace(
  seq: Int32Array,
  n: number,
  a: number,
  b: number,
  x: number,
): number {
  let j = 0;
  let i = 0;
  while (i < n) {
    if (i + 1 < n && seq[i] === a && seq[i + 1] === b) {
      seq[j++] = x;
      i += 2;
    } else {
      seq[j++] = seq[i++];
    }
  }
  return j;
}

/**
 * Builds the seed tokenizer from its defining data, numbering tokens as the notebook's
 * `_add_token` does (a text already present keeps its id).
 *
 * @param alphabet distinct code points, sorted by code point
 * @param merges the merges in rank order
 * @returns the frozen tokenizer
 */
export function buildSeedTokenizer(
  alphabet: readonly string[],
  merges: readonly (readonly [string, string])[],
): Tokenizer {
  const tokens: string[] = [];
  const idOf = new Map<string, number>();
  const add = (t: string): number => {
    const known = idOf.get(t);
    if (known !== undefined) return known;
    idOf.set(t, tokens.length);
    tokens.push(t);
    return tokens.length - 1;
  };
  for (const c of alphabet) add(c);
  const mergeIds: [number, number][] = [];
  for (const [a, b] of merges) {
    const ia = idOf.get(a);
    const ib = idOf.get(b);
    if (ia === undefined || ib === undefined) {
      throw new RangeError(
        `Invalid seed merge: expected both sides to be earlier tokens, got ${
          JSON.stringify([a, b])
        }`,
      );
    }
    mergeIds.push([ia, ib]);
    add(a + b);
  }
  const eotId = add(EOT_TOKEN);
  const maskId = add(MASK_TOKEN);
  if (maskId !== tokens.length - 1) {
    throw new RangeError(
      `Invalid seed tokenizer: expected <|mask|> to be the last id ${
        tokens.length - 1
      }, got ${maskId} (a merge spelled "<|mask|>")`,
    );
  }
  return Object.freeze({
    kind: "seed" as const,
    tokens: Object.freeze(tokens) as string[],
    merges: Object.freeze(merges.map((p) => Object.freeze([p[0], p[1]]))) as [string, string][],
    mergeIds: Object.freeze(mergeIds.map((p) => Object.freeze(p))) as [number, number][],
    eotId,
    maskId,
    vocabSize: tokens.length,
  });
}

/** Lookup tables for encoding with a seed tokenizer. */
export interface SeedTables {
  /** Token text -> id. */
  idOf: Map<string, number>;
  /** Packed pair (left * PAIR_BASE + right) -> rank; a repeated pair keeps its last rank. */
  rankOf: Map<number, number>;
  /** Rank -> the id the merge makes. */
  resultOf: Int32Array;
}

/** Builds the tables {@linkcode encodeSeed} needs. */
export function seedTables(tokenizer: Tokenizer): SeedTables {
  const idOf = new Map<string, number>(tokenizer.tokens.map((t, i) => [t, i]));
  const rankOf = new Map<number, number>();
  const resultOf = new Int32Array(tokenizer.mergeIds.length);
  tokenizer.mergeIds.forEach(([a, b], r) => {
    rankOf.set(a * PAIR_BASE + b, r); // later rank overwrites, as the notebook's dict does
    resultOf[r] = idOf.get(tokenizer.tokens[a] + tokenizer.tokens[b])!;
  });
  return { idOf, rankOf, resultOf };
}

/**
 * The notebook's `encode`: drops literal `<|endoftext|>`, maps characters to ids, then merges
 * the lowest-ranked pair present (all its occurrences) until no ranked pair is left.
 *
 * @throws {RangeError} on a character the tokenizer never saw, naming it and its UTF-16 index
 */
export function encodeSeed(
  tokenizer: Tokenizer,
  tables: SeedTables,
  text: string,
  eot: boolean,
): Int32Array {
  if (text.includes(EOT_TOKEN)) text = text.replaceAll(EOT_TOKEN, "");
  const seq = new Int32Array(text.length + 1); // code points <= UTF-16 units, + room for EOT
  let n = 0;
  for (let i = 0; i < text.length;) {
    const cp = text.codePointAt(i)!;
    const ch = String.fromCodePoint(cp);
    const id = tables.idOf.get(ch);
    if (id === undefined) {
      const hex = cp.toString(16).toUpperCase().padStart(4, "0");
      throw new RangeError(
        `Unknown character ${
          JSON.stringify(ch)
        } (U+${hex}) at index ${i}: expected a character the seed tokenizer was trained on`,
      );
    }
    seq[n++] = id;
    i += ch.length;
  }
  const { rankOf, resultOf } = tables;
  const mergeIds = tokenizer.mergeIds;
  if (mergeIds.length > 0) {
    while (n >= 2) {
      let best = Infinity;
      for (let i = 0; i + 1 < n; i++) {
        const r = rankOf.get(seq[i] * PAIR_BASE + seq[i + 1]);
        if (r !== undefined && r < best) best = r;
      }
      if (best === Infinity) break;
      const [a, b] = mergeIds[best];
      n = mergePairInPlace(seq, n, a, b, resultOf[best]);
    }
  }
  if (eot && (n === 0 || seq[n - 1] !== tokenizer.eotId)) seq[n++] = tokenizer.eotId;
  return seq.slice(0, n);
}
