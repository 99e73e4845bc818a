/**
 * Tokenizers: the notebook's character-level BPE (`kind: "seed"`), a byte-level BPE with a
 * pre-tokenizer (`kind: "bpe"`, the default), both trained here, and GPT-2's byte-level BPE
 * (`kind: "gpt2"`) loaded from a Hugging Face `tokenizer.json` or `vocab.json` + `merges.txt`;
 * all three as plain data with JSON save and load.
 *
 * Choices worth knowing:
 * - A tokenizer is frozen plain data (post it to a worker, `JSON.stringify` it); lookup tables
 *   and the per-piece cache are built on first use and kept outside the object.
 * - `<|mask|>` is always the last id and `<|endoftext|>` the one before it (seed: unless a merge
 *   already spells `<|endoftext|>`, as in the notebook).
 * - `encode` appends `<|endoftext|>` by default for `"seed"` (the notebook) and not for `"bpe"`;
 *   `decode` drops one trailing `<|endoftext|>` for both.
 * - `"seed"` refuses characters it was not trained on (RangeError with the character and its
 *   index). `"bpe"` encodes any string: lone surrogates become U+FFFD, as `TextEncoder` does,
 *   and a literal `<|endoftext|>` in text is plain text.
 * - BPE training breaks count ties by the smaller (left id, right id); `tokens[id]` shows bytes
 *   that are not complete UTF-8 as `\xNN`.
 * - `"gpt2"` keeps the vocabulary's ids (GPT-2: 50257 tokens, `<|endoftext|>` 50256) and appends
 *   `<|mask|>` (GPT-2: 50257, so `vocabSize` 50258); `encode` gives GPT-2's ids exactly.
 *
 * @example Train, encode, decode, save
 * ```ts
 * import { decode, encode, tokenizerFromJSON, tokenizerToJSON, trainTokenizer } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = trainTokenizer(["Call me Ishmael. Call me later."], { vocabSize: 270 });
 * const ids = encode(tokenizer, "Call me, Ishmael!");
 * assert.equal(decode(tokenizer, ids), "Call me, Ishmael!");
 * const loaded = tokenizerFromJSON(tokenizerToJSON(tokenizer));
 * assert.deepEqual(encode(loaded, "Call me"), encode(tokenizer, "Call me"));
 * ```
 *
 * @module
 */

export type { EncodeOptions, Tokenizer, TrainTokenizerOptions } from "./types.ts";
export { EOT_TOKEN, MASK_TOKEN } from "./types.ts";
export { decode, encode, trainTokenizer } from "./tokenizer.ts";
export {
  TOKENIZER_JSON_VERSION,
  tokenizerFromJSON,
  tokenizerHash,
  tokenizerToJSON,
} from "./json.ts";
export { pretokenize } from "./pretokenize.ts";
export { byteToUnicode, GPT2_PRETOKEN_PATTERN, gpt2Pretokenize } from "./gpt2.ts";
export { TokenizerFileError, tokenizerFromHuggingFace, tokenizerFromVocabMerges } from "./hf.ts";
export type { HuggingFaceOptions, VocabMergesOptions } from "./hf.ts";
