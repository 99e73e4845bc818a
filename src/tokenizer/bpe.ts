/**
 * Byte-level BPE: training by incremental pair counting, and encoding by merge rank.
 *
 * Ids 0..255 are the UTF-8 bytes, id `256 + r` is the merge of rank `r`, then `<|endoftext|>`,
 * then `<|mask|>`. Merges never cross the pre-tokenizer's cuts (`pretokenize`).
 *
 * Training works on the distinct pre-tokens ("words") weighted by how often they occur. It counts
 * every adjacent pair once, then keeps, per pair, its weighted count and the list of words it
 * occurs in, and a max-heap of (count, pair) entries updated lazily. A merge visits only the
 * words listed for its pair; in each it rewrites the word and moves the word's pair counts, and
 * only pairs that contain the new token can grow, so only those are pushed onto the heap. An entry
 * whose count is stale is re-pushed with the current count when it reaches the top.
 *
 * Tie-break (deterministic): among pairs with the same count, the pair with the smaller left id
 * wins, then the smaller right id; e.g. with bytes only, `" t"` (0x20, 0x74) beats `"th"`.
 *
 * Two merges may spell the same bytes (say `"ab" + "c"` and `"a" + "bc"`); each keeps its own id,
 * as in minbpe, and the encoder applies whichever its rank order reaches.
 *
 * @module
 */

import { PRETOKEN_PATTERN } from "./pretokenize.ts";
import { EOT_TOKEN, MASK_TOKEN, PAIR_BASE, type Tokenizer } from "./types.ts";

const utf8 = new TextEncoder();

/** A max-heap of (count, key): larger count first, then smaller key. */
class PairHeap {
  counts: number[] = [];
  keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  #above(i: number, j: number): boolean {
    const ci = this.counts[i];
    const cj = this.counts[j];
    return ci > cj || (ci === cj && this.keys[i] < this.keys[j]);
  }

  #swap(i: number, j: number): void {
    const c = this.counts[i];
    this.counts[i] = this.counts[j];
    this.counts[j] = c;
    const k = this.keys[i];
    this.keys[i] = this.keys[j];
    this.keys[j] = k;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#above(i, p)) break;
      this.#swap(i, p);
      i = p;
    }
  }

  /** Removes the top entry; read it first from `counts[0]`, `keys[0]`. */
  pop(): void {
    const last = this.counts.length - 1;
    this.#swap(0, last);
    this.counts.pop();
    this.keys.pop();
    const n = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.#above(r, l) ? r : l;
      if (!this.#above(c, i)) break;
      this.#swap(c, i);
      i = c;
    }
  }
}

/**
 * Learns byte-level BPE merges.
 *
 * @param texts the corpus; each text is pre-tokenized on its own
 * @param numMerges how many merges to learn; fewer when no adjacent pair is left
 * @returns the merges in rank order, as [left id, right id]; merge `r` makes id `256 + r`
 */
