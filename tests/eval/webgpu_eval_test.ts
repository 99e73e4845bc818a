// evaluateAsync() on the webgpu backend draws exactly what evaluate() draws and runs each batch
// on the GPU, reading back only the per-position losses: the bound agrees with the ts backend's
// to float rounding. Ignored without an adapter, except in CI (CI=true).

import assert from "node:assert/strict";
import { evaluate, evaluateAsync, type EvaluateOptions } from "../../src/eval/elbo.ts";
import { createModel } from "../../src/model/model.ts";
import { Rng } from "../../src/rng.ts";
import { ignoreGpu } from "../kernels/webgpu_available.ts";

const CASES: [string, boolean, EvaluateOptions][] = [
  ["elbo, absorb, with a short last window", false, { loss: "elbo", samples: 4, batch: 3 }],
  ["score-entropy, uniform graph, time-conditioned, antithetic", true, {
    loss: "score-entropy",
    graph: "uniform",
    samples: 4,
    antithetic: true,
  }],
];

for (const [what, tc, options] of CASES) {
  Deno.test({
    name: `evaluateAsync() on webgpu matches evaluate() on ts (${what})`,
    ignore: ignoreGpu,
    async fn() {
      const V = 13;
      const base = createModel("tiny", { vocabSize: V }).config;
      const model = createModel({ ...base, timeConditioning: tc }, { seed: 2 });
      const rng = new Rng(4);
      for (let i = 0; i < model.params.length; i++) model.params[i] += 0.05 * (rng.uniform() - 0.5);
      const tokens = Int32Array.from({ length: 45 }, () => Math.floor(rng.uniform() * (V - 1)));
      const want = evaluate(model, tokens, { ...options, backend: "ts", seed: 3 });
      const got = await evaluateAsync(model, tokens, { ...options, backend: "webgpu", seed: 3 });
      assert.equal(got.evaluations, want.evaluations);
      const rel = Math.abs(got.natsPerToken - want.natsPerToken) / want.natsPerToken;
      assert.ok(rel < 1e-5, `nats/token ${got.natsPerToken} vs ${want.natsPerToken}`);
      const se = Math.abs(got.standardError - want.standardError) / want.standardError;
      assert.ok(se < 1e-3, `standard error ${got.standardError} vs ${want.standardError}`);
    },
  });
}

Deno.test("evaluate() refuses webgpu with a pointer to evaluateAsync", () => {
  const model = createModel("tiny", { vocabSize: 5 });
  assert.throws(
    () => evaluate(model, new Int32Array([0, 1]), { backend: "webgpu" }),
    /webgpu reads back from the GPU: use evaluateAsync/,
  );
});
