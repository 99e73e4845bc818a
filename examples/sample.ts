/**
 * Load a trained checkpoint and generate text: the library call behind `deno task sample`.
 *
 * ```sh
 * deno run --allow-read examples/sample.ts runs/latest "Call me Ishmael."
 * ```
 *
 * @module
 */

import { loadCheckpoint } from "../src/train/run_dir.ts";
import { sample } from "../src/sampler/mod.ts";

const [checkpoint = "runs/latest", prompt = "Call me Ishmael."] = Deno.args;
const { model, tokenizer, step } = await loadCheckpoint(checkpoint);
console.error(`loaded ${checkpoint}: step ${step}, ${model.params.length} parameters`);
const { text } = sample(model, tokenizer, { prompt, length: 128, steps: 64, seed: 0 });
console.log(text);