export function trainBpeMerges(texts: readonly string[], numMerges: number): [number, number][] {
  // Distinct pre-tokens and their frequencies.
  const freqOf = new Map<string, number>();
  for (const text of texts) {
    const re = new RegExp(PRETOKEN_PATTERN);
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const piece = m[0];
      freqOf.set(piece, (freqOf.get(piece) ?? 0) + 1);
    }
  }
  const W = freqOf.size;
  const start = new Int32Array(W); // (W) where each word's symbols begin in `sym`
  const len = new Int32Array(W); // (W) current number of symbols in each word
  const freq = new Float64Array(W); // (W)
  const encoded: Uint8Array[] = [];
  let total = 0;
  for (const [piece, f] of freqOf) {
    const bytes = utf8.encode(piece);
    start[encoded.length] = total;
    len[encoded.length] = bytes.length;
    freq[encoded.length] = f;
    encoded.push(bytes);
    total += bytes.length;
  }
  const sym = new Int32Array(total); // (total) the words' symbols, back to back
  encoded.forEach((bytes, w) => sym.set(bytes, start[w]));

  // Pair counts and, per pair, the words it occurs in (may list a word twice or stale words).
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  const listWord = (key: number, w: number) => {
    const list = pairWords.get(key);
    if (list === undefined) pairWords.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  for (let w = 0; w < W; w++) {
    const s = start[w];
    for (let i = s; i + 1 < s + len[w]; i++) {
      const key = sym[i] * PAIR_BASE + sym[i + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + freq[w]);
      listWord(key, w);
    }
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCount) heap.push(count, key);

  const merges: [number, number][] = [];
  const visited = new Int32Array(W).fill(-1); // (W) the last merge that visited each word
  const grown = new Set<number>();
  while (merges.length < numMerges && heap.size > 0) {
    const count = heap.counts[0];
    const key = heap.keys[0];
    heap.pop();
    const actual = pairCount.get(key) ?? 0;
    if (actual <= 0 || count < actual) continue; // gone, or a fresher entry is in the heap
    if (count > actual) {
      heap.push(actual, key); // stale: reinsert with the current count
      continue;
    }
    const a = Math.floor(key / PAIR_BASE);
    const b = key - a * PAIR_BASE;
    const x = 256 + merges.length;
    const step = merges.length;
    merges.push([a, b]);
    grown.clear();
    for (const w of pairWords.get(key)!) {
      if (visited[w] === step) continue;
      visited[w] = step;
      const s = start[w];
      const n = len[w];
      let at = -1;
      for (let i = s; i + 1 < s + n; i++) {
        if (sym[i] === a && sym[i + 1] === b) {
          at = i;
          break;
        }
      }
      if (at < 0) continue; // stale listing
      const f = freq[w];
      // Take the word's pairs out, merge, put the new pairs in.
      for (let i = s; i + 1 < s + n; i++) {
        const k = sym[i] * PAIR_BASE + sym[i + 1];
        pairCount.set(k, pairCount.get(k)! - f);
      }
      let j = at;
      for (let i = at; i < s + n;) {
        if (i + 1 < s + n && sym[i] === a && sym[i + 1] === b) {
          sym[j++] = x;
          i += 2;
        } else {
          sym[j++] = sym[i++];
        }
      }
      len[w] = j - s;
      for (let i = s; i + 1 < j; i++) {
        const k = sym[i] * PAIR_BASE + sym[i + 1];
        pairCount.set(k, (pairCount.get(k) ?? 0) + f);
        if (sym[i] === x || sym[i + 1] === x) {
          grown.add(k);
          listWord(k, w);
        }
      }
    }
    pairCount.delete(key);
    pairWords.delete(key);
    for (const k of grown) {
      const c = pairCount.get(k)!;
      if (c > 0) heap.push(c, k);
    }
  }
  return merges;
}

/**
 * Readable text for a token's bytes: complete, valid UTF-8 sequences as their characters, any
 * other byte as `\xNN` (lowercase hex).
 *
 * @param bytes the token's UTF-8 bytes
 * @returns the display text
 */
export function bytesToTokenText(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  while (i < bytes.length) {
    const b0 = bytes[i];
    let need = 0;
    let lo = 0x80;
    let hi = 0xbf;
    if (b0 < 0x80) need = 0;
    else if (b0 >= 0xc2 && b0 <= 0xdf) need = 1;
    else if (b0 >= 0xe0 && b0 <= 0xef) {
      need = 2;
      if (b0 === 0xe0) lo = 0xa0;
      if (b0 === 0xed) hi = 0x9f;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      need = 3;
      if (b0 === 0xf0) lo = 0x90;
      if (b0 === 0xf4) hi = 0x8f;
    } else need = -1;
    let ok = need >= 0 && i + need < bytes.length;
    for (let k = 1; ok && k <= need; k++) {
      const c = bytes[i + k];
      if (k === 1 ? c < lo || c > hi : c < 0x80 || c > 0xbf) ok = false;
    }
    if (ok) {
      let cp = need === 0 ? b0 : b0 & (0x3f >> need);
      for (let k = 1; k <= need; k++) cp = (cp << 6) | (bytes[i + k] & 0x3f);
      out += String.fromCodePoint(cp);
      i += need + 1;
    } else {
      out += "\\x" + b0.toString(16).padStart(2, "0");
      i += 1;
    }
  }
  return out;
}

