/**
 * Tokenizers: the notebook's character-level BPE (`kind: "seed"`) and a byte-level BPE with a
 * pre-tokenizer (`kind: "bpe"`, the default), both as plain data with JSON save and load.
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
