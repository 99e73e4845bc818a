/**
 * Evaluation: the likelihood bound of a diffusion language model on held-out text
 * ({@linkcode evaluate}), and a character 5-gram judge of sample quality
 * ({@linkcode trainCharNgram}, {@linkcode ngramBitsPerChar}).
 *
 * @example The bound of a tiny model, and the judge on real and scrambled text
 * ```ts
 * import { evaluate, ngramBitsPerChar, trainCharNgram } from "./mod.ts";
 * import { createModel } from "../model/model.ts";
 * import { encode, trainTokenizer } from "../tokenizer/mod.ts";
 * import assert from "node:assert/strict";
 *
 * const text = "the cat sat on the mat. the dog sat on the log. ";
 * const tokenizer = trainTokenizer([text], { kind: "seed", numMerges: 4 });
 * const model = createModel("tiny", { vocabSize: tokenizer.vocabSize, seed: 0 });
 * const tokens = encode(tokenizer, text, { eot: false });
 * const r = evaluate(model, tokens, { samples: 4, seed: 1, tokenizer });
 * assert.equal(r.characters, text.length);
 * assert.ok(r.bitsPerChar! > 0 && r.perplexity > 1);
 *
 * const judge = trainCharNgram(text.repeat(10));
 * assert.ok(ngramBitsPerChar(judge, "the dog sat on the mat. ") < ngramBitsPerChar(judge, "eht god tas no eht tam. "));
 * ```
 *
 * @module
 */

export {
  type DenoiseFn,
  type EvalReport,
  type EvalRequest,
  evaluate,
  evaluateAsync,
  type EvaluateAsyncOptions,
  type EvaluateOptions,
} from "./elbo.ts";
export {
  type CharNgram,
  type CharNgramOptions,
  charProb,
  ngramBits,
  ngramBitsPerChar,
  trainCharNgram,
} from "./ngram.ts";