/**
 * Builds the byte-level tokenizer from its merges.
 *
 * @param mergeIds the merges in rank order; merge `r` may only join ids below `256 + r`
 * @returns the frozen tokenizer
 */
export function buildBpeTokenizer(mergeIds: readonly (readonly [number, number])[]): Tokenizer {
  const bytes = bpeTokenBytes(mergeIds);
  const tokens = bytes.map((b, id) =>
    id === bytes.length - 2 ? EOT_TOKEN : id === bytes.length - 1 ? MASK_TOKEN : bytesToTokenText(b)
  );
  const vocabSize = 256 + mergeIds.length + 2;
  return Object.freeze({
    kind: "bpe" as const,
    tokens: Object.freeze(tokens) as string[],
    merges: Object.freeze(
      mergeIds.map(([a, b]) => Object.freeze([tokens[a], tokens[b]])),
    ) as [string, string][],
    mergeIds: Object.freeze(mergeIds.map(([a, b]) => Object.freeze([a, b]))) as [number, number][],
    eotId: vocabSize - 2,
    maskId: vocabSize - 1,
    vocabSize,
  });
}

/**
 * The UTF-8 bytes of every id: bytes, merges, then the special tokens' texts.
 *
 * @throws {RangeError} when a merge refers to an id it cannot join yet
 */
export function bpeTokenBytes(mergeIds: readonly (readonly [number, number])[]): Uint8Array[] {
  const bytes: Uint8Array[] = [];
  for (let i = 0; i < 256; i++) bytes.push(Uint8Array.of(i));
  mergeIds.forEach((pair, r) => {
    const limit = 256 + r;
    if (!Array.isArray(pair) || pair.length !== 2) {
      throw new TypeError(
        `Invalid bpe merge ${r}: expected a pair [left id, right id], got ${JSON.stringify(pair)}`,
      );
    }
    for (const id of pair) {
      if (!Number.isInteger(id) || id < 0 || id >= limit) {
        throw new RangeError(
          `Invalid bpe merge ${r}: expected ids 0 <= id < ${limit}, got ${JSON.stringify(pair)}`,
        );
      }
    }
    const [a, b] = pair;
    const joined = new Uint8Array(bytes[a].length + bytes[b].length);
    joined.set(bytes[a], 0);
    joined.set(bytes[b], bytes[a].length);
    bytes.push(joined);
  });
  bytes.push(utf8.encode(EOT_TOKEN), utf8.encode(MASK_TOKEN));
  return bytes;
}

/**
 * An open-addressing hash table from an id pair to its merge rank, over one Int32Array (no
 * allocation per lookup, unlike a Map keyed by a packed number above 2^31).
 */
export class PairRanks {
  readonly #mask: number;
  readonly #slots: Int32Array; // (capacity, 3): left, right, rank; left -1 marks an empty slot

  /** @param mergeIds the merges in rank order; a repeated pair keeps its first rank */
  constructor(mergeIds: readonly (readonly [number, number])[]) {
    let capacity = 16;
    while (capacity < mergeIds.length * 2) capacity *= 2;
    this.#mask = capacity - 1;
    this.#slots = new Int32Array(capacity * 3).fill(-1);
    mergeIds.forEach(([a, b], r) => {
      let i = this.#hash(a, b);
      while (this.#slots[3 * i] !== -1) {
        if (this.#slots[3 * i] === a && this.#slots[3 * i + 1] === b) return;
        i = (i + 1) & this.#mask;
      }
      this.#slots[3 * i] = a;
      this.#slots[3 * i + 1] = b;
      this.#slots[3 * i + 2] = r;
    });
  }

  #hash(a: number, b: number): number {
    const h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca6b);
    return (h ^ (h >>> 15)) & this.#mask;
  }

  /** The rank of merging (a, b), or -1 when they do not merge. */
  get(a: number, b: number): number {
    const slots = this.#slots;
    for (let i = this.#hash(a, b);; i = (i + 1) & this.#mask) {
      const left = slots[3 * i];
      if (left === -1) return -1;
      if (left === a && slots[3 * i + 1] === b) return slots[3 * i + 2];
    }
  }
}

