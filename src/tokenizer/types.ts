/**
 * The tokenizer's data: a plain, JSON-serialisable object that can be posted to a worker.
 *
 * @module
 */

/** The end-of-text marker's text; its id is `tokenizer.eotId`. */
export const EOT_TOKEN = "<|endoftext|>";
/** The mask token's text; its id is `tokenizer.maskId`, always `vocabSize - 1`. */
export const MASK_TOKEN = "<|mask|>";

/**
 * A trained tokenizer. Plain data (strings, numbers and arrays), frozen, JSON-serialisable and
 * safe to post to a worker: `encode` and `decode` build their lookup tables and caches lazily,
 * once per object, and keep them outside it.
 *
 * - `kind: "seed"` is the notebook's `SimpleBPETokenizer`: characters (code points) sorted by
 *   code point, then one token per merge, then `<|endoftext|>`, then `<|mask|>`.
 * - `kind: "bpe"` is byte-level BPE: ids 0..255 are the UTF-8 bytes, id `256 + r` is merge `r`,
 *   then `<|endoftext|>`, then `<|mask|>` (last).
 * - `kind: "gpt2"` is GPT-2's byte-level BPE, loaded (not trained) from a Hugging Face
 *   `tokenizer.json` or a `vocab.json` + `merges.txt` pair: the vocabulary's own ids (for GPT-2,
 *   50257 tokens with `<|endoftext|>` at 50256), then `<|mask|>` (last: 50257 for GPT-2).
 */
export interface Tokenizer {
  /** Which algorithm the tokenizer follows. */
  readonly kind: "seed" | "bpe" | "gpt2";
  /**
   * id -> token text. For `"seed"`, the exact text of the token. For `"bpe"`, the token's UTF-8
   * bytes decoded for reading: complete UTF-8 sequences appear as their characters, and every
   * byte that is not part of a complete, valid sequence inside the token appears as `\xNN`
   * (lowercase hex), so `tokens[0xe2]` is `"\\xe2"`. Display only: `decode` uses the bytes.
   * For `"gpt2"`, the vocabulary's own text in GPT-2's byte-to-unicode spelling, as in
   * `vocab.json` (`"Ġthe"` is `" the"`), then `"<|mask|>"`.
   */
  readonly tokens: string[];
  /** The merges in rank order, as the texts of the two tokens joined (`tokens[left]`, `tokens[right]`). */
  readonly merges: [string, string][];
  /**
   * The merges in rank order as the ids of the two tokens joined. For `"bpe"` the merge of rank
   * `r` makes id `256 + r`; for `"seed"` and `"gpt2"` it makes the id of the joined text.
   */
  readonly mergeIds: [number, number][];
  /** Id of `<|endoftext|>`. */
  readonly eotId: number;
  /** Id of `<|mask|>`: always `vocabSize - 1`. */
  readonly maskId: number;
  /**
   * Number of ids, including `<|endoftext|>` and `<|mask|>` (and the 256 bytes for `"bpe"`);
   * 50258 for GPT-2's vocabulary.
   */
  readonly vocabSize: number;
}

/** Options of {@linkcode trainTokenizer}. */
export interface TrainTokenizerOptions {
  /** `"bpe"` (the default): byte-level BPE for real corpora. `"seed"`: the notebook's tokenizer. */
  kind?: "seed" | "bpe";
  /**
   * How many merges to learn. Defaults: 5 for `"seed"` (the notebook), `vocabSize - 258` for
   * `"bpe"`. Training stops early when no adjacent pair is left.
   */
  numMerges?: number;
  /**
   * The vocabulary size to reach, counting the 2 special tokens (and the 256 bytes for `"bpe"`);
   * an alternative to `numMerges` (giving both requires that they agree). Default for `"bpe"`:
   * 512, a small model's vocabulary.
   */
  vocabSize?: number;
}

/** Options of {@linkcode encode}. */
export interface EncodeOptions {
  /**
   * Append `<|endoftext|>` unless the ids already end with it. Default `true` for `"seed"` (the
   * notebook's `force_last_eot`), `false` for `"bpe"` and `"gpt2"` (a plain text in, its tokens
   * out; the trainer joins documents with EOT itself).
   */
  eot?: boolean;
}

/** Base for packing an id pair into one number: `left * PAIR_BASE + right`. */
export const PAIR_BASE = 2 ** 21;
/** The largest vocabulary the packed pair keys allow. */
export const MAX_VOCAB = PAIR_BASE;
