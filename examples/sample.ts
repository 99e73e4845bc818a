/**
 * Load a trained checkpoint and generate text: the library call behind `deno task sample`.
 *
 * ```sh
 * deno run --allow-read --allow-ffi --allow-env=SEDD_BLAS,XDG_RUNTIME_DIR examples/sample.ts runs/example "Call me Ishmael."
 * ```
 *
 * @module
 */

import { sample } from "../mod.ts";
import { loadCheckpoint } from "../src/files/mod.ts";

const [checkpoint = "runs/example", prompt = "Call me Ishmael."] = Deno.args;
const { model, tokenizer, step, metadata } = await loadCheckpoint(checkpoint);
console.error(`loaded ${checkpoint}: step ${step}, ${model.params.length} parameters`);
const { text } = sample(model, tokenizer, {
  prompt,
  length: Math.min(128, model.config.context), // tokens in all, the prompt's included
  steps: 64,
  seed: 0,
  // A score-entropy run's network outputs log-scores; the other losses' output logits.
  output: metadata.loss === "score-entropy" ? "logScore" : "logits",
});
console.log(text);
