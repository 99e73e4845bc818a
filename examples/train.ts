/**
 * Train a small diffusion language model and save it: the library call behind `deno task train`
 * (which adds the command line, progress and samples: see `cli.ts`). Moby-Dick by default.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-ffi --allow-env=SEDD_BLAS,XDG_RUNTIME_DIR examples/train.ts
 * deno run --allow-read --allow-write --allow-ffi --allow-env=SEDD_BLAS,XDG_RUNTIME_DIR examples/train.ts my.txt runs/mine 50   # data, run directory, steps ("" for the book)
 * ```
 *
 * @module
 */

import { train } from "../mod.ts";
import { mobyDick } from "../src/files/mod.ts";

const [data, out = "runs/example", steps = "200"] = Deno.args;
const { history, step } = await train({
  // A .txt file or a folder of them; else the book. A byte-level BPE is trained on it.
  ...(data ? { data } : { text: await mobyDick() }),
  tokenizerVocabSize: 1024,
  model: "tiny", // "small" for a real run
  steps: Number(steps),
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
