/**
 * @sedd/core: train and sample discrete diffusion language models (SEDD and masked diffusion)
 * in TypeScript, on every CPU core, in Deno, Bun and the browser.
 *
 * @example Train the notebook's tokenizer and encode a sentence
 * ```ts
 * import { decode, encode, trainTokenizer } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = trainTokenizer(["the cat sat on the mat"], { kind: "seed", numMerges: 2 });
 * const ids = encode(tokenizer, "the mat");
 * assert.equal(decode(tokenizer, ids), "the mat");
 * ```
 *
 * @module
 */

export * from "./src/rng.ts";
export * from "./src/tokenizer/mod.ts";
