import assert from "node:assert/strict";
import type { Model } from "../../src/model/model.ts";
import { type StepInfo, train, type TrainOptions } from "../../src/train/train.ts";
import { tinyRun } from "./fixture.ts";

const base: TrainOptions = { ...tinyRun, seed: 3 };
const PAUSE_MS = 300;

Deno.test("train() awaits an async onStep and leaves its time out of the budget, the rate and tok/s", async () => {
  // 8 pauses of 300 ms are twice the 1.2 s budget: were the pauses counted, the run would stop
  // by time after about 4 steps, and the cosine over the time budget would have reached minLr.
  const stop = new AbortController();
  const seen: number[] = [];
  const wall0 = performance.now();
  const r = await train({
    ...base,
    minutes: 0.02,
    lr: 1e-2,
    minLr: 0,
    warmup: 0,
    signal: stop.signal,
    onStep: async (info) => {
      await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
      seen.push(info.step); // after the await: the next step waited for the promise
      if (info.step === 8) stop.abort();
    },
  });
  const wall = (performance.now() - wall0) / 1000;
  assert.equal(r.stopped, "aborted");
  assert.equal(r.history.length, 8);
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.ok(wall >= 8 * PAUSE_MS / 1000, `wall ${wall} s`);
  const last = r.history.at(-1)!;
  // Training time alone: the wall time less the pauses (2.4 s), well inside the 1.2 s budget.
  assert.ok(last.seconds < wall - 2, `seconds ${last.seconds} of ${wall} s`);
  // progress = training time / budget stays below 2/3, so the rate stays above a quarter of peak
  assert.ok(last.lr > 2.5e-3, `lr ${last.lr}`);
  // Each step's tokens/s is measured without the pause (32 tokens / 0.3 s would be ~107 tok/s).
  for (const h of r.history) {
    assert.ok(h.tokensPerSecond > 4 * 32 / (PAUSE_MS / 1000), `${h.tokensPerSecond} tok/s`);
  }
});

Deno.test("train() passes onStep the live model: after the last step it holds the final parameters", async () => {
  const snapshots: Float32Array[] = [];
  let model: Model | undefined;
  const infos: StepInfo[] = [];
  const r = await train({
    ...base,
    steps: 3,
    onStep: (info, m) => {
      infos.push(info);
      model = m;
      snapshots.push(m.params.slice());
    },
  });
  assert.equal(snapshots.length, 3);
  assert.deepEqual(model!.config, r.model.config);
  assert.deepEqual(snapshots[2], r.model.params);
  // The model is live: its parameters moved between steps.
  assert.notDeepEqual(snapshots[0], snapshots[1]);
  assert.deepEqual(infos, r.history);
});
