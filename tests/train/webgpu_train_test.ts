// train() on the webgpu backend (the whole step on the GPU, src/train/gpu_pool.ts) against the
// ts backend from the same seed: the same batches, noise and dropout masks, so the losses and
// gradient norms differ only by the GPU's summation order (within 1e-4 relative over 20 steps),
// and a run may switch backend on resume. The configs are tiny so that llvmpipe, the software
// adapter CI has, runs them in seconds.
//
// Ignored without an adapter, except in CI (CI=true), where a missing adapter fails the tests.

import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import { makeTempDir, removeDir, writeFileAtomic } from "../../src/io.ts";
import { loadCheckpoint } from "../../src/train/run_dir.ts";
import { resolveConfig } from "../../src/model/config.ts";
import { train, type TrainOptions, type TrainResult } from "../../src/train/train.ts";
import { tokenizer } from "./fixture.ts";
import { gpu, ignoreGpu } from "../kernels/webgpu_available.ts";

const text = "call me ishmael. some years ago, never mind how long precisely. ".repeat(40);
const config = {
  ...resolveConfig("tiny", { vocabSize: tokenizer.vocabSize, context: 16 }),
  dModel: 32,
  dFF: 48,
};
const base: TrainOptions = {
  text,
  tokenizer,
  batch: 4,
  context: 16,
  steps: 20,
  seed: 5,
  lr: 3e-3,
  warmup: 3,
  clip: 0.5, // low enough to clip: the clipping runs on the GPU too
  evalEvery: 10,
  evalBatches: 1,
  workers: 0,
};

