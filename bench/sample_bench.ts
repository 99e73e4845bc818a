// Sampler throughput: 128 tokens in 64 steps with a `small`-shaped model (V = 512, untrained:
// the network cost does not depend on the weights), for each method.
//
//   deno bench --allow-read bench/sample_bench.ts
//
// Besides deno bench's time per iteration, tokens/s (128 / mean seconds per sample) and the
// network evaluations per sample are printed at the end.
import { createModel } from "../src/model/model.ts";
import { forward } from "../src/model/model.ts";
import { sampleIds, type SampleMethod } from "../src/sampler/sample_ids.ts";

const V = 512;
const T = 128;
const STEPS = 64;
const model = createModel("small", { vocabSize: V, context: T, seed: 0 });
const denoise = (ids: Int32Array, sigma: Float32Array) => forward(model, ids, { batch: 1, sigma });

const stats = new Map<string, { ms: number; runs: number; evals: number; saved: number }>();
let seed = 0;

for (const method of ["confidence", "euler", "tweedie", "ancestral"] as SampleMethod[]) {
  Deno.bench({
    name: `sample ${T} tokens, ${STEPS} steps, small model: ${method}`,
    group: "sample",
    n: 3,
    warmup: 1,
    fn() {
      const t0 = performance.now();
      const r = sampleIds(denoise, V, V - 1, { method, steps: STEPS, length: T, seed: seed++ });
      const s = stats.get(method) ?? { ms: 0, runs: 0, evals: 0, saved: 0 };
      s.ms += performance.now() - t0;
      s.runs++;
      s.evals += r.evaluations;
      s.saved += r.savedEvaluations;
      stats.set(method, s);
    },
  });
}

globalThis.addEventListener("unload", () => {
  for (const [method, s] of stats) {
    const sec = s.ms / s.runs / 1000;
    console.log(
      `${method}: ${(T / sec).toFixed(1)} tokens/s, ${(sec * 1000).toFixed(0)} ms per sample, ` +
        `${(s.evals / s.runs).toFixed(1)} evaluations (+${
          (s.saved / s.runs).toFixed(1)
        } saved by caching)`,
    );
  }
});