/** Lookup tables and the pre-token cache for encoding with a bpe tokenizer. */
export interface BpeTables {
  /** id -> UTF-8 bytes (the special tokens: their texts). */
  bytes: Uint8Array[];
  /** (left, right) -> rank. */
  ranks: PairRanks;
  /** Pre-token text -> its ids. Cleared when it reaches {@linkcode BPE_CACHE_LIMIT} entries. */
  cache: PieceCache;
}

/**
 * Pre-token -> ids, looked up by a range of the text being encoded, so a hit allocates nothing
 * (no substring, no string hashing by the engine). Open addressing with linear probing.
 */
export class PieceCache {
  #keys: (string | undefined)[] = new Array(1024);
  #hashes = new Int32Array(1024);
  #values: (Int32Array | undefined)[] = new Array(1024);
  #size = 0;

  /** Number of cached pieces. */
  get size(): number {
    return this.#size;
  }

  /** Hash of `text[start, end)` (FNV-1a over UTF-16 units). */
  static hash(text: string, start: number, end: number): number {
    let h = 0x811c9dc5 | 0;
    for (let i = start; i < end; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
    return h;
  }

  /** The ids cached for `text[start, end)` with hash `h`, or undefined. */
  get(text: string, start: number, end: number, h: number): Int32Array | undefined {
    const mask = this.#hashes.length - 1;
    const len = end - start;
    for (let i = h & mask;; i = (i + 1) & mask) {
      const key = this.#keys[i];
      if (key === undefined) return undefined;
      if (this.#hashes[i] !== h || key.length !== len) continue;
      let k = 0;
      while (k < len && key.charCodeAt(k) === text.charCodeAt(start + k)) k++;
      if (k === len) return this.#values[i];
    }
  }

  /** Caches ids for a piece absent from the cache, whose hash is `h`. */
  set(piece: string, h: number, ids: Int32Array): void {
    if (this.#size >= BPE_CACHE_LIMIT) this.#resize(1024);
    else if (2 * (this.#size + 1) > this.#hashes.length) this.#resize(this.#hashes.length * 2);
    this.#insert(piece, h, ids);
    this.#size++;
  }

  #insert(piece: string, h: number, ids: Int32Array): void {
    const mask = this.#hashes.length - 1;
    let i = h & mask;
    while (this.#keys[i] !== undefined) i = (i + 1) & mask;
    this.#keys[i] = piece;
    this.#hashes[i] = h;
    this.#values[i] = ids;
  }

  /** Rehashes into `capacity` slots; a capacity smaller than the size empties the cache. */
  #resize(capacity: number): void {
    const keys = this.#keys;
    const hashes = this.#hashes;
    const values = this.#values;
    this.#keys = new Array(capacity);
    this.#hashes = new Int32Array(capacity);
    this.#values = new Array(capacity);
    if (2 * this.#size > capacity) {
      this.#size = 0;
      return;
    }
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] !== undefined) this.#insert(keys[i]!, hashes[i], values[i]!);
    }
  }
}

/** The most pre-tokens the encoder caches before it starts over. */
export const BPE_CACHE_LIMIT = 1 << 18;

/** Builds the tables {@linkcode encodeBpePiece} needs. */
export function bpeTables(tokenizer: Tokenizer): BpeTables {
  return {
    bytes: bpeTokenBytes(tokenizer.mergeIds),
    ranks: new PairRanks(tokenizer.mergeIds),
    cache: new PieceCache(),
  };
}

let scratch = new Int32Array(256);

/**
 * Writes the UTF-8 bytes of `piece` into `scratch` (lone surrogates as U+FFFD, as
 * `TextEncoder` does) and returns how many.
 */
function utf8Into(piece: string): number {
  if (scratch.length < piece.length * 3) scratch = new Int32Array(piece.length * 3);
  const out = scratch;
  let n = 0;
  for (let i = 0; i < piece.length; i++) {
    let c = piece.charCodeAt(i);
    if (c < 0x80) {
      out[n++] = c;
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < piece.length ? piece.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    }
    if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
    } else if (c < 0x10000) {
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
    } else {
      out[n++] = 0xf0 | (c >> 18);
      out[n++] = 0x80 | ((c >> 12) & 0x3f);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
    }
    out[n++] = 0x80 | (c & 0x3f);
  }
  return n;
}