function expectTracks(gpuRun: TrainResult, cpuRun: TrainResult, steps: number): void {
  assert.equal(gpuRun.history.length, steps);
  assert.equal(cpuRun.history.length, steps);
  for (let i = 0; i < steps; i++) {
    const g = gpuRun.history[i], c = cpuRun.history[i];
    assert.ok(
      Math.abs(g.loss - c.loss) <= 1e-4 * Math.abs(c.loss),
      `step ${g.step}: loss ${g.loss} vs ${c.loss}`,
    );
    assert.ok(
      Math.abs(g.gradNorm - c.gradNorm) <= 1e-4 * c.gradNorm,
      `step ${g.step}: gradient norm ${g.gradNorm} vs ${c.gradNorm}`,
    );
    if (c.heldOutLoss !== undefined) {
      assert.ok(
        Math.abs(g.heldOutLoss! - c.heldOutLoss) <= 1e-4 * c.heldOutLoss,
        `step ${g.step}: held-out loss ${g.heldOutLoss} vs ${c.heldOutLoss}`,
      );
    }
  }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

/**
 * {@linkcode maxDiff} over the parameters of `run`, less the key biases (the middle third of
 * each `in_proj_bias`): softmax ignores a shift shared by all keys, so with learned positions
 * their gradient is zero in exact arithmetic and Adam's normalised step follows rounding noise
 * (see tests/model/pytorch_fixtures.ts); those entries drift apart by up to a few lr.
 */
function paramDiff(run: TrainResult, other: Float32Array): number {
  const a = run.model.params.slice(), b = other.slice();
  const C = run.model.config.dModel;
  for (const [name, { offset }] of Object.entries(run.model.layout)) {
    if (name.endsWith("in_proj_bias")) b.set(a.subarray(offset + C, offset + 2 * C), offset + C);
  }
  return maxDiff(a, b);
}

const RUNS: [string, TrainOptions][] = [
  ["elbo, rotary pre-norm GELU, dropout 0.1", {
    model: { ...config, dropout: 0.1 },
    loss: "elbo",
    antithetic: true,
  }],
  ["score-entropy (absorb), time-conditioned", {
    model: { ...config, timeConditioning: true },
    loss: "score-entropy",
  }],
  ["seed loss, learned positions, post-norm ReLU", {
    model: { ...config, positions: "learned", normFirst: false, activation: "relu" },
    loss: "seed",
  }],
];

for (const [what, o] of RUNS) {
  Deno.test({
    name: `train() on webgpu tracks ts over 20 steps from the same seed (${what})`,
    ignore: ignoreGpu,
    async fn() {
      const g = await train({ ...base, ...o, backend: "webgpu" });
      const c = await train({ ...base, ...o, backend: "ts" });
      assert.equal(g.backend.backend, "webgpu");
      assert.match(g.backend.note, /^webgpu: /);
      assert.equal(g.workers, 0);
      expectTracks(g, c, 20);
      assert.ok(g.history.some((h) => h.gradNorm > 0.5), "no step clipped");
      const start = (await train({ ...base, ...o, steps: 0, backend: "ts" })).model.params;
      assert.ok(maxDiff(c.model.params, start) > 1e-2, "the parameters did not move");
      const diff = paramDiff(g, c.model.params);
      assert.ok(diff < 1e-4, `webgpu vs ts parameters differ by up to ${diff}`);
      assert.equal(g.optimizer.step, 20);
      assert.ok(maxDiff(g.optimizer.v, c.optimizer.v) < 1e-6, "second moments differ");
    },
  });
}

Deno.test({
  name:
    "a run switches backend on resume: 4 steps on webgpu then 4 on ts, and 4 on ts then 4 on webgpu, end where 8 on ts do",
  ignore: ignoreGpu,
  async fn() {
    const o = { ...base, model: { ...config, dropout: 0.1 }, loss: "elbo" as const, steps: 8 };
    const whole = await train({ ...o, backend: "ts" });
    const dir = await makeTempDir();
    try {
      for (const [first, second] of [["webgpu", "ts"], ["ts", "webgpu"]] as const) {
        const out = `${dir}/${first}`;
        const part = await train({ ...o, steps: 4, out, backend: first });
        assert.equal(part.backend.backend, first);
        const rest = await train({ ...o, resume: out, backend: second });
        assert.equal(rest.backend.backend, second);
        assert.equal(rest.step, 8);
        const losses = [...part.history, ...rest.history].map((h) => h.loss);
        whole.history.forEach((h, i) =>
          assert.ok(
            Math.abs(losses[i] - h.loss) <= 1e-4 * h.loss,
            `${first} then ${second}, step ${h.step}: loss ${losses[i]} vs ${h.loss}`,
          )
        );
        const diff = paramDiff(rest, whole.model.params);
        assert.ok(diff < 1e-4, `${first} then ${second}: parameters differ by up to ${diff}`);
      }
    } finally {
      await removeDir(dir);
    }
  },
});

Deno.test({
  name:
    "train() with backend auto passes over a software adapter, and over any GPU with workers given, and says why",
  ignore: !gpu.ok || !/llvmpipe|lavapipe|swiftshader/i.test(gpu.adapterName),
  async fn() {
    const { workers: _, ...noWorkers } = base;
    const r = await train({ ...noWorkers, model: config, steps: 1, backend: "auto" });
    assert.notEqual(r.backend.backend, "webgpu");
    assert.match(r.backend.note, /no webgpu: .*software adapter/);
    const w = await train({ ...base, model: config, steps: 1, backend: "auto" });
    assert.match(w.backend.note, /no webgpu: an explicit worker count asks for the CPU workers/);
  },
});

Deno.test({
  name:
    "cli train --backend webgpu trains on the GPU and writes a checkpoint that eval --backend webgpu and sample --backend webgpu read",
  ignore: ignoreGpu,
  async fn() {
    const dir = await makeTempDir();
    const err: string[] = [], out: string[] = [];
    const { log, error } = console;
    console.log = (...a: unknown[]) => out.push(a.join(" "));
    console.error = (...a: unknown[]) => err.push(a.join(" "));
    try {
      await writeFileAtomic(`${dir}/data.txt`, text);
      const code = await main([
        "train",
        ...["--data", `${dir}/data.txt`, "--preset", "tiny", "--steps", "3", "--batch", "2"],
        ...["--out", `${dir}/run`, "--vocab", "300", "--samples", "1", "--backend", "webgpu"],
      ]);
      assert.equal(code, 0, err.join("\n"));
      assert.match(err.join("\n"), /^Backend: webgpu: /m);
      assert.match(err.join("\n"), /Done \(steps\): 3 steps, .* on webgpu\./);
      assert.match(out.join("\n"), /--- sample 1 /);
      const ckpt = await loadCheckpoint(`${dir}/run`);
      assert.equal(ckpt.step, 3);
      // eval on the GPU prints the CPU's bound (to the 4 decimals shown)
      const bound: string[] = [];
      for (const backend of ["webgpu", "ts"]) {
        out.length = 0;
        const e = await main([
          "eval",
          ...["--checkpoint", `${dir}/run`, "--data", `${dir}/data.txt`, "--samples", "2"],
          ...["--backend", backend],
        ]);
        assert.equal(e, 0, err.join("\n"));
        bound.push(out.join("\n").match(/nats\/token \d+\.\d+ ± \d+\.\d+/)![0]);
      }
      assert.equal(bound[0], bound[1]);
      out.length = 0;
      const sampled = await main([
        "sample",
        ...["--checkpoint", `${dir}/run`, "--backend", "webgpu", "--steps", "4", "--length", "16"],
      ]);
      assert.equal(sampled, 0, err.join("\n"));
      assert.equal(out.length, 1);
    } finally {
      console.log = log;
      console.error = error;
      await removeDir(dir);
    }
  },
});
