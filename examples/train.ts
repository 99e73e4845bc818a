/**
 * Train a small diffusion language model on a text file and save it: the library call behind
 * `deno task train` (which adds the command line, progress and samples: see `cli.ts`).
 *
 * ```sh
 * deno run --allow-read --allow-write examples/train.ts path/to/text.txt runs/example
 * ```
 *
 * @module
 */

import { train } from "../src/train/train.ts";

const [data = "README.md", out = "runs/example"] = Deno.args;
const { history, step } = await train({
  data, // a .txt file or a folder of them; a 512-token byte-level BPE is trained on it
  model: "tiny", // "small" for a real run
  steps: 200,
  batch: 8,
  out, // model.safetensors, optimizer.safetensors, metrics.jsonl, loss.svg
  onStep: ({ step, loss, tokensPerSecond }) => {
    if (step % 20 === 0) {
      console.log(`step ${step}  loss ${loss.toFixed(3)}  ${tokensPerSecond | 0} tok/s`);
    }
  },
});
console.log(
  `trained ${step} steps, final held-out loss ${history.at(-1)?.heldOutLoss?.toFixed(3)}`,
);
console.log(`next: deno task sample --checkpoint ${out} --prompt "The"`);
