/**
 * @sedd/core: train and sample discrete diffusion language models (SEDD and masked diffusion)
 * in TypeScript, on every CPU core, in Deno, Bun and the browser.
 *
 * Everything is a plain function over typed arrays: a tokenizer is plain data, a model is one
 * flat `Float32Array` of parameters under PyTorch's state-dict names, and randomness comes only
 * from a seeded {@linkcode Rng}. {@linkcode train} shards each batch's gradient over Web Workers;
 * {@linkcode sample} runs the notebook's confidence sampler or SEDD's and MDLM's samplers.
 *
 * Subpaths (`@sedd/core/tokenizer`, `/model`, `/diffusion`, `/sampler`, `/checkpoint`, `/eval`,
 * `/train`) hold the same functions for callers who want only one part.
 *
 * @example Train a tiny model on a sentence, then sample from it
 * ```ts
 * import { sample, train, trainTokenizer } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const text = "the whale swam in the sea. the sea was deep. ".repeat(40);
 * const tokenizer = trainTokenizer([text], { vocabSize: 280 });
 * const { model } = await train({
 *   text, tokenizer, model: "tiny", steps: 30, batch: 4, context: 16, workers: 0, loss: "elbo",
 * });
 * const out = sample(model, tokenizer, { prompt: "the whale", length: 16, steps: 16, seed: 1 });
 * assert.ok(out.text.startsWith("the whale"));
 * ```
 *
 * @module
 */

export * from "./src/rng.ts";
export * from "./src/tokenizer/mod.ts";
export * from "./src/model/mod.ts";
export * from "./src/optim/adamw.ts";
export * from "./src/diffusion/mod.ts";
export * from "./src/sampler/mod.ts";
export * from "./src/checkpoint/mod.ts";
export * from "./src/eval/mod.ts";
export * from "./src/train/mod.ts";
