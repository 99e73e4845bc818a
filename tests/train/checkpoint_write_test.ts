import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import { makeTempDir, removeDir, WriteError, writeFileAtomic } from "../../src/io.ts";
import { CheckpointError } from "../../src/train/checkpointing.ts";
import { loadCheckpoint, loadRun } from "../../src/train/run_dir.ts";
import { train, type TrainOptions } from "../../src/train/train.ts";
import { tinyRun } from "./fixture.ts";

const base: TrainOptions = { ...tinyRun, steps: 6, seed: 4, checkpointEvery: 2 };

/** Whether chmod 0o555 stops this process writing into a directory (not so for root). */
async function readOnlyDirsStopWrites(): Promise<boolean> {
  const dir = await makeTempDir();
  try {
    await fs.chmod(dir, 0o555);
    await fs.writeFile(`${dir}/probe`, "x");
    return false;
  } catch {
    return true;
  } finally {
    await fs.chmod(dir, 0o755);
    await removeDir(dir);
  }
}

/** The run directory holds the step-2 checkpoint, whole, and no temporary file. */
async function assertPreviousKept(dir: string, params: Float32Array): Promise<void> {
  const run = await loadRun(dir);
  assert.equal(run.step, 2);
  assert.deepEqual(run.model.params, params);
  const ckpt = await loadCheckpoint(dir);
  assert.equal(ckpt.step, 2);
  assert.deepEqual(ckpt.model.params, params);
  const names = await fs.readdir(dir);
  assert.deepEqual(names.filter((n) => n.endsWith(".tmp")), [], names.join(", "));
}

/** A one-line CheckpointError of step 4 naming the file, its cause and the kept step. */
function checkError(dir: string, cause: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof CheckpointError, String(e));
    assert.equal(e.step, 4);
    assert.doesNotMatch(e.message, /\n/);
    assert.match(e.message, /^Checkpoint of step 4 failed: Could not write /);
    assert.ok(e.message.includes(`${dir}/optimizer.safetensors: `), e.message);
    assert.match(e.message, cause);
    assert.ok(e.message.endsWith(`the last good checkpoint (step 2) is kept in ${dir}`), e.message);
    return true;
  };
}

Deno.test("train() whose checkpoint write fails (injected, as a full disk) stops, keeping the previous checkpoint", async () => {
  const dir = await makeTempDir();
  try {
    let atTwo: Float32Array | undefined;
    const steps: number[] = [];
    await assert.rejects(
      train({
        ...base,
        out: dir,
        writeFault: { step: 4 },
        onStep: (i, m) => {
          steps.push(i.step);
          if (i.step === 2) atTwo = m.params.slice();
        },
      }),
      checkError(dir, /injected write fault \(no space left\)/),
    );
    assert.deepEqual(steps, [1, 2, 3], "the run stopped at the failed checkpoint");
    await assertPreviousKept(dir, atTwo!);
  } finally {
    await removeDir(dir);
  }
});

const stopsWrites = await readOnlyDirsStopWrites();
Deno.test({
  name: "train() in a run directory made read-only after its first checkpoint stops, keeping it" +
    (stopsWrites ? "" : " (skipped: running as root, which chmod does not stop)"),
  ignore: !stopsWrites,
  fn: async () => {
    const dir = await makeTempDir();
    try {
      let atTwo: Float32Array | undefined;
      await assert.rejects(
        train({
          ...base,
          out: dir,
          onStep: async (i, m) => {
            if (i.step !== 2) return;
            atTwo = m.params.slice();
            await fs.chmod(dir, 0o555);
          },
        }),
        checkError(dir, /EACCES|permission denied/i),
      );
      await fs.chmod(dir, 0o755);
      await assertPreviousKept(dir, atTwo!);
    } finally {
      await fs.chmod(dir, 0o755).catch(() => {});
      await removeDir(dir);
    }
  },
});

Deno.test("writeFileAtomic() that fails leaves the old file and no temporary file, naming the path", async () => {
  const dir = await makeTempDir();
  try {
    await writeFileAtomic(`${dir}/a.txt`, "old");
    await assert.rejects(
      writeFileAtomic(`${dir}/a.txt`, "new", {
        beforeRename: () => {
          throw new Error("ENOSPC: no space left on device");
        },
      }),
      (e: unknown) => {
        assert.ok(e instanceof WriteError);
        assert.equal(e.path, `${dir}/a.txt`);
        assert.equal(e.message, `Could not write ${dir}/a.txt: ENOSPC: no space left on device`);
        return true;
      },
    );
    assert.equal(await fs.readFile(`${dir}/a.txt`, "utf8"), "old");
    assert.deepEqual(await fs.readdir(dir), ["a.txt"]);
    // A path whose directory is a file cannot be written either: the same typed error.
    await assert.rejects(writeFileAtomic(`${dir}/a.txt/b`, "x"), WriteError);
  } finally {
    await removeDir(dir);
  }
});