/**
 * Merges the symbols `seq[0, n)` in place by rank: repeatedly the adjacent pair of lowest rank,
 * every occurrence left to right, until no adjacent pair has a rank.
 *
 * @param seq the symbols' ids (overwritten)
 * @param n how many symbols
 * @param ranks (left, right) -> rank
 * @param mergeIds the merges in rank order
 * @param resultOf the id the merge of a rank makes
 * @returns the number of symbols left
 */
export function mergeByRank(
  seq: Int32Array,
  n: number,
  ranks: PairRanks,
  mergeIds: readonly (readonly [number, number])[],
  resultOf: (rank: number) => number,
): number {
  if (n > LONG_PIECE) return mergeLongByRank(seq, n, ranks, mergeIds, resultOf);
  while (n >= 2) {
    let best = Infinity;
    for (let i = 0; i + 1 < n; i++) {
      const r = ranks.get(seq[i], seq[i + 1]);
      if (r >= 0 && r < best) best = r;
    }
    if (best === Infinity) break;
    const [a, b] = mergeIds[best];
    const x = resultOf(best);
    let j = 0;
    for (let i = 0; i < n;) {
      if (i + 1 < n && seq[i] === a && seq[i + 1] === b) {
        seq[j++] = x;
        i += 2;
      } else {
        seq[j++] = seq[i++];
      }
    }
    n = j;
  }
  return n;
}

/**
 * Pieces longer than this many symbols merge with {@linkcode mergeLongByRank}: rescanning every
 * pair after each merge rank costs time quadratic in the length, and a long piece (a run of
 * letters with no space) would take minutes.
 */
export const LONG_PIECE = 256;

/** A min-heap of numbers. */
class MinHeap {
  items: number[] = [];

