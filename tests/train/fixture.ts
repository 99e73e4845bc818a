/** The small text, tokenizer and in-process tiny-model options the trainer's tests start from. */
import { trainTokenizer } from "../../src/tokenizer/mod.ts";
import type { TrainOptions } from "../../src/train/train.ts";

/** A short, repetitive text: a few hundred tokens. */
export const text = "call me ishmael. some years ago, never mind how long precisely. ".repeat(20);

/** A seed tokenizer of the text with 10 merges. */
export const tokenizer = trainTokenizer([text], { kind: "seed", numMerges: 10 });

/** The tiny preset in-process on the text, 2 x 16 tokens a step, no held-out loss. */
export const tinyRun: TrainOptions = {
  text,
  tokenizer,
  model: "tiny",
  batch: 2,
  context: 16,
  evalEvery: 0,
  workers: 0,
};
