import assert from "node:assert/strict";
import { makeTempDir, removeDir } from "../../src/io.ts";
import { loadCheckpoint, loadRun, readMetrics } from "../../src/train/run_dir.ts";
import { train, type TrainOptions } from "../../src/train/train.ts";
import { text, tinyRun } from "./fixture.ts";

const base: TrainOptions = { ...tinyRun, steps: 10, seed: 4, checkpointEvery: 2 };

for (const at of [3, 4]) {
  const what = at % 2 === 0 ? "on a periodic checkpoint's step" : "between periodic checkpoints";
  Deno.test(`train() aborted after step ${at} (${what}) saves a loadable checkpoint of that step that says so`, async () => {
    const dir = await makeTempDir();
    try {
      const stop = new AbortController();
      const r = await train({
        ...base,
        out: dir,
        signal: stop.signal,
        onStep: (i) => i.step === at && stop.abort(),
      });
      assert.equal(r.stopped, "aborted");
      assert.equal(r.step, at);
      assert.deepEqual(r.history.map((h) => h.step), Array.from({ length: at }, (_, i) => i + 1));
      const ckpt = await loadCheckpoint(dir);
      assert.equal(ckpt.step, at);
      assert.equal(ckpt.metadata.stopped, "aborted");
      assert.deepEqual(ckpt.model.params, r.model.params);
      const run = await loadRun(dir);
      assert.equal(run.step, at);
      assert.equal(run.metadata.stopped, "aborted");
      assert.deepEqual(run.model.params, r.model.params);
      assert.deepEqual((await readMetrics(dir)).map((m) => m.step), r.history.map((h) => h.step));
      // Resumed, it runs to its budget, and the final checkpoint says why it stopped then.
      const rest = await train({ text, resume: dir });
      assert.equal(rest.stopped, "steps");
      assert.equal((await loadCheckpoint(dir)).metadata.stopped, "steps");
      assert.equal((await loadRun(dir)).step, 10);
    } finally {
      await removeDir(dir);
    }
  });
}

Deno.test("train() with a signal aborted before it starts takes no step and writes no checkpoint", async () => {
  const dir = await makeTempDir();
  try {
    const stop = new AbortController();
    stop.abort();
    const r = await train({ ...base, out: dir, signal: stop.signal });
    assert.equal(r.stopped, "aborted");
    assert.equal(r.step, 0);
    await assert.rejects(loadRun(dir), /Nothing to resume/);
  } finally {
    await removeDir(dir);
  }
});
