// evaluateAsync() on the webgpu backend draws exactly what evaluate() draws and runs each batch
// on the GPU, reading back only the per-position losses: the bound agrees with the ts backend's
// to float rounding; given a context it runs there and leaves it open, and the CLI's eval hands
// it the context it resolved --backend with. Ignored without an adapter, except in CI (CI=true).

import assert from "node:assert/strict";
import {
  type EvalReport,
  evaluate,
  evaluateAsync,
  type EvaluateOptions,
} from "../../src/eval/elbo.ts";
import { createModel } from "../../src/model/model.ts";
import { Rng } from "../../src/rng.ts";
import { countGpuUse, gpuContext, ignoreGpu } from "../kernels/webgpu_available.ts";
import { runCli } from "../cli_run.ts";
import { makeTempDir, removeDir, writeFileAtomic } from "../../src/io.ts";
import { modelCheckpointBytes } from "../../src/checkpoint/run_files.ts";
import { trainTokenizer } from "../../src/tokenizer/mod.ts";

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

Deno.test({
  name:
    "evaluateAsync() on a given context acquires no device and leaves it open; cli eval --backend webgpu acquires one",
  ignore: ignoreGpu,
  async fn() {
    const V = 13;
    const model = createModel("tiny", { vocabSize: V, context: 16, seed: 5 });
    const rng = new Rng(8);
    const tokens = Int32Array.from({ length: 40 }, () => Math.floor(rng.uniform() * (V - 1)));
    const options = { samples: 2, seed: 1, backend: "webgpu" } as const;
    let own: EvalReport | undefined, given: EvalReport | undefined;
    assert.equal(
      (await countGpuUse(async () => own = await evaluateAsync(model, tokens, options))).devices,
      1,
    );
    const ctx = gpuContext();
    assert.equal(
      (await countGpuUse(async () =>
        given = await evaluateAsync(model, tokens, { ...options, gpu: ctx })
      )).devices,
      0,
    );
    assert.deepEqual(given, own);
    const t = ctx.upload(new Float32Array([1, 2, 3])); // still open
    assert.deepEqual(await ctx.readF32(t), new Float32Array([1, 2, 3]));
    t.destroy();

    const dir = await makeTempDir();
    try {
      const text = "the whale and the sea and the ship ".repeat(8);
      const tokenizer = trainTokenizer([text], { kind: "seed", numMerges: 4 });
      const tiny = createModel("tiny", { vocabSize: tokenizer.vocabSize, context: 16, seed: 2 });
      await writeFileAtomic(`${dir}/model.safetensors`, modelCheckpointBytes(tiny, tokenizer, 3));
      await writeFileAtomic(`${dir}/held.txt`, text);
      let r: Awaited<ReturnType<typeof runCli>> | undefined;
      const { devices } = await countGpuUse(async () => {
        r = await runCli([
          ...["eval", "--checkpoint", `${dir}/model.safetensors`, "--data", `${dir}/held.txt`],
          ...["--samples", "2", "--backend", "webgpu"],
        ]);
      });
      assert.equal(r!.code, 0, r!.err);
      assert.match(r!.err, /^Backend: webgpu: /m);
      assert.match(r!.out, /^nats\/token \d+\.\d+ ± /);
      // --backend is resolved once and its context handed to evaluateAsync: one device
      assert.equal(devices, 1);
    } finally {
      await removeDir(dir);
    }
  },
});