  push(x: number): void {
    const a = this.items;
    a.push(x);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] <= x) break;
      a[i] = a[p];
      i = p;
    }
    a[i] = x;
  }

  /** Removes and returns the smallest item; the heap must not be empty. */
  pop(): number {
    const a = this.items;
    const top = a[0];
    const last = a.pop()!;
    const n = a.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const c = l + 1 < n && a[l + 1] < a[l] ? l + 1 : l;
        if (a[c] >= last) break;
        a[i] = a[c];
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

/**
 * {@linkcode mergeByRank} for long pieces, with the same result: the symbols form a linked list
 * and every adjacent pair that has a rank sits in a heap keyed by (rank, position). Each round
 * takes every entry of the lowest rank, merges those still intact left to right (one whose left
 * symbol the previous merge consumed is skipped, as in the rescanning loop), and only then pushes
 * the pairs the merges formed. Entries made stale by a merge are skipped when they come up.
 */
export function mergeLongByRank(
  seq: Int32Array,
  n: number,
  ranks: PairRanks,
  mergeIds: readonly (readonly [number, number])[],
  resultOf: (rank: number) => number,
): number {
  const next = new Int32Array(n); // (n) next live symbol, -1 at the end
  const prev = new Int32Array(n); // (n) previous live symbol, -1 at the start
  const live = new Uint8Array(n).fill(1); // (n)
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  const P = 2 ** 31; // position base of the heap key rank * P + position
  const heap = new MinHeap();
  const pushPair = (i: number) => {
    const j = next[i];
    if (j < 0) return;
    const r = ranks.get(seq[i], seq[j]);
    if (r >= 0) heap.push(r * P + i);
  };
  for (let i = 0; i + 1 < n; i++) pushPair(i);
  const merged: number[] = [];
  while (heap.items.length > 0) {
    const rank = Math.floor(heap.items[0] / P);
    const [a, b] = mergeIds[rank];
    const x = resultOf(rank);
    merged.length = 0;
    while (heap.items.length > 0 && Math.floor(heap.items[0] / P) === rank) {
      const i = heap.pop() - rank * P;
      const j = next[i];
      if (!live[i] || j < 0 || seq[i] !== a || seq[j] !== b) continue; // stale or consumed
      seq[i] = x;
      live[j] = 0;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      merged.push(i);
    }
    for (const i of merged) {
      if (!live[i]) continue;
      if (prev[i] >= 0) pushPair(prev[i]);
      pushPair(i);
    }
  }
  let m = 0;
  for (let i = 0; i >= 0; i = next[i]) seq[m++] = seq[i];
  return m;
}

const bpeResult = (rank: number) => 256 + rank;

/**
 * Encodes one pre-token: its UTF-8 bytes, then merges lowest rank first (every occurrence, left
 * to right) until none applies. Literal `<|endoftext|>` is ordinary text (its bytes), so any
 * string round-trips.
 *
 * @param tables the tokenizer's tables
 * @param mergeIds the merges as id pairs, in rank order
 * @param piece one pre-token
 * @returns its ids (a fresh array)
 */
export function encodeBpePiece(
  tables: BpeTables,
  mergeIds: readonly (readonly [number, number])[],
  piece: string,
): Int32Array {
  const n = mergeByRank(scratch, utf8Into(piece), tables.ranks, mergeIds, bpeResult);
  return scratch.slice(0, n);
}

/**
 * Cuts `text` with a pre-tokenizer pattern (every character must fall in some piece) and
 * concatenates the ids of the pieces, each from `cache` or from `encodePiece` (then cached).
 *
 * @param text the text
 * @param pattern the pre-tokenizer (its source is used, with the `u` and `y` flags)
 * @param cache pre-token -> ids
 * @param encodePiece ids of a piece missing from the cache
 * @param eotId appended unless the ids already end with it; -1 for none
 * @returns the ids
 */
export function encodePieces(
  text: string,
  pattern: RegExp,
  cache: PieceCache,
  encodePiece: (piece: string) => Int32Array,
  eotId: number,
): Int32Array {
  let out = new Int32Array(Math.max(16, (text.length >> 1) + 1));
  let n = 0;
  // `test` with the sticky flag moves `lastIndex` past each piece without building a match.
  const re = new RegExp(pattern.source, "uy");
  let start = 0;
  for (; re.test(text); start = re.lastIndex) {
    const end = re.lastIndex;
    const h = PieceCache.hash(text, start, end);
    let ids = cache.get(text, start, end, h);
    if (ids === undefined) {
      const piece = text.slice(start, end);
      ids = encodePiece(piece);
      cache.set(piece, h, ids);
    }
    if (n + ids.length + 1 > out.length) {
      const grown = new Int32Array(Math.max(out.length * 2, n + ids.length + 1));
      grown.set(out.subarray(0, n));
      out = grown;
    }
    for (let k = 0; k < ids.length; k++) out[n++] = ids[k];
  }
  if (start !== text.length) {
    throw new Error(`Pre-tokenizer bug: expected a piece at index ${start}, found none`);
  }
  if (eotId >= 0 && (n === 0 || out[n - 1] !== eotId)) out[n++] = eotId;
  return out.slice(0, n);
}

/** Decodes ids (already range-checked, trailing EOT already dropped) to text. */
export function decodeBpe(tables: { bytes: Uint8Array[] }, ids: ArrayLike<number>): string {
  let size = 0;
  for (let i = 0; i < ids.length; i++) size += tables.bytes[ids[i]].length;
  const buf = new Uint8Array(size);
  let o = 0;
  for (let i = 0; i < ids.length; i++) {
    const b = tables.bytes[ids[i]];
    buf.set(b, o);
    o += b.length;
  }
  return new TextDecoder().decode(buf);
}
