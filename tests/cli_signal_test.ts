// Ctrl+C during `train`, as a user presses it: SIGINT to the CLI process. The first one saves a
// checkpoint at the end of the current step and exits 130; a second one exits 130 at once, and the
// run directory still loads.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { loadCheckpoint, loadRun } from "../src/files/mod.ts";
import { makeTempDir, removeDir, writeFileAtomic } from "../src/io.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-ffi",
  "--allow-env=SEDD_BLAS,XDG_RUNTIME_DIR",
];
const TEXT = "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. "
  .repeat(60);

/** Starts `train` on a small text for far more steps than it will run; resolves at its first step line. */
async function startTraining(dir: string, out: string, shape: string[]) {
  await writeFileAtomic(`${dir}/text.txt`, TEXT);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...PERMISSIONS,
      "cli.ts",
      "train",
      ...["--data", `${dir}/text.txt`, "--out", out, "--steps", "1000000", "--vocab", "270"],
      ...["--workers", "2", ...shape],
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const decoder = new TextDecoder();
  let err = "";
  const reader = child.stderr.getReader();
  while (!/^step \d+/m.test(err)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`train ended before its first step:\n${err}`);
    err += decoder.decode(value, { stream: true });
  }
  /** Sends SIGINT `times` times, `gapMs` apart, then waits for the exit: code and the rest of stderr. */
  const interrupt = async (times: number, gapMs = 0) => {
    for (let i = 0; i < times; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, gapMs));
      child.kill("SIGINT");
    }
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      err += decoder.decode(value, { stream: true });
    }
    const [status] = await Promise.all([child.status, child.stdout.cancel()]);
    return { code: status.code, err };
  };
  return { interrupt };
}

Deno.test("cli train: Ctrl+C saves a checkpoint at the end of the step and exits 130", async () => {
  const dir = await makeTempDir();
  try {
    const out = `${dir}/run`;
    const tiny = ["--preset", "tiny", "--batch", "4", "--context", "32"];
    const { interrupt } = await startTraining(dir, out, tiny);
    const { code, err } = await interrupt(1);
    assert.equal(code, 130, err);
    const m = err.match(/Interrupted at step (\d+): resume with deno task train --resume/);
    assert.ok(m, err);
    const saved = await loadCheckpoint(out);
    assert.equal(saved.step, Number(m[1]));
    assert.ok(saved.step >= 1);
    assert.equal(saved.metadata.stopped, "aborted");
    const run = await loadRun(out);
    assert.equal(run.step, saved.step);
    assert.doesNotMatch(err, /^\s+at /m);
  } finally {
    await removeDir(dir);
  }
});

Deno.test("cli train: a second Ctrl+C exits 130 at once and leaves the run directory loadable", async () => {
  const dir = await makeTempDir();
  try {
    const out = `${dir}/run`;
    // Steps long enough (small preset, 16 x 128) that the second signal lands inside one; on the
    // default backend (blas where the library is installed: exiting while a worker is inside
    // OpenBLAS must not crash the process).
    const small = ["--preset", "small", "--batch", "16", "--context", "128"];
    const { interrupt } = await startTraining(dir, out, small);
    const { code, err } = await interrupt(2, 20);
    assert.equal(code, 130, err);
    assert.match(err, /Interrupted again: exiting now/);
    assert.doesNotMatch(err, /Interrupted at step/); // it did not wait for the step to end
    // Whatever was saved before the exit is whole: either a complete checkpoint or none at all
    // (no temporary file is ever read as one).
    const names = [...Deno.readDirSync(out)].map((e) => e.name);
    if (names.includes("model.safetensors")) {
      const saved = await loadCheckpoint(out);
      assert.ok(saved.step >= 1);
    } else {
      await assert.rejects(() => loadCheckpoint(out));
    }
  } finally {
    await removeDir(dir);
  }
});
